"""The checkpoint files of a run directory: which exist, and which read.

`tf.train.CheckpointManager` writes checkpoint `ckpt-<N>` as
`ckpt-<N>.data-00000-of-00001` (through a `ckpt-<N>_temp/` folder) and then
`ckpt-<N>.index`, and lists it in the `checkpoint` state file. A crash, a
full disk or a user deleting files can leave any of these missing or cut
short; the state file may then name checkpoints that are gone. So
checkpoints are found from the files themselves, and a checkpoint counts
only once every tensor in it reads back with its checksum.
"""

import dataclasses
import datetime
import os
import re
import time

import tensorflow as tf

from sagan_tf.data import errors as data_errors

CHECKPOINT_NAME = "ckpt"
STATE_FILE = "checkpoint"
# Where the trainer moves checkpoints it cannot read (never deleting one).
UNREADABLE_DIR = "unreadable_checkpoints"
_FILE = re.compile(
    rf"^(?P<name>{CHECKPOINT_NAME}-(?P<step>\d+))"
    r"\.(index|data-\d+-of-\d+)$"
)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One checkpoint found on disk.

    Attributes:
      prefix: path without the file suffixes (what TensorFlow restores).
      step: N of `ckpt-N`.
      files: the paths of its files present.
    """

    prefix: str
    step: int
    files: tuple[str, ...]

    @property
    def name(self):
        return os.path.basename(self.prefix)

    @property
    def complete(self):
        """Whether its index is written (the last file a save writes)."""
        return self.prefix + ".index" in self.files


def find(directory):
    """Every checkpoint with at least one file in `directory`, newest first.

    Files in sub-folders (a `ckpt-N_temp/` of a save in progress, set-aside
    folders) do not count.
    """
    if not tf.io.gfile.isdir(directory):
        return []
    groups = {}
    for entry in tf.io.gfile.listdir(directory):
        match = _FILE.match(entry.rstrip("/"))
        if match:
            path = os.path.join(directory, entry.rstrip("/"))
            groups.setdefault(
                (int(match.group("step")), match.group("name")), []
            ).append(path)
    return [
        Checkpoint(os.path.join(directory, name), step, tuple(sorted(files)))
        for (step, name), files in sorted(groups.items(), reverse=True)
    ]


def at(prefix):
    """The `Checkpoint` at `prefix` (e.g. --checkpoint_path), files as
    present; `files` is empty when it does not exist."""
    files = tuple(sorted(
        path for path in tf.io.gfile.glob(prefix + ".*")
        if path.endswith(".index") or ".data-" in path
    ))
    match = re.search(r"-(\d+)$", prefix)
    return Checkpoint(prefix, int(match.group(1)) if match else -1, files)


def listed_but_missing(directory, found):
    """Names the state file lists whose files are all gone."""
    try:
        state = tf.train.get_checkpoint_state(directory)
    except Exception:  # noqa: BLE001 - a damaged state file lists nothing
        return []
    if state is None:
        return []
    present = {c.name for c in found}
    names = [os.path.basename(p) for p in state.all_model_checkpoint_paths]
    latest = os.path.basename(state.model_checkpoint_path or "")
    if latest and latest not in names:
        names.append(latest)
    return [n for n in names if n not in present]


def problem(checkpoint, keys=None):
    """Why `checkpoint` cannot be read completely, or None when it can.

    Every tensor (or only those whose name starts with one of `keys`) is
    read back, which checks each against the CRC32C in the index: a data
    file cut short, or a damaged index, is found here, before any variable
    is touched.

    Args:
      checkpoint: a `Checkpoint`.
      keys: optional name prefixes, e.g. ("generator/", "step/").
    """
    index = checkpoint.prefix + ".index"
    if index not in checkpoint.files:
        return (f"its index file {os.path.basename(index)} is missing "
                "(the save did not finish, or the file was deleted)")
    data = [f for f in checkpoint.files if ".data-" in f]
    if not data:
        return "its data file is missing"
    # The reader's pybind layer raises OpErrors, ValueError or IndexError
    # ("Read less bytes than requested") depending on where the file ends.
    try:
        reader = tf.train.load_checkpoint(checkpoint.prefix)
    except Exception as error:  # noqa: BLE001
        return (f"its index file {os.path.basename(index)} is truncated or "
                f"damaged ({_short(error)})")
    try:
        for name in reader.get_variable_to_shape_map():
            if keys is None or name.startswith(tuple(keys)):
                reader.get_tensor(name)
    except Exception as error:  # noqa: BLE001
        names = ", ".join(os.path.basename(f) for f in data)
        return (f"its data file {names} is truncated or damaged "
                f"({_short(error)})")
    return None


def _short(error):
    message = getattr(error, "message", None) or str(error)
    message = data_errors.clean(message)
    return message if len(message) <= 200 else message[:197] + "..."


def set_aside(checkpoints, directory, folder):
    """Moves the files of `checkpoints` into `<directory>/<folder>/`.

    Files keep their names and contents; an existing file of the same name
    there is never replaced (the new one gets a numbered suffix).

    Returns:
      The folder they went to.
    """
    target = os.path.join(directory, folder)
    tf.io.gfile.makedirs(target)
    for checkpoint in checkpoints:
        for path in checkpoint.files:
            _move_without_replacing(path, target)
    return target


def set_aside_run(directory, keep=()):
    """Moves every entry of `directory` (but `keep` and earlier set-aside
    folders) into a new `<directory>/set_aside_<time>/`; returns it."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = os.path.join(directory, f"set_aside_{stamp}")
    entries = [
        e.rstrip("/") for e in tf.io.gfile.listdir(directory)
        if e.rstrip("/") not in keep
        and not e.startswith(("set_aside_", UNREADABLE_DIR))
    ]
    if not entries:
        return None
    tf.io.gfile.makedirs(target)
    for entry in entries:
        _move_without_replacing(os.path.join(directory, entry), target)
    return target


def _move_without_replacing(path, target):
    name = os.path.basename(path)
    destination = os.path.join(target, name)
    copy = 1
    while tf.io.gfile.exists(destination):
        destination = os.path.join(target, f"{name}.{copy}")
        copy += 1
    tf.io.gfile.rename(path, destination)


def write_state(directory, checkpoints):
    """Rewrites the `checkpoint` state file to list `checkpoints`.

    `checkpoints` are oldest first; the last is the latest. Their files'
    times go in as the save times, so `CheckpointManager` keeps rotating
    them out under --keep_checkpoints. Written to a temporary name, then
    renamed.
    """
    if not checkpoints:
        return
    stamps = [_mtime(c.prefix + ".index") for c in checkpoints]
    lines = [f'model_checkpoint_path: "{checkpoints[-1].name}"']
    lines += [f'all_model_checkpoint_paths: "{c.name}"' for c in checkpoints]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in stamps]
    lines.append(f"last_preserved_timestamp: {min(stamps) - 1.0!r}")
    write_atomic(os.path.join(directory, STATE_FILE), "\n".join(lines) + "\n")


def _mtime(path):
    try:
        return float(tf.io.gfile.stat(path).mtime_nsec) / 1e9
    except tf.errors.OpError:
        return time.time()


def write_atomic(path, text):
    """Writes `text` to `path` through a temporary file and a rename, so
    that a reader or a crash never sees half a file."""
    temp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(temp, path, overwrite=True)
    return path
