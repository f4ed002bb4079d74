"""Imports a checkpoint written by the released TF1 code.

    sagan-import-tf1 --tf1_checkpoint released/model.ckpt-1000000 \\
        --output_dir checkpoint/imagenet_64

(or `python -m sagan_tf.import_tf1` with the same flags; the command line
is in `commands/import_tf1.py`).

The released graph names its variables after TF1 variable scopes
(`model/g_block1/snconv1/w`, see original_variables.tsv); this port names
them after Keras layer paths (`generator/g_block1/snconv1/kernel`). Every
variable of the port's generator and discriminator (trainable weights, SN u
vectors, BN moving statistics, attention gains) is mapped to its TF1 name.
Adam slots (`<name>/Adam`, `<name>/Adam_1`) and `global_step` are carried
over when the checkpoint has them, so training resumes where it stopped.

The output directory receives a checkpoint in this port's layout (see
training/checkpoints.py) and a `config.json`; `sagan-train` pointed at it
(`--checkpoint_dir` = its parent, `--batch_size` = the `imagenet_<N>` suffix)
resumes from it, and `sagan-eval` scores it.
"""

import os

import numpy as np
import tensorflow as tf

from sagan_tf.training import checkpoint_files, checkpoints, run_lock, updates

_TF1_SCOPE = "model"
# Keras attention sublayer -> released 1x1 conv scope.
_ATTENTION_SCOPES = {
    "theta": "sn_conv_theta",
    "phi": "sn_conv_phi",
    "g": "sn_conv_g",
    "o": "sn_conv_attn",
}
# Linear layers name their matrix `Matrix` and their bias `bias`.
_LINEAR_SCOPES = ("g_snh0", "d_sn_linear")
# Variables the importer reads but that belong to no layer.
_GLOBAL_STEP = "global_step"
_BOOKKEEPING = ("beta1_power", "beta2_power", "d_step", "g_step")
_ADAM_SLOTS = ("Adam", "Adam_1")  # first and second moments


class CheckpointMismatchError(ValueError):
    """The TF1 checkpoint does not match the port's variables."""


def tf1_name(keras_path):
    """Maps a Keras variable path to the released TF1 variable name.

    Args:
      keras_path: e.g. `generator/g_block1/cbn_0/moving_mean`.

    Returns:
      e.g. `model/g_block1/cbn_0/mean`.
    """
    parts = keras_path.split("/")
    scopes, leaf = parts[1:-1], parts[-1]
    parent = scopes[-1] if scopes else ""
    in_attention = any(s.endswith("_non_local") for s in scopes)
    if in_attention:
        scopes = [_ATTENTION_SCOPES.get(s, s) for s in scopes]
    if leaf == "kernel":
        leaf = "Matrix" if parent in _LINEAR_SCOPES else "w"
    elif leaf == "bias" and parent not in _LINEAR_SCOPES:
        leaf = "biases"
    elif leaf == "embeddings":
        leaf = "embedding_map"
    elif leaf == "gamma" and in_attention and not scopes[-1].startswith(
        "sn_conv"
    ):
        leaf = "sigma_ratio"
    elif parent.startswith("cbn_") and leaf == "moving_mean":
        leaf = "mean"
    elif parent.startswith("cbn_") and leaf == "moving_variance":
        leaf = "var"
    return "/".join([_TF1_SCOPE, *scopes, leaf])


def tf1_shape(keras_path, shape):
    """The shape the released code gives this variable.

    Conditional-BN moving statistics are [1, 1, 1, C] there and [C] here;
    every other variable has the same shape in both.
    """
    parts = keras_path.split("/")
    if parts[-2].startswith("cbn_") and parts[-1].startswith("moving_"):
        return (1, 1, 1, *tuple(shape))
    return tuple(shape)


def _is_model_variable(name):
    if name == _GLOBAL_STEP or name.split("/")[0] in _BOOKKEEPING:
        return False
    if name.split("/")[-1] in _ADAM_SLOTS:
        return False
    return name.startswith(_TF1_SCOPE + "/")


def plan_import(tf1_variables, variables):
    """Matches the port's variables against a TF1 checkpoint's.

    Args:
      tf1_variables: dict TF1 name -> shape (from tf.train.list_variables).
      variables: the port's variables (with `.path` and `.shape`).

    Returns:
      list of (variable, TF1 name) pairs.

    Raises:
      CheckpointMismatchError: listing every variable that is missing from the
        checkpoint, of the wrong shape, or left unmapped in it.
    """
    pairs, problems, mapped = [], [], set()
    for variable in variables:
        name = tf1_name(variable.path)
        expected = tf1_shape(variable.path, variable.shape)
        mapped.add(name)
        if name not in tf1_variables:
            problems.append(f"missing: {name} (for {variable.path})")
        elif tuple(tf1_variables[name]) != expected:
            problems.append(
                f"wrong shape: {name} is {list(tf1_variables[name])}, "
                f"{variable.path} needs {list(expected)}"
            )
        else:
            pairs.append((variable, name))
    for name in sorted(tf1_variables):
        if _is_model_variable(name) and name not in mapped:
            problems.append(f"unmapped: {name} {list(tf1_variables[name])}")
    if problems:
        raise CheckpointMismatchError(
            f"{len(problems)} variable(s) do not match:\n  "
            + "\n  ".join(problems)
            + "\nCheck that the model flags (--image_size, --gf_dim, "
            "--df_dim, --number_classes, --z_dim, --generator_type, "
            "--discriminator_type, --attention_resolution) match the "
            "released run."
        )
    return pairs


def _adam_slots(optimizer, variable):
    """The (first, second) moment variables Keras' Adam keeps for `variable`.

    Keras 3 exposes no public accessor; the slots are ordered like the
    variables the optimizer was built on.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]


def _import_optimizer(reader, tf1_variables, optimizer, pairs, step):
    """Copies Adam moments when all of them are present.

    Returns:
      True when the moments were imported, False when the checkpoint has
      none (the optimizer then starts fresh).
    """
    names = [f"{n}/{slot}" for _, n in pairs for slot in _ADAM_SLOTS]
    present = [n for n in names if n in tf1_variables]
    if not present:
        return False
    if len(present) != len(names):
        missing = sorted(set(names) - set(present))
        raise CheckpointMismatchError(
            f"The checkpoint has Adam slots for some variables but not for "
            f"{len(missing)} others, e.g. {missing[:5]}"
        )
    for variable, name in pairs:
        m, v = _adam_slots(optimizer, variable)
        m.assign(reader.get_tensor(f"{name}/Adam").reshape(m.shape))
        v.assign(reader.get_tensor(f"{name}/Adam_1").reshape(v.shape))
    # Adam's bias correction counts the optimizer's own updates; with the
    # released g_step = d_step = 1 that is the global step.
    optimizer_ = getattr(optimizer, "inner_optimizer", optimizer)
    optimizer_.iterations.assign(step)
    return True


def import_checkpoint(tf1_checkpoint, output_dir, train_config, log=print):
    """Converts a released TF1 checkpoint into this port's layout.

    Args:
      tf1_checkpoint: checkpoint prefix (or a directory holding one).
      output_dir: run directory to write (`<checkpoint_dir>/imagenet_<N>`).
      train_config: TrainConfig whose model settings match the released run.
      log: progress printer.

    Returns:
      Path of the checkpoint written.

    Raises:
      ValueError: the checkpoint is missing or does not match.
    """
    path = tf1_checkpoint
    if tf.io.gfile.isdir(path):
        path = tf.train.latest_checkpoint(path)
        if path is None:
            raise ValueError(
                f"--tf1_checkpoint: no checkpoint in directory "
                f"{tf1_checkpoint!r}"
            )
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.NotFoundError, tf.errors.DataLossError) as e:
        raise ValueError(
            f"--tf1_checkpoint: cannot read a checkpoint at {path!r}: "
            f"{e.message.splitlines()[0]}"
        ) from None
    tf1_variables = reader.get_variable_to_shape_map()
    tf.io.gfile.makedirs(output_dir)
    # Held while writing, so that no trainer starts in the folder
    # meanwhile (and the import does not write beside a running one).
    lock = run_lock.lock_run_dir(output_dir)
    try:
        _check_empty(output_dir)
        return _import(reader, path, tf1_variables, output_dir,
                       train_config, log)
    finally:
        if lock is not None:
            lock.release()


def _check_empty(output_dir):
    """Refuses a folder that holds a run: checkpoint files (found from the
    files themselves, whatever the state file says) or a config.json."""
    taken = [os.path.basename(f) for c in checkpoint_files.find(output_dir)
             for f in c.files]
    for name in (checkpoints.CONFIG_FILE, checkpoint_files.STATE_FILE):
        if tf.io.gfile.exists(os.path.join(output_dir, name)):
            taken.append(name)
    if taken:
        raise ValueError(
            f"--output_dir {output_dir!r} already holds a run "
            f"({', '.join(sorted(taken))}); choose an empty directory so "
            "nothing is overwritten."
        )


def _import(reader, path, tf1_variables, output_dir, train_config, log):
    run = updates.GANTrainer(train_config, tf.distribute.get_strategy())
    g_count = len(run.generator.variables)
    pairs = plan_import(
        tf1_variables, run.generator.variables + run.discriminator.variables
    )
    g_pairs, d_pairs = pairs[:g_count], pairs[g_count:]
    log(f"Mapping {len(g_pairs)} generator and {len(d_pairs)} "
        f"discriminator variables from {path}")
    for variable, name in g_pairs + d_pairs:
        value = reader.get_tensor(name)
        variable.assign(np.reshape(value, variable.shape))

    step = int(reader.get_tensor(_GLOBAL_STEP)) if (
        _GLOBAL_STEP in tf1_variables) else 0
    run.step.assign(step)
    trainable = {id(v) for v in run.generator.trainable_variables}
    trainable |= {id(v) for v in run.discriminator.trainable_variables}
    with_adam = [
        _import_optimizer(
            reader,
            tf1_variables,
            optimizer,
            [(v, n) for v, n in pairs if id(v) in trainable],
            step,
        )
        for optimizer, pairs in (
            (run.g_optimizer, g_pairs),
            (run.d_optimizer, d_pairs),
        )
    ]
    if run.ema_generator is not None:
        run.copy_generator_to_ema()

    keeper = checkpoints.CheckpointKeeper(
        output_dir,
        run.step,
        run.checkpoint_objects(),
        max_to_keep=train_config.keep_checkpoints,
    )
    config_path = checkpoints.write_config(output_dir, train_config)
    saved = keeper.save()
    log(f"Global step {step}; Adam moments "
        f"{'imported' if all(with_adam) else 'not in the checkpoint: fresh'}")
    log(f"Wrote {saved} and {config_path}")
    return saved


if __name__ == "__main__":
    # `python -m sagan_tf.import_tf1` is the command `sagan-import-tf1`.
    from sagan_tf.commands import import_tf1

    import_tf1.run()
