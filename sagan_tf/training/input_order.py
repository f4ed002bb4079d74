"""The shards a run's input order is defined over: `data_files.json`.

A run's input order is a function of its seed and the epoch
(`data/epochs.py`), over the shards it started with. The run directory
keeps them in `data_files.json`: each shard's file name, byte size and,
once known, record count. At a resume:

- shards whose names and sizes match are the same data: their record
  counts (from this file, else from the converter's `conversion.json`,
  else counted once by reading the shards and then kept here) give the
  records per epoch, and the position is located in its epoch;
- any difference (a shard added, removed or rewritten) stops the run with
  `DataChangedError`, naming the shards: the position would not mean what
  it meant.

Only the names count, not the folder: the same shards copied elsewhere
(local disk to gs://) resume. TFDS data is described by its dataset name
and split size.
"""

import json
import os

import tensorflow as tf

from sagan_tf.data import epochs, pipeline, records
from sagan_tf.training import checkpoint_files

DATA_FILES = "data_files.json"
_VERSION = 1


class DataChangedError(ValueError):
    """The shards under --data_dir differ from those the run started with."""


def _describe(data_config):
    """The current data, as data_files.json holds it."""
    if data_config.data_format == "tfds":
        return {"version": _VERSION, "data_format": "tfds",
                "tfds": pipeline.TFDS_NAME,
                "records": pipeline.tfds_records_per_epoch(data_config)}
    files = records.list_files(data_config)
    known = epochs.manifest_counts(data_config.data_dir)
    shards = []
    for path, size in zip(files, epochs.file_sizes(files)):
        name = os.path.basename(path)
        entry = {"name": name, "bytes": size}
        if name in known and known[name][1] == size:
            entry["records"] = known[name][0]
        shards.append(entry)
    return {"version": _VERSION, "data_format": data_config.data_format,
            "shards": shards}


def _read(directory):
    path = os.path.join(directory, DATA_FILES)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is damaged ({error}); it lists the shards this run's "
            "input order is defined over. Restore it from a copy, or start "
            "a new input order: pass a --seed other than the run's (the "
            "weights continue)."
        ) from None
    return saved if isinstance(saved, dict) else None


def _differences(saved, current):
    """What changed between two descriptions, in words (empty: nothing)."""
    if saved.get("data_format") != current.get("data_format"):
        return [f"--data_format was {saved.get('data_format')}, now "
                f"{current.get('data_format')}"]
    if current["data_format"] == "tfds":
        if saved.get("records") != current["records"]:
            return [f"{saved.get('records')} examples then, "
                    f"{current['records']} now"]
        return []
    before = {s["name"]: s["bytes"] for s in saved.get("shards", [])}
    now = {s["name"]: s["bytes"] for s in current["shards"]}

    def named(names):
        names = sorted(names)
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    out = []
    added, gone = set(now) - set(before), set(before) - set(now)
    resized = {n for n in set(now) & set(before) if now[n] != before[n]}
    if added:
        out.append(f"{len(added)} shard(s) added ({named(added)})")
    if gone:
        out.append(f"{len(gone)} shard(s) gone ({named(gone)})")
    if resized:
        out.append(f"{len(resized)} shard(s) of another size "
                   f"({named(resized)})")
    return out


class InputOrder:
    """The run directory's record of its shards.

    Args:
      data_config: the run's DataConfig.
      directory: the run directory.
      is_chief: whether this process writes to it.
      log: where counting reports progress.
    """

    def __init__(self, data_config, directory, is_chief, log=print):
        self.data_config = data_config
        self.directory = directory
        self.is_chief = is_chief
        self.log = log
        self.path = os.path.join(directory, DATA_FILES)
        self.current = _describe(data_config)

    def record(self):
        """Writes the current shards as the run's (a new input order)."""
        if self.is_chief:
            self._write(self.current)

    def _write(self, description):
        tf.io.gfile.makedirs(self.directory)
        checkpoint_files.write_atomic(
            self.path, json.dumps(description, indent=1) + "\n")

    def check_unchanged(self, seed):
        """Raises DataChangedError when the shards differ from the run's.

        A run directory without the file (written by v0.3) gets it now.
        """
        saved = _read(self.directory)
        if saved is None:
            self.record()
            return
        changed = _differences(saved, self.current)
        if changed:
            raise DataChangedError(
                f"the data under --data_dir {self.data_config.data_dir!r} "
                f"changed since this run started: {'; '.join(changed)} "
                f"(see {self.path}). The run's input order (--seed {seed}) "
                "is defined over the shards it started with, so its "
                "position would not continue it. Restore those shards, or "
                "start a new input order over these: pass a --seed other "
                f"than {seed} (the weights continue), or --start_over."
            )
        # Counts the saved file knows and the current description lacks.
        for now, then in zip(self.current.get("shards", []),
                             saved.get("shards", [])):
            if "records" not in now and "records" in then:
                now["records"] = then["records"]

    def records_per_epoch_fn(self):
        """`pipeline.records_per_epoch_fn` over the run's shards, counting
        (once: the counts are then kept in data_files.json) those whose
        record counts are not known yet."""
        if self.current["data_format"] == "tfds":
            return pipeline.records_per_epoch_fn(self.data_config)
        shards = self.current["shards"]
        missing = [i for i, s in enumerate(shards) if "records" not in s]
        if missing:
            files = records.list_files(self.data_config)
            counted = epochs.count_records([files[i] for i in missing],
                                           self.log)
            for i, n in zip(missing, counted):
                shards[i]["records"] = n
            self.record()
        return pipeline.records_per_epoch_fn(
            self.data_config, [s["records"] for s in shards])
