"""sagan_tf: the released Self-Attention GAN, ported to TF2 / Keras 3."""

__version__ = "0.2.0"
