"""Readable errors for bad training data found inside tf.data.

Checks inside the input pipeline (`require`) fail with a message wrapped in
markers; TensorFlow raises it as an InvalidArgumentError with its own
decoration. `describe_error` recovers the message, or, for a truncated or
corrupt shard (a DataLossError that gives only a byte offset), finds and
names the shard. `pipeline.clear_errors` uses it to raise `DataError`.
"""

import re

import tensorflow as tf

from sagan_tf.data import tfrecord_check

_START = "<<DataError: "
_END = " :DataError>>"
_NOISE = (
    re.compile(r"\{\{function_node [^}]*\}\}\s*"),
    re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]"),
    re.compile(r"\s*\[Op:[^\]]*\](\s*name:\s*\S*)?"),
    re.compile(r"Error in user-defined function passed to [^:]*:\d*"
               r" transformation with iterator: [^:]*:\s*"),
)
# The lines TF puts before the error raised inside a tf.function.
_PREAMBLE = re.compile(
    r"Graph execution error:$"
    r"|Detected at node .* defined at \(most recent call last\):$"
    r"|File \".*\", line \d+, in \S+$")
_DAMAGED = re.compile(r"(corrupted|truncated) record at (\d+)")


class DataError(ValueError):
    """Bad training data; the message names the file and the problem."""


def require(condition, *parts):
    """Graph op that fails with a DataError message unless `condition`.

    The message (Python strings and string tensors, joined) is built only
    when the check fails.

    Args:
        condition: scalar bool tensor.
        *parts: str or scalar tf.string tensors.

    Returns:
        A scalar bool tensor to use as a control dependency.
    """

    def fail():
        message = tf.strings.join(
            [_START]
            + [p if isinstance(p, tf.Tensor) else str(p) for p in parts]
            + [_END]
        )
        with tf.control_dependencies(
            [tf.debugging.Assert(condition, [message])]
        ):
            return tf.identity(condition)

    return tf.cond(condition, lambda: condition, fail)


def without_trace(message):
    """A TensorFlow message without the preamble of an error raised inside
    a tf.function: "Graph execution error:", "Detected at node ... defined
    at", and the Python stack where the node was defined. Lines are kept.
    """
    return "\n".join(
        line for line in message.splitlines()
        if line.strip() and not _PREAMBLE.match(line.strip()))


def clean(message):
    """Strips TensorFlow's decoration from a message: the graph preamble
    (`without_trace`), node and function names; one line."""
    message = without_trace(message)
    for pattern in _NOISE:
        message = pattern.sub(" ", message)
    return " ".join(message.split())


def describe_error(error, data_dir=None, list_shards=None):
    """A readable message for an input-pipeline error, or None.

    Args:
        error: a tf.errors.OpError raised while pulling a batch.
        data_dir: the folder read, for messages.
        list_shards: callable returning the shard paths, to find a damaged
            shard; called only for a DataLossError.

    Returns:
        The message for DataError, or None when `error` does not come from
        the input pipeline.
    """
    message = error.message or ""
    start = message.find(_START)
    if start >= 0:
        end = message.find(_END, start)
        end = end if end >= 0 else len(message)
        return message[start + len(_START):end]
    if isinstance(error, tf.errors.OutOfRangeError):
        where = f" in --data_dir {data_dir!r}" if data_dir else ""
        return (f"no records in the shards{where}: the input ended before"
                " one batch. Check that the shards hold records"
                " (`python -m sagan_tf.data.tfrecord_check <data_dir>`).")
    damaged = _DAMAGED.search(message)
    if isinstance(error, tf.errors.DataLossError) or damaged:
        offset = int(damaged.group(2)) if damaged else None
        shards = list_shards() if list_shards else []
        return _describe_damage(offset, message, data_dir, shards)
    if "IteratorGetNext" in message or "Iterator::" in message:
        where = f" in --data_dir {data_dir!r}" if data_dir else ""
        return f"reading the training data{where} failed: {clean(message)}"
    return None


def _describe_damage(offset, message, data_dir, shards):
    bad = (tfrecord_check.find_damaged_shards(shards, offset)
           if shards and offset is not None else [])
    if bad:
        named = "; ".join(f"shard {path} is {problem}" for path, problem in bad)
        return (f"{named}. Delete and re-create it (a converter re-run"
                " rewrites missing shards).")
    where = f"under {data_dir!r} " if data_dir else ""
    return (f"a TFRecord shard {where}is truncated or corrupt"
            f" ({clean(message)}); find it with `python -m"
            " sagan_tf.data.tfrecord_check <data_dir>`.")
