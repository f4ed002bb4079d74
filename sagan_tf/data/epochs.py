"""The input order, epoch by epoch: a function of (seed, epoch) alone.

A training pipeline's stream is a sequence of epochs (`Dataset.range(first,
...).flat_map(one epoch)`). Epoch e is one pass over the pipeline's shards,
ordered by seeds drawn statelessly from (seed, e): a permutation of the
shards, a deterministic interleave, a shuffle buffer and the random flips.
Nothing carries over from epoch e - 1, so a resume at a position of p
records opens epoch p // N directly and skips the p mod N records before it
(N = records the pipeline serves per epoch): at most one epoch is read again,
however long the run has been going (`locate`).

N comes from the shards' record counts: `conversion.json`'s
`shard_records` (the converter writes them), or counted once by reading the
shards (`count_records`; training keeps them in the run directory, see
`training/input_order.py`).

Sharding across input pipelines follows `pipeline_files`: whole shards
(`files[index::pipelines]`) when there are at least as many shards as
pipelines, else every pipeline reads all shards and keeps every
`pipelines`-th record of each epoch.
"""

import concurrent.futures
import dataclasses
import json
import os
import time

import tensorflow as tf

from sagan_tf.data import converter

# Seeds drawn per epoch: the shard permutation (2), the shuffle buffer (1),
# the flips (1).
_NUM_EPOCH_SEEDS = 4
# Far beyond any run: Dataset.range needs an end.
_LAST_EPOCH = 2**62
# How often counting says how far it got.
_PROGRESS_SECS = 10.0


def epoch_seeds(seed, epoch):
    """int64 [4] seeds of one epoch, drawn statelessly from (seed, epoch).

    [0:2] permute the shards, [2] seeds the shuffle buffer, [3] the flips.
    Counter-based (Philox): the same on every machine.
    """
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform(
        [_NUM_EPOCH_SEEDS], seed=key, minval=None, maxval=None,
        dtype=tf.int64)


def epoch_stream(one_epoch, first_epoch, repeat):
    """Epochs `first_epoch`, `first_epoch + 1`, ... (one only unless
    `repeat`), each `one_epoch(epoch int64 scalar)`."""
    if not repeat:
        return one_epoch(tf.constant(first_epoch, tf.int64))
    return tf.data.Dataset.range(first_epoch, _LAST_EPOCH).flat_map(one_epoch)


def pipeline_files(files, num_pipelines, index):
    """(the shards pipeline `index` reads, whether it shards records).

    Whole shards are dealt out when there are enough of them; with fewer
    shards than pipelines each pipeline reads every shard and keeps every
    `num_pipelines`-th record (`shard_records` True).
    """
    if num_pipelines > 1 and len(files) < num_pipelines:
        return list(files), True
    return list(files[index::num_pipelines]), False


def records_per_epoch(counts, num_pipelines, index):
    """Records pipeline `index` of `num_pipelines` serves per epoch.

    Args:
        counts: the records of each shard, in `records.list_files` order.
    """
    mine, shard_records = pipeline_files(counts, num_pipelines, index)
    if shard_records:
        return len(range(index, sum(counts), num_pipelines))
    return sum(mine)


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a stream starts: `offset` records into epoch `epoch`."""

    epoch: int = 0
    offset: int = 0


def locate(records_served, per_epoch):
    """The Position after `records_served` records of epochs of `per_epoch`.

    Raises:
        ValueError: an epoch with no records (nothing could be served).
    """
    if records_served <= 0:
        return Position()
    if per_epoch <= 0:
        raise ValueError(
            f"an input pipeline with no records per epoch cannot resume at "
            f"record {records_served}")
    return Position(*divmod(int(records_served), int(per_epoch)))


# --------------------------------------------------------------------------
# Record counts.

MANIFEST_FILE = converter.MANIFEST_FILE


def manifest_counts(data_dir):
    """{shard file name: (records, bytes)} from the converter's
    conversion.json in `data_dir`; {} when it has none."""
    path = os.path.join(data_dir, MANIFEST_FILE)
    try:
        with tf.io.gfile.GFile(path) as f:
            manifest = json.load(f)
    except (tf.errors.NotFoundError, ValueError, OSError):
        return {}
    entries = {}
    if isinstance(manifest, dict):
        entries = manifest.get(converter.SHARD_RECORDS_KEY)
    counts = {}
    for name, entry in (entries or {}).items():
        if isinstance(entry, dict) and {"records", "bytes"} <= set(entry):
            counts[name] = (int(entry["records"]), int(entry["bytes"]))
    return counts


def file_sizes(paths, max_workers=16):
    """Byte sizes of `paths`, stat'ed in parallel (one round trip each on
    an object store)."""
    if not paths:
        return []
    with concurrent.futures.ThreadPoolExecutor(
        min(max_workers, len(paths))
    ) as pool:
        return list(pool.map(lambda p: int(tf.io.gfile.stat(p).length),
                             paths))


def count_records(paths, log=print):
    """The number of records in each TFRecord file of `paths`.

    Reads every file once (in parallel, without parsing a record) and says
    how far it got every 10 seconds.

    Returns:
        list of int, in the order of `paths`.
    """
    if not paths:
        return []

    def count(path):
        return path, tf.data.TFRecordDataset(path).reduce(
            tf.constant(0, tf.int64), lambda n, _: n + 1)

    counted = tf.data.Dataset.from_tensor_slices(list(paths)).map(
        count, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    start = last = time.monotonic()
    counts, total = [], 0
    log(f"Counting the records of {len(paths)} shard(s) once (reading "
        "them without decoding).")
    for _, n in counted.as_numpy_iterator():
        counts.append(int(n))
        total += int(n)
        now = time.monotonic()
        if now - last >= _PROGRESS_SECS:
            last = now
            log(f"  counted {len(counts)}/{len(paths)} shard(s), "
                f"{total:,} records, {now - start:.0f} s")
    log(f"Counted {total:,} records in {len(paths)} shard(s) in "
        f"{time.monotonic() - start:.1f} s.")
    return counts
