"""Attention figures: TensorBoard summaries and the figure layout."""

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import models
from sagan_tf.evaluation import attention_maps

SIZE, CLASSES = 32, 4
PANEL = 128  # 32 x 4
GUTTER = 2


def _models(attention_resolution=16):
    g = models.Generator(num_classes=CLASSES, image_size=SIZE, z_dim=16,
                         gf_dim=8, attention_resolution=attention_resolution)
    d = models.Discriminator(num_classes=CLASSES, image_size=SIZE, df_dim=8,
                             attention_resolution=attention_resolution)
    g.build((None, 16), (None,))
    d.build((None, SIZE, SIZE, 3), (None,))
    return g, d


def _title_height(figure, rows):
    return figure.shape[0] - rows * (PANEL + GUTTER) + GUTTER


def test_summary_draws_every_attention_layer_and_moves_no_state():
    g, d = _models()
    # Training calls move u and the BN statistics off their initial values.
    z = tf.random.stateless_normal([4, 16], [1, 2])
    labels = tf.constant([0, 1, 2, 3])
    d(g(z, labels, training=True), labels, training=True)
    variables = g.variables + d.variables
    before = [v.numpy().copy() for v in variables]

    summary = attention_maps.AttentionSummary(g, d, num_samples=3)
    images = summary.images()

    for v, value in zip(variables, before):
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)
    assert sorted(images) == ["attention/d_non_local",
                              "attention/g_non_local"]
    for tag, image in images.items():
        assert image.dtype == np.uint8 and image.shape[0] == 1
        figure = image[0]
        assert figure.shape[1] == 5 * (PANEL + GUTTER) - GUTTER, tag
        assert _title_height(figure, 3) > 20, tag

    # The first panel of row 0 is G's image in inference mode, upsampled
    # (its corner is far from every query marker).
    expected = g(summary.z[:1], summary.labels[:1], training=False,
                 update_sn=False)[0].numpy()
    expected = np.clip(np.round((expected + 1) * 127.5), 0, 255)
    figure = images["attention/g_non_local"][0]
    top = _title_height(figure, 3)
    panel = figure[top:top + PANEL, :PANEL].astype(np.float64)
    # Upsampled by 4 (nearest): each 4x4 block is one pixel of the image.
    np.testing.assert_array_equal(panel[:4, :4],
                                  np.broadcast_to(expected[0, 0], (4, 4, 3)))
    np.testing.assert_array_equal(panel[100:104, 4:8],
                                  np.broadcast_to(expected[25, 1], (4, 4, 3)))


def test_baseline_models_have_no_figures():
    g, d = _models(attention_resolution=None)
    assert attention_maps.AttentionSummary(g, d).figures() == {}


def test_figure_marks_queries_in_distinct_colours():
    images = np.full((2, SIZE, SIZE, 3), 128, np.uint8)
    queries = attention_maps.default_queries(SIZE)
    maps = np.zeros((2, len(queries), SIZE, SIZE), np.float32)
    figure = attention_maps.figure(images, maps, queries, "a title")
    top = _title_height(figure, 2)
    assert top > 20
    # The title strip holds text: more than its background colour.
    assert len(np.unique(figure[:top].reshape(-1, 3), axis=0)) > 2
    colours = []
    for i, (row, col) in enumerate(queries):
        y, x = top + row * 4 + 2, col * 4 + 2
        first = tuple(figure[y, x])  # all queries on the image panel
        own = tuple(figure[y, (i + 1) * (PANEL + GUTTER) + col * 4 + 2])
        assert first == own == attention_maps.QUERY_COLOURS[i][1]
        colours.append(own)
    assert len(set(colours)) == len(queries)


def test_map_heat_follows_beta():
    # Query (8, 8) -> location (4, 4) of the 16x16 grid attends to key
    # (3, 5) of the 8x8 key grid, i.e. image pixels [12:16, 20:24].
    beta = np.full((1, 256, 64), 1e-3, np.float32)
    beta[0, 4 * 16 + 4, 3 * 8 + 5] = 1.0
    images = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    maps = attention_maps.attention_maps(beta, [(8, 8)], SIZE)
    figure = attention_maps.figure(images, maps, [(8, 8)], "t")
    top = _title_height(figure, 1)
    panel = figure[top:top + PANEL, PANEL + GUTTER:].astype(int)
    # The peak is white-hot (0.6 * 255 on black), the rest nearly black.
    np.testing.assert_array_equal(panel[12 * 4 + 1, 20 * 4 + 1], [153] * 3)
    assert panel[100, 100].max() <= 2


def test_bad_beta_shape_raises():
    with pytest.raises(ValueError, match="beta of shape"):
        attention_maps.attention_maps(np.zeros((1, 10, 4)), [(0, 0)], SIZE)
