"""The checkpoint files of a run directory: which exist, and which read.

`tf.train.CheckpointManager` writes checkpoint `ckpt-<N>` as
`ckpt-<N>.data-00000-of-00001` (through a `ckpt-<N>_temp/` folder) and then
`ckpt-<N>.index`, and lists it in the `checkpoint` state file. A crash, a
full disk or a user deleting files can leave any of these missing or cut
short; the state file may then name checkpoints that are gone. So
checkpoints are found from the files themselves, and a checkpoint is set
aside only on evidence of damage (a checksum mismatch, a file cut short,
unparsable or missing); a storage error is retried, then stops the run
(`retrying`, `StorageError`).
"""

import contextlib
import dataclasses
import datetime
import os
import re
import time

import tensorflow as tf
from tensorflow.python.training import py_checkpoint_reader

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


# Errors a filesystem returns for a passing fault (a network store's
# hiccup, a server restarting): they say nothing about the bytes, so they
# are retried and never taken for damage.
TRANSIENT_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
)
# What the bundle reader raises when the bytes themselves are wrong: a
# checksum mismatch, a file cut short or unparsable, a file gone. Its
# pybind layer raises ValueError or IndexError ("Read less bytes than
# requested") depending on where a file ends, and turns most errors into a
# plain OpError (code UNKNOWN): those are told apart by their message.
DAMAGE_ERRORS = (
    tf.errors.DataLossError,
    tf.errors.NotFoundError,
    tf.errors.OutOfRangeError,
    ValueError,
    IndexError,
)
_DAMAGE_MESSAGES = re.compile(
    r"checksum|corrupt|sstable|bad magic|read less bytes|truncated|"
    r"no such file|failed to find any matching files|unable to read file|"
    r"unable to open table file|data loss|could not parse",
    re.IGNORECASE,
)
# Seconds between retries of a transient error: doubling up to the cap.
_FIRST_DELAY, _MAX_DELAY = 0.25, 30.0


def error_kind(error):
    """"damage", "transient", "denied" or "other" (see the tuples above).

    A plain OpError without a sign of damage in its message is taken as
    transient: the reader hides the filesystem's error code.
    """
    if isinstance(error, DAMAGE_ERRORS):
        return "damage"
    if isinstance(error, tf.errors.PermissionDeniedError):
        return "denied"
    if isinstance(error, tf.errors.OpError):
        message = getattr(error, "message", None) or str(error)
        if _DAMAGE_MESSAGES.search(message):
            return "damage"
        if isinstance(error, TRANSIENT_ERRORS) or (
            type(error) is tf.errors.OpError
        ):
            return "transient"
    return "other"


class StorageError(RuntimeError):
    """The storage failed without showing damage: a transient error that
    outlasted the retries, no permission, or another error of the store.
    Nothing was moved."""


def _storage_error(error, what, extra=""):
    kind = type(error).__name__
    return StorageError(
        f"reading {what} failed with {kind} ({_short(error)}){extra}. This "
        "is an error of the storage, not evidence that the files are "
        "damaged: nothing was moved or changed. "
        + ("Give this process read access to the files, then run the same "
           "command again." if kind == "PermissionDeniedError" else
           "Check the filesystem (network, quota, server status) and run "
           "the same command again.")
    )


def retrying(fn, what, retry_secs, sleep=time.sleep):
    """fn(), retrying transient storage errors with backoff.

    Errors that show damage pass through unchanged, for the caller.

    Args:
      fn: the read, no arguments.
      what: names what is read, for the message.
      retry_secs: retry for at most this long (--storage_retry_secs).
      sleep: for tests.

    Raises:
      StorageError: a transient error lasted past `retry_secs`, or another
        error that shows no damage (PermissionDenied: not retried).
    """
    deadline = time.monotonic() + retry_secs
    delay, tries = _FIRST_DELAY, 1
    while True:
        try:
            return fn()
        except Exception as error:
            kind = error_kind(error)
            if kind == "damage":
                raise
            if kind == "other" and not isinstance(error, tf.errors.OpError):
                raise
            left = deadline - time.monotonic()
            if kind != "transient":
                raise _storage_error(error, what) from None
            if left <= 0:
                raise _storage_error(
                    error, what,
                    f", still after {tries} tries over {retry_secs:g} s "
                    "(--storage_retry_secs)",
                ) from None
            sleep(min(delay, left))
            delay, tries = min(2 * delay, _MAX_DELAY), tries + 1


def problem(checkpoint, keys=None, retry_secs=0.0):
    """Why `checkpoint` cannot be read completely, or None when it can.

    Every tensor (or only the checkpoint keys in `keys`) is read back,
    which checks each against the CRC32C in the index: a data file cut
    short, or a damaged index, is found here, before any variable is
    touched. Only such evidence of damage gives a reason; a storage error
    (see `retrying`) raises instead.

    Args:
      checkpoint: a `Checkpoint`.
      keys: optional checkpoint keys to read (default: all), or a
        function reader -> keys (see `object_keys`).
      retry_secs: how long transient storage errors are retried.

    Raises:
      StorageError: see `retrying`; other errors of the store that are
        not evidence of damage also stop, at once.
    """
    index = checkpoint.prefix + ".index"
    if index not in checkpoint.files:
        return (f"its index file {os.path.basename(index)} is missing "
                "(the save did not finish, or the file was deleted)")
    data = [f for f in checkpoint.files if ".data-" in f]
    if not data:
        return "its data file is missing"
    return retrying(
        lambda: _read_back(checkpoint, keys, index, data),
        checkpoint.prefix, retry_secs,
    )


_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


def open_reader(prefix):
    """The bundle reader of checkpoint `prefix`.

    What `tf.train.load_checkpoint` opens, without its guess that a path
    which is a directory names a folder of checkpoints: on object stores
    whose folders are name prefixes (TF's ram://), `ckpt-4` counts as one.
    Through the module, as `tf.train.Checkpoint.restore` calls it, so
    that one fault injected there reaches both.
    """
    return py_checkpoint_reader.NewCheckpointReader(prefix)


def object_keys(reader, names):
    """{name: checkpoint keys of every tensor restored into the object
    saved under `name`}, for the root objects of `names` present.

    A variable is saved once, under the first path that reaches it: G's
    weights in a training checkpoint sit under
    `g_optimizer/_trainable_variables/<N>/`, not under `generator/`. The
    object graph in the checkpoint links each object to the keys of its
    tensors, wherever they are stored.
    """
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH))
    found = {}
    for child in graph.nodes[0].children:
        if child.local_name not in names:
            continue
        keys, seen, stack = [], set(), [child.node_id]
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = graph.nodes[node_id]
            keys += [a.checkpoint_key for a in node.attributes]
            stack += [c.node_id for c in node.children]
        found[child.local_name] = sorted(keys)
    return found


def _read_back(checkpoint, keys, index, data):
    try:
        reader = open_reader(checkpoint.prefix)
    except Exception as error:
        if error_kind(error) != "damage":
            raise
        return (f"its index file {os.path.basename(index)} is truncated or "
                f"damaged ({_short(error)})")
    try:
        names = reader.get_variable_to_shape_map()
        if callable(keys):
            keys = keys(reader)
        for name in names if keys is None else keys:
            if name not in names:
                return f"it holds no tensor {name}"
            reader.get_tensor(name)
    except Exception as error:
        if error_kind(error) != "damage":
            raise
        files = ", ".join(os.path.basename(f) for f in data)
        return (f"its data file {files} is truncated or damaged "
                f"({_short(error)})")
    return None


def short(error):
    """`error` as one short line, for messages."""
    return _short(error)


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
    that a reader or a crash never sees half a file.

    The temporary file is flushed to the device before the rename (on a
    local disk; object stores commit on close), so that a power cut cannot
    leave the new name on empty contents. Temporaries of earlier processes
    that crashed before their rename are removed first.
    """
    _remove_stale_temporaries(path)
    temp = f"{path}.tmp-{os.getpid()}"
    data = text.encode() if isinstance(text, str) else text
    if "://" in path:
        with tf.io.gfile.GFile(temp, "wb") as f:
            f.write(data)
    else:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    tf.io.gfile.rename(temp, path, overwrite=True)
    if "://" not in path:
        _fsync_directory(os.path.dirname(path) or ".")
    return path


def _remove_stale_temporaries(path):
    pattern = re.compile(re.escape(os.path.basename(path)) + r"\.tmp-(\d+)$")
    directory = os.path.dirname(path) or "."
    try:
        entries = tf.io.gfile.listdir(directory)
    except tf.errors.NotFoundError:
        return
    for entry in entries:
        match = pattern.match(entry)
        if match and not _process_alive(int(match.group(1))):
            with contextlib.suppress(tf.errors.NotFoundError):
                tf.io.gfile.remove(os.path.join(directory, entry))


def _process_alive(pid):
    # Another live process may be writing its own temporary right now.
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_directory(directory):
    # Makes the rename itself durable; some filesystems refuse: harmless.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
