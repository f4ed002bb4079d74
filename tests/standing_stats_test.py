"""Standing BN statistics: numpy references, untouched weights, evaluator."""

import dataclasses
import json
import os

import eval_fixtures as fx
import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import config as config_lib
from sagan_tf import evaluation, layers, models
from sagan_tf.evaluation import inception, standing_stats

MODEL = fx.tiny_model_config()


def _values(variables):
    return {v.path: v.numpy().copy() for v in variables}


def _bn_paths(generator):
    return {v.path for layer in standing_stats.batch_norm_layers(generator)
            for v in (layer.moving_mean, layer.moving_variance)}


class _Unconditional(keras.layers.Layer):
    """Calls the plain BatchNorm as model(x, labels) (labels unused)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = layers.BatchNorm()

    def build(self, x_shape, labels_shape=None):
        self.bn.build(x_shape)

    def call(self, x, labels, training=False):
        del labels
        return self.bn(x, training=training)


def _batches(rng, count, shape, num_classes):
    # Channels with different offsets and scales.
    scale = rng.uniform(0.5, 3.0, shape[-1])
    offset = rng.uniform(-2.0, 2.0, shape[-1])
    return [
        ((rng.standard_normal(shape) * scale + offset).astype(np.float32),
         rng.integers(0, num_classes, shape[0]).astype(np.int32))
        for _ in range(count)
    ]


@pytest.mark.parametrize("conditional", [True, False])
def test_single_layer_gets_mean_batch_moments(conditional):
    rng = np.random.default_rng(0)
    shape = (5, 3, 4, 6)
    if conditional:
        model = layers.ConditionalBatchNorm(3)
        model.build(shape)
        bn = model
    else:
        model = _Unconditional()
        model.build(shape)
        bn = model.bn
    # Stale averages that the recomputation must overwrite.
    bn.moving_mean.assign(rng.standard_normal(6).astype(np.float32))
    bn.moving_variance.assign(rng.uniform(2, 3, 6).astype(np.float32))
    trainable = _values(model.trainable_variables)
    momentum = bn.momentum
    batches = _batches(rng, 4, shape, 3)

    used = standing_stats.recompute_moving_statistics(
        model, batches, bn_layers=[bn]
    )

    x = np.stack([b[0] for b in batches]).astype(np.float64)
    n = shape[0] * shape[1] * shape[2]
    means = x.mean(axis=(1, 2, 3))  # [batches, C]
    variances = x.var(axis=(1, 2, 3))  # biased, per batch
    if not conditional:
        # The head BN feeds its average the Bessel-corrected variance.
        variances = variances * n / (n - 1)
    assert used == 4
    np.testing.assert_allclose(bn.moving_mean.numpy(), means.mean(0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               variances.mean(0), rtol=1e-5)
    assert bn.momentum == momentum
    for path, value in _values(model.trainable_variables).items():
        np.testing.assert_array_equal(value, trainable[path])


@pytest.fixture(scope="module")
def generator():
    keras.utils.set_random_seed(1)
    g = models.build_generator(MODEL)
    g(tf.zeros([2, MODEL.z_dim]), tf.zeros([2], tf.int32))
    return g


def test_generator_only_bn_statistics_change(generator):
    saved = [(v, v.numpy()) for v in generator.variables]
    before = _values(generator.variables)
    bn_paths = _bn_paths(generator)
    # Mean and variance of two CBN layers per block and of the head.
    assert len(bn_paths) == 2 * (2 * len(generator.blocks) + 1)
    assert standing_stats.apply_standing_stats(generator, 0, 8, seed=0) == 0
    for path, value in _values(generator.variables).items():
        np.testing.assert_array_equal(value, before[path])

    standing_stats.apply_standing_stats(generator, 2, 8, seed=0)
    after = _values(generator.variables)
    u_paths = [p for p in after if p.endswith("/u")]
    assert len(u_paths) >= 5
    for path, value in after.items():
        if path in bn_paths:
            assert not np.allclose(value, before[path]), path
        else:
            # Kernels, gammas, betas and every spectral-norm u.
            np.testing.assert_array_equal(value, before[path], err_msg=path)
    momenta = [layer.momentum
               for layer in standing_stats.batch_norm_layers(generator)]
    assert momenta == [0.999] * (len(momenta) - 1) + [0.9999]
    for v, value in saved:
        v.assign(value)


def test_one_batch_makes_inference_reproduce_training_mode(generator):
    # With the statistics of a single batch, G in inference mode must draw
    # what G in training mode draws from that batch (u is put back, which
    # is also what the training pass computes sigma from).
    saved = [(v, v.numpy()) for v in generator.variables]
    rng = np.random.default_rng(4)
    z = rng.standard_normal((16, MODEL.z_dim)).astype(np.float32)
    labels = rng.integers(0, MODEL.number_classes, 16).astype(np.int32)
    expected = generator(z, labels, training=True).numpy()
    for v, value in saved:
        v.assign(value)
    # update_sn=False: these inference calls must read the u the training
    # pass read (the released default would advance u on each call).
    stale = generator(z, labels, training=False, update_sn=False).numpy()
    assert np.abs(stale - expected).max() > 1e-2

    standing_stats.recompute_moving_statistics(generator, [(z, labels)])
    # Only the head's n / (n - 1) variance factor (n = 16 * 32 * 32) is
    # left between the two.
    np.testing.assert_allclose(
        generator(z, labels, training=False, update_sn=False).numpy(),
        expected,
        atol=1e-3,
    )
    for v, value in saved:
        v.assign(value)


def test_negative_count_is_rejected(generator):
    with pytest.raises(ValueError, match="--standing_stats_batches"):
        standing_stats.apply_standing_stats(generator, -1, 8)
    with pytest.raises(ValueError, match="--standing_stats_batch_size"):
        evaluation.GeneratorRestorer(MODEL, standing_stats_batches=2,
                                     standing_stats_batch_size=0)


def test_evaluator_applies_it_without_touching_the_checkpoint(tmp_path):
    data_dir = str(tmp_path / "data")
    fx.write_records(data_dir, 32, MODEL.image_size, MODEL.number_classes)
    module = str(tmp_path / "module")
    inception.save_classifier_as_savedmodel(fx.StandinClassifier(), module)
    config = config_lib.EvalConfig(
        model=MODEL,
        data=config_lib.DataConfig(data_dir=data_dir,
                                   shuffle_buffer_size=32, seed=0),
        checkpoint_dir=str(tmp_path / "checkpoint"),
        eval_sample_size=16, dcgan_generator_batch_size=8,
        eval_interval_secs=0.05, num_evals=1, inception_path=module,
        kid_sample_size=0, seed=0,
    )
    run_dir = evaluation.run_dir(config)
    os.makedirs(run_dir)
    fx.write_checkpoint(run_dir, MODEL, step=3)
    path = tf.train.latest_checkpoint(run_dir)
    on_disk = dict(tf.train.list_variables(path))
    stored = {name: tf.train.load_variable(path, name) for name in on_disk}

    (released,) = evaluation.Evaluator(config).run()
    standing = dataclasses.replace(config, standing_stats_batches=2)
    evaluator = evaluation.Evaluator(standing)
    # The same checkpoint is evaluated again: the released result does not
    # count for the standing-statistics one.
    (result,) = evaluator.run()
    assert released["standing_stats_batches"] == 0
    assert result["standing_stats_batches"] == 2
    assert result["checkpoint"] == released["checkpoint"] == "ckpt-3"
    assert result["fid"] != released["fid"]
    with open(evaluator.results_path) as f:
        lines = [json.loads(line) for line in f]
    assert [r["standing_stats_batches"] for r in lines] == [0, 2]
    assert evaluator.evaluated() == {"ckpt-3"}
    assert os.listdir(evaluator.summary_dir)

    # In memory the head's average moved; on disk nothing did.
    restored = evaluator.restorer.generator.g_bn.moving_mean.numpy()
    name = [n for n in on_disk if "g_bn/moving_mean" in n]
    assert len(name) == 1
    assert not np.allclose(restored, stored[name[0]])
    for key, value in stored.items():
        np.testing.assert_array_equal(tf.train.load_variable(path, key),
                                      value)
