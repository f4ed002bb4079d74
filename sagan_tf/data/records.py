"""The shard formats: finding shards, parsing records, first-record checks.

  records  `<data_dir>/*.tfrecords`, the released format: `image_raw` holds
           raw uint8 S x S x 3 (HWC) bytes, `label` an int64 in 0..999.
  jpeg     The common sharded ImageNet TFRecords: `<data_dir>/train-*-of-*`
           plus `*.tfrecord` and `*.tfrecords`, with `image/encoded` (JPEG or
           PNG) and `image/class/label` (1..1000; use label_offset -1).

JPEG images (and TFDS's) get the converter's recipe: the largest centred
square, an antialiased bilinear resize to S, rounding to uint8 levels.
`validate_first_record` reads the first record eagerly, so that the common
mistakes (wrong folder, format, --image_size or --label_offset) fail with
`DataError` before training starts.
"""

import os

import tensorflow as tf

from sagan_tf.data import errors
from sagan_tf.data.errors import DataError

DATA_FORMATS = ("records", "jpeg", "tfds")
RECORDS_PATTERNS = ("*.tfrecords",)
JPEG_PATTERNS = ("train-*-of-*", "*.tfrecord", "*.tfrecords")

def _patterns(data_format):
    if data_format == "records":
        return RECORDS_PATTERNS
    if data_format == "jpeg":
        return JPEG_PATTERNS
    raise ValueError(
        f"--data_format must be one of {', '.join(DATA_FORMATS)}; got"
        f" {data_format!r}"
    )


def list_files(config):
    """Sorted shard paths of a `records` or `jpeg` source.

    Args:
        config: DataConfig.

    Returns:
        A sorted list of file paths (hidden files and folders excluded).

    Raises:
        ValueError: unknown format, missing or empty --data_dir, or no file
            matching the format's patterns (the message names the folder and
            the patterns).
    """
    patterns = _patterns(config.data_format)
    data_dir = config.data_dir
    if not data_dir:
        raise ValueError("--data_dir is empty; it must name a folder of shards")
    if not tf.io.gfile.isdir(data_dir):
        raise ValueError(f"--data_dir {data_dir!r} does not exist or is not a"
                         " folder")
    present = sorted(tf.io.gfile.listdir(data_dir))
    if not present:
        raise ValueError(f"--data_dir {data_dir!r} is empty")
    found = set()
    for pattern in patterns:
        found.update(tf.io.gfile.glob(os.path.join(data_dir, pattern)))
    files = sorted(
        path for path in found
        if not os.path.basename(path).startswith(".")
        and not tf.io.gfile.isdir(path)
    )
    if not files:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise ValueError(
            f"no file in --data_dir {data_dir!r} matches"
            f" {' or '.join(patterns)} (--data_format"
            f" {config.data_format}); the folder holds: {shown}"
        )
    return files


# --------------------------------------------------------------------------
# Preprocessing (graph code, runs inside tf.data).


def to_unit_range(image):
    """Maps uint8-valued pixels [..., 3] to float32 in [-1, 1]."""
    return tf.cast(image, tf.float32) * (2.0 / 255.0) - 1.0


def center_square_resize(image, image_size):
    """Largest centred square, antialiased bilinear resize, uint8 levels.

    Matches `sagan_tf.data.preprocessing.square_rgb_array` (PIL) to within one
    level; the odd surplus column or row is dropped on the right/bottom.

    Args:
        image: uint8 [H, W, 3].
        image_size: output side S.

    Returns:
        float32 [S, S, 3] holding integers in [0, 255].
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    # [H, W, 3] -> [side, side, 3]
    square = tf.image.crop_to_bounding_box(
        image, (height - side) // 2, (width - side) // 2, side, side
    )
    # [side, side, 3] -> [S, S, 3]
    resized = tf.image.resize(
        square, [image_size, image_size], method="bilinear", antialias=True
    )
    return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def decode_image(encoded):
    """Decodes JPEG/PNG/GIF/BMP bytes to uint8 [H, W, 3]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# The class count comes from a flag the message names (training's name,
# and the released evaluator's).
_CLASSES_FLAG = ("the number of classes is --number_classes, --num_classes "
                 "in sagan-eval")


def _checked_label(label, filename, label_offset, num_classes, hint):
    if num_classes == 0:
        # Unconditional training ignores the stored labels.
        return tf.zeros_like(tf.cast(label, tf.int32))
    label = tf.cast(label, tf.int32) + label_offset
    in_range = tf.logical_and(label >= 0, label < num_classes)
    check = errors.require(
        in_range, "label ", tf.strings.as_string(label), " in ", filename,
        f" is outside [0, {num_classes}) (stored label plus --label_offset"
        f" {label_offset}; {_CLASSES_FLAG}){hint}",
    )
    with tf.control_dependencies([check]):
        return tf.identity(label)


def _label_hint(config):
    if config.data_format == "jpeg" and config.label_offset == 0:
        return (". The common ImageNet shards number labels 1..1000: pass"
                " --label_offset -1")
    return ""


def make_raw_parser(config, image_size, num_classes):
    expected = image_size * image_size * 3
    hint = _label_hint(config)

    def parse(filename, record):
        features = tf.io.parse_single_example(record, {
            "image_raw": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
        })
        raw = features["image_raw"]
        found = tf.strings.length(raw)
        check = errors.require(
            tf.equal(found, expected), "a record in ", filename, " has ",
            tf.strings.as_string(found), f" image_raw bytes; expected"
            f" {expected} ({image_size}x{image_size}x3 uint8 for --image_size"
            f" {image_size})",
        )
        with tf.control_dependencies([check]):
            pixels = tf.io.decode_raw(raw, tf.uint8)
        # [S*S*3] -> [S, S, 3]
        image = tf.reshape(pixels, [image_size, image_size, 3])
        label = _checked_label(
            features["label"], filename, config.label_offset, num_classes,
            hint)
        return to_unit_range(image), label

    return parse


# Leading bytes of the formats decode_image reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def make_encoded_parser(config, image_size, num_classes):
    hint = _label_hint(config)

    def parse(filename, encoded, label):
        known = tf.reduce_any([
            tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic)
            for magic in _MAGIC
        ])
        check = errors.require(
            known, "a record in ", filename, " holds no JPEG, PNG, GIF or"
            " BMP image in its encoded image bytes")
        with tf.control_dependencies([check]):
            encoded = tf.identity(encoded)
        image = center_square_resize(decode_image(encoded), image_size)
        label = _checked_label(
            label, filename, config.label_offset, num_classes, hint)
        return to_unit_range(image), label

    return parse


def make_jpeg_parser(config, image_size, num_classes):
    parse_encoded = make_encoded_parser(config, image_size, num_classes)

    def parse(filename, record):
        features = tf.io.parse_single_example(record, {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        })
        return parse_encoded(
            filename, features["image/encoded"],
            features["image/class/label"])

    return parse


# --------------------------------------------------------------------------
# Eager checks on the first record, so common mistakes fail before training.

_RAW_KEYS = ("image_raw", "label")
_JPEG_KEYS = ("image/encoded", "image/class/label")


def _int_feature(features, key):
    if key in features and features[key].int64_list.value:
        return int(features[key].int64_list.value[0])
    return None


def _first_example(path):
    try:
        for record in tf.data.TFRecordDataset(path).take(1):
            return tf.train.Example.FromString(record.numpy())
    except tf.errors.DataLossError as error:
        raise DataError(f"shard {path} is truncated or corrupt:"
                        f" {errors.clean(error.message)}") from None
    except Exception as error:  # noqa: BLE001 (protobuf DecodeError, ...)
        raise DataError(f"{path} is not a TFRecord file of tf.train.Example"
                        f" records ({error})") from None
    return None


def validate_first_record(config, files, *, image_size, num_classes):
    """Checks the feature keys, byte count and label of the first record of
    the first non-empty shard of `files`.

    Raises:
        DataError: naming the shard, on a mismatch; or "no records in ..."
            when every shard is empty.
    """
    for path in files:
        example = _first_example(path)
        if example is not None:
            break
    else:
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        raise DataError(
            f"no records in the {len(files)} shard(s) of --data_dir"
            f" {os.path.dirname(files[0]) if files else ''!r} ({shown});"
            " every one is empty. Convert the images again"
            " (data/convert_imagenet.py refuses to write empty shards) or"
            " point --data_dir at the shards.")
    features = example.features.feature
    keys = sorted(features.keys())
    wanted = _RAW_KEYS if config.data_format == "records" else _JPEG_KEYS
    missing = [key for key in wanted if key not in features]
    if missing:
        advice = ""
        if all(key in features for key in _JPEG_KEYS):
            advice = (" These are JPEG ImageNet shards: pass --data_format"
                      " jpeg --label_offset -1.")
        elif all(key in features for key in _RAW_KEYS):
            advice = " These are raw shards: pass --data_format records."
        raise DataError(
            f"{path} has no {', '.join(missing)} feature (it has"
            f" {', '.join(keys)}).{advice}")
    if config.data_format == "records":
        found = len(features["image_raw"].bytes_list.value[0])
        expected = image_size * image_size * 3
        if found != expected:
            height = _int_feature(features, "height")
            side = int(round((found / 3) ** 0.5))
            stored = (f"; the shard says height {height}" if height
                      else "")
            if not height and side * side * 3 == found:
                stored = f"; that is {side}x{side}x3"
            raise DataError(
                f"{path} has image_raw of {found} bytes; expected {expected}"
                f" ({image_size}x{image_size}x3 uint8 for --image_size"
                f" {image_size}){stored}. Pass the --image_size the shards"
                " were written at.")
        label_key = "label"
    else:
        label_key = "image/class/label"
    label = _int_feature(features, label_key)
    if label is None:
        raise DataError(f"{path}: the {label_key} feature holds no integer")
    label += config.label_offset
    if num_classes and not 0 <= label < num_classes:
        raise DataError(
            f"label {label} in {path} is outside [0, {num_classes}) (stored"
            f" label plus --label_offset {config.label_offset}; "
            f"{_CLASSES_FLAG}){_label_hint(config)}")
