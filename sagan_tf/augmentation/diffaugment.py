"""DiffAugment (Zhao et al., NeurIPS 2020): colour, translation, cutout.

Follows the released `DiffAugment_tf.py` / `DiffAugment_pytorch.py`
(github.com/mit-han-lab/data-efficient-gans); one set of parameters per
sample:

  color        brightness: x + b, b ~ U[-0.5, 0.5);
               saturation: the deviation from each pixel's channel mean
               times s ~ U[0, 2);
               contrast: the deviation from the image's mean (over H, W
               and channels) times c ~ U[0.5, 1.5); in this order.
  translation  an integer shift (tx, ty), each ~ U{-S // 8, ..., S // 8}
               (floor, as the reference's `W * 1 // 8`), zero fill:
               out[i, j] = x[i + ty, j + tx], 0 outside the image.
  cutout       zeroes a square of side S // 2 (floor) whose top-left
               corner is (cy - S // 4, cx - S // 4), clipped to the image;
               the centre (cy, cx) ~ U{0, ..., S - 1 + (1 - (S // 2) % 2)}
               per axis, so the square may hang over any border.

The policies run in the order written (`"color,translation,cutout"`, the
paper's, is the usual one), as the reference's loop over
`policy.split(',')` does.

Randomness comes from a `tf.random.Generator` (the run's checkpointed noise
RNG), split from the transforms: `sample_params` draws, `apply` is
deterministic given its parameters. The draws, for each policy in the
order written: color: brightness [B], saturation [B], contrast [B]
(uniform float32); translation: translation_x [B], translation_y [B];
cutout: cutout_y [B], cutout_x [B] (uniform int32).

Every transform is affine in the images, so gradients w.r.t. them are
exact. The images are float [B, H, W, C] (NHWC) in [-1, 1], float16,
bfloat16, float32 or float64; the arithmetic is float32 (float64 for
float64 input) and the result has the input's dtype.
"""

import tensorflow as tf

FLAG = "--diffaugment"
POLICIES = ("color", "translation", "cutout")

# Parameter keys each policy adds to `sample_params`' dict, in draw order.
_KEYS = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation_x", "translation_y"),
    "cutout": ("cutout_y", "cutout_x"),
}


def parse_policy(text):
    """The policies named in a `--diffaugment` value, in the order written.

    Args:
        text: comma-separated policy names, e.g. "color,translation,cutout";
            "" (or only spaces) turns DiffAugment off.

    Returns:
        A tuple of policy names (empty when off).

    Raises:
        ValueError: for an unknown, empty or repeated name.
    """
    if not isinstance(text, str):
        raise ValueError(
            f"{FLAG} must be a string of comma-separated names from "
            f"{', '.join(POLICIES)}; got {text!r}"
        )
    if not text.strip():
        return ()
    names = tuple(name.strip() for name in text.split(","))
    for name in names:
        if name not in POLICIES:
            raise ValueError(
                f"{FLAG}={text!r}: {name!r} is not a policy; use a "
                f"comma-separated subset of {', '.join(POLICIES)}, or '' "
                "for none"
            )
    if len(set(names)) != len(names):
        raise ValueError(
            f"{FLAG}={text!r} names a policy twice; use each of "
            f"{', '.join(POLICIES)} at most once"
        )
    return names


def _policy(policy):
    return parse_policy(policy) if isinstance(policy, str) else tuple(policy)


def sample_params(rng, batch_size, image_size, policy):
    """Draws every per-sample parameter of `policy` from `rng`.

    Args:
        rng: a tf.random.Generator.
        batch_size: B, a Python int (or scalar int tensor).
        image_size: S, the images' height and width (Python int).
        policy: a `--diffaugment` string or a tuple from `parse_policy`.

    Returns:
        A dict of [B] tensors with the keys of the policies in `policy`:
        brightness, saturation, contrast (float32; the added offset and the
        two factors); translation_x, translation_y (int32 shifts);
        cutout_y, cutout_x (int32 centres, row and column).
    """
    shape = [batch_size]
    params = {}
    for name in _policy(policy):
        if name == "color":
            params["brightness"] = rng.uniform(shape) - 0.5
            params["saturation"] = rng.uniform(shape) * 2.0
            params["contrast"] = rng.uniform(shape) + 0.5
        elif name == "translation":
            shift = image_size // 8
            for key in _KEYS[name]:
                params[key] = rng.uniform(
                    shape, -shift, shift + 1, dtype=tf.int32
                )
        else:
            size = image_size // 2
            for key in _KEYS[name]:
                params[key] = rng.uniform(
                    shape, 0, image_size + 1 - size % 2, dtype=tf.int32
                )
    return params


def apply(images, params, policy):
    """Applies `policy` with fixed parameters.

    Args:
        images: float [B, H, W, C].
        params: a dict from `sample_params` (or built by hand) holding at
            least the keys of the policies in `policy`.
        policy: a `--diffaugment` string or a tuple from `parse_policy`.

    Returns:
        The augmented images, [B, H, W, C] in the input's dtype.

    Raises:
        ValueError: when `params` lacks a key that `policy` needs.
    """
    policy = _policy(policy)
    for name in policy:
        missing = [key for key in _KEYS[name] if key not in params]
        if missing:
            raise ValueError(
                f"{FLAG} policy {name!r} needs the parameters "
                f"{', '.join(missing)}; got {sorted(params)}"
            )
    images = tf.convert_to_tensor(images)
    dtype = images.dtype
    compute = tf.float64 if dtype == tf.float64 else tf.float32
    x = tf.cast(images, compute)
    for name in policy:
        if name == "color":
            x = _color(x, params, compute)
        elif name == "translation":
            x = _translation(x, params)
        else:
            x = _cutout(x, params, compute)
    return tf.cast(x, dtype)


def _per_sample(value, dtype):
    return tf.reshape(tf.cast(value, dtype), [-1, 1, 1, 1])  # [B, 1, 1, 1]


def _color(x, params, dtype):
    x = x + _per_sample(params["brightness"], dtype)
    mean = tf.reduce_mean(x, axis=3, keepdims=True)
    x = (x - mean) * _per_sample(params["saturation"], dtype) + mean
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * _per_sample(params["contrast"], dtype) + mean


def _translation(x, params):
    # Gathers from the image padded with one zero on each side, indices
    # clipped onto that zero: no scatter. The gradient of a gather is a
    # sum over indices (deterministic on GPU under op determinism since
    # TF 2.8), and here every real pixel is read by at most one output,
    # so it is exact and order-free anyway. A one-hot matmul would do the
    # same, but TF32 matmuls on recent GPUs would round the pixels.
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    for axis, size, key in ((2, width, "translation_x"),
                            (1, height, "translation_y")):
        shift = tf.reshape(tf.cast(params[key], tf.int32), [-1, 1])  # [B, 1]
        index = tf.clip_by_value(tf.range(size)[None] + shift + 1, 0, size + 1)
        paddings = [[0, 0]] * 4
        paddings[axis] = [1, 1]
        x = tf.gather(tf.pad(x, paddings), index, axis=axis, batch_dims=1)
    return x


def _cutout(x, params, dtype):
    # A mask from comparisons, not the reference's scatter_nd (which under
    # op determinism falls back to the CPU): the same zeros, clipped to the
    # image as the reference's clamped indices are.
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    inside = []
    for size, key, index_shape in ((height, "cutout_y", [-1, 1, 1]),
                                   (width, "cutout_x", [-1, 1])):
        side = size // 2
        start = tf.cast(params[key], tf.int32) - side // 2
        start = tf.reshape(start, [-1, 1, 1, 1])  # [B, 1, 1, 1]
        # Rows [H, 1, 1] and columns [W, 1] broadcast against [B, 1, 1, 1]
        # to [B, H, 1, 1] and [B, 1, W, 1].
        index = tf.reshape(tf.range(size), index_shape)
        inside.append((index >= start) & (index < start + side))
    cut = inside[0] & inside[1]  # [B, H, W, 1]
    return x * tf.cast(~cut, dtype)
