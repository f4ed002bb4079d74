"""Tiny stand-ins for the evaluation tests.

A random classifier in place of Inception (a few cheap ops on the 299x299
input), records in the released format, and a checkpoint of a tiny G laid
out as training writes it.
"""

import os

import numpy as np
import tensorflow as tf

from sagan_tf import config as config_lib
from sagan_tf import models
from sagan_tf.training import checkpoints

FEATURE_DIM = 16
NUM_LOGITS = 12


class StandinClassifier(tf.Module):
    """images [B, S, S, 3] in [-1, 1] -> (pool [B, 1, 1, D], logits [B, K]).

    Area-downsamples to 8x8, then a random tanh layer (pool_3) and a linear
    layer (logits); shaped like Inception's outputs, tiny.
    """

    def __init__(self, feature_dim=FEATURE_DIM, num_logits=NUM_LOGITS, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w1 = tf.Variable(
            rng.normal(size=(8 * 8 * 3, feature_dim)) / 8.0, dtype=tf.float32
        )
        self.w2 = tf.Variable(
            rng.normal(size=(feature_dim, num_logits)) * 2.0, dtype=tf.float32
        )
        self.b2 = tf.Variable(rng.normal(size=num_logits), dtype=tf.float32)

    def __call__(self, images):
        small = tf.image.resize(images, [8, 8], method="area")
        flat = tf.reshape(small, [-1, 8 * 8 * 3])
        pool = tf.tanh(tf.matmul(flat, self.w1))
        logits = tf.matmul(pool, self.w2) + self.b2
        return tf.reshape(pool, [-1, 1, 1, pool.shape[-1]]), logits


def tiny_model_config(**overrides):
    values = dict(
        image_size=32,
        z_dim=8,
        gf_dim=4,
        df_dim=4,
        number_classes=3,
        attention_resolution=16,
    )
    values.update(overrides)
    return config_lib.ModelConfig(**values)


def write_records(data_dir, count, image_size, num_classes, seed=0):
    """Released-format shards: raw uint8 S*S*3 bytes + int64 label."""
    os.makedirs(data_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    for shard in range(2):
        path = os.path.join(data_dir, f"train_{shard}.tfrecords")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(shard, count, 2):
                base = rng.integers(0, 256, 3)
                image = np.clip(
                    base + rng.integers(-40, 40, (image_size, image_size, 3)),
                    0,
                    255,
                ).astype(np.uint8)
                feature = {
                    "image_raw": tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[image.tobytes()])
                    ),
                    "label": tf.train.Feature(
                        int64_list=tf.train.Int64List(value=[i % num_classes])
                    ),
                }
                example = tf.train.Example(
                    features=tf.train.Features(feature=feature)
                )
                writer.write(example.SerializeToString())


def write_checkpoint(run_dir, model_config, step, ema=False, seed=0):
    """Saves ckpt-<step> of a tiny G (and D-less) run as training does.

    Returns:
        The generator that was saved.
    """
    tf.keras.utils.set_random_seed(seed)
    generator = models.build_generator(model_config)
    objects = {"generator": generator}
    if ema:
        ema_g = models.build_generator(model_config)
        for dst, src in zip(ema_g.weights, generator.weights):
            dst.assign(src * 0.5)
        objects["ema_generator"] = ema_g
    step_var = tf.Variable(step, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(step=step_var, **objects)
    manager = tf.train.CheckpointManager(
        checkpoint, run_dir, max_to_keep=5, checkpoint_name="ckpt"
    )
    manager.save(checkpoint_number=step)
    train_config = config_lib.TrainConfig(model=model_config)
    # As training writes it, atomically: an evaluator polling beside a
    # test that writes checkpoints must never read half a file.
    checkpoints.write_config(run_dir, train_config)
    return generator


def write_training_checkpoint(run_dir, model_config, step, seed=0):
    """ckpt-<step> laid out as training writes it: G's trainable weights
    are stored under g_optimizer/_trainable_variables/<N>/ (the optimizer
    is reached first), only u and the BN statistics under generator/.

    Returns:
        (the generator saved, the checkpoint prefix).
    """
    import keras

    tf.keras.utils.set_random_seed(seed)
    generator = models.build_generator(model_config)
    optimizer = keras.optimizers.Adam()
    optimizer.build(generator.trainable_variables)
    checkpoint = tf.train.Checkpoint(
        step=tf.Variable(step, dtype=tf.int64), generator=generator,
        g_optimizer=optimizer,
    )
    manager = tf.train.CheckpointManager(
        checkpoint, run_dir, max_to_keep=5, checkpoint_name="ckpt"
    )
    prefix = manager.save(checkpoint_number=step)
    train_config = config_lib.TrainConfig(model=model_config)
    # As training writes it, atomically: an evaluator polling beside a
    # test that writes checkpoints must never read half a file.
    checkpoints.write_config(run_dir, train_config)
    return generator, prefix


def g_kernel_key(prefix):
    """The checkpoint key of G's largest convolution kernel in a training
    checkpoint (under g_optimizer/_trainable_variables/)."""
    keys = [k for k, _ in tf.train.list_variables(prefix)
            if k.startswith("g_optimizer/_trainable_variables/")
            and k.endswith("VARIABLE_VALUE")]
    return max(keys, key=lambda k: np.size(tf.train.load_variable(prefix, k)))


def flip_byte_of(prefix, key):
    """Flips one byte in the middle of tensor `key` in the data file."""
    value = tf.train.load_variable(prefix, key)
    path = prefix + ".data-00000-of-00001"
    with open(path, "rb") as f:
        data = bytearray(f.read())
    raw = np.ascontiguousarray(value).tobytes()
    start = data.find(raw)
    assert start >= 0 and data.find(raw, start + 1) < 0, key
    data[start + len(raw) // 2] ^= 0xFF
    with open(path, "wb") as f:
        f.write(data)
