"""Pictures of the attention map beta, for TensorBoard and attention.png.

A `SelfAttention` layer at resolution R gives beta [B, N, N/4]: for each of
the N = R*R query locations, a softmax over the (R/2)^2 locations of its
2x2-max-pooled keys. For a query pixel of the S x S image, the figure shows
the row of beta at the query's location, as a heat map upsampled (nearest)
to the image and laid over it, with the query pixel marked.

A figure has one row per sample: the image with every query marked, then
one panel per query, its marker in the query's colour. Panels are upsampled
(nearest) to at least `MIN_PANEL` pixels, and a title strip names the layer.
Training writes one such figure per attention layer of G and D
(`AttentionSummary`); `eval_imagenet.py --mode sample` writes G's as
attention.png (`sampling.attention_figure`).
"""

import math
import textwrap

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

MIN_PANEL = 128
# Distinct marker colours of the query pixels (RGB), with their names.
QUERY_COLOURS = (
    ("red", (255, 40, 40)),
    ("green", (40, 220, 40)),
    ("blue", (60, 120, 255)),
    ("yellow", (255, 220, 0)),
    ("magenta", (255, 0, 255)),
    ("cyan", (0, 230, 230)),
)
_FONT_SIZE = 12
_LINE_HEIGHT = 16


def default_queries(image_size):
    """Quarter / three-quarter points of each side, (row, column)."""
    a, b = image_size // 4, (3 * image_size) // 4
    return ((a, a), (a, b), (b, a), (b, b))


def attention_maps(beta, queries, image_size, attention_resolution=None):
    """Each query's attention over the image.

    Args:
        beta: [B, N, N/4] attention of a layer at resolution R, N = R^2
            query locations (row-major), N/4 the 2x2-max-pooled key
            locations.
        queries: (row, column) pixels of the S x S image.
        image_size: S.
        attention_resolution: R; by default sqrt(N).

    Returns:
        float32 [B, Q, S, S]: each map is beta over the keys, upsampled to
        the image (nearest) and scaled so its maximum is 1.
    """
    beta = np.asarray(beta, np.float32)
    res = attention_resolution or math.isqrt(beta.shape[1])
    if res * res != beta.shape[1] or res % 2 or image_size % res:
        raise ValueError(
            f"attention_maps: beta of shape {beta.shape} is not the map of "
            f"a {res}x{res} layer of a {image_size}x{image_size} image"
        )
    keys = res // 2
    maps = []
    for row, col in queries:
        if not (0 <= row < image_size and 0 <= col < image_size):
            raise ValueError(
                f"--attention_queries: ({row}, {col}) is outside the "
                f"{image_size}x{image_size} image"
            )
        # Image pixel -> location in the R x R attention grid.
        q = (row * res // image_size) * res + col * res // image_size
        m = beta[:, q, :].reshape(-1, keys, keys)  # [B, R/2, R/2]
        scale = image_size // keys
        m = m.repeat(scale, axis=1).repeat(scale, axis=2)  # [B, S, S]
        maps.append(m / np.maximum(m.max(axis=(1, 2), keepdims=True), 1e-12))
    return np.stack(maps, axis=1)


def _heat(values):
    """[H, W] in [0, 1] -> float [H, W, 3], black-red-yellow-white."""
    r = np.clip(3.0 * values, 0.0, 1.0)
    g = np.clip(3.0 * values - 1.0, 0.0, 1.0)
    b = np.clip(3.0 * values - 2.0, 0.0, 1.0)
    return np.stack([r, g, b], -1) * 255.0


def _panel(image, scale, marks):
    """Upsamples uint8 [S, S, 3] by `scale`, then draws (row, col, colour)
    markers: a filled disc ringed in black and white, visible on any
    background."""
    big = Image.fromarray(image.repeat(scale, axis=0).repeat(scale, axis=1))
    draw = ImageDraw.Draw(big)
    radius = max(4, big.width // 22)
    for row, col, colour in marks:
        y, x = (row + 0.5) * scale, (col + 0.5) * scale
        box = [x - radius, y - radius, x + radius, y + radius]
        draw.ellipse(box, fill=colour, outline=(0, 0, 0), width=2)
        outer = [x - radius - 2, y - radius - 2, x + radius + 2,
                 y + radius + 2]
        draw.ellipse(outer, outline=(255, 255, 255), width=1)
    return np.asarray(big)


def _title_strip(lines, width):
    """uint8 [h, width, 3]: the text lines, wrapped, white on dark grey."""
    font = ImageFont.load_default(size=_FONT_SIZE)
    chars = max(20, width // 7)
    wrapped = [w for line in lines for w in textwrap.wrap(line, chars)]
    strip = Image.new("RGB", (width, _LINE_HEIGHT * len(wrapped) + 6),
                      (32, 32, 32))
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(wrapped):
        draw.text((4, 3 + i * _LINE_HEIGHT), line, fill=(255, 255, 255),
                  font=font)
    return np.asarray(strip)


def _join(arrays, axis, gutter=2):
    """Concatenates uint8 images along `axis` with dark gutters between."""
    shape = list(arrays[0].shape)
    shape[axis] = gutter
    bar = np.full(shape, 32, np.uint8)
    parts = [arrays[0]]
    for array in arrays[1:]:
        parts += [bar, array]
    return np.concatenate(parts, axis=axis)


def figure(images, maps, queries, title):
    """The attention figure of one layer.

    Args:
        images: uint8 [B, S, S, 3].
        maps: float [B, Q, S, S] in [0, 1] (`attention_maps`).
        queries: the Q (row, column) query pixels.
        title: first line of the title strip (which layer this is).

    Returns:
        uint8 [T + B * (P + 2) - 2, (1 + Q) * (P + 2) - 2, 3]: a title
        strip of height T, then one row per sample of panels
        P = S * ceil(128 / S) pixels wide, 2-pixel gutters between them:
        the image with every query marked, then each query's map over the
        dimmed image with its own marker.
    """
    images = np.asarray(images, np.uint8)
    size = images.shape[1]
    scale = -(-MIN_PANEL // size)
    colours = [QUERY_COLOURS[i % len(QUERY_COLOURS)]
               for i in range(len(queries))]
    rows = []
    for b, image in enumerate(images):
        marks = [(r, c, rgb) for (r, c), (_, rgb) in zip(queries, colours)]
        panels = [_panel(image, scale, marks)]
        for i, mark in enumerate(marks):
            overlay = 0.4 * image + 0.6 * _heat(maps[b, i])
            panels.append(_panel(overlay.astype(np.uint8), scale, [mark]))
        rows.append(_join(panels, axis=1))
    body = _join(rows, axis=0)
    legend = ", ".join(
        f"{name} ({r}, {c})" for (r, c), (name, _) in zip(queries, colours))
    strip = _title_strip(
        [title, f"Columns: the image, then the attention (beta, scaled to "
                f"its maximum) of each query pixel (row, column): {legend}."],
        body.shape[1],
    )
    return np.concatenate([strip, body], axis=0)


def layer_title(model_name, layer, resolution, image_size, extra=""):
    """e.g. `g_non_local: G's self-attention at 16x16 of a 32x32 image`."""
    return (f"{layer.name}: {model_name}'s self-attention at "
            f"{resolution}x{resolution} of a {image_size}x{image_size} "
            f"image{extra}")


class AttentionSummary:
    """TensorBoard figures of G's and D's attention on a fixed batch.

    z and the labels are drawn once, from their own seed (the training RNG
    is not touched). Each call runs G and then D on G's images in inference
    mode with `update_sn=False`: no u is written and no BN statistic moves,
    so writing summaries leaves training exactly as it was.

    Args:
        generator, discriminator: `models.Generator` / `Discriminator`.
        num_samples: rows of each figure.
        queries: (row, column) query pixels; `default_queries` if None.
        seed: seed of the fixed z.
    """

    def __init__(self, generator, discriminator, num_samples=4,
                 queries=None, seed=0):
        self.generator = generator
        self.discriminator = discriminator
        self.image_size = generator.image_size
        self.queries = tuple(queries or default_queries(self.image_size))
        rng = np.random.default_rng(seed)
        self.z = tf.constant(
            rng.standard_normal((num_samples, generator.z_dim)), tf.float32)
        self.labels = tf.constant(
            np.arange(num_samples) % max(generator.num_classes, 1),
            tf.int32)

    def figures(self):
        """Returns {tag: uint8 [H, W, 3]}, one per attention layer."""
        g, d = self.generator, self.discriminator
        frozen = dict(training=False, update_sn=False)
        betas = []
        if g.attention_layers:
            images, beta = g(self.z, self.labels, return_attention=True,
                             **frozen)
            betas.append(("G", g.attention_layers[0], beta, ""))
        else:
            images = g(self.z, self.labels, **frozen)
        if d.attention_layers:
            _, beta = d(images, self.labels, return_attention=True, **frozen)
            betas.append(("D", d.attention_layers[0], beta,
                          ", on G's images"))
        pixels = np.clip(
            np.round((images.numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8)
        out = {}
        for model_name, layer, beta, extra in betas:
            resolution = math.isqrt(beta.shape[1])
            maps = attention_maps(beta, self.queries, self.image_size)
            title = layer_title(model_name, layer, resolution,
                                self.image_size, extra)
            out[f"attention/{layer.name}"] = figure(
                pixels, maps, self.queries, title)
        return out

    def images(self):
        """`figures` as TensorBoard image batches: {tag: [1, H, W, 3]}."""
        return {tag: f[None] for tag, f in self.figures().items()}
