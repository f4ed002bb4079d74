"""TensorBoard summaries and console progress of the training loop.

Scalar tags are the released ones (`d_loss`, `d_loss_real`, `d_loss_fake`,
`g_loss`, `logit_real`, `logit_fake`, `d_learning_rate`, `g_learning_rate`),
plus one per attention gain (released: `sigma_ratio`; here named after the
layer, e.g. `g_non_local/gamma`), `global_step/sec` (the name
TF1's step counter used) and `images/sec`. Image grids: `input_image_grid`
and `generator_grid`, as released, plus one attention figure per attention
layer (`attention/g_non_local`, `attention/d_non_local`; see
`attention_maps.py`). The resolved configuration goes to the Text tab
(`config`) once per run.
"""

import math
import time

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

# The released grids show at most 64 images.
MAX_GRID_IMAGES = 64


def squarest_grid_size(num_images):
    """Returns (rows, cols) with rows*cols == num_images, as square as can be.

    Same rule as the released `utils_ori.squarest_grid_size`: the largest
    divisor not above the square root gives the columns.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    cols = math.isqrt(num_images)
    while num_images % cols:
        cols -= 1
    return num_images // cols, cols


def image_grid(images):
    """Tiles images into one grid image.

    Args:
      images: float [N, H, W, 3] in [-1, 1] (N is cut to 64).

    Returns:
      uint8 [1, rows*H, cols*W, 3].
    """
    images = np.asarray(images, dtype=np.float32)[:MAX_GRID_IMAGES]
    pixels = np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    n, h, w, c = pixels.shape
    rows, cols = squarest_grid_size(n)
    # [rows, cols, H, W, C] → [rows, H, cols, W, C] → [rows*H, cols*W, C]
    grid = pixels.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4)
    return grid.reshape(1, rows * h, cols * w, c)


def gamma_tag(layer):
    """Tag of an attention layer's gain, e.g. `g_non_local/gamma`."""
    return f"{layer.name}/gamma"


def _plugin_metadata(plugin_name, data_class):
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    metadata.data_class = data_class
    return metadata


# TensorFlow no longer ships the `tensorboard` package that tf.summary.scalar
# and tf.summary.image need, so the summaries are written with
# tf.summary.write and the metadata TensorBoard's plugins expect.
_SCALAR_METADATA = _plugin_metadata(
    "scalars", summary_pb2.DATA_CLASS_SCALAR)
_IMAGE_METADATA = _plugin_metadata(
    "images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)
_TEXT_METADATA = _plugin_metadata("text", summary_pb2.DATA_CLASS_TENSOR)


class SummaryWriter:
    """Writes the training summaries; a no-op on non-chief workers."""

    def __init__(self, logdir, enabled=True):
        if enabled:
            self._writer = tf.summary.create_file_writer(logdir)
        else:
            self._writer = tf.summary.create_noop_writer()

    def scalars(self, step, values):
        """Writes a dict tag → float at `step`."""
        with self._writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.write(
                    tag, tf.constant(float(value), tf.float32),
                    metadata=_SCALAR_METADATA)

    def images(self, step, grids):
        """Writes a dict tag → uint8 [1, H, W, 3] grid at `step`."""
        with self._writer.as_default(step=step):
            for tag, grid in grids.items():
                _, height, width, _ = grid.shape
                # TensorBoard's image layout: [width, height, png, ...].
                tensor = tf.stack([
                    tf.constant(str(width)),
                    tf.constant(str(height)),
                    tf.io.encode_png(grid[0]),
                ])
                tf.summary.write(tag, tensor, metadata=_IMAGE_METADATA)

    def text(self, step, texts):
        """Writes a dict tag → Markdown string (TensorBoard's Text tab)."""
        with self._writer.as_default(step=step):
            for tag, text in texts.items():
                tf.summary.write(
                    tag, tf.constant(text), metadata=_TEXT_METADATA)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


def config_markdown(config_json):
    """The resolved configuration (JSON text) as a Markdown code block."""
    return "\n".join("    " + line for line in config_json.splitlines())


def format_duration(seconds):
    """Formats seconds as e.g. `2d03h`, `1h05m` or `42s`."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Throughput:
    """Steps/sec and images/sec between successive calls of `rates`."""

    def __init__(self, global_batch_size, step):
        self.global_batch_size = global_batch_size
        self._step = step
        self._time = time.perf_counter()

    def reset(self, step):
        """Restarts the interval at `step` (e.g. after tracing/compiling)."""
        self._step = step
        self._time = time.perf_counter()

    def rates(self, step):
        """Returns (steps/sec, images/sec) since the last call and restarts.

        Both are None when no step ran since the last call.
        """
        now = time.perf_counter()
        steps, elapsed = step - self._step, max(now - self._time, 1e-9)
        self._step, self._time = step, now
        if steps <= 0:
            return None, None
        steps_per_sec = steps / elapsed
        return steps_per_sec, steps_per_sec * self.global_batch_size


def progress_line(step, max_steps, values, images_per_sec, steps_per_sec):
    """One console line: step, losses, images/sec and ETA."""
    if steps_per_sec:
        eta = format_duration((max_steps - step) / steps_per_sec)
        speed = f"{images_per_sec:.1f} img/s"
    else:
        eta, speed = "?", "- img/s"
    return (
        f"step {step}/{max_steps}  "
        f"d_loss {values['d_loss']:.4f} "
        f"(real {values['d_loss_real']:.4f}, "
        f"fake {values['d_loss_fake']:.4f})  "
        f"g_loss {values['g_loss']:.4f}  {speed}  ETA {eta}"
    )
