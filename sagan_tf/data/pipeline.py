"""ImageNet input pipeline: released raw shards, JPEG shards and TFDS.

Every source yields (images, labels): float32 [batch, S, S, 3] in [-1, 1]
(x * 2 / 255 - 1, as released) and int32 [batch] class indices in
[0, num_classes); with num_classes 0 (unconditional) the stored labels are
ignored and every label is 0. `DataConfig.random_flip` mirrors each real
image left-right with probability 1/2 (off as released).

The stream is a sequence of epochs whose order is a function of
(`DataConfig.seed`, epoch) alone (`epochs.py`), so that a resumed run opens
its epoch directly: `build_dataset(start=...)`,
`distributed_dataset(skip_steps=...)`.

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
import os

import tensorflow as tf

from sagan_tf.data import epochs, errors, records
from sagan_tf.data.errors import DataError

TFDS_NAME = "imagenet2012"

# Shards read at once per input pipeline.
_CYCLE_LENGTH = 16
_READ_BUFFER_BYTES = 8 << 20


# --------------------------------------------------------------------------
# Sources: one epoch of raw elements, given that epoch's seeds.


def _shard_source(config, files, input_context, shuffle):
    """(one_epoch(seeds) -> (filename, serialized record) pairs, whether
    the order must be deterministic); disjoint across pipelines."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    mine, shard_records = epochs.pipeline_files(files, pipelines, index)
    # Record-level sharding needs the same record order in every pipeline:
    # a deterministic interleave (the shard permutation, drawn from the
    # epoch's seeds, is the same in all of them).
    deterministic = (config.seed is not None or config.deterministic
                     or shard_records)
    if pipelines > 1 and not shard_records:
        _require_records(mine, index)
    names = tf.constant(mine)

    def read(filename):
        shard = tf.data.TFRecordDataset(
            filename, buffer_size=_READ_BUFFER_BYTES)
        return shard.map(lambda record: (filename, record))

    def one_epoch(seeds):
        order = names
        if shuffle:
            order = tf.gather(names, tf.random.experimental.stateless_shuffle(
                tf.range(len(mine)), seed=seeds[:2]))
        dataset = tf.data.Dataset.from_tensor_slices(order).interleave(
            read,
            cycle_length=min(len(mine), _CYCLE_LENGTH),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        if shard_records:
            dataset = dataset.shard(pipelines, index)
        return dataset

    return one_epoch, deterministic


def _require_records(files, index):
    """An epoch without records would make the endless stream of epochs
    wait forever; refuse a pipeline whose every shard is empty."""
    for path in files:
        for _ in tf.data.TFRecordDataset(path).take(1):
            return
    raise DataError(
        f"input pipeline {index} would read only empty shards ("
        f"{', '.join(files[:3])}{', ...' if len(files) > 3 else ''}); "
        "convert the images again (data/convert_imagenet.py writes no "
        "empty shard) or remove the empty shards from --data_dir.")


def _tfds_builder_and_split(config, input_context):
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
    return builder, split


def tfds_records_per_epoch(config, input_context=None):
    """Examples per epoch of the TFDS pipeline (from the dataset's info)."""
    builder, split = _tfds_builder_and_split(config, input_context)
    return int(builder.info.splits[split].num_examples)


def _tfds_source(config, input_context):
    """one_epoch(seeds) -> (file name, encoded image, label) triples from
    TFDS imagenet2012, in its stored order (TFDS shuffles the examples when
    it prepares the dataset); the epoch's order comes from the buffer."""
    import tensorflow_datasets as tfds

    builder, split = _tfds_builder_and_split(config, input_context)
    dataset = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )

    def unpack(example):
        image = example["image"]
        if image.dtype != tf.string:
            image = tf.io.encode_png(image)
        name = example.get("file_name", tf.constant(f"{TFDS_NAME}/{split}"))
        return tf.strings.join([f"{TFDS_NAME} {split} ", name]), image, (
            example["label"])

    dataset = dataset.map(unpack)
    return lambda seeds: dataset


def _flip(image, label, flip_key, index):
    """Mirrors a real image left-right with probability 1/2: a coin drawn
    statelessly from its epoch's flip seed and its place in the epoch, so a
    resumed stream flips what the straight one did."""
    # [S, S, 3]: axis 1 is the width.
    image = tf.image.stateless_random_flip_left_right(
        image, seed=tf.stack([flip_key, index]))
    return image, label


def _fresh_seed():
    # An unseeded pipeline still orders its epochs by a seed: a new one
    # for each pipeline built.
    return int.from_bytes(os.urandom(4), "little") % (2**31 - 1)


def build_dataset(config, *, image_size, batch_size, num_classes,
                  input_context=None, repeat=True, shuffle=True,
                  start=None):
    """Builds the input pipeline of one replica (or one input pipeline).

    The stream is a sequence of epochs (see `epochs.py`): epoch e reads
    this pipeline's shards in an order drawn from (`config.seed`, e), with
    a `config.shuffle_buffer_size` shuffle buffer; then records are decoded
    with AUTOTUNE parallelism, batched with drop_remainder (batches cross
    epochs) and prefetched. Files are sharded by `input_context` (records,
    when there are fewer files than pipelines) so that pipelines see
    disjoint examples.

    Args:
        config: DataConfig.
        image_size: output side S; raw records must hold S*S*3 bytes.
        batch_size: examples per batch (per replica under a strategy).
        num_classes: labels (after label_offset) must lie in
            [0, num_classes); 0 ignores them (every label 0).
        input_context: tf.distribute.InputContext, or None for one pipeline.
        repeat: epochs without end (else the one epoch `start.epoch`).
        shuffle: shuffle files and records.
        start: an `epochs.Position`, where the stream starts (default: the
            first record of epoch 0): `start.offset` records (read, not
            decoded) are left out of epoch `start.epoch` (a resume's
            position; only meaningful when `config.seed` fixes the order).

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
        source = _tfds_source(config, input_context)
        deterministic = config.seed is not None or config.deterministic
        parse = records.make_encoded_parser(config, image_size, num_classes)
    else:
        files = records.list_files(config)
        records.validate_first_record(
            config, files, image_size=image_size, num_classes=num_classes)
        source, deterministic = _shard_source(
            config, files, input_context, shuffle)
        maker = (records.make_raw_parser if config.data_format == "records"
                 else records.make_jpeg_parser)
        parse = maker(config, image_size, num_classes)
    start = start or epochs.Position()
    seed = config.seed if config.seed is not None else _fresh_seed()
    buffer = config.shuffle_buffer_size if shuffle else 0

    def one_epoch(epoch):
        seeds = epochs.epoch_seeds(seed, epoch)
        dataset = source(seeds)
        if buffer > 1:
            # This epoch's seed alone: tf.data would pair it with the
            # global seed of the graph it is traced in (tf.random.set_seed),
            # and a global seed of 0 makes TF compare this tensor with 0 in
            # Python, which fails in a traced function (--seed 0 crashed).
            tf.compat.v1.get_default_graph().seed = None
            dataset = dataset.shuffle(buffer, seed=seeds[2])
        # (flip seed, place in the epoch, *raw element)
        return dataset.enumerate().map(
            lambda index, raw: (seeds[3], index, *raw))

    dataset = epochs.epoch_stream(one_epoch, start.epoch, repeat)
    if start.offset:
        # The position of a resumed run is a count, not a saved iterator: a
        # tf.data iterator checkpoint holds the shuffle buffer (about 5 GB
        # at the default 100000 raw 128x128 records), and the distributed
        # iterator cannot be checkpointed. Skipping before `parse` reads
        # the records again but decodes none, and never more than an epoch.
        dataset = dataset.skip(start.offset)
    dataset = dataset.map(
        lambda flip_key, index, *raw: (*parse(*raw), flip_key, index),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if config.random_flip:
        dataset = dataset.map(
            _flip, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic)
    else:
        dataset = dataset.map(lambda image, label, *_: (image, label))
    dataset = dataset.batch(batch_size, drop_remainder=True)
    if config.deterministic:
        # Also for the stages that take no `deterministic` argument.
        options = tf.data.Options()
        options.deterministic = True
        dataset = dataset.with_options(options)
    return dataset.prefetch(tf.data.AUTOTUNE)


def records_per_epoch_fn(config, shard_counts=None, log=print):
    """(num_pipelines, index) -> records that pipeline serves per epoch.

    Args:
        config: DataConfig.
        shard_counts: records of each shard in `records.list_files` order;
            None counts them (reading every shard once). Unused for TFDS.
    """
    if config.data_format == "tfds":
        def tfds_size(num_pipelines, index):
            context = tf.distribute.InputContext(num_pipelines, index, 1)
            return tfds_records_per_epoch(config, context)

        return tfds_size
    if shard_counts is None:
        shard_counts = epochs.count_records(records.list_files(config), log)
    return lambda num_pipelines, index: epochs.records_per_epoch(
        shard_counts, num_pipelines, index)


def distributed_dataset(strategy, config, *, image_size,
                        per_replica_batch_size, num_classes, repeat=True,
                        shuffle=True, skip_steps=0, records_per_epoch=None,
                        log=None):
    """`build_dataset` for every replica of `strategy`.

    `skip_steps`: elements the distributed iterator gave before (a resumed
    run's position). Each step takes one batch per replica, and an input
    pipeline serves all replicas of its worker, so pipeline i has served
    skip_steps x (its replicas) x per_replica_batch_size records; it opens
    the epoch they reach and skips only the rest (`epochs.locate`).
    `records_per_epoch`: see `records_per_epoch_fn` (built, counting the
    shards, when a skip needs it and none is given). `log`: where each
    pipeline says where it resumes.

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
    if skip_steps and records_per_epoch is None:
        records_per_epoch = records_per_epoch_fn(config)

    def dataset_fn(input_context):
        per_pipeline = max(1, input_context.num_replicas_in_sync
                           // input_context.num_input_pipelines)
        start = epochs.Position()
        if skip_steps:
            start = epochs.locate(
                skip_steps * per_pipeline * per_replica_batch_size,
                records_per_epoch(input_context.num_input_pipelines,
                                  input_context.input_pipeline_id))
            if log is not None:
                log(f"Input pipeline {input_context.input_pipeline_id}: "
                    f"resuming at epoch {start.epoch}, skipping the "
                    f"{start.offset:,} record(s) of it served before (read, "
                    "not decoded).")
        return build_dataset(
            config, image_size=image_size,
            batch_size=per_replica_batch_size, num_classes=num_classes,
            input_context=input_context, repeat=repeat, shuffle=shuffle,
            start=start)

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
