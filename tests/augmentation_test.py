"""Tests for sagan_tf.augmentation against independent numpy references."""

import math

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.augmentation import ada, adjust_p, diffaugment, parse_policy

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


def _np_diffaugment_color(x, b, s, c):
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
        out, _np_diffaugment_color(x.astype(np.float64), b, s, c), atol=2e-6
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


# ADA --------------------------------------------------------------------

_V = np.array([1, 1, 1, 0]) / math.sqrt(3)  # luma axis


def _np_rotation(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _np_geometric(name, value):
    """The reference's inverse matrix of one geometric transform."""
    if name == "xflip":
        return np.diag([1 - 2 * value, 1, 1])
    if name == "rotate90":
        return _np_rotation(math.pi / 2 * value)
    if name in ("xint", "xfrac"):
        return np.array([[1, 0, -value[0]], [0, 1, -value[1]], [0, 0, 1]])
    if name == "scale":
        return np.diag([1 / value, 1 / value, 1])
    if name == "aniso":
        return np.diag([1 / value, value, 1])
    return _np_rotation(value)  # rotate_pre, rotate_post


def _np_color(name, value):
    """The reference's 4×4 matrix of one colour transform."""
    eye, vv = np.eye(4), np.outer(_V, _V)
    if name == "brightness":
        out = np.eye(4)
        out[:3, 3] = value
        return out
    if name == "contrast":
        return np.diag([value, value, value, 1])
    if name == "lumaflip":
        return eye - 2 * vv * value
    if name == "saturation":
        return vv + (eye - vv) * value
    cross = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)
    out = np.eye(4)  # hue: Rodrigues' rotation about the luma axis
    out[:3, :3] = (math.cos(value) * np.eye(3) + math.sin(value) * cross
                   + (1 - math.cos(value)) * vv[:3, :3])
    return out


_VALUES = {  # one sample's values; the second sample gets _SECOND
    "xflip": 1.0, "rotate90": 3.0, "xint": [2.0, -1.0], "scale": 1.3,
    "rotate_pre": 0.7, "aniso": 0.8, "rotate_post": -2.1,
    "xfrac": [0.4, -1.7], "brightness": 0.3, "contrast": 1.6,
    "lumaflip": 1.0, "hue": 2.2, "saturation": 0.4,
}
_SECOND = {
    "xflip": 0.0, "rotate90": 1.0, "xint": [-3.0, 0.0], "scale": 0.7,
    "rotate_pre": -1.2, "aniso": 1.4, "rotate_post": 0.3,
    "xfrac": [-2.5, 0.6], "brightness": -0.6, "contrast": 0.5,
    "lumaflip": 0.0, "hue": -0.4, "saturation": 2.5,
}


def _batch(names):
    return {n: np.array([_VALUES[n], _SECOND[n]], np.float32) for n in names}


@pytest.mark.parametrize("name", ada.TRANSFORMS)
def test_ada_matrix_of_each_transform(name):
    matrices = ada.transform_matrices(_batch([name]))
    kind, build = (("geometric", _np_geometric) if name in ada.GEOMETRIC
                   else ("color", _np_color))
    other = "color" if kind == "geometric" else "geometric"
    for k, values in enumerate([_VALUES, _SECOND]):
        np.testing.assert_allclose(matrices[kind][k],
                                   build(name, values[name]), atol=1e-6)
        np.testing.assert_array_equal(matrices[other][k],
                                      np.eye(len(matrices[other][k])))


def test_ada_matrices_compose_in_the_reference_order():
    matrices = ada.transform_matrices(_batch(ada.TRANSFORMS))
    for k, values in enumerate([_VALUES, _SECOND]):
        geometric, color = np.eye(3), np.eye(4)
        for name in ada.GEOMETRIC:  # G_inv = G_inv @ T_inv
            geometric = geometric @ _np_geometric(name, values[name])
        for name in ada.COLOR:  # C = T @ C
            color = _np_color(name, values[name]) @ color
        np.testing.assert_allclose(matrices["geometric"][k], geometric,
                                   atol=1e-5)
        np.testing.assert_allclose(matrices["color"][k], color, atol=1e-5)
    with pytest.raises(ValueError, match="rotate90"):
        ada.transform_matrices({"rotate": np.zeros([2], np.float32)})


def _np_resample(images, matrices):
    """Bilinear at matrix @ (x, y, 1) of the reflect-padded images."""
    batch, height, width, _ = images.shape
    pad = 3 * max(height, width)
    padded = np.pad(images.astype(np.float64),
                    [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="reflect")
    out = np.zeros(images.shape)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                x, y, _ = matrices[b] @ [j - (width - 1) / 2,
                                         i - (height - 1) / 2, 1]
                col, row = x + (width - 1) / 2 + pad, y + (height - 1) / 2 + pad
                c0, r0 = math.floor(col), math.floor(row)
                fc, fr = col - c0, row - r0
                out[b, i, j] = (
                    (1 - fr) * ((1 - fc) * padded[b, r0, c0]
                                + fc * padded[b, r0, c0 + 1])
                    + fr * ((1 - fc) * padded[b, r0 + 1, c0]
                            + fc * padded[b, r0 + 1, c0 + 1]))
    return out


def _identity_color(batch):
    return np.tile(np.eye(4, dtype=np.float32), (batch, 1, 1))


@pytest.mark.parametrize("matrix", [
    _np_rotation(math.radians(30)),  # non-multiple of 90°
    np.diag([1 / 1.3, 1.3, 1]),  # anisotropic scale
    np.array([[1, 0, -0.35], [0, 1, 1.7], [0, 0, 1]]),  # fractional shift
    np.diag([2.5, 2.5, 1]) @ _np_rotation(-1.0),  # zoom-out: 2+ mirrors
])
def test_ada_resampling_matches_numpy(matrix):
    x = _images([2, 8, 8, 3])
    matrices = np.stack([matrix, np.linalg.inv(matrix)]).astype(np.float32)
    out = ada.apply(x, {"geometric": matrices, "color": _identity_color(2)})
    np.testing.assert_allclose(out, _np_resample(x, matrices), atol=1e-5)


def test_ada_blits_are_exact():
    x = _images([2, 8, 8, 3])
    color = _identity_color(2)

    def blit(values):
        matrices = ada.transform_matrices(
            {k: np.array(v, np.float32) for k, v in values.items()}
        )
        return ada.apply(x, {"geometric": matrices["geometric"],
                             "color": color}).numpy()

    np.testing.assert_array_equal(blit({"xflip": [1, 0]})[0],
                                  np.flip(x[0], axis=1))
    for k in range(4):
        np.testing.assert_array_equal(blit({"rotate90": [k, k]}),
                                      np.rot90(x, k, axes=(1, 2)))
    # A shift by (tx, ty) = (3, -2): out[i, j] = reflected x[i + 2, j - 3].
    pad = np.pad(x, [(0, 0), (8, 8), (8, 8), (0, 0)], mode="reflect")
    shifted = pad[:, 10:18, 5:13]
    np.testing.assert_array_equal(blit({"xint": [[3, -2]] * 2}), shifted)
    # Together: flip first, then rotate, then shift (G = F⁻¹ R⁻¹ T⁻¹).
    both = np.rot90(np.flip(x, axis=2), 1, axes=(1, 2))
    pad = np.pad(both, [(0, 0), (8, 8), (8, 8), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(
        blit({"xflip": [1, 1], "rotate90": [1, 1], "xint": [[3, -2]] * 2}),
        pad[:, 10:18, 5:13],
    )


@pytest.mark.parametrize("name", ada.COLOR)
def test_ada_color_transform_matches_numpy(name):
    x = _images([2, 6, 6, 3])
    color = np.stack([_np_color(name, _VALUES[name]),
                      _np_color(name, _SECOND[name])]).astype(np.float32)
    geometric = np.tile(np.eye(3, dtype=np.float32), (2, 1, 1))
    out = ada.apply(x, {"geometric": geometric, "color": color})
    expected = np.einsum("bij,bhwj->bhwi", color[:, :3, :3].astype(float),
                         x.astype(float)) + color[:, None, None, :3, 3]
    np.testing.assert_allclose(out, expected, atol=2e-6)
    if name == "hue":  # rotates about grey: the channel mean is kept
        np.testing.assert_allclose(out.numpy().mean(-1), x.mean(-1),
                                   atol=2e-6)
        assert np.abs(out - x).max() > 0.1


def test_ada_p0_is_identity_and_p1_applies_everything():
    x = _images([4, 8, 8, 3])
    rng = tf.random.Generator.from_seed(6)
    off = ada.sample_transforms(rng, 4, 8, tf.constant(0.0))
    params = ada.transform_matrices(off["value"])
    np.testing.assert_array_equal(params["geometric"],
                                  np.tile(np.eye(3), (4, 1, 1)))
    np.testing.assert_array_equal(params["color"], _identity_color(4))
    np.testing.assert_array_equal(ada.apply(x, params), x)
    for name in ada.TRANSFORMS:
        assert not off["on"][name].numpy().any(), name
        np.testing.assert_array_equal(off["value"][name], ada.IDENTITY[name])
    on = ada.sample_transforms(rng, 64, 8, tf.Variable(1.0))
    for name in ada.TRANSFORMS:
        assert on["on"][name].numpy().all(), name
        if name not in ("xflip", "rotate90", "xint", "lumaflip"):
            # A continuous draw is never its identity value; the discrete
            # ones are on but may draw i = 0 (flip with p / 2, ...).
            assert (on["value"][name].numpy() != ada.IDENTITY[name]).all()


def test_ada_sampled_ranges_and_reproducible():
    n, size = 4000, 32
    draws = ada.sample_transforms(
        tf.random.Generator.from_seed(8), n, size, 1.0
    )["value"]
    v = {name: value.numpy() for name, value in draws.items()}
    assert set(v["xflip"]) == {0, 1} and set(v["lumaflip"]) == {0, 1}
    assert set(v["rotate90"]) == {0, 1, 2, 3}
    assert v["xint"].shape == (n, 2)
    assert set(v["xint"].ravel()) == set(range(-4, 5))  # round(0.125 * 32)
    for name in ("rotate_pre", "rotate_post", "hue"):
        assert -math.pi <= v[name].min() < -3.1 and 3.1 < v[name].max() < 4
    for name, std in [("scale", 0.2), ("aniso", 0.2), ("contrast", 0.5),
                      ("saturation", 1.0)]:  # log2-normal
        assert abs(np.log2(v[name]).mean()) < 0.1 * std, name
        assert abs(np.log2(v[name]).std() / std - 1) < 0.05, name
    assert abs(v["brightness"].std() / 0.2 - 1) < 0.05
    assert abs(v["xfrac"].std() / (0.125 * size) - 1) < 0.05
    half = ada.sample_transforms(
        tf.random.Generator.from_seed(8), n, size, 0.5
    )["on"]
    p_rot = 1 - math.sqrt(0.5)
    for name, on in half.items():
        share = on.numpy().mean()
        expected = p_rot if name.startswith("rotate_") else 0.5
        assert abs(share - expected) < 0.03, name
    either = half["rotate_pre"].numpy() | half["rotate_post"].numpy()
    assert abs(either.mean() - 0.5) < 0.03
    first = ada.sample_params(tf.random.Generator.from_seed(9), 4, 8, 0.7)
    again = ada.sample_params(tf.random.Generator.from_seed(9), 4, 8, 0.7)
    other = ada.sample_params(tf.random.Generator.from_seed(10), 4, 8, 0.7)
    for key in ("geometric", "color"):
        np.testing.assert_array_equal(first[key], again[key])
        assert np.abs(first[key] - other[key]).max() > 1e-3


_GROUPS = {
    "all": ada.TRANSFORMS,
    "blit": ("xflip", "rotate90", "xint"),
    "geometric": ("scale", "rotate_pre", "aniso", "rotate_post", "xfrac"),
    "color": ada.COLOR,
}


@pytest.mark.parametrize("group", sorted(_GROUPS))
def test_ada_gradient_matches_finite_differences(group):
    values = ada.sample_transforms(
        tf.random.Generator.from_seed(12), 2, 6, 1.0
    )["value"]
    params = ada.transform_matrices(
        {name: values[name] for name in _GROUPS[group]}
    )
    _assert_gradient(ada.apply, _images([2, 6, 6, 3]).astype(np.float64),
                     {key: value.numpy() for key, value in params.items()})


def test_adjust_p_follows_the_reference_law():
    step = 64 * ada.ADA_INTERVAL / ada.ADA_SPEED_IMAGES  # 0.000512
    assert step == 0.000512
    p, seen = 0.0, []
    for rt in [0.5, 0.7, 0.9, 0.6, 0.95, 0.2, 0.1, 0.0, 0.3]:
        p = adjust_p(p, rt, 0.6, 64 * ada.ADA_INTERVAL)
        seen.append(float(p))
    np.testing.assert_allclose(
        seen, [0.0, 0.000512, 0.001024, 0.001024, 0.001536, 0.001024,
               0.000512, 0.0, 0.0], rtol=1e-6, atol=1e-9,
    )
    seen = []
    p = tf.Variable(0.9996)
    for rt in [0.8, 0.8, 0.4]:
        p.assign(adjust_p(p, rt, 0.6, 256))
        seen.append(float(p))
    np.testing.assert_allclose(seen, [1.0, 1.0, 0.999488], rtol=1e-7)
    assert float(adjust_p(0.0, 1.0, 0.6, ada.ADA_SPEED_IMAGES)) == 1.0
    assert float(adjust_p(0.25, -1.0, 0.6, 50_000, 200_000)) == 0.0
    with pytest.raises(ValueError, match="speed_images"):
        adjust_p(0.5, 0.7, 0.6, 256, speed_images=0)


# Both methods -----------------------------------------------------------


def _both(x, seed, p=0.8):
    rng = tf.random.Generator.from_seed(seed)
    size = x.shape[1]
    da_params = diffaugment.sample_params(rng, x.shape[0], size, _ALL)
    ada_params = ada.sample_params(rng, x.shape[0], size, p)
    return da_params, ada_params


def test_xla_matches_eager():
    x = tf.constant(_images([2, 16, 16, 3]))
    da_params, ada_params = _both(x, 14)
    da_xla = tf.function(diffaugment.apply, jit_compile=True)
    np.testing.assert_allclose(da_xla(x, da_params, _ALL),
                               diffaugment.apply(x, da_params, _ALL),
                               atol=1e-6)
    ada_xla = tf.function(ada.apply, jit_compile=True)
    np.testing.assert_allclose(ada_xla(x, ada_params),
                               ada.apply(x, ada_params), atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_low_precision_in_low_precision_out(dtype):
    x = tf.cast(_images([2, 8, 8, 3]), dtype)
    da_params, ada_params = _both(x, 15)
    for fn, params in [(lambda y, prm: diffaugment.apply(y, prm, _ALL),
                        da_params), (ada.apply, ada_params)]:
        out = fn(x, params)
        assert out.dtype == dtype
        full = fn(tf.cast(x, tf.float32), params).numpy()
        np.testing.assert_allclose(tf.cast(out, tf.float32), full,
                                   rtol=1 / 64, atol=1e-2)


def test_two_replicas_draw_their_own_params(two_cpu_strategy):
    x = tf.constant(_images([2, 8, 8, 3]))
    with two_cpu_strategy.scope():
        rng = tf.random.Generator.from_seed(16)

    @tf.function
    def step():
        def replica_fn():
            da_params = diffaugment.sample_params(rng, 2, 8, _ALL)
            ada_params = ada.sample_params(rng, 2, 8, tf.constant(0.9))
            return (da_params["brightness"], ada_params["color"],
                    diffaugment.apply(x, da_params, _ALL),
                    ada.apply(x, ada_params))

        return two_cpu_strategy.run(replica_fn)

    results = [two_cpu_strategy.experimental_local_results(r)
               for r in step()]
    for first, second in results:
        assert first.shape == second.shape
        assert np.abs(first - second).max() > 1e-3
