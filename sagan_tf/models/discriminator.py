"""The released SAGAN projection discriminator (`discriminator_test`) as a
Keras 3 model.

Sublayer names follow the released variable scopes (d_optimized_block1,
d_block2, ..., d_non_local, d_sn_linear, d_embedding), so a TF1 checkpoint
maps onto them one to one. The channel schedule is in the package
docstring.
"""

import keras
import tensorflow as tf

from sagan_tf import layers
from sagan_tf.models import schedules
from sagan_tf.models.blocks import DiscriminatorBlock


@keras.saving.register_keras_serializable(package="sagan_tf")
class Discriminator(keras.Model):
    """Projection discriminator (released `discriminator_test`).

    Args:
        num_classes: classes of the projection embedding; 0 gives the
            unconditional D (no embedding, no projection term), which
            ignores `labels`.
        image_size: 32, 64, 128 (released) or 256.
        df_dim: base width.
        attention_resolution: resolution of the attention block; None gives
            the released baseline network.
        sn_stop_gradient_uv: stop SN gradients at u and v.

    Call arguments:
        images: float [B, S, S, 3]; labels: int [B] (optional, ignored,
        when num_classes is 0); training: Python bool;
        update_sn: None writes u in training mode only; False is the
        released "NO_OPS" pass (sigma from the stored u, u not written);
        return_attention: also return the attention map.

    Returns:
        float32 logits [B], or (logits, beta) with beta [B, N, N/4],
        N = attention_resolution^2.
    """

    def __init__(
        self,
        num_classes=1000,
        image_size=128,
        df_dim=64,
        attention_resolution=32,
        sn_stop_gradient_uv=False,
        name="discriminator",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        schedules.check_image_size(image_size, "Discriminator")
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.df_dim = int(df_dim)
        self.attention_resolution = attention_resolution
        self.sn_stop_gradient_uv = bool(sn_stop_gradient_uv)

        mults = schedules.D_SCHEDULE[image_size]
        num_down = len(mults) - 1
        resolutions = [image_size // 2 ** (i + 1) for i in range(num_down)]
        resolutions.append(resolutions[-1])
        self._attention_index = schedules.attention_index(
            resolutions, attention_resolution, "Discriminator"
        )
        # One attribute per block, as in Generator.
        self._block_names = []
        in_channels = 3
        for i, mult in enumerate(mults):
            name = "d_optimized_block1" if i == 0 else f"d_block{i + 1}"
            block = DiscriminatorBlock(
                in_channels, mult * df_dim, downsample=i < num_down,
                optimized=i == 0, sn_stop_gradient_uv=sn_stop_gradient_uv,
                name=name,
            )
            setattr(self, name, block)
            self._block_names.append(name)
            in_channels = mult * df_dim
        self._feature_channels = in_channels
        self.d_non_local = None
        if self._attention_index is not None:
            self.d_non_local = layers.SelfAttention(
                stop_gradient_uv=sn_stop_gradient_uv, name="d_non_local"
            )
        # float32 head: logits feed the loss directly.
        self.d_sn_linear = layers.SNDense(
            1, stop_gradient_uv=sn_stop_gradient_uv, dtype="float32",
            name="d_sn_linear",
        )
        self.d_embedding = None
        if self.num_classes:
            self.d_embedding = layers.SNEmbedding(
                num_classes, in_channels,
                stop_gradient_uv=sn_stop_gradient_uv, dtype="float32",
                name="d_embedding",
            )

    @property
    def blocks(self):
        """The residual blocks, input to output."""
        return [getattr(self, name) for name in self._block_names]

    @property
    def attention_layers(self):
        """The SelfAttention layers (empty for the baseline network)."""
        return [] if self.d_non_local is None else [self.d_non_local]

    def build(self, images_shape=None, labels_shape=None):
        batch = None if images_shape is None else images_shape[0]
        res = self.image_size
        for i, block in enumerate(self.blocks):
            block.build((batch, res, res, block.in_channels))
            if block.downsample:
                res //= 2
            if i == self._attention_index:
                self.d_non_local.build((batch, res, res, block.out_channels))
        self.d_sn_linear.build((batch, self._feature_channels))
        if self.d_embedding is not None:
            self.d_embedding.build((batch,))

    @property
    def conditional(self):
        """Whether D takes class labels (num_classes > 0)."""
        return self.num_classes > 0

    def call(
        self, images, labels=None, training=False, update_sn=None,
        return_attention=False,
    ):
        if return_attention:
            schedules.require_attention(self.d_non_local, "Discriminator")
        sn_kw = dict(training=training, update_sn=update_sn)
        h = images
        beta = None
        for i, block in enumerate(self.blocks):
            h = block(h, **sn_kw)  # resolution halves, except the last
            if i == self._attention_index:
                h, beta = self.d_non_local(
                    h, **sn_kw, return_attention=True
                )
        h = tf.nn.relu(tf.cast(h, tf.float32))
        h = tf.reduce_sum(h, axis=[1, 2])  # [B, C]
        logits = self.d_sn_linear(h, **sn_kw)  # [B, 1]
        if self.d_embedding is not None:
            # Projection: <h, embed(label)>.
            logits += tf.reduce_sum(
                h * self.d_embedding(labels, **sn_kw), axis=1, keepdims=True
            )
        logits = tf.squeeze(logits, axis=1)
        if return_attention:
            return logits, beta
        return logits

    def get_config(self):
        return schedules.config_of(self, schedules.D_CONFIG_KEYS)

    def get_build_config(self):
        # As in Generator: `.keras` loading rebuilds from these shapes.
        if not self.built:
            return None
        size = self.image_size
        return {"images_shape": [None, size, size, 3], "labels_shape": [None]}

    def build_from_config(self, config):
        self.build(**config)
