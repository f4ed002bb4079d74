"""Image preprocessing shared by the converter and the demo (PIL, no TF).

Every image becomes RGB, is cropped to its largest centred square and is
resized with antialiased bilinear filtering, the recipe of the released
ImageNet records (improved-gan's converter). The tf.data reader applies the
same recipe to JPEG sources in `records.py`.
"""

import numpy as np
from PIL import Image

# Transparent pixels are composited onto white: ImageNet's few alpha images
# are cut-outs meant to be shown on a white page.
_BACKGROUND = (255, 255, 255)


def _high_bit_depth_to_l(image):
    """Scales a 16/32-bit integer or float grayscale image to 8-bit 'L'.

    PIL's own convert("L") clips such images at 255 instead of scaling them.
    """
    array = np.asarray(image)
    if image.mode == "F":
        array = array.astype(np.float64)
        top = 1.0 if array.max(initial=0.0) <= 1.0 else 255.0
    else:
        array = array.astype(np.int64)
        peak = array.max(initial=0)
        if image.mode.startswith("I;16") or 255 < peak <= 65535:
            top = 65535.0
        elif peak <= 255:
            top = 255.0
        else:
            top = float(peak)
    scaled = np.clip(np.rint(array * (255.0 / top)), 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def to_rgb(image):
    """Converts a PIL image of any mode to 'RGB'.

    Grayscale ('1', 'L', 'I;16', 'I', 'F') is stacked to three channels, CMYK,
    YCbCr and palette images are converted, and images with an alpha channel
    (RGBA, LA, PA, or a palette with a transparent index) are composited onto
    a white background.

    Args:
        image: a PIL image; for animations the current frame is used.

    Returns:
        A PIL image in mode 'RGB' with the same size.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _high_bit_depth_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def center_square(image):
    """Crops a PIL image to its largest centred square.

    When the surplus is odd, the extra column or row is dropped on the right or
    bottom (the same offset, (size - side) // 2, as the tf.data reader uses).

    Args:
        image: a PIL image of size (width, height).

    Returns:
        A PIL image of size (side, side), side = min(width, height).
    """
    width, height = image.size
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def square_rgb_array(image, image_size):
    """Applies the full recipe: RGB, centred square, bilinear resize.

    Pillow's BILINEAR resize widens its triangle filter when it shrinks, so
    the resize is antialiased.

    Args:
        image: a PIL image of any mode and size.
        image_size: the side S of the output.

    Returns:
        uint8 numpy array [S, S, 3] (HWC).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    square = center_square(to_rgb(image))
    if square.size != (image_size, image_size):
        square = square.resize(
            (image_size, image_size), resample=Image.Resampling.BILINEAR
        )
    return np.asarray(square, dtype=np.uint8)


def load_square_image(path, image_size):
    """Reads an image file and returns it preprocessed as [S, S, 3] uint8.

    Args:
        path: file path or binary file object.
        image_size: the side S of the output.

    Returns:
        uint8 numpy array [S, S, 3].

    Raises:
        OSError, ValueError, Image.DecompressionBombError: the file is not a
            readable image (truncated, corrupt or of an unknown format).
    """
    with Image.open(path) as image:
        # Decode now so that truncated files fail here, not later.
        image.load()
        return square_rgb_array(image, image_size)
