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
                 standing_stats_batch_size=100, seed=None):
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
        self.generator = models.build_generator(model_config)
        self.step = tf.Variable(0, dtype=tf.int64)
        self.name = "ema_generator" if use_ema else "generator"
        self._checkpoint = tf.train.Checkpoint(
            step=self.step, **{self.name: self.generator}
        )

    @classmethod
    def from_config(cls, config):
        """The restorer an `EvalConfig` describes."""
        return cls(
            config.model, config.use_ema, config.standing_stats_batches,
            config.standing_stats_batch_size
            or config.dcgan_generator_batch_size,
            config.seed,
        )

    def restore(self, path):
        """Loads checkpoint `path`; returns its global step.

        Raises:
            CheckpointGoneError: its files vanished while reading.
            UnreadableCheckpointError: a file is truncated or damaged.
            ValueError: it holds no `ema_generator` though use_ema is set.
        """
        found = checkpoint_files.at(path)
        if not found.files:
            raise CheckpointGoneError(f"{path}: no such checkpoint")
        # Read G's tensors back first: a damaged file is then named before
        # any weight changes.
        reason = checkpoint_files.problem(found, keys=(self.name + "/",))
        if reason is not None:
            if not checkpoint_files.at(path).files:
                raise CheckpointGoneError(f"{path}: deleted while reading")
            raise UnreadableCheckpointError(f"{path}: {reason}")
        try:
            keys = [name for name, _ in tf.train.list_variables(path)]
            if not any(k.startswith(self.name + "/") for k in keys):
                raise ValueError(
                    f"Checkpoint {path} has no {self.name!r}"
                    + (
                        " (train with --ema_decay > 0, or drop --use_ema)."
                        if self.name == "ema_generator"
                        else "."
                    )
                )
            status = self._checkpoint.restore(path)
            status.expect_partial()
            status.assert_existing_objects_matched()
        except (tf.errors.NotFoundError, tf.errors.DataLossError) as err:
            raise CheckpointGoneError(f"{path}: {err}") from err
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
