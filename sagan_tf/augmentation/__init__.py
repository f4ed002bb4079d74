"""Differentiable augmentations of every image D sees, real and generated.

For GAN training on small datasets. Each method splits into
`sample_params(rng, ...)`, which draws the per-sample parameters from a
`tf.random.Generator` (the run's checkpointed noise RNG), and
`apply(images, params, ...)`, deterministic and differentiable w.r.t. the
images [B, H, W, C] in [-1, 1]:

  diffaugment.py  DiffAugment (Zhao et al., 2020): `parse_policy` for
                  --diffaugment, color / translation / cutout
  ada.py          adaptive augmentation (Karras et al., 2020): the 'bgc'
                  pipeline as per-sample 3×3 and 4×4 matrices, and
                  `adjust_p`, the update of its probability p
  resample.py     bilinear, reflect-padded resampling through 3×3 inverse
                  matrices (ADA's geometric transforms)
  augmenter.py    `Augmenter`: what the trainer applies to D's inputs
                  (--diffaugment or --ada_target), ADA's checkpointed p
"""

from sagan_tf.augmentation import ada, diffaugment
from sagan_tf.augmentation.ada import ADA_INTERVAL, ADA_SPEED_IMAGES, adjust_p
from sagan_tf.augmentation.diffaugment import parse_policy
from sagan_tf.augmentation.resample import resample

__all__ = [
    "ADA_INTERVAL",
    "ADA_SPEED_IMAGES",
    "ada",
    "adjust_p",
    "diffaugment",
    "parse_policy",
    "resample",
]
