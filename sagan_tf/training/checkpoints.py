"""Checkpoints of a training run, and the run directory that holds them.

Layout (the evaluator and the TF1 importer rely on it):
`<checkpoint_dir>/imagenet_<batch_size>/` holds `config.json`, the
TensorBoard event files and a `tf.train.CheckpointManager` checkpoint named
`ckpt-<step>` of

    tf.train.Checkpoint(step=<int64 global step>, generator=G,
                        discriminator=D, g_optimizer=..., d_optimizer=...,
                        ema_generator=<only when the EMA is on>)

The SN u vectors and the BN moving statistics are layer weights, so they are
part of `generator` / `discriminator`. Training also saves `noise_rng` (the
z / fake-label tf.random.Generator), `data_position` (batches read per
replica) and `input_seed` (the seed of the input order), so that a resume
continues the same run; checkpoints without them still restore
(`run_state.py`).
"""

import dataclasses
import json
import os
import sys

import tensorflow as tf

from sagan_tf.training import checkpoint_files

CHECKPOINT_NAME = checkpoint_files.CHECKPOINT_NAME
CONFIG_FILE = "config.json"


class NonFiniteError(RuntimeError):
    """A loss or a weight became NaN or infinite."""


def run_dir(train_config):
    """Returns `<checkpoint_dir>/imagenet_<batch_size>`, the released layout."""
    return os.path.join(
        train_config.checkpoint_dir, f"imagenet_{train_config.batch_size}"
    )


def config_to_json(train_config):
    """Returns the resolved configuration as indented JSON text."""
    return json.dumps(dataclasses.asdict(train_config), indent=2)


def write_config(directory, train_config):
    """Writes `config.json` (the resolved TrainConfig) into `directory`.

    Through a temporary file and a rename: a crash never leaves half a file.
    """
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, CONFIG_FILE)
    return checkpoint_files.write_atomic(
        path, config_to_json(train_config) + "\n"
    )


def read_config(directory):
    """The dict in `<directory>/config.json`, or None when there is none.

    Raises:
      ValueError: naming the file, when it is not valid JSON.
    """
    path = os.path.join(directory, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    try:
        saved = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is damaged ({error}); it records the settings of the "
            "checkpoints beside it. Restore it from a copy, or write it "
            "again: delete it and re-run training with the run's flags."
        ) from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds no settings object; delete it and "
                         "re-run training with the run's flags.")
    return saved


# ModelConfig fields that fix the shapes of the checkpointed variables.
ARCHITECTURE_FIELDS = (
    "image_size",
    "z_dim",
    "gf_dim",
    "df_dim",
    "number_classes",
    "generator_type",
    "discriminator_type",
    "attention_resolution",
)


def check_model_config(model_config, directory, flags=None):
    """Fails when `<directory>/config.json` describes another architecture.

    Restoring a checkpoint into differently shaped models fails deep inside
    TensorFlow; this names the flags to fix instead. A config.json with no
    checkpoint beside it (left by a start that failed) binds nothing.

    Args:
      model_config: the ModelConfig about to be restored into.
      directory: the run directory.
      flags: dict ModelConfig field -> flag name, the fields to compare
        (default: every ARCHITECTURE_FIELDS entry, under its own name).

    Raises:
      ValueError: naming every differing flag, its value and the run's.
    """
    path = os.path.join(directory, CONFIG_FILE)
    if not checkpoint_files.find(directory):
        return
    saved = read_config(directory)
    if saved is None:
        return
    saved = saved.get("model", {})
    flags = flags or {field: field for field in ARCHITECTURE_FIELDS}
    # Baseline networks have no attention block to place.
    uses_attention = any(
        getattr(model_config, kind) != "baseline"
        for kind in ("generator_type", "discriminator_type")
        if kind in flags
    )
    diffs = []
    for field, flag in flags.items():
        if field == "attention_resolution" and not uses_attention:
            continue
        ours = getattr(model_config, field)
        if field in saved and saved[field] != ours:
            diffs.append(f"--{flag}={ours} (the run used {saved[field]})")
    if diffs:
        raise ValueError(
            f"{path}: these flags differ from the run's settings: "
            + ", ".join(diffs)
            + ". Pass the run's values, or another --checkpoint_dir."
        )


@tf.function
def _all_finite(variables):
    flags = [tf.reduce_all(tf.math.is_finite(v)) for v in variables]
    return tf.reduce_all(tf.stack(flags))


def non_finite_variables(variables):
    """Returns the paths of the variables that hold a NaN or an infinity."""
    variables = [v for v in variables if tf.as_dtype(v.dtype).is_floating]
    if not variables or bool(_all_finite(variables)):
        return []
    return [
        getattr(v, "path", v.name)
        for v in variables
        if not bool(tf.reduce_all(tf.math.is_finite(v)))
    ]


class CheckpointError(RuntimeError):
    """No checkpoint of the run can be read, or one would be overwritten."""


class DiskFullError(RuntimeError):
    """A checkpoint could not be saved for lack of space."""


# ENOSPC and EDQUOT as the C library words them: a ResourceExhaustedError
# alone may be the host running out of memory.
_DISK_FULL = ("No space left on device", "Disk quota exceeded")


def _is_disk_full(error):
    message = getattr(error, "message", None) or str(error)
    return any(text in message for text in _DISK_FULL)


class CheckpointKeeper:
    """Saves and restores the training state in the run directory.

    Restoring takes the newest checkpoint that reads completely, warning
    about each newer one skipped and why; the chief moves those into
    `unreadable_checkpoints/` (nothing is deleted), so that later saves
    cannot land on their names. With checkpoint files present but none
    readable it stops (`CheckpointError`) rather than start at step 0.

    Saving never writes over files this process did not write, and a full
    disk gives `DiskFullError` naming the last intact checkpoint, with the
    partial save removed.

    In a multi-worker cluster every worker takes part in each save (the
    variables are synchronized collectively); only the chief writes to the
    run directory, the others write to a scratch directory they delete.

    Args:
      directory: the run directory.
      step: int64 tf.Variable, the global step.
      objects: dict name → trackable (generator, discriminator, optimizers,
        and ema_generator when the EMA is on).
      max_to_keep: checkpoints kept (`--keep_checkpoints`).
      is_chief: whether this process owns the run directory.
      task_id: this worker's index, names the scratch directory.
      warn: where warnings go.
      retry_secs: how long transient storage errors are retried while
        checkpoints are read (`--storage_retry_secs`).
    """

    def __init__(
        self, directory, step, objects, max_to_keep, is_chief=True, task_id=0,
        warn=None, retry_secs=0.0,
    ):
        self.directory = directory
        self.step = step
        self.is_chief = is_chief
        self.checkpoint = tf.train.Checkpoint(step=step, **objects)
        self._guarded = [
            v for obj in objects.values() for v in _variables_of(obj)
        ]
        write_dir = directory
        if not is_chief:
            write_dir = os.path.join(directory, f".worker_{task_id}_scratch")
        self._write_dir = write_dir
        self._max_to_keep = max_to_keep
        self._manager = None
        self._warn = warn or _print_warning
        self._retry_secs = retry_secs
        # Prefixes this process wrote; the newest intact one.
        self._written = set()
        self.last_intact = None

    @property
    def manager(self):
        # Created after the restore, which may rewrite the state file it
        # reads its rotation list from.
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self.checkpoint,
                self._write_dir,
                max_to_keep=self._max_to_keep,
                checkpoint_name=CHECKPOINT_NAME,
            )
        return self._manager

    def latest(self):
        """Path of the newest complete checkpoint in the run directory."""
        complete = [c for c in checkpoint_files.find(self.directory)
                    if c.complete]
        return complete[0].prefix if complete else None

    def start_over(self):
        """Moves every file of the run directory aside (chief only).

        Returns:
          The folder they went to, or None when there was nothing.
        """
        from sagan_tf.training import run_lock

        return checkpoint_files.set_aside_run(
            self.directory, keep=(run_lock.LOCK_FILE,)
        )

    def restore_latest(self):
        """Restores the newest readable checkpoint; returns its path or None.

        `choose`, which restores: for one process that owns the directory.

        Raises:
          CheckpointError: checkpoint files exist but none can be read.
          checkpoint_files.StorageError: the storage failed (nothing moved).
        """
        chosen = self.choose()
        return None if chosen is None else chosen.prefix

    def choose(self):
        """Restores the newest checkpoint that reads; returns it, or None.

        For the chief (or a single process): the other workers then
        `restore` the same one.

        Each newer one is skipped with a warning saying why, and moved into
        `unreadable_checkpoints/` (nothing is deleted); the state file is
        rewritten to list only what is there. Only evidence of damage makes
        a checkpoint unreadable: a storage error stops instead, with nothing
        moved.

        Raises:
          CheckpointError: checkpoint files exist but none can be read; the
            message lists them.
          checkpoint_files.StorageError: see `checkpoint_files.retrying`.
        """
        found = checkpoint_files.retrying(
            lambda: checkpoint_files.find(self.directory), self.directory,
            self._retry_secs,
        )
        missing = checkpoint_files.listed_but_missing(self.directory, found)
        for name in missing:
            self._warn(
                f"skipping checkpoint {name}: the state file "
                f"{os.path.join(self.directory, 'checkpoint')} lists it, but "
                "its files are gone."
            )
        unreadable, chosen = [], None
        for candidate in found:
            reason = self._restore_or_reason(candidate)
            if reason is None:
                chosen = candidate
                break
            unreadable.append((candidate, reason))
            self._warn(f"skipping checkpoint {candidate.prefix}: {reason}.")
        if chosen is None and unreadable:
            listing = "; ".join(
                f"{c.name} ({', '.join(os.path.basename(f) for f in c.files)}"
                f": {reason})" for c, reason in unreadable
            )
            raise CheckpointError(
                f"none of the {len(unreadable)} checkpoint(s) in "
                f"{self.directory} can be read: {listing}. Training will "
                "not start again from step 0 beside them. Restore the files "
                "from a copy, or pass --start_over to move everything in "
                "the run directory into a set_aside_<time>/ folder there "
                "(nothing is deleted) and train from step 0."
            )
        if unreadable:
            folder = checkpoint_files.set_aside(
                [c for c, _ in unreadable], self.directory,
                checkpoint_files.UNREADABLE_DIR,
            )
            self._warn(
                f"moved the unreadable checkpoint(s) "
                f"{', '.join(c.name for c, _ in unreadable)} to {folder}, "
                "so that new checkpoints do not replace them."
            )
        if chosen is not None and (unreadable or missing):
            # The state file must list only what is there: the evaluator
            # and the save rotation read it.
            kept = [c for c in found if c.complete and c.step <= chosen.step]
            checkpoint_files.write_state(self.directory, kept[::-1])
        return chosen

    def _restore_or_reason(self, candidate):
        """Restores `candidate` (one read of its files); None when done,
        else why it is damaged.

        TF's bundle reader checks each tensor's checksum as the restore
        reads it, so the newest checkpoint is read once. Only when the
        restore fails is the checkpoint read back in full, and only damage
        found then sets it aside: a restore that fails on intact files
        (another cause) raises its error.
        """
        if not candidate.complete or not any(
            ".data-" in f for f in candidate.files
        ):
            return checkpoint_files.problem(candidate)
        try:
            self.restore(candidate.prefix)
            return None
        except Exception as error:  # noqa: BLE001 - sorted below
            if checkpoint_files.error_kind(error) != "damage":
                raise
            reason = checkpoint_files.problem(
                candidate, retry_secs=self._retry_secs
            )
            if reason is None:
                raise
            return reason

    def path_of(self, step):
        """The prefix of checkpoint `ckpt-<step>` in the run directory."""
        return os.path.join(self.directory, f"{CHECKPOINT_NAME}-{step}")

    def restore(self, prefix):
        """Restores checkpoint `prefix` (chosen by the chief); returns it.

        Objects absent from the checkpoint (for instance the EMA of a run
        that started without one) keep their current values.
        """
        checkpoint_files.retrying(
            lambda: self.checkpoint.restore(prefix).expect_partial(),
            prefix, self._retry_secs,
        )
        self.last_intact = prefix
        return prefix

    @staticmethod
    def object_names(path):
        """The names of the objects checkpoint `path` holds (one read of
        its index)."""
        return {
            key.split("/", 1)[0] for key in
            checkpoint_files.open_reader(path).get_variable_to_shape_map()
        }

    @classmethod
    def has_object(cls, path, name):
        """Whether checkpoint `path` holds the object saved under `name`."""
        return name in cls.object_names(path)

    def check_weights(self):
        """Raises NonFiniteError if any saved weight is NaN or infinite."""
        bad = non_finite_variables(self._guarded)
        if bad:
            raise NonFiniteError(
                f"Non-finite weights at global step {int(self.step.numpy())} "
                f"({len(bad)} variables, e.g. {', '.join(bad[:5])}); "
                "stopping. No checkpoint with non-finite weights was written."
            )

    def save(self):
        """Saves at the current step unless a weight is non-finite.

        Returns:
          The path written (the chief's), or None on non-chief workers.

        Raises:
          NonFiniteError: naming the step and the first bad variables; nothing
            is written in that case.
          CheckpointError: files of that checkpoint exist that this process
            did not write.
          DiskFullError: the disk is full; names the last intact checkpoint.
        """
        self.check_weights()
        number = int(self.step.numpy())
        prefix = os.path.join(self._write_dir, f"{CHECKPOINT_NAME}-{number}")
        if prefix not in self._written:
            existing = tf.io.gfile.glob(prefix + ".*")
            if existing:
                raise CheckpointError(
                    f"refusing to overwrite {', '.join(existing)}, which "
                    "this process did not write. Move them away and resume."
                )
        try:
            path = self.manager.save(checkpoint_number=number)
        except tf.errors.OpError as error:
            if not _is_disk_full(error):
                raise
            self._remove_partial_save(prefix)
            last = self.last_intact or "none (no checkpoint was saved yet)"
            raise DiskFullError(
                f"the disk holding {self._write_dir} is full: saving "
                f"checkpoint {os.path.basename(prefix)} at global step "
                f"{number} failed ({error.message.strip()}). Its partial "
                f"files were removed. The last intact checkpoint is {last}. "
                "Free some space, then run the same command again to resume "
                "from it."
            ) from None
        self._written.add(path)
        if not self.is_chief:
            tf.io.gfile.rmtree(self._write_dir)
            return None
        self.last_intact = path
        return path

    def _remove_partial_save(self, prefix):
        # Only ever this process's own files: save() refused to start when
        # files of this prefix existed that it had not written.
        temp = prefix + "_temp"
        if tf.io.gfile.isdir(temp):
            tf.io.gfile.rmtree(temp)
        for path in tf.io.gfile.glob(prefix + ".*"):
            tf.io.gfile.remove(path)


def _print_warning(text):
    print(f"WARNING: {text}", file=sys.stderr, flush=True)


def _variables_of(obj):
    variables = getattr(obj, "variables", None)
    if variables is None:
        return []
    return list(variables() if callable(variables) else variables)
