"""Restoring G (or its EMA) from a training run's checkpoints.

`GeneratorRestorer` builds G and loads it from one checkpoint, checking
the files first; `restore_newest` takes `--checkpoint_path` or the newest
checkpoint that reads, skipping damaged ones with a warning. The
evaluator, `--mode sample` and `--mode export` all restore through these.
With `--standing_stats_batches` every restore is followed by the standing
BN statistics (`standing_stats.py`).
"""

import os
import time

import tensorflow as tf

from sagan_tf import cli, models
from sagan_tf.evaluation import standing_stats
from sagan_tf.training import checkpoint_files, checkpoints

# ModelConfig fields that shape G, with the eval flag that sets each.
_GENERATOR_FLAGS = {
    "image_size": "image_size",
    "z_dim": "z_dim",
    "gf_dim": "gf_dim",
    "number_classes": "num_classes",
    "generator_type": "generator_type",
    "attention_resolution": "attention_resolution",
}


class CheckpointGoneError(RuntimeError):
    """The checkpoint disappeared (training rotated it out) mid-read."""


class UnreadableCheckpointError(RuntimeError):
    """The checkpoint's files are truncated or damaged."""


def run_dir(config):
    """`<checkpoint_dir>/imagenet_<batch_size>`: where training saves."""
    return os.path.join(config.checkpoint_dir, config.model_dir_name())


def eval_dir(config):
    """`<checkpoint_dir>/eval/imagenet_<batch_size>`: where results go."""
    return os.path.join(config.checkpoint_dir, "eval", config.model_dir_name())


def check_run_config(model_config, directory):
    """Fails when `<directory>/config.json` disagrees with the G flags.

    Raises:
        ValueError: naming every differing flag, its value and the run's.
    """
    checkpoints.check_model_config(
        model_config, directory, flags=_GENERATOR_FLAGS
    )


class GeneratorRestorer:
    """Restores G (or its EMA, `use_ema`) and the step from checkpoints.

    With `standing_stats_batches` > 0, every restore is followed by
    `standing_stats.apply_standing_stats` (in memory; the checkpoint file
    is not touched), so evaluation, sampling and export all see it.
    """

    def __init__(self, model_config, use_ema=False, standing_stats_batches=0,
                 standing_stats_batch_size=100, seed=None, retry_secs=0.0):
        if standing_stats_batches < 0:
            raise ValueError(
                "--standing_stats_batches must be >= 0, got "
                f"{standing_stats_batches}"
            )
        if standing_stats_batches and standing_stats_batch_size < 1:
            raise ValueError(
                "--standing_stats_batch_size must be >= 1, got "
                f"{standing_stats_batch_size}"
            )
        self.standing_stats_batches = standing_stats_batches
        self.standing_stats_batch_size = standing_stats_batch_size
        self._seed = seed
        self.retry_secs = retry_secs
        self.generator = models.build_generator(model_config)
        self.step = tf.Variable(0, dtype=tf.int64)
        self.name = "ema_generator" if use_ema else "generator"
        # Restores land here first (see `restore`).
        self._scratch = models.build_generator(model_config)
        self._scratch_step = tf.Variable(0, dtype=tf.int64)
        self._scratch_checkpoint = tf.train.Checkpoint(
            step=self._scratch_step, **{self.name: self._scratch}
        )

    @classmethod
    def from_config(cls, config):
        """The restorer an `EvalConfig` describes."""
        return cls(
            config.model, config.use_ema, config.standing_stats_batches,
            config.standing_stats_batch_size
            or config.dcgan_generator_batch_size,
            config.seed, config.storage_retry_secs,
        )

    def restore(self, path):
        """Loads checkpoint `path`, all or nothing; returns its global step.

        Every tensor the restore reads (found by checkpoint key through the
        checkpoint's object graph) is read back against its checksum first.
        The weights then go into a scratch G and are copied over only once
        all of them read, so G is never left half restored.

        Raises:
            CheckpointGoneError: its files vanished (rotated out) while
                reading.
            UnreadableCheckpointError: a file is truncated or damaged.
            checkpoint_files.StorageError: the storage failed (see
                --storage_retry_secs); nothing says the files are damaged.
            ValueError: it holds no `ema_generator` though use_ema is set.
        """
        found = checkpoint_files.retrying(
            lambda: checkpoint_files.at(path), path, self.retry_secs
        )
        if not found.files:
            raise CheckpointGoneError(f"{path}: no such checkpoint")
        held = {}

        def keys(reader):
            held.update(checkpoint_files.object_keys(
                reader, (self.name, "step")))
            return [k for names in held.values() for k in names]

        reason = checkpoint_files.problem(
            found, keys=keys, retry_secs=self.retry_secs
        )
        if reason is not None:
            raise self._unreadable(found, reason)
        if self.name not in held:
            raise ValueError(
                f"Checkpoint {path} has no {self.name!r}"
                + (
                    " (train with --ema_decay > 0, or drop --use_ema)."
                    if self.name == "ema_generator"
                    else "."
                )
            )

        def load():
            status = self._scratch_checkpoint.restore(path)
            status.expect_partial()
            status.assert_existing_objects_matched()

        try:
            checkpoint_files.retrying(load, path, self.retry_secs)
        except Exception as error:  # noqa: BLE001 - sorted below
            # Every key read back intact just before: a failure now is a
            # checkpoint rotated out, damage met by the restore itself, or
            # (a ValueError of shapes) a user error, raised as it is.
            damage = isinstance(error, tf.errors.OpError) and (
                checkpoint_files.error_kind(error) == "damage")
            if not damage and not self._gone(found):
                raise
            raise self._unreadable(
                found,
                f"it cannot be restored ({checkpoint_files.short(error)})",
            ) from None
        for live, read in zip(
            self.generator.variables, self._scratch.variables, strict=True
        ):
            live.assign(read)
        self.step.assign(self._scratch_step)
        if self.standing_stats_batches:
            start = time.time()
            standing_stats.apply_standing_stats(
                self.generator, self.standing_stats_batches,
                self.standing_stats_batch_size, self._seed,
            )
            message = (
                f"Standing BN statistics: moving averages of {self.name} "
                f"recomputed from {self.standing_stats_batches} batches of "
                f"{self.standing_stats_batch_size} in training mode "
                f"({time.time() - start:.1f} s; {path} unchanged)"
            )
            print(message, flush=True)
        return int(self.step.numpy())


    @staticmethod
    def _gone(found):
        return bool(
            set(found.files) - set(checkpoint_files.at(found.prefix).files)
        )

    @staticmethod
    def _unreadable(found, reason):
        # A file that went missing mid-read was rotated out by training,
        # not damaged.
        path = found.prefix
        if GeneratorRestorer._gone(found):
            return CheckpointGoneError(
                f"{path}: training deleted it while it was being read "
                "(older checkpoints rotate out under --keep_checkpoints)"
            )
        return UnreadableCheckpointError(f"{path}: {reason}")


def restore_newest(restorer, config, warn=cli.warn):
    """Restores `config.checkpoint_path`, else the newest readable one.

    Checkpoints that cannot be read are skipped with a warning naming each
    and why.

    Returns:
        (path, step) restored.

    Raises:
        ValueError: there is no checkpoint, or none can be read (listed).
    """
    if config.checkpoint_path:
        try:
            return config.checkpoint_path, restorer.restore(
                config.checkpoint_path)
        except (CheckpointGoneError, UnreadableCheckpointError) as err:
            raise ValueError(
                f"--checkpoint_path: {err}. Pass another checkpoint, or "
                "leave --checkpoint_path empty for the newest readable one."
            ) from None
    directory = run_dir(config)
    found = [c for c in checkpoint_files.find(directory) if c.complete]
    if not found:
        raise ValueError(
            f"no checkpoint in {directory} (--checkpoint_dir="
            f"{config.checkpoint_dir}, --batch_size={config.batch_size}). "
            "Train first, or pass the --checkpoint_dir and --batch_size of "
            "a run (or --checkpoint_path)."
        )
    skipped = []
    for candidate in found:
        try:
            return candidate.prefix, restorer.restore(candidate.prefix)
        except (CheckpointGoneError, UnreadableCheckpointError) as err:
            warn(f"skipping checkpoint {err}.")
            skipped.append(str(err))
    raise ValueError(
        f"none of the {len(found)} checkpoint(s) in {directory} can be "
        f"read: {'; '.join(skipped)}. Restore them from a copy, or pass "
        "--checkpoint_path."
    )
