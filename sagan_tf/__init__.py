"""sagan_tf: the released Self-Attention GAN, ported to TF2 / Keras 3.

  layers/      Keras layers: spectral norm, self-attention, conditional BN
  models/      `Generator`, `Discriminator`, their blocks and schedules
  data/        input pipelines, the image-folder converter, shard checks
  training/    the training loop, the G and D updates, checkpoints,
               summaries, the run lock
  evaluation/  the evaluator (IS, FID, KID), Inception, standing BN
               statistics, sampling, attention figures, export
  commands/    the command lines: sagan-train, sagan-eval, sagan-convert,
               sagan-import-tf1
  config.py    every default, in the config objects the commands build
  cli.py       what the commands share: quiet start-up, one-paragraph
               errors
  paths.py     checks of the folders a command writes to
  import_tf1.py  the released-checkpoint importer

`import sagan_tf` registers every public layer and both models for
`.keras` loading (`keras.saving.load_model` then needs nothing else). It
imports TensorFlow with its start-up lines filtered, and sets
TF_CPP_MIN_LOG_LEVEL to warnings and above unless you set it (see
`cli.import_tensorflow_quietly`). It does not load the evaluation code or
TF-GAN.
"""

__version__ = "0.3.0"

from sagan_tf import cli as _cli

if _cli.tensorflow_wanted():
    _cli.import_tensorflow_quietly()

    # Imported for their Keras registration ("sagan_tf>SNConv2D", ...).
    from sagan_tf import layers, models  # noqa: E402, F401
    from sagan_tf.models import Discriminator, Generator  # noqa: E402, F401
