"""`--deterministic` for training and evaluation.

On GPUs, cuDNN and atomic-add kernels are picked for speed and give
run-to-run differences unless TensorFlow's op determinism is on. The flag
turns it on, together with a deterministic input pipeline (seeded shuffles,
`deterministic=True` in every parallel `interleave` / `map`, the file list
in one order: see `data/pipeline.py`), which needs a seed: one is picked
when `--seed` is unset, and said.

With op determinism on, TensorFlow raises `UnimplementedError` for an op
that has no deterministic kernel on the device; `explain` turns that into
one paragraph that names the op and the flag.
"""

import contextlib
import dataclasses
import os
import re

import tensorflow as tf

from sagan_tf.data import errors

FLAG = "--deterministic"


class DeterminismError(RuntimeError):
    """An op has no deterministic kernel while --deterministic is on."""


def with_seed(config, saved_seed=None, log=print, needed=None):
    """Returns `config` with a seed when it needs one.

    Args:
      config: TrainConfig or EvalConfig (with a nested DataConfig `data`).
      saved_seed: the seed a resumed run was started with, preferred to a
        new one.
      log: where the choice is said.
      needed: whether a seed is needed (default: `config.deterministic`;
        training always needs one, so that every run resumes exactly).
    """
    if needed is None:
        needed = config.deterministic
    if not needed:
        return config
    seed = config.seed
    prefix = f"{FLAG}: " if config.deterministic else ""
    if seed is None:
        if saved_seed is not None:
            seed = int(saved_seed)
            log(f"{prefix}no --seed given; using the run's --seed {seed} "
                "(from its config.json).")
        else:
            seed = int.from_bytes(os.urandom(4), "little") % (2**31 - 1)
            log(f"{prefix}no --seed given; using --seed {seed} (recorded in "
                "config.json; pass it to repeat this run).")
    return replace_seed(config, seed)


def replace_seed(config, seed):
    """`config` with `seed` for the run and its input pipeline."""
    data = dataclasses.replace(
        config.data, seed=seed,
        deterministic=config.data.deterministic or config.deterministic)
    return dataclasses.replace(config, seed=seed, data=data)


@contextlib.contextmanager
def op_determinism(config):
    """TensorFlow's op determinism on inside, when `config.deterministic`.

    TF's switch is process-wide and public only one way; the previous
    setting comes back on exit (through TF's private counterpart, where it
    exists), so that library callers, tests included, keep theirs.
    """
    if not config.deterministic:
        yield
        return
    from tensorflow.python.framework import config as tf_config

    was_on = getattr(tf_config, "is_op_determinism_enabled", bool)()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        disable = getattr(tf_config, "disable_op_determinism", None)
        if not was_on and disable is not None:
            disable()


def explain(error):
    """A `DeterminismError` for an op lacking a deterministic kernel, or None.

    Args:
      error: a tf.errors.OpError raised while --deterministic is on.
    """
    if not isinstance(error, tf.errors.UnimplementedError):
        return None
    message = getattr(error, "message", "") or str(error)
    if "determinis" not in message.lower():
        return None
    # Raised inside the training step's tf.function, the message starts
    # with TF's graph preamble; the first line after it says what failed.
    first = (errors.without_trace(message) or message).splitlines()[0]
    op = _op_name(message)
    named = f"the op {op}" if op else "an op"
    return DeterminismError(
        f"{FLAG}: {named} has no deterministic implementation on this "
        f"device ({first.strip()}). Run without {FLAG} (the results then "
        "vary slightly from run to run), or on a device where the op has "
        "one (every op of this port has one on the CPU)."
    )


@contextlib.contextmanager
def explained_errors(config):
    """Inside, a missing deterministic kernel raises `DeterminismError`."""
    try:
        yield
    except tf.errors.UnimplementedError as error:
        replacement = explain(error) if config.deterministic else None
        if replacement is None:
            raise
        raise replacement from None


def warn_if_changed(saved, config, warn):
    """Warns when a resumed run changes --deterministic.

    Args:
      saved: the run's config.json as a dict (or None).
      config: the TrainConfig about to train.
      warn: where the warning goes.
    """
    if saved is None:
        return
    before = bool(saved.get("deterministic", False))
    if before != config.deterministic:
        warn(f"this run was started with {FLAG}={before} and resumes with "
             f"{FLAG}={config.deterministic}: the steps before and after "
             "the resume follow different rules, so the run as a whole is "
             "not repeatable.")


def _op_name(message):
    for pattern in (
        r"implementation of ([A-Za-z0-9_]+)",
        r"\[\[\{\{node ([^}]+)\}\}",
        r"\(node ([^)\s]+)",
    ):
        match = re.search(pattern, message)
        if match:
            return match.group(1)
    return None
