"""The released SAGAN generator (`generator_test`) as a Keras 3 model.

Sublayer names follow the released variable scopes (g_snh0, g_block1,
g_non_local, g_bn, g_snconv_last), so a TF1 checkpoint maps onto them one
to one. The channel schedule is in the package docstring.
"""

import keras
import tensorflow as tf

from sagan_tf import layers
from sagan_tf.models import schedules
from sagan_tf.models.blocks import GeneratorBlock


@keras.saving.register_keras_serializable(package="sagan_tf")
class Generator(keras.Model):
    """Class-conditional SAGAN generator (released `generator_test`).

    Args:
        num_classes: classes of the conditional BN tables; 0 gives the
            unconditional generator, whose blocks use the released plain
            BN (per-channel gamma / beta) and which ignores `labels`.
        image_size: 32, 64, 128 (released) or 256.
        z_dim: noise size.
        gf_dim: base width.
        attention_resolution: resolution of the attention block; None gives
            the released baseline network.
        sn_stop_gradient_uv: stop SN gradients at u and v.
        sync_batch_norm: synchronize the CBN / BN batch moments.
        sn_update_at_inference: write the SN vectors u in inference mode
            too. True is the released generator, whose SN layers always
            run with `update_collection=None`, so the released evaluator
            advances u on every batch it draws (in memory only); False
            freezes u outside training.

    Call arguments:
        z: float [B, z_dim]; labels: int [B] (optional, ignored, when
        num_classes is 0); training: Python bool (batch
        moments and moving-average updates); update_sn: None follows
        `training or sn_update_at_inference`, a bool overrides it (False
        for a stateless call); return_attention: also return the
        attention map.

    Returns:
        float32 images [B, S, S, 3] in [-1, 1], or (images, beta) with beta
        [B, N, N/4], N = attention_resolution^2.
    """

    def __init__(
        self,
        num_classes=1000,
        image_size=128,
        z_dim=128,
        gf_dim=64,
        attention_resolution=32,
        sn_stop_gradient_uv=False,
        sync_batch_norm=False,
        sn_update_at_inference=True,
        name="generator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        schedules.check_image_size(image_size, "Generator")
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.z_dim = int(z_dim)
        self.gf_dim = int(gf_dim)
        self.attention_resolution = attention_resolution
        self.sn_stop_gradient_uv = bool(sn_stop_gradient_uv)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.sn_update_at_inference = bool(sn_update_at_inference)

        linear_mult, block_mults = schedules.G_SCHEDULE[image_size]
        self._initial_channels = linear_mult * gf_dim
        resolutions = [
            schedules.INITIAL_RESOLUTION * 2 ** (i + 1)
            for i in range(len(block_mults))
        ]
        self._attention_index = schedules.attention_index(
            resolutions, attention_resolution, "Generator"
        )
        self.g_snh0 = layers.SNDense(
            schedules.INITIAL_RESOLUTION**2 * self._initial_channels,
            stop_gradient_uv=sn_stop_gradient_uv,
            name="g_snh0",
        )
        # One attribute per block (not a list): tf.train.Checkpoint tracks
        # attributes of Keras 3 layers but not their lists, and the
        # attribute names are the released scopes.
        self._block_names = []
        for i, mult in enumerate(block_mults):
            name = f"g_block{i + 1}"
            block = GeneratorBlock(
                mult * gf_dim, num_classes, sn_stop_gradient_uv,
                sync_batch_norm, name=name,
            )
            setattr(self, name, block)
            self._block_names.append(name)
        self.g_non_local = None
        if self._attention_index is not None:
            self.g_non_local = layers.SelfAttention(
                stop_gradient_uv=sn_stop_gradient_uv, name="g_non_local"
            )
        self.g_bn = layers.BatchNorm(synchronized=sync_batch_norm, name="g_bn")
        # float32 head: tanh outputs are the images, keep full precision.
        self.g_snconv_last = layers.SNConv2D(
            3, 3, stop_gradient_uv=sn_stop_gradient_uv, dtype="float32",
            name="g_snconv_last",
        )

    @property
    def blocks(self):
        """The residual blocks, input to output."""
        return [getattr(self, name) for name in self._block_names]

    @property
    def attention_layers(self):
        """The SelfAttention layers (empty for the baseline network)."""
        return [] if self.g_non_local is None else [self.g_non_local]

    def build(self, z_shape=None, labels_shape=None):
        batch = None if z_shape is None else z_shape[0]
        self.g_snh0.build((batch, self.z_dim))
        res, channels = schedules.INITIAL_RESOLUTION, self._initial_channels
        for i, block in enumerate(self.blocks):
            block.build((batch, res, res, channels))
            res, channels = res * 2, block.out_channels
            if i == self._attention_index:
                self.g_non_local.build((batch, res, res, channels))
        self.g_bn.build((batch, res, res, channels))
        self.g_snconv_last.build((batch, res, res, channels))

    @property
    def conditional(self):
        """Whether G takes class labels (num_classes > 0)."""
        return self.num_classes > 0

    def call(
        self, z, labels=None, training=False, update_sn=None,
        return_attention=False,
    ):
        if return_attention:
            schedules.require_attention(self.g_non_local, "Generator")
        if not self.conditional:
            labels = None
        if update_sn is None:
            update_sn = bool(training) or self.sn_update_at_inference
        sn_kw = dict(training=training, update_sn=update_sn)
        r = schedules.INITIAL_RESOLUTION
        h = self.g_snh0(z, **sn_kw)
        h = tf.reshape(h, [-1, r, r, self._initial_channels])  # [B, 4, 4, C]
        beta = None
        for i, block in enumerate(self.blocks):
            h = block(h, labels, **sn_kw)  # resolution doubles
            if i == self._attention_index:
                h, beta = self.g_non_local(
                    h, **sn_kw, return_attention=True
                )
        h = tf.nn.relu(self.g_bn(h, training=training))
        h = self.g_snconv_last(tf.cast(h, tf.float32), **sn_kw)
        images = tf.tanh(h)  # [B, S, S, 3]
        if return_attention:
            return images, beta
        return images

    def get_config(self):
        return schedules.config_of(self, schedules.G_CONFIG_KEYS)

    def get_build_config(self):
        # `build` is called explicitly (not through __call__), so Keras has
        # no recorded shapes; `.keras` loading rebuilds from these.
        if not self.built:
            return None
        return {"z_shape": [None, self.z_dim], "labels_shape": [None]}

    def build_from_config(self, config):
        self.build(**config)
