"""Adaptive discriminator augmentation (Karras et al., NeurIPS 2020).

The 'bgc' pipeline of stylegan2-ada-pytorch (`training/augment.py`,
`AugmentPipe` with its default strengths), each transform applied to each
sample independently with probability p:

  pixel blitting  xflip (x -> -x for i ~ U{0, 1}), rotate90 (by i * 90°,
                  i ~ U{0, ..., 3}, as np.rot90(image, i) turns the
                  [H, W] array), xint (integer translation by
                  round(t * S), t ~ U[-0.125, 0.125) per axis)
  geometric       scale (isotropic, 2^N(0, 0.2²)), rotate_pre (arbitrary
                  rotation, U[-pi, pi)), aniso (x * s and y / s,
                  s = 2^N(0, 0.2²)), rotate_post (as rotate_pre), xfrac
                  (translation by N(0, 0.125²) * S per axis); the two
                  rotations each with p_rot = 1 - sqrt(1 - p), so that one
                  or both happen with probability p
  colour          brightness (+N(0, 0.2²)), contrast (x 2^N(0, 0.5²)),
                  lumaflip (Householder reflection about the luma axis
                  v = (1, 1, 1) / sqrt(3), i ~ U{0, 1}), hue (rotation
                  about v by U[-pi, pi)), saturation (the part orthogonal
                  to v x 2^N(0, 1))

As in the reference, the geometric transforms accumulate into one inverse
3×3 matrix per sample, G = G @ T⁻¹ in the order above (output pixel ->
input pixel, centred pixel coordinates: see `resample.py`), and the colour
transforms into one 4×4 matrix per sample, C = T @ C, applied to
(r, g, b, 1) after the resampling. The images are in [-1, 1], as the
reference's.

`sample_transforms` draws from a `tf.random.Generator`, for each transform
in the order above: its value, then a uniform for whether it happens (the
reference's order; shapes [B], or [B, 2] and [B, 1] for xint and xfrac).
`transform_matrices` turns the values into matrices, `sample_params` is
both, and `apply` is deterministic given the matrices.

Simplifications against the reference:
  * One bilinear resampling of the image at the transformed pixel centres.
    The reference pads, upsamples 2× with the sym6 wavelet filter,
    grid-samples bilinearly and downsamples 2× with the same filter; here
    there is no low-pass filter, so zoom-outs and rotations alias more and
    fractional shifts are slightly blurrier. Matrices with integer entries
    (flips, rot90, integer shifts on their own) are exact in both.
  * Reflect padding without end: the image is mirrored about its first
    and last pixel centres as often as needed. The reference mirrors once,
    inside a margin of at most S - 1 pixels, and reads zeros beyond
    (reached only by strong zoom-outs).
  * Only 'bgc': no image-space filtering, noise or cutout; RGB only (the
    reference also takes one channel).
  * The draws are the reference's distributions in its order, from a
    tf.random.Generator, not torch's numbers.
  * `adjust_p` clamps p at 1 as well as at 0; the reference clamps only at
    0 (`.max(0)`), where a p above 1 acts as 1 but takes longer to come
    down.
"""

import math

import tensorflow as tf

from sagan_tf.augmentation import resample

ADA_INTERVAL = 4  # Minibatches between two adjustments of p.
ADA_SPEED_IMAGES = 500_000  # Real images over which p can move by 1.

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate_pre", "aniso",
             "rotate_post", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
TRANSFORMS = GEOMETRIC + COLOR

# The reference AugmentPipe's default strengths.
XINT_MAX = 0.125
SCALE_STD = 0.2
ROTATE_MAX = 1.0
ANISO_STD = 0.2
XFRAC_STD = 0.125
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5
HUE_MAX = 1.0
SATURATION_STD = 1.0

# What each transform's value is when it does not happen.
IDENTITY = {
    "xflip": 0.0, "rotate90": 0.0, "xint": 0.0, "scale": 1.0,
    "rotate_pre": 0.0, "aniso": 1.0, "rotate_post": 0.0, "xfrac": 0.0,
    "brightness": 0.0, "contrast": 1.0, "lumaflip": 0.0, "hue": 0.0,
    "saturation": 1.0,
}


def sample_transforms(rng, batch_size, image_size, p):
    """Draws every transform's value and whether it happens, per sample.

    Args:
        rng: a tf.random.Generator.
        batch_size: B.
        image_size: S, the images' height and width (for xint and xfrac).
        p: the probability of each transform, a float32 scalar (tensor
            or variable).

    Returns:
        {"value": {name: tensor}, "on": {name: bool [B]}} for every name in
        TRANSFORMS. A value is IDENTITY[name] where "on" is False; xflip,
        rotate90 and lumaflip count i (0., 1., ...), xint and xfrac are
        [B, 2] (tx, ty) in pixels, the rotations and hue are angles in
        radians, the rest [B] scale factors or offsets.
    """
    p = tf.convert_to_tensor(p, tf.float32)
    p_rot = 1 - tf.sqrt(tf.clip_by_value(1 - p, 0.0, 1.0))
    size = float(image_size)
    b, b2 = [batch_size], [batch_size, 2]
    values, on = {}, {}

    def gate(name, value, prob):
        # Called with the value already drawn: the gate's uniform comes
        # after it, as in the reference.
        happens = rng.uniform(b if value.shape.rank == 1 else [b[0], 1])
        happens = happens < prob
        values[name] = tf.where(happens, value, IDENTITY[name])
        on[name] = tf.reshape(happens, b)

    gate("xflip", tf.floor(rng.uniform(b) * 2), p)
    gate("rotate90", tf.floor(rng.uniform(b) * 4), p)
    xint = (rng.uniform(b2) * 2 - 1) * XINT_MAX
    gate("xint", tf.round(xint * size), p)
    gate("scale", _exp2(rng.normal(b) * SCALE_STD), p)
    gate("rotate_pre", _angle(rng, b, ROTATE_MAX), p_rot)
    gate("aniso", _exp2(rng.normal(b) * ANISO_STD), p)
    gate("rotate_post", _angle(rng, b, ROTATE_MAX), p_rot)
    gate("xfrac", rng.normal(b2) * XFRAC_STD * size, p)
    gate("brightness", rng.normal(b) * BRIGHTNESS_STD, p)
    gate("contrast", _exp2(rng.normal(b) * CONTRAST_STD), p)
    gate("lumaflip", tf.floor(rng.uniform(b) * 2), p)
    gate("hue", _angle(rng, b, HUE_MAX), p)
    gate("saturation", _exp2(rng.normal(b) * SATURATION_STD), p)
    return {"value": values, "on": on}


def _exp2(x):
    return tf.pow(2.0, x)


def _angle(rng, shape, max_turn):
    return (rng.uniform(shape) * 2 - 1) * (math.pi * max_turn)


def transform_matrices(values):
    """The inverse geometric and the colour matrix of each sample.

    Args:
        values: {name: tensor} as in `sample_transforms`' "value"; a
            missing name is left out (identity). At least one is needed.

    Returns:
        {"geometric": float32 [B, 3, 3], "color": float32 [B, 4, 4]}.

    Raises:
        ValueError: for a name not in TRANSFORMS, or an empty dict.
    """
    unknown = sorted(set(values) - set(TRANSFORMS))
    if unknown or not values:
        raise ValueError(
            f"ADA transforms must be among {', '.join(TRANSFORMS)}; got "
            f"{sorted(values)}"
        )
    v = {name: tf.cast(value, tf.float32) for name, value in values.items()}
    batch = tf.shape(next(iter(v.values())))[0]
    geometric = tf.eye(3, batch_shape=[batch])
    for name in GEOMETRIC:
        if name in v:
            geometric = _bmm(geometric, _GEOMETRIC_INVERSE[name](v[name]))
    color = tf.eye(4, batch_shape=[batch])
    for name in COLOR:
        if name in v:
            color = _bmm(_COLOR_MATRIX[name](v[name]), color)
    return {"geometric": geometric, "color": color}


def sample_params(rng, batch_size, image_size, p):
    """Draws the per-sample matrices of one ADA augmentation.

    Args:
        rng: a tf.random.Generator.
        batch_size: B.
        image_size: S, the images' height and width.
        p: the probability of each transform, a float32 scalar (tensor).

    Returns:
        {"geometric": float32 [B, 3, 3] (output -> input pixel
        coordinates), "color": float32 [B, 4, 4]}.
    """
    transforms = sample_transforms(rng, batch_size, image_size, p)
    return transform_matrices(transforms["value"])


def apply(images, params):
    """Resamples `images` through params["geometric"], then recolours.

    Args:
        images: float [B, H, W, 3] in [-1, 1]; H and W at least 2.
        params: {"geometric": [B, 3, 3], "color": [B, 4, 4]}.

    Returns:
        The augmented images, [B, H, W, 3] in the input's dtype (computed
        in float32, or float64 for float64 input).

    Raises:
        ValueError: for images that are not RGB or smaller than 2×2.
    """
    images = tf.convert_to_tensor(images)
    _, height, width, channels = images.shape
    if channels != 3 or (height or 2) < 2 or (width or 2) < 2:
        raise ValueError(
            "ADA augments RGB images [B, H, W, 3] with H, W >= 2; got "
            f"shape {images.shape}"
        )
    dtype = images.dtype
    compute = tf.float64 if dtype == tf.float64 else tf.float32
    x = resample.resample(tf.cast(images, compute), params["geometric"])
    c = tf.cast(params["color"], compute)[:, None, None]  # [B, 1, 1, 4, 4]
    # C[:3, :3] @ rgb + C[:3, 3] as products and sums rather than a matmul,
    # which TF32 on recent GPUs would round.
    out = c[..., :3, 3]
    for k in range(3):
        out += x[..., k:k + 1] * c[..., :3, k]
    return tf.cast(out, dtype)


def adjust_p(p, rt, target, images, speed_images=ADA_SPEED_IMAGES):
    """stylegan2-ada's update of p (`training/training_loop.py`).

    p <- clip(p + sign(rt - target) * images / speed_images, 0, 1): p moves
    by 1 over `speed_images` real images (`ada_kimg=500`), up while D is
    too sure of the reals. The trainer calls it every ADA_INTERVAL
    (`ada_interval=4`) minibatches with the images of those minibatches
    (batch_size * ADA_INTERVAL); the reference's `ada_target` is 0.6 by
    default. The reference clamps only at 0; this also clamps at 1.

    Args:
        p: the current probability, a float scalar (tensor or variable).
        rt: E[sign(D(real))] over the real images since the last update.
        target: the value of rt to hold, e.g. 0.6.
        images: how many real images were seen since the last update.
        speed_images: images over which p can move by 1 (> 0).

    Returns:
        The new p, a float32 scalar tensor in [0, 1] (rt == target leaves
        p as it is).

    Raises:
        ValueError: for a speed_images that is not positive.
    """
    if isinstance(speed_images, int | float) and speed_images <= 0:
        raise ValueError(f"speed_images must be > 0, got {speed_images}")
    p = tf.convert_to_tensor(p, tf.float32)
    rt = tf.cast(rt, tf.float32)
    step = tf.cast(images, tf.float32) / tf.cast(speed_images, tf.float32)
    return tf.clip_by_value(p + tf.sign(rt - target) * step, 0.0, 1.0)


def _bmm(a, b):
    # Batched product [B, n, n] @ [B, n, n] as products and sums: TF32
    # matmuls on recent GPUs would round the entries to 10 mantissa bits.
    n = a.shape[-1]
    return sum(a[:, :, k, None] * b[:, None, k, :] for k in range(n))


def _matrix(rows):
    """Stacks rows of [B] tensors and Python numbers into [B, n, n]."""
    ref = next(e for row in rows for e in row if isinstance(e, tf.Tensor))
    entries = [
        e if isinstance(e, tf.Tensor) else tf.fill(tf.shape(ref), float(e))
        for row in rows for e in row
    ]
    n = len(rows)
    # n * n entries [B] -> [B, n * n] -> [B, n, n].
    return tf.reshape(tf.stack(entries, axis=-1), [-1, n, n])


def _scale2d(sx, sy):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _translate2d(tx, ty):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _rotate2d(cos, sin):
    return _matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])


def _rotate90_inverse(i):
    # cos and sin of i * 90° looked up, so that they are exactly 0 and ±1
    # (cos(pi / 2) in float32 is -4e-8, which would blur the pixels).
    i = tf.cast(i, tf.int32) % 4
    cos = tf.gather(tf.constant([1.0, 0.0, -1.0, 0.0]), i)
    sin = tf.gather(tf.constant([0.0, 1.0, 0.0, -1.0]), i)
    return _rotate2d(cos, sin)  # rotate2d_inv(-pi / 2 * i) of the reference


def _rotate_inverse(theta):
    return _rotate2d(tf.cos(theta), tf.sin(theta))  # rotate2d_inv(-theta)


_GEOMETRIC_INVERSE = {
    "xflip": lambda i: _scale2d(1 - 2 * i, 1),
    "rotate90": _rotate90_inverse,
    "xint": lambda t: _translate2d(-t[:, 0], -t[:, 1]),
    "scale": lambda s: _scale2d(1 / s, 1 / s),
    "rotate_pre": _rotate_inverse,
    "aniso": lambda s: _scale2d(1 / s, s),
    "rotate_post": _rotate_inverse,
    "xfrac": lambda t: _translate2d(-t[:, 0], -t[:, 1]),
}


def _luma_outer(batch):
    """v vᵀ of the luma axis v = (1, 1, 1, 0) / sqrt(3), [B, 4, 4]."""
    vv = tf.constant([[1.0, 1, 1, 0]] * 3 + [[0.0, 0, 0, 0]]) / 3
    return tf.broadcast_to(vv, [batch, 4, 4])


def _lumaflip(i):
    vv = _luma_outer(tf.shape(i)[0])
    return tf.eye(4) - 2 * vv * i[:, None, None]


def _hue(theta):
    # Rotation about v (Rodrigues): cos I + sin [v]x + (1 - cos) v vᵀ,
    # with the homogeneous corner kept at 1.
    s = tf.sin(theta) / math.sqrt(3)
    c = tf.cos(theta)
    cc = (1 - c) / 3
    return _matrix([
        [c + cc, cc - s, cc + s, 0],
        [cc + s, c + cc, cc - s, 0],
        [cc - s, cc + s, c + cc, 0],
        [0, 0, 0, 1],
    ])


def _saturation(s):
    vv = _luma_outer(tf.shape(s)[0])
    return vv + (tf.eye(4) - vv) * s[:, None, None]


_COLOR_MATRIX = {
    "brightness": lambda b: _matrix(
        [[1, 0, 0, b], [0, 1, 0, b], [0, 0, 1, b], [0, 0, 0, 1]]
    ),
    "contrast": lambda c: _matrix(
        [[c, 0, 0, 0], [0, c, 0, 0], [0, 0, c, 0], [0, 0, 0, 1]]
    ),
    "lumaflip": _lumaflip,
    "hue": _hue,
    "saturation": _saturation,
}
