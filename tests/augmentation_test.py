"""Tests for sagan_tf.augmentation against independent numpy references."""

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.augmentation import diffaugment, parse_policy

_ALL = "color,translation,cutout"


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _tile(params, n):
    """Each [B, ...] parameter repeated n times along the batch."""
    return {
        key: np.tile(np.asarray(value), (n,) + (1,) * (np.ndim(value) - 1))
        for key, value in params.items()
    }


def _assert_gradient(fn, images, params):
    """Autodiff of <u, fn(x)> w.r.t. x against central differences.

    Every input element is perturbed at once, as one batch of 2 * x.size
    images (the parameters tiled to match), all in float64.
    """
    x = tf.constant(images, tf.float64)
    u = np.random.default_rng(1).standard_normal(images.shape)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(u * fn(x, params))
    grad = tape.gradient(loss, x).numpy().ravel()
    n, eps = images.size, 1e-3
    basis = np.eye(n).reshape((n,) + images.shape) * eps
    tiled = _tile(params, 2 * n)
    both = np.concatenate([images + basis, images - basis])
    out = fn(tf.constant(both.reshape((-1,) + images.shape[1:])), tiled)
    dots = np.sum(u * out.numpy().reshape((2 * n,) + images.shape),
                  axis=(1, 2, 3, 4))
    numeric = (dots[:n] - dots[n:]) / (2 * eps)
    assert np.abs(grad).max() > 0.1
    np.testing.assert_allclose(grad, numeric, rtol=1e-7, atol=1e-8)


# DiffAugment ------------------------------------------------------------


def test_parse_policy():
    assert parse_policy("") == () and parse_policy("  ") == ()
    assert parse_policy(_ALL) == ("color", "translation", "cutout")
    assert parse_policy("cutout, color") == ("cutout", "color")
    for bad in ["colour", "color,", "color,color", "translation,,cutout"]:
        with pytest.raises(ValueError, match="--diffaugment") as error:
            parse_policy(bad)
        if bad == "colour":
            assert "color, translation, cutout" in str(error.value)


def _np_color(x, b, s, c):
    x = x + b[:, None, None, None]
    mean = x.mean(axis=3, keepdims=True)
    x = (x - mean) * s[:, None, None, None] + mean
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * c[:, None, None, None] + mean


@pytest.mark.parametrize("b, s, c", [
    ([0.3, -0.45], [1.0, 1.0], [1.0, 1.0]),  # brightness alone
    ([0.0, 0.0], [0.2, 1.9], [1.0, 1.0]),  # saturation alone
    ([0.0, 0.0], [1.0, 1.0], [0.6, 1.4]),  # contrast alone
    ([0.3, -0.2], [0.0, 1.7], [1.3, 0.5]),
])
def test_diffaugment_color_matches_numpy(b, s, c):
    x = _images([2, 8, 8, 3])
    b, s, c = (np.array(v) for v in (b, s, c))
    params = {"brightness": b, "saturation": s, "contrast": c}
    out = diffaugment.apply(x, params, "color")
    np.testing.assert_allclose(
        out, _np_color(x.astype(np.float64), b, s, c), atol=2e-6
    )


def _np_shift(x, tx, ty):
    """out[i, j] = x[i + ty, j + tx], zeros where that leaves the image."""
    out = np.zeros_like(x)
    height, width = x.shape[:2]
    for i in range(height):
        for j in range(width):
            if 0 <= i + ty < height and 0 <= j + tx < width:
                out[i, j] = x[i + ty, j + tx]
    return out


def test_diffaugment_translation_is_a_zero_filled_shift():
    x = _images([4, 8, 8, 3])
    tx, ty = np.array([1, -2, 0, 9]), np.array([-1, 3, 0, -2])
    params = {"translation_x": tx, "translation_y": ty}
    out = diffaugment.apply(x, params, "translation").numpy()
    for k in range(4):
        np.testing.assert_array_equal(out[k], _np_shift(x[k], tx[k], ty[k]))
    # Against np.roll, zeroing what wrapped around: content moves by -t.
    rolled = np.roll(x[1], (-3, 2), axis=(0, 1))
    rolled[-3:] = 0
    rolled[:, :2] = 0
    np.testing.assert_array_equal(out[1], rolled)


def test_diffaugment_cutout_matches_numpy():
    size = 8
    x = _images([4, size, size, 3])
    cy, cx = np.array([0, 3, 8, 5]), np.array([8, 4, 0, 1])
    out = diffaugment.apply(x, {"cutout_y": cy, "cutout_x": cx}, "cutout")
    side = size // 2
    for k in range(4):
        mask = np.ones([size, size, 1], np.float32)
        for i in range(cy[k] - side // 2, cy[k] - side // 2 + side):
            for j in range(cx[k] - side // 2, cx[k] - side // 2 + side):
                if 0 <= i < size and 0 <= j < size:
                    mask[i, j] = 0
        np.testing.assert_array_equal(out[k], x[k] * mask)
    assert (out.numpy()[1] == 0).all(axis=-1).sum() == side * side


def test_diffaugment_runs_policies_in_the_order_written():
    x = _images([2, 8, 8, 3])
    params = diffaugment.sample_params(
        tf.random.Generator.from_seed(2), 2, 8, _ALL
    )
    both = diffaugment.apply(x, params, "cutout,color")
    one = diffaugment.apply(diffaugment.apply(x, params, "cutout"), params,
                            "color")
    np.testing.assert_array_equal(both, one)
    assert np.abs(both - diffaugment.apply(x, params, "color,cutout")).max(
    ) > 1e-3
    with pytest.raises(ValueError, match="translation_x"):
        diffaugment.apply(x, {"brightness": params["brightness"]},
                          "translation")


def test_diffaugment_sampled_ranges_and_reproducible():
    n = 4000
    p16 = diffaugment.sample_params(
        tf.random.Generator.from_seed(4), n, 16, _ALL
    )
    assert set(p16) == {"brightness", "saturation", "contrast",
                        "translation_x", "translation_y", "cutout_y",
                        "cutout_x"}
    for key, low, high in [("brightness", -0.5, 0.5), ("saturation", 0, 2),
                           ("contrast", 0.5, 1.5)]:
        value = p16[key].numpy()
        assert value.shape == (n,) and value.dtype == np.float32
        assert low <= value.min() < low + 0.01
        assert high - 0.01 < value.max() < high
    for key in ["translation_x", "translation_y"]:  # 16 // 8 = 2
        assert set(p16[key].numpy()) == {-2, -1, 0, 1, 2}
    for key in ["cutout_y", "cutout_x"]:  # side 8 (even): centres 0..16
        assert set(p16[key].numpy()) == set(range(17))
    p6 = diffaugment.sample_params(
        tf.random.Generator.from_seed(4), n, 6, "translation,cutout"
    )
    assert set(p6) == {"translation_x", "translation_y", "cutout_y",
                       "cutout_x"}
    assert set(p6["translation_x"].numpy()) == {0}  # 6 // 8 = 0
    assert set(p6["cutout_x"].numpy()) == set(range(6))  # side 3 (odd)
    again = diffaugment.sample_params(
        tf.random.Generator.from_seed(4), n, 16, _ALL
    )
    for key in p16:
        np.testing.assert_array_equal(p16[key], again[key])
    assert diffaugment.sample_params(
        tf.random.Generator.from_seed(4), 3, 16, ""
    ) == {}


_FIXED = {
    "brightness": [0.2, -0.4], "saturation": [0.3, 1.8],
    "contrast": [1.4, 0.6], "translation_x": [1, -2],
    "translation_y": [-1, 2], "cutout_y": [1, 5], "cutout_x": [4, 0],
}


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", _ALL])
def test_diffaugment_gradient_matches_finite_differences(policy):
    params = {key: np.array(value) for key, value in _FIXED.items()}
    _assert_gradient(
        lambda x, prm: diffaugment.apply(x, prm, policy),
        _images([2, 6, 6, 3]).astype(np.float64), params,
    )
