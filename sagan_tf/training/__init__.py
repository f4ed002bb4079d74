"""Training: the loop, the G and D updates, checkpoints, summaries.

  loop.py              `run(train_config)`: the program behind sagan-train
                       (strategy, resume, input, steps, summaries, saves,
                       signals)
  updates.py           `GANTrainer`: G, D, both Adam optimizers and the
                       released G and D updates as tf.functions
  config_checks.py     `validate_config`: a bad TrainConfig value names its
                       flag
  run_state.py         the noise RNG, input position and input seed kept
                       in every checkpoint, and how a resume goes on
  input_order.py       data_files.json: the shards a run's input order is
                       defined over, checked at each resume
  losses.py            hinge and KL losses
  distribute.py        which tf.distribute strategy, and who is chief
  checkpoints.py       `CheckpointKeeper` (save, restore with fallback) and
                       the run's config.json
  checkpoint_files.py  which checkpoint files exist, and which read
  run_lock.py          the lock that keeps a second trainer out of a run
  summaries.py         TensorBoard writing, image grids, progress lines
"""

from sagan_tf.training.checkpoints import (
    CheckpointError,
    CheckpointKeeper,
    DiskFullError,
    NonFiniteError,
    run_dir,
)
from sagan_tf.training.loop import run
from sagan_tf.training.run_lock import RunLockedError
from sagan_tf.training.updates import GANTrainer, validate_config

__all__ = [
    "CheckpointError",
    "CheckpointKeeper",
    "DiskFullError",
    "GANTrainer",
    "NonFiniteError",
    "RunLockedError",
    "run",
    "run_dir",
    "validate_config",
]
