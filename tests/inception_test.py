"""Tests of sagan_tf.inception: resize, both formats, the load error."""

import os

import eval_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.evaluation import inception


def _numpy_tf1_bilinear(images, size):
    """TF1 resize_bilinear: source = output index * in / out, no centres."""
    _, h, w, _ = images.shape
    out = np.zeros((images.shape[0], size, size, images.shape[3]))
    for i in range(size):
        y = i * h / size
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, h - 1), y - y0
        for j in range(size):
            x = j * w / size
            x0 = int(np.floor(x))
            x1, dx = min(x0 + 1, w - 1), x - x0
            top = images[:, y0, x0] * (1 - dx) + images[:, y0, x1] * dx
            bottom = images[:, y1, x0] * (1 - dx) + images[:, y1, x1] * dx
            out[:, i, j] = top * (1 - dy) + bottom * dy
    return out


def test_resize_matches_tf1_bilinear_without_half_pixel_centres():
    images = np.random.default_rng(0).uniform(-1, 1, (2, 5, 5, 3))
    got = inception.resize_like_tf1(tf.constant(images, tf.float32), 13)
    np.testing.assert_allclose(
        got.numpy(), _numpy_tf1_bilinear(images, 13), atol=1e-5
    )
    # Half-pixel centres (TF2's default) would give other values.
    tf2 = tf.image.resize(tf.constant(images, tf.float32), [13, 13])
    assert np.abs(tf2.numpy() - got.numpy()).max() > 1e-2


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("classifier"))
    model = fx.StandinClassifier()
    module_dir = os.path.join(root, "module")
    graph_path = os.path.join(root, "standin.pb")
    inception.save_classifier_as_savedmodel(model, module_dir)
    inception.save_classifier_as_graphdef(model, graph_path)
    return model, module_dir, graph_path


def test_both_formats_give_the_classifier_outputs(saved):
    model, module_dir, graph_path = saved
    images = tf.random.stateless_uniform([3, 32, 32, 3], [1, 2], -1, 1)
    resized = _numpy_tf1_bilinear(images.numpy(), 299).astype(np.float32)
    pool, logits = model(tf.constant(resized))
    for path in (module_dir, graph_path):
        classifier = inception.load_classifier(path)
        got_pool, got_logits = classifier(images)
        assert got_pool.shape == (3, fx.FEATURE_DIM)
        np.testing.assert_allclose(
            got_pool.numpy(), pool.numpy().reshape(3, -1), atol=1e-4
        )
        np.testing.assert_allclose(got_logits.numpy(), logits.numpy(),
                                   atol=1e-4)
        # Loaded once per process.
        assert inception.load_classifier(path) is classifier


def test_graphdef_has_inception_tensor_names(saved):
    _, _, graph_path = saved
    graph_def = tf.compat.v1.GraphDef()
    with open(graph_path, "rb") as f:
        graph_def.ParseFromString(f.read())
    names = {node.name: node.op for node in graph_def.node}
    assert names["Mul"] == "Mul"
    assert "pool_3" in names and "logits" in names
    # No variables left: the graph is frozen.
    assert not any("Variable" in op for op in names.values())


def test_module_is_called_like_tfgan_does(saved):
    # TF-GAN 2.1: hub.load(handle)(images) -> dict with pool_3 and logits.
    import tensorflow_hub as hub

    _, module_dir, _ = saved
    out = hub.load(module_dir)(tf.zeros([2, 299, 299, 3]))
    assert set(out) == {"pool_3", "logits"}


def test_graphdef_without_the_names_is_rejected(tmp_path):
    with tf.Graph().as_default() as graph:
        tf.compat.v1.placeholder(tf.float32, [None, 299, 299, 3], name="x")
    path = str(tmp_path / "bad.pb")
    with open(path, "wb") as f:
        f.write(graph.as_graph_def().SerializeToString())
    with pytest.raises(inception.InceptionLoadError, match="Mul:0"):
        inception.load_classifier(path)


def test_missing_inception_says_how_to_supply_a_local_copy(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub_cache"))
    # Unresolvable host: behaves as having no network.
    url = "https://tfhub.invalid/tensorflow/tfgan/eval/inception/1"
    with pytest.raises(inception.InceptionLoadError) as info:
        inception.load_classifier(url)
    message = str(info.value)
    assert "--inception_path" in message
    assert inception.FROZEN_GRAPH_URL in message
    assert inception.FROZEN_GRAPH_NAME in message
    assert "tf-hub-format=compressed" in message
    with pytest.raises(inception.InceptionLoadError, match="no such file"):
        inception.load_classifier(str(tmp_path / "absent.pb"))
