"""ImageNet input pipeline: released raw shards, JPEG shards and TFDS.

Every source yields (images, labels): float32 [batch, S, S, 3] in [-1, 1]
(x * 2 / 255 - 1, as released) and int32 [batch] class indices in
[0, num_classes); with num_classes 0 (unconditional) the stored labels are
ignored and every label is 0. `DataConfig.random_flip` mirrors each real
image left-right with probability 1/2 (off as released).

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
a readable message that names the shard (see `errors.py`).
"""

import contextlib

import tensorflow as tf

from sagan_tf.data import errors, records
from sagan_tf.data.errors import DataError

TFDS_NAME = "imagenet2012"

# Shards read at once per input pipeline.
_CYCLE_LENGTH = 16
_READ_BUFFER_BYTES = 8 << 20


# --------------------------------------------------------------------------
# Pipelines.


def _shard_pipeline(config, files, input_context, shuffle):
    """(filename, serialized record) pairs, disjoint across pipelines."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    deterministic = config.seed is not None or config.deterministic
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
        shard = tf.data.TFRecordDataset(
            filename, buffer_size=_READ_BUFFER_BYTES)
        return shard.map(lambda record: (filename, record))

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


def _flip_fn(seed):
    """(image, label) -> (image mirrored left-right with probability 1/2,
    label), one coin per image; only real images pass through here."""

    def flip(image, label):
        # [S, S, 3]: axis 1 is the width.
        return tf.image.random_flip_left_right(image, seed=seed), label

    return flip


def build_dataset(config, *, image_size, batch_size, num_classes,
                  input_context=None, repeat=True, shuffle=True,
                  skip_batches=0):
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
            [0, num_classes); 0 ignores them (every label 0).
        input_context: tf.distribute.InputContext, or None for one pipeline.
        repeat: repeat forever.
        shuffle: shuffle files and records.
        skip_batches: batches to leave out at the start, counted in
            `batch_size` records of the stream (a resume's position; only
            meaningful when `config.seed` fixes the order).

    Returns:
        tf.data.Dataset of (images float32 [batch_size, S, S, 3] in [-1, 1],
        labels int32 [batch_size]).

    Raises:
        ValueError (DataError for bad shard contents): see `list_files` and
        `validate_first_record`.
    """
    if image_size < 1 or batch_size < 1 or num_classes < 0:
        raise ValueError(
            f"image_size ({image_size}) and batch_size ({batch_size}) must"
            f" be positive and num_classes ({num_classes}) >= 0")
    if config.data_format == "tfds":
        dataset = _tfds_pipeline(config, input_context, shuffle)
        deterministic = config.seed is not None or config.deterministic
        parse = records.make_encoded_parser(config, image_size, num_classes)
    else:
        files = records.list_files(config)
        records.validate_first_record(
            config, files, image_size=image_size, num_classes=num_classes)
        dataset, deterministic = _shard_pipeline(
            config, files, input_context, shuffle)
        maker = (records.make_raw_parser if config.data_format == "records"
                 else records.make_jpeg_parser)
        parse = maker(config, image_size, num_classes)
    if shuffle and config.shuffle_buffer_size > 1:
        dataset = dataset.shuffle(config.shuffle_buffer_size, seed=config.seed)
    if repeat:
        dataset = dataset.repeat()
    if skip_batches:
        # The position of a resumed run is a count, not a saved iterator: a
        # tf.data iterator checkpoint holds the shuffle buffer (about 5 GB
        # at the default 100000 raw 128x128 records), and the distributed
        # iterator cannot be checkpointed. Skipping before `parse` reads
        # the records again but decodes none.
        dataset = dataset.skip(skip_batches * batch_size)
    dataset = dataset.map(
        parse, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic)
    if config.random_flip:
        dataset = dataset.map(
            _flip_fn(config.seed), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if config.deterministic:
        # Also for the stages that take no `deterministic` argument.
        options = tf.data.Options()
        options.deterministic = True
        dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)


def distributed_dataset(strategy, config, *, image_size,
                        per_replica_batch_size, num_classes, repeat=True,
                        shuffle=True, skip_steps=0):
    """`build_dataset` for every replica of `strategy`.

    `skip_steps`: elements the distributed iterator gave before (a resumed
    run's position). Each step takes one batch per replica, and an input
    pipeline serves all replicas of its worker.

    Returns:
        A tf.distribute.DistributedDataset whose elements are per-replica
        (images [per_replica_batch_size, S, S, 3], labels
        [per_replica_batch_size]).
    """
    if config.data_format != "tfds":
        # Fail here, outside the distribution machinery, on the common
        # mistakes.
        records.validate_first_record(
            config, records.list_files(config), image_size=image_size,
            num_classes=num_classes)

    def dataset_fn(input_context):
        per_pipeline = max(1, input_context.num_replicas_in_sync
                           // input_context.num_input_pipelines)
        return build_dataset(
            config, image_size=image_size,
            batch_size=per_replica_batch_size, num_classes=num_classes,
            input_context=input_context, repeat=repeat, shuffle=shuffle,
            skip_batches=skip_steps * per_pipeline)

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
    return errors.describe_error(
        error, data_dir=config.data_dir if config else None,
        list_shards=lambda: _shards_or_none(config))


def _shards_or_none(config):
    if config is None or config.data_format not in ("records", "jpeg"):
        return []
    try:
        return records.list_files(config)
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
