"""Synthetic images shared by the data and converter tests."""

import os

import numpy as np
from PIL import Image


def patterned(height, width, side_colour, centre_colour):
    """An image whose centred square is one colour and the rest another."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = side_colour
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image[top:top + side, left:left + side] = centre_colour
    return image


def write_pngs(folder, count, seed=0):
    """`count` 40x40 PNGs (random colour, noise) in folder; returns paths."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        base = rng.integers(0, 256, 3)
        image = np.clip(base + rng.integers(-40, 40, (40, 40, 3)), 0, 255)
        path = os.path.join(folder, f"img{i:03d}.png")
        Image.fromarray(image.astype(np.uint8)).save(path)
        out.append(path)
    return out
