"""The released SAGAN networks: `Generator`, `Discriminator`, their blocks.

  generator.py      `Generator` (released `generator_test`)
  discriminator.py  `Discriminator` (released `discriminator_test`)
  blocks.py         their residual blocks
  schedules.py      channel schedules and the attention block's place
  build.py          both built from a `config.ModelConfig`
  checks.py         flag checks: can these networks be built?

At image_size 128 these are the released `generator_test` and
`discriminator_test` (attention at 32x32), `*_test_64` (attention_resolution
64) and the "baseline" networks (attention_resolution None). Sublayer names
follow the released variable scopes (g_snh0, g_block1, cbn_0, snconv1, ...,
d_optimized_block1, d_block2, sn_conv1, ...), so a TF1 checkpoint maps onto
them one to one.

num_classes 0 gives the unconditional networks (not in the released code):
G's blocks use plain BN (bn_0, bn_1: the released `ops.batch_norm` of G's
head) instead of cbn_0, cbn_1, and D has no d_embedding and no projection
term; both ignore labels.

Channel schedule (multiples of gf_dim / df_dim). G: the SN linear maps z to
4x4xL, then each up-block doubles the resolution, with these block output
channels:

    image_size  L      G up-blocks (4 -> image_size)
    32          4gf    4, 2, 1
    64          8gf    8, 4, 2, 1
    128         16gf   16, 8, 4, 2, 1          (released)
    256         16gf   16, 8, 8, 4, 2, 1

D: an optimized block (df), downsampling blocks down to 4x4, then one
block without downsampling and with an identity shortcut:

    image_size  D blocks (last one keeps 4x4)
    32          1, 2, 4, 4
    64          1, 2, 4, 8, 8
    128         1, 2, 4, 8, 16, 16          (released)
    256         1, 2, 4, 8, 8, 16, 16

Attention goes after the block whose OUTPUT resolution equals
attention_resolution (the first such block in D).
"""

from sagan_tf.models.blocks import DiscriminatorBlock, GeneratorBlock
from sagan_tf.models.build import (
    build_discriminator,
    build_generator,
    build_models,
)
from sagan_tf.models.discriminator import Discriminator
from sagan_tf.models.generator import Generator

__all__ = [
    "Discriminator",
    "DiscriminatorBlock",
    "Generator",
    "GeneratorBlock",
    "build_discriminator",
    "build_generator",
    "build_models",
]
