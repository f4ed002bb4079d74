"""Checkpoints of a training run, and the run directory that holds them.

Layout (the evaluator and the TF1 importer rely on it):
`<checkpoint_dir>/imagenet_<batch_size>/` holds `config.json`, the
TensorBoard event files and a `tf.train.CheckpointManager` checkpoint named
`ckpt-<step>` of

    tf.train.Checkpoint(step=<int64 global step>, generator=G,
                        discriminator=D, g_optimizer=..., d_optimizer=...,
                        ema_generator=<only when the EMA is on>)

The SN u vectors and the BN moving statistics are layer weights, so they are
part of `generator` / `discriminator`.
"""

import dataclasses
import json
import os

import tensorflow as tf

CHECKPOINT_NAME = "ckpt"
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
    """Writes `config.json` (the resolved TrainConfig) into `directory`."""
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, CONFIG_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(config_to_json(train_config) + "\n")
    return path


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
    TensorFlow; this names the flags to fix instead.

    Args:
      model_config: the ModelConfig about to be restored into.
      directory: the run directory.
      flags: dict ModelConfig field -> flag name, the fields to compare
        (default: every ARCHITECTURE_FIELDS entry, under its own name).

    Raises:
      ValueError: naming every differing flag, its value and the run's.
    """
    path = os.path.join(directory, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f).get("model", {})
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


class CheckpointKeeper:
    """Saves and restores the training state in the run directory.

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
    """

    def __init__(
        self, directory, step, objects, max_to_keep, is_chief=True, task_id=0
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
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            write_dir,
            max_to_keep=max_to_keep,
            checkpoint_name=CHECKPOINT_NAME,
        )

    def latest(self):
        """Path of the newest checkpoint in the run directory, or None."""
        return tf.train.latest_checkpoint(self.directory)

    def restore_latest(self):
        """Restores the newest checkpoint; returns its path or None.

        Objects absent from the checkpoint (for instance the EMA of a run that
        started without one) keep their current values.
        """
        path = self.latest()
        if path is None:
            return None
        self.checkpoint.restore(path).expect_partial()
        return path

    @staticmethod
    def has_object(path, name):
        """Whether checkpoint `path` holds the object saved under `name`."""
        prefix = name + "/"
        return any(
            key.startswith(prefix) for key, _ in tf.train.list_variables(path)
        )

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
        """
        self.check_weights()
        path = self.manager.save(checkpoint_number=int(self.step.numpy()))
        if not self.is_chief:
            tf.io.gfile.rmtree(self._write_dir)
            return None
        return path


def _variables_of(obj):
    variables = getattr(obj, "variables", None)
    if variables is None:
        return []
    return list(variables() if callable(variables) else variables)
