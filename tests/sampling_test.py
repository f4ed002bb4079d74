"""Sample grids, .npz, interpolation and attention maps of a tiny G."""

import dataclasses
import glob
import os

import eval_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import config as config_lib
from sagan_tf import models
from sagan_tf.evaluation import attention_maps, sampling

MODEL = fx.tiny_model_config()


def test_tile_puts_row_r_in_band_r():
    images = np.zeros((2, 3, 4, 4, 3), np.uint8)
    images[1, 2] = 7
    grid = sampling.tile(images)
    assert grid.shape == (8, 12, 3)
    assert (grid[4:, 8:] == 7).all() and grid[:4].sum() == 0


def test_attention_maps_follow_the_query_location():
    res, size = 8, 32
    beta = np.full((1, res * res, (res // 2) ** 2), 1e-3, np.float32)
    # Query at attention location (row 2, col 5) attends to key (3, 1).
    beta[0, 2 * res + 5, 3 * (res // 2) + 1] = 1.0
    maps = attention_maps.attention_maps(
        beta, [(2 * 4 + 1, 5 * 4 + 3)], size, res)
    assert maps.shape == (1, 1, size, size)
    # Key (3, 1) of the 4x4 key grid covers pixels [24:32, 8:16].
    assert (maps[0, 0, 24:32, 8:16] == 1.0).all()
    assert maps[0, 0].sum() == pytest.approx(64 + (size * size - 64) * 1e-3)
    with pytest.raises(ValueError, match="attention_queries"):
        attention_maps.attention_maps(beta, [(40, 0)], size, res)


def _read_png(path):
    return tf.io.decode_png(tf.io.read_file(path)).numpy()


def test_write_samples(tmp_path):
    generator = models.build_generator(MODEL)
    config = config_lib.EvalConfig(
        model=MODEL, sample_classes=(2, 0), samples_per_class=3,
        num_npz_samples=10, dcgan_generator_batch_size=4,
        interpolation_steps=5, seed=0,
    )
    out = str(tmp_path / "samples")
    # The grid is G's first call; each call advances u (released default).
    initial = [(v, v.numpy()) for v in generator.variables]
    paths = sampling.write_samples(
        generator, config, out, step=11,
        attention_resolution=MODEL.generator_attention(),
    )
    s = MODEL.image_size
    grid = _read_png(paths["class_grid"])
    assert grid.shape == (2 * s, 3 * s, 3)
    assert _read_png(paths["interpolation"]).shape == (s, 5 * s, 3)
    # A title strip, then one row per class: image + one map per default
    # query, in panels of at least 128 px with 2 px gutters.
    panel = s * -(-128 // s)
    attention = _read_png(paths["attention"])
    assert panel >= 128
    assert attention.shape[1:] == (5 * panel + 4 * 2, 3)
    assert attention.shape[0] > 2 * panel + 2 + 20
    with np.load(paths["samples"]) as data:
        assert data["images"].shape == (10, s, s, 3)
        assert data["images"].dtype == np.uint8
        assert data["labels"].shape == (10,)
        assert set(data["labels"]) <= set(range(MODEL.number_classes))

    # Row r of the grid is class sample_classes[r]: regenerate row 0.
    for v, value in initial:
        v.assign(value)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((6, MODEL.z_dim))
    images = sampling.to_uint8(generator(
        tf.constant(z, tf.float32), tf.constant([2, 2, 2, 0, 0, 0]),
        training=False))
    np.testing.assert_allclose(
        grid[:s, :s].astype(int), images[0].astype(int), atol=1
    )

    tags = set()
    for path in glob.glob(os.path.join(out, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update((v.tag, event.step) for v in event.summary.value)
    assert ("sample/attention", 11) in tags
    assert ("sample/class_grid", 11) in tags


def test_baseline_generator_has_no_attention_figure(tmp_path):
    model = dataclasses.replace(MODEL, generator_type="baseline")
    config = config_lib.EvalConfig(model=model, num_npz_samples=2,
                                   sample_classes=(1,), samples_per_class=2,
                                   interpolation_steps=2)
    paths = sampling.write_samples(
        models.build_generator(model), config, str(tmp_path), 0,
        attention_resolution=model.generator_attention(),
    )
    assert "attention" not in paths
