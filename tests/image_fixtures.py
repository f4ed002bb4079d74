"""Synthetic images shared by the data and converter tests."""

import numpy as np


def patterned(height, width, side_colour, centre_colour):
    """An image whose centred square is one colour and the rest another."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = side_colour
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image[top:top + side, left:left + side] = centre_colour
    return image
