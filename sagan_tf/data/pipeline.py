"""ImageNet input pipeline: released raw shards, JPEG shards and TFDS.

Every source yields (images, labels): float32 [batch, S, S, 3] in [-1, 1]
(x * 2 / 255 - 1, as released) and int32 [batch] class indices in
[0, num_classes).

Sources (`DataConfig.data_format`):
  records  `<data_dir>/*.tfrecords`, the released format: `image_raw` holds
           raw uint8 S x S x 3 (HWC) bytes, `label` an int64 in 0..999.
  jpeg     The common sharded ImageNet TFRecords: `<data_dir>/train-*-of-*`
           plus `*.tfrecord` and `*.tfrecords`, with `image/encoded` (JPEG or
           PNG) and `image/class/label` (1..1000; use label_offset -1).
  tfds     tensorflow-datasets `imagenet2012`, "train" split, prepared from
           the tar files in `tfds_manual_dir` on first use.
JPEG and TFDS images get the converter's recipe: the largest centred square,
an antialiased bilinear resize to S, rounding to uint8 levels.

Errors. Problems that can be seen before training (missing folder, no
files, wrong feature keys, wrong --image_size, labels out of range in the
first record) raise `DataError` from `build_dataset`. Problems found while
iterating surface from TensorFlow as `tf.errors.OpError`; wrap the code that
pulls batches in `clear_errors(config)` to turn them into a `DataError` with
a readable message that names the shard (see `sagan_tf.data_errors`).
"""

import contextlib
import os

import tensorflow as tf

from sagan_tf import data_errors
from sagan_tf.data_errors import DataError

DATA_FORMATS = ("records", "jpeg", "tfds")
RECORDS_PATTERNS = ("*.tfrecords",)
JPEG_PATTERNS = ("train-*-of-*", "*.tfrecord", "*.tfrecords")
TFDS_NAME = "imagenet2012"

# Shards read at once per input pipeline.
_CYCLE_LENGTH = 16
_READ_BUFFER_BYTES = 8 << 20


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

    Matches `sagan_tf.preprocessing.square_rgb_array` (PIL) to within one
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


def _checked_label(label, filename, label_offset, num_classes, hint):
    label = tf.cast(label, tf.int32) + label_offset
    in_range = tf.logical_and(label >= 0, label < num_classes)
    check = data_errors.require(
        in_range, "label ", tf.strings.as_string(label), " in ", filename,
        f" is outside [0, {num_classes}) (stored label plus --label_offset"
        f" {label_offset}){hint}",
    )
    with tf.control_dependencies([check]):
        return tf.identity(label)


def _label_hint(config):
    if config.data_format == "jpeg" and config.label_offset == 0:
        return (". The common ImageNet shards number labels 1..1000: pass"
                " --label_offset -1")
    return ""


def _make_raw_parser(config, image_size, num_classes):
    expected = image_size * image_size * 3
    hint = _label_hint(config)

    def parse(filename, record):
        features = tf.io.parse_single_example(record, {
            "image_raw": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
        })
        raw = features["image_raw"]
        found = tf.strings.length(raw)
        check = data_errors.require(
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


def _make_encoded_parser(config, image_size, num_classes):
    hint = _label_hint(config)

    def parse(filename, encoded, label):
        known = tf.reduce_any([
            tf.equal(tf.strings.substr(encoded, 0, len(magic)), magic)
            for magic in _MAGIC
        ])
        check = data_errors.require(
            known, "a record in ", filename, " holds no JPEG, PNG, GIF or"
            " BMP image in its encoded image bytes")
        with tf.control_dependencies([check]):
            encoded = tf.identity(encoded)
        image = center_square_resize(decode_image(encoded), image_size)
        label = _checked_label(
            label, filename, config.label_offset, num_classes, hint)
        return to_unit_range(image), label

    return parse


def _make_jpeg_parser(config, image_size, num_classes):
    parse_encoded = _make_encoded_parser(config, image_size, num_classes)

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
                        f" {data_errors.clean(error.message)}") from None
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
    if not 0 <= label < num_classes:
        raise DataError(
            f"label {label} in {path} is outside [0, {num_classes}) (stored"
            f" label plus --label_offset {config.label_offset})"
            f"{_label_hint(config)}")


# --------------------------------------------------------------------------
# Pipelines.


def _shard_pipeline(config, files, input_context, shuffle):
    """(filename, serialized record) pairs, disjoint across pipelines."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    deterministic = config.seed is not None
    dataset = tf.data.Dataset.from_tensor_slices(files)
    shard_records = pipelines > 1 and len(files) < pipelines
    if pipelines > 1 and not shard_records:
        dataset = dataset.shard(pipelines, index)
        files = files[index::pipelines]
    if shard_records:
        # Record-level sharding needs the same record order in every
        # pipeline: no file shuffle, deterministic interleave.
        deterministic = True
    elif shuffle:
        dataset = dataset.shuffle(
            len(files), seed=config.seed, reshuffle_each_iteration=True)

    def read(filename):
        records = tf.data.TFRecordDataset(
            filename, buffer_size=_READ_BUFFER_BYTES)
        return records.map(lambda record: (filename, record))

    dataset = dataset.interleave(
        read,
        cycle_length=min(len(files), _CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if shard_records:
        dataset = dataset.shard(pipelines, index)
    return dataset, deterministic


def _tfds_pipeline(config, input_context, shuffle):
    """(file name, encoded image, label) triples from TFDS imagenet2012."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=config.tfds_data_dir or None)
    download_config = tfds.download.DownloadConfig(
        manual_dir=config.tfds_manual_dir or None)
    try:
        # A no-op once prepared; the first time it builds the dataset from
        # the ImageNet tar files (hours).
        builder.download_and_prepare(download_config=download_config)
    except (AssertionError, OSError, ValueError) as error:
        raise DataError(
            f"TFDS could not prepare {TFDS_NAME} (--tfds_manual_dir"
            f" {config.tfds_manual_dir!r}, --tfds_data_dir"
            f" {config.tfds_data_dir!r}): {error}") from None
    split = "train"
    if input_context and input_context.num_input_pipelines > 1:
        split = tfds.even_splits(
            split, input_context.num_input_pipelines
        )[input_context.input_pipeline_id]
    dataset = builder.as_dataset(
        split=split,
        shuffle_files=shuffle,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=config.seed),
    )

    def unpack(example):
        image = example["image"]
        if image.dtype != tf.string:
            image = tf.io.encode_png(image)
        name = example.get("file_name", tf.constant(f"{TFDS_NAME}/{split}"))
        return tf.strings.join([f"{TFDS_NAME} {split} ", name]), image, (
            example["label"])

    return dataset.map(unpack)


def build_dataset(config, *, image_size, batch_size, num_classes,
                  input_context=None, repeat=True, shuffle=True):
    """Builds the input pipeline of one replica (or one input pipeline).

    Files are sharded by `input_context` (records, when there are fewer files
    than pipelines) so that pipelines see disjoint examples, interleaved in
    parallel, shuffled with a `config.shuffle_buffer_size` buffer, repeated,
    decoded with AUTOTUNE parallelism, batched with drop_remainder and
    prefetched.

    Args:
        config: DataConfig.
        image_size: output side S; raw records must hold S*S*3 bytes.
        batch_size: examples per batch (per replica under a strategy).
        num_classes: labels (after label_offset) must lie in
            [0, num_classes).
        input_context: tf.distribute.InputContext, or None for one pipeline.
        repeat: repeat forever.
        shuffle: shuffle files and records.

    Returns:
        tf.data.Dataset of (images float32 [batch_size, S, S, 3] in [-1, 1],
        labels int32 [batch_size]).

    Raises:
        ValueError (DataError for bad shard contents): see `list_files` and
        `validate_first_record`.
    """
    if image_size < 1 or batch_size < 1 or num_classes < 1:
        raise ValueError(
            f"image_size ({image_size}), batch_size ({batch_size}) and"
            f" num_classes ({num_classes}) must be positive")
    if config.data_format == "tfds":
        dataset = _tfds_pipeline(config, input_context, shuffle)
        deterministic = config.seed is not None
        parse = _make_encoded_parser(config, image_size, num_classes)
    else:
        files = list_files(config)
        validate_first_record(
            config, files, image_size=image_size, num_classes=num_classes)
        dataset, deterministic = _shard_pipeline(
            config, files, input_context, shuffle)
        maker = (_make_raw_parser if config.data_format == "records"
                 else _make_jpeg_parser)
        parse = maker(config, image_size, num_classes)
    if shuffle and config.shuffle_buffer_size > 1:
        dataset = dataset.shuffle(config.shuffle_buffer_size, seed=config.seed)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(
        parse, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def distributed_dataset(strategy, config, *, image_size,
                        per_replica_batch_size, num_classes, repeat=True,
                        shuffle=True):
    """`build_dataset` for every replica of `strategy`.

    Returns:
        A tf.distribute.DistributedDataset whose elements are per-replica
        (images [per_replica_batch_size, S, S, 3], labels
        [per_replica_batch_size]).
    """
    if config.data_format != "tfds":
        # Fail here, outside the distribution machinery, on the common
        # mistakes.
        validate_first_record(
            config, list_files(config), image_size=image_size,
            num_classes=num_classes)

    def dataset_fn(input_context):
        return build_dataset(
            config, image_size=image_size,
            batch_size=per_replica_batch_size, num_classes=num_classes,
            input_context=input_context, repeat=repeat, shuffle=shuffle)

    return strategy.distribute_datasets_from_function(dataset_fn)


# --------------------------------------------------------------------------
# Turning tf.data errors into DataError.


def describe_error(error, config=None):
    """A readable message for an input-pipeline error, or None.

    Args:
        error: a tf.errors.OpError raised while pulling a batch.
        config: the DataConfig the dataset was built from; lets a corrupt
            shard be named.

    Returns:
        The message for DataError, or None when `error` does not come from
        the input pipeline.
    """
    return data_errors.describe_error(
        error, data_dir=config.data_dir if config else None,
        list_shards=lambda: _shards_or_none(config))


def _shards_or_none(config):
    if config is None or config.data_format not in ("records", "jpeg"):
        return []
    try:
        return list_files(config)
    except ValueError:
        return []


@contextlib.contextmanager
def clear_errors(config=None):
    """Re-raises input-pipeline errors inside the block as DataError.

    Use it around whatever pulls batches (`next(iterator)`, or a
    tf.function step that calls `next` itself). Other errors pass through
    unchanged.

    Args:
        config: the DataConfig of the dataset, used to name corrupt shards.
    """
    try:
        yield
    except tf.errors.OpError as error:
        message = describe_error(error, config)
        if message is None:
            raise
        raise DataError(message) from None


def get_next(iterator, config=None):
    """`next(iterator)` with input-pipeline errors raised as DataError."""
    with clear_errors(config):
        return next(iterator)
