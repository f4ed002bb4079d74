"""Keras layers of the released SAGAN: spectral norm, self-attention, BN.

Every layer reproduces one op of the released TF1 code
(github.com/brain-research/self-attention-gan, `ops.py` and `non_local.py`)
and is registered for `.keras` saving under the package name "sagan_tf":

  spectral_norm.py          `SNConv2D`, `SNDense`, `SNEmbedding` (released
                            `snconv2d`, `snlinear`, `sn_embedding`) and the
                            power iteration they share
  spectral_norm_wrapper.py  `SpectralNormalization`, the same rule around a
                            stock Keras `Dense`, `Conv2D`, `Conv2DTranspose`
                            or `Embedding`
  attention.py              `SelfAttention` (theta, phi, g, o and gamma)
  normalization.py          `ConditionalBatchNorm` (per-class gamma / beta)
                            and `BatchNorm` (G's head)
"""

from sagan_tf.layers.attention import SelfAttention
from sagan_tf.layers.normalization import BatchNorm, ConditionalBatchNorm
from sagan_tf.layers.spectral_norm import (
    SNConv2D,
    SNDense,
    SNEmbedding,
    l2_normalize,
    power_iteration,
    writes_u,
)
from sagan_tf.layers.spectral_norm_wrapper import SpectralNormalization

__all__ = [
    "BatchNorm",
    "ConditionalBatchNorm",
    "SNConv2D",
    "SNDense",
    "SNEmbedding",
    "SelfAttention",
    "SpectralNormalization",
    "l2_normalize",
    "power_iteration",
    "writes_u",
]
