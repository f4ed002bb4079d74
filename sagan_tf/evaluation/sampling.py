"""Samples from a trained G: class grids, .npz sets, interpolations, attention.

Everything here takes a built `models.Generator` (restored by the caller)
and numpy seeds, and writes PNG / .npz files plus TensorBoard images. An
unconditional G (num_classes 0) gets a plain sample grid instead of class
rows; its labels are all 0 and ignored.
"""

import io
import os

import numpy as np
import tensorflow as tf

from sagan_tf.evaluation import attention_maps as attention_lib
from sagan_tf.training import summaries


def to_uint8(images):
    """Images in [-1, 1] to uint8 (x + 1) * 127.5, clipped and rounded."""
    images = np.asarray(images, np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tile(images):
    """uint8 [R, C, H, W, 3] -> uint8 [R*H, C*W, 3] (row r = images[r])."""
    rows, cols, h, w, c = images.shape
    # [R, C, H, W, 3] -> [R, H, C, W, 3]
    return images.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def write_png(path, image):
    """Writes uint8 [H, W, 3] to `path` (any tf.io.gfile filesystem)."""
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    tf.io.write_file(path, tf.io.encode_png(image))
    return path


def _generate(generator, z, labels, return_attention=False):
    return generator(
        tf.constant(z, tf.float32),
        tf.constant(labels, tf.int32),
        training=False,
        return_attention=return_attention,
    )


def class_grid(generator, classes, per_class, rng):
    """One row per class, `per_class` samples each.

    Returns:
        uint8 [len(classes) * S, per_class * S, 3].
    """
    classes = np.asarray(classes, np.int32)
    z = rng.standard_normal((classes.size * per_class, generator.z_dim))
    labels = np.repeat(classes, per_class)
    images = to_uint8(_generate(generator, z, labels))
    size = images.shape[1]
    return tile(images.reshape(classes.size, per_class, size, size, 3))


def sample_grid(generator, rows, cols, rng):
    """`rows` x `cols` samples of an unconditional G, no class rows.

    Returns:
        uint8 [rows * S, cols * S, 3].
    """
    z = rng.standard_normal((rows * cols, generator.z_dim))
    images = to_uint8(_generate(generator, z, np.zeros(rows * cols)))
    size = images.shape[1]
    return tile(images.reshape(rows, cols, size, size, 3))


def write_npz(generator, path, count, num_classes, batch_size, rng):
    """Writes `count` samples: `images` uint8 [N, S, S, 3], `labels` int32.

    Classes are uniform at random, z standard normal (as in evaluation).
    """
    images, labels = [], []
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        z = rng.standard_normal((n, generator.z_dim))
        # Unconditional G (0 classes): all zeros, ignored.
        y = rng.integers(0, max(num_classes, 1), n, dtype=np.int32)
        images.append(to_uint8(_generate(generator, z, y)))
        labels.append(y)
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    # np.savez seeks, which gfile writers cannot: build it in memory.
    buffer = io.BytesIO()
    np.savez(buffer, images=np.concatenate(images),
             labels=np.concatenate(labels))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())
    return path


def interpolation_strip(generator, label, steps, rng):
    """G along the straight line between two z, one class.

    Returns:
        uint8 [S, steps * S, 3], left to right from z0 to z1.
    """
    z0, z1 = rng.standard_normal((2, generator.z_dim))
    t = np.linspace(0.0, 1.0, steps)[:, None]
    z = (1.0 - t) * z0 + t * z1
    images = to_uint8(_generate(generator, z, np.full(steps, label)))
    return tile(images[None])


def attention_figure(generator, labels, queries, attention_resolution, rng):
    """G's attention figure (`attention_maps.figure`), one row per label.

    Returns:
        uint8 [T + B * P, (1 + Q) * P, 3]: a title strip naming G's
        attention layer, then per sample the image with the query pixels
        marked and each query's attention map over the dimmed image, in
        panels of P >= 128 pixels.
    """
    labels = np.asarray(labels, np.int32)
    z = rng.standard_normal((labels.size, generator.z_dim))
    images, beta = _generate(generator, z, labels, return_attention=True)
    size = images.shape[1]
    maps = attention_lib.attention_maps(
        beta, queries, size, attention_resolution)
    title = attention_lib.layer_title(
        "G", generator.attention_layers[0], attention_resolution, size
    )
    return attention_lib.figure(to_uint8(images), maps, queries, title)


def write_samples(generator, config, out_dir, step, attention_resolution):
    """The `--mode sample` outputs; returns {name: path}.

    Writes to `out_dir`: `class_grid.png` (an unconditional G: a
    `sample_grid.png` of samples_per_class x samples_per_class, and
    `--sample_classes` only sets how many rows the attention figure has),
    `samples.npz`, `interpolation.png`, `attention.png` (not for the
    baseline G), and a TensorBoard event file with the same images under
    `sample/*`.
    """
    rng = np.random.default_rng(config.seed)
    size = generator.image_size
    conditional = generator.num_classes > 0
    if conditional:
        for c in config.sample_classes:
            if not 0 <= c < generator.num_classes:
                raise ValueError(
                    f"--sample_classes: class {c} is outside "
                    f"[0, {generator.num_classes})"
                )
        labels = np.asarray(config.sample_classes, np.int32)
        grid = ("class_grid", class_grid(
            generator, config.sample_classes, config.samples_per_class, rng
        ))
    else:
        labels = np.zeros(len(config.sample_classes), np.int32)
        grid = ("sample_grid", sample_grid(
            generator, config.samples_per_class, config.samples_per_class,
            rng,
        ))
    pictures = {
        grid[0]: grid[1],
        "interpolation": interpolation_strip(
            generator, labels[0], config.interpolation_steps, rng,
        ),
    }
    if attention_resolution is not None:
        queries = (config.attention_queries
                   or attention_lib.default_queries(size))
        pictures["attention"] = attention_figure(
            generator, labels, queries, attention_resolution, rng,
        )
    else:
        print("Baseline G has no attention: no attention maps.")
    paths = {}
    for name, picture in pictures.items():
        paths[name] = write_png(os.path.join(out_dir, f"{name}.png"), picture)
    paths["samples"] = write_npz(
        generator,
        os.path.join(out_dir, "samples.npz"),
        config.num_npz_samples,
        generator.num_classes,
        config.dcgan_generator_batch_size,
        rng,
    )
    writer = summaries.SummaryWriter(out_dir)
    writer.images(step, {f"sample/{name}": picture[None]
                         for name, picture in pictures.items()})
    writer.close()
    for name, path in paths.items():
        print(f"Wrote {name}: {path}", flush=True)
    return paths
