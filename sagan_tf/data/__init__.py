"""Training images in: the input pipelines, the converter, shard checks.

  pipeline.py        `build_dataset` / `distributed_dataset`: shuffled,
                     batched (images in [-1, 1], labels) per replica, from
                     released shards, JPEG shards or TFDS; `clear_errors`
  epochs.py          the input order epoch by epoch, from (seed, epoch):
                     where a resume starts, shard record counts
  records.py         the shard formats: finding shards, parsing records,
                     first-record checks
  errors.py          `DataError` and readable messages for bad data found
                     inside tf.data
  converter.py       an image folder tree to released shards (the core of
                     `sagan-convert` / `data/convert_imagenet.py`)
  preprocessing.py   the converter's image recipe (PIL, no TensorFlow)
  tfrecord_check.py  finds truncated or corrupt shards
                     (`python -m sagan_tf.data.tfrecord_check DIR`)

The names below load their module on first use: the converter's worker
processes import `converter` and `preprocessing` only, without
TensorFlow.
"""

import importlib

_EXPORTS = {
    "DATA_FORMATS": "records",
    "DataError": "errors",
    "build_dataset": "pipeline",
    "center_square_resize": "records",
    "clear_errors": "pipeline",
    "decode_image": "records",
    "describe_error": "pipeline",
    "distributed_dataset": "pipeline",
    "get_next": "pipeline",
    "list_files": "records",
    "to_unit_range": "records",
    "validate_first_record": "records",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
