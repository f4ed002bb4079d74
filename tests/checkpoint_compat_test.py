"""Checkpoints written by earlier versions still restore and train.

`testdata/checkpoint_v0_1/` is a 2-step run of the tiny CLI configuration
(32x32, widths 8, 4 classes, EMA on) written by `train_imagenet.py` at
version 0.1.0, before the fidelity changes (one D call on concat(real,
fake), dense table gradients, G's u written at inference). Those changes
moved no variable, so every value must land in the same place.
"""

import os

import numpy as np
import tensorflow as tf

from sagan_tf import config as config_lib
from sagan_tf.training import updates

CHECKPOINT = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "testdata", "checkpoint_v0_1", "ckpt-2",
)


def _trainer():
    model = config_lib.ModelConfig(
        image_size=32, z_dim=16, gf_dim=8, df_dim=8, number_classes=4,
        attention_resolution=16,
    )
    config = config_lib.TrainConfig(
        model=model, batch_size=4, ema_decay=0.9, seed=3
    )
    return updates.GANTrainer(config, tf.distribute.get_strategy())


def test_v0_1_checkpoint_restores_every_value_and_trains_on():
    t = _trainer()
    checkpoint = tf.train.Checkpoint(step=t.step, **t.checkpoint_objects())
    # Every saved value is used and every variable of the new objects is
    # restored.
    checkpoint.restore(CHECKPOINT).assert_consumed()
    assert int(t.step.numpy()) == 2
    assert int(t.g_optimizer.iterations.numpy()) == 2

    # Values land in their variables (read back with the plain reader;
    # trainable weights are stored under the optimizers' paths).
    reader = tf.train.load_checkpoint(CHECKPOINT)
    for name, variable in (
        ("discriminator/d_embedding/u", t.discriminator.d_embedding.u),
        ("generator/g_block1/cbn_0/moving_mean",
         t.generator.g_block1.cbn_0.moving_mean),
        ("ema_generator/g_block1/cbn_0/gamma",
         t.ema_generator.g_block1.cbn_0.gamma),
    ):
        saved = reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")
        np.testing.assert_array_equal(variable.numpy(), saved)

    # One more global step from the restored state stays finite.
    t.seed_noise(2)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 1, 3], np.int32)
    g_loss = t.g_update(*t._noise(4))
    metrics, _ = t.d_update(images, labels, *t._noise(4))
    assert np.isfinite(float(g_loss)) and np.all(np.isfinite(metrics))
    assert int(t.d_optimizer.iterations.numpy()) == 3
