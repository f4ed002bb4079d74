"""Bilinear resampling of images through per-sample 3×3 inverse matrices.

Coordinates are centred pixel coordinates, as in stylegan2-ada's
`training/augment.py`: x = column - (W - 1) / 2, y = row - (H - 1) / 2 (y
points down), so (0, 0) is the image centre and pixel centres lie one unit
apart. `matrix @ [x_out, y_out, 1]` is the point of the input that output
pixel (x_out, y_out) shows; it is read bilinearly from the input mirrored
about its first and last pixel centres (numpy's and torch's 'reflect'),
repeated as far as needed.

A matrix with integer entries maps pixel centres onto pixel centres, and
the result is then exact: its weights are 1 and 0 (flips, rotations by
multiples of 90°, integer translations).
"""

import tensorflow as tf


def resample(images, matrices):
    """Samples `images` at `matrices @ [x, y, 1]` of every output pixel.

    Args:
        images: float32 or float64 [B, H, W, C], H and W at least 2.
        matrices: float [B, 3, 3], output -> input pixel coordinates.

    Returns:
        [B, H, W, C], the dtype of `images`.
    """
    dtype = images.dtype
    batch, height, width, channels = tf.unstack(tf.shape(images))
    # Coordinates in float64: float32 ones would differ by an ulp or so
    # wherever XLA contracts a multiply-add, moving the weights by ~1e-6.
    g = tf.cast(matrices, tf.float64)
    # Entries [B, 1, 1] against output coordinates [1, 1, W] and [1, H, 1].
    g = [[g[:, r, c][:, None, None] for c in range(3)] for r in range(3)]
    cx = tf.cast(width - 1, tf.float64) / 2
    cy = tf.cast(height - 1, tf.float64) / 2
    x = (tf.range(tf.cast(width, tf.float64)) - cx)[None, None, :]
    y = (tf.range(tf.cast(height, tf.float64)) - cy)[None, :, None]
    # The input's column and row coordinates of each output pixel [B, H, W].
    col = g[0][0] * x + g[0][1] * y + g[0][2] + cx
    row = g[1][0] * x + g[1][1] * y + g[1][2] + cy
    col0, row0 = tf.floor(col), tf.floor(row)
    fc, fr = tf.cast(col - col0, dtype), tf.cast(row - row0, dtype)
    col0, row0 = tf.cast(col0, tf.int32), tf.cast(row0, tf.int32)
    cols = [_reflect(col0, width), _reflect(col0 + 1, width)]
    rows = [_reflect(row0, height), _reflect(row0 + 1, height)]
    flat = tf.reshape(images, [batch, -1, channels])  # [B, H * W, C]

    def tap(r, c):
        # Gather, not a one-hot matmul (TF32 on recent GPUs would round
        # the pixels) nor scatter: its gradient is a segment sum, which
        # has a deterministic GPU kernel under op determinism (TF >= 2.8).
        index = tf.reshape(r * width + c, [batch, -1])  # [B, H * W]
        taps = tf.gather(flat, index, batch_dims=1)  # [B, H * W, C]
        return tf.reshape(taps, tf.shape(images))

    wc = [(1 - fc)[..., None], fc[..., None]]  # [B, H, W, 1] each
    wr = [(1 - fr)[..., None], fr[..., None]]
    out = tap(rows[0], cols[0]) * (wr[0] * wc[0])
    out += tap(rows[0], cols[1]) * (wr[0] * wc[1])
    out += tap(rows[1], cols[0]) * (wr[1] * wc[0])
    return out + tap(rows[1], cols[1]) * (wr[1] * wc[1])


def _reflect(index, size):
    """Folds integer `index` into [0, size): mirror about 0 and size - 1."""
    period = 2 * (size - 1)
    index = tf.math.floormod(index, period)
    return tf.where(index >= size, period - index, index)
