"""Evaluation: scoring checkpoints, sampling, attention figures, export.

  evaluator.py       `Evaluator`: watches a run and scores its checkpoints
                     with IS, FID, KID and intra-class FID, as released,
                     and precision, recall, density and coverage
  restore.py         `GeneratorRestorer`, `restore_newest`: G (or its EMA)
                     from a run's checkpoints, damaged ones skipped
  inception.py       the Inception classifier (TF-Hub module or frozen
                     GraphDef) or a stand-in saved in the same format
  metrics.py         IS, FID, KID, and the cached real-image statistics
  manifold_metrics.py  precision, recall, density and coverage (k-NN)
  standing_stats.py  standing BN statistics (BigGAN), off by default
  sampling.py        `--mode sample`: class grids, .npz, interpolation
  attention_maps.py  attention figures (also TensorBoard's, in training)
  export.py          `--mode export`: G as a stateless SavedModel
"""

from sagan_tf.evaluation.evaluator import RESULTS_FILE, Evaluator
from sagan_tf.evaluation.export import export_generator
from sagan_tf.evaluation.restore import (
    CheckpointGoneError,
    GeneratorRestorer,
    UnreadableCheckpointError,
    check_run_config,
    eval_dir,
    restore_newest,
    run_dir,
)
from sagan_tf.evaluation.sampling import write_samples

__all__ = [
    "CheckpointGoneError",
    "Evaluator",
    "GeneratorRestorer",
    "RESULTS_FILE",
    "UnreadableCheckpointError",
    "check_run_config",
    "eval_dir",
    "export_generator",
    "restore_newest",
    "run_dir",
    "write_samples",
]
