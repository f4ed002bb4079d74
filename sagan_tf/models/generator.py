"""The released SAGAN generator and discriminator as Keras 3 models.

At image_size 128 these are the released `generator_test` and
`discriminator_test` (attention at 32x32), `*_test_64` (attention_resolution
64) and the "baseline" networks (attention_resolution None). Sublayer names
follow the released variable scopes (g_snh0, g_block1, cbn_0, snconv1, ...,
d_optimized_block1, d_block2, sn_conv1, ...), so a TF1 checkpoint maps onto
them one to one.

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

import keras
import tensorflow as tf

from sagan_tf import layers
from sagan_tf.blocks import DiscriminatorBlock, GeneratorBlock

# image_size -> (multiple of gf for the linear layer, block outputs).
_G_SCHEDULE = {
    32: (4, (4, 2, 1)),
    64: (8, (8, 4, 2, 1)),
    128: (16, (16, 8, 4, 2, 1)),
    256: (16, (16, 8, 8, 4, 2, 1)),
}
# image_size -> block outputs; the last block does not downsample.
_D_SCHEDULE = {
    32: (1, 2, 4, 4),
    64: (1, 2, 4, 8, 8),
    128: (1, 2, 4, 8, 16, 16),
    256: (1, 2, 4, 8, 8, 16, 16),
}
_INITIAL_RESOLUTION = 4
_G_CONFIG_KEYS = (
    "name", "num_classes", "image_size", "z_dim", "gf_dim",
    "attention_resolution", "sn_stop_gradient_uv", "sync_batch_norm",
    "sn_update_at_inference",
)
_D_CONFIG_KEYS = (
    "name", "num_classes", "image_size", "df_dim", "attention_resolution",
    "sn_stop_gradient_uv",
)


def _config_of(model, keys):
    return {key: getattr(model, key) for key in keys}


def _check_image_size(image_size, owner):
    if image_size not in _G_SCHEDULE:
        raise ValueError(
            f"{owner}: image_size must be one of {sorted(_G_SCHEDULE)}, "
            f"got {image_size!r}"
        )


def _attention_index(resolutions, attention_resolution, owner):
    """Index of the block after which attention runs, or None."""
    if attention_resolution is None:
        return None
    if attention_resolution not in resolutions:
        raise ValueError(
            f"{owner}: attention_resolution={attention_resolution!r} is not "
            f"the output resolution of any block; valid choices: "
            f"{sorted(set(resolutions))} or None"
        )
    return resolutions.index(attention_resolution)


def _require_attention(attention_layer, owner):
    if attention_layer is None:
        raise ValueError(
            f"{owner}: return_attention=True needs attention, but "
            "attention_resolution is None"
        )


@keras.saving.register_keras_serializable(package="sagan_tf")
class Generator(keras.Model):
    """Class-conditional SAGAN generator (released `generator_test`).

    Args:
        num_classes: classes of the conditional BN tables.
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
        z: float [B, z_dim]; labels: int [B]; training: Python bool (batch
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
        _check_image_size(image_size, "Generator")
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.z_dim = int(z_dim)
        self.gf_dim = int(gf_dim)
        self.attention_resolution = attention_resolution
        self.sn_stop_gradient_uv = bool(sn_stop_gradient_uv)
        self.sync_batch_norm = bool(sync_batch_norm)
        self.sn_update_at_inference = bool(sn_update_at_inference)

        linear_mult, block_mults = _G_SCHEDULE[image_size]
        self._initial_channels = linear_mult * gf_dim
        resolutions = [
            _INITIAL_RESOLUTION * 2 ** (i + 1) for i in range(len(block_mults))
        ]
        self._attention_index = _attention_index(
            resolutions, attention_resolution, "Generator"
        )
        self.g_snh0 = layers.SNDense(
            _INITIAL_RESOLUTION**2 * self._initial_channels,
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
        res, channels = _INITIAL_RESOLUTION, self._initial_channels
        for i, block in enumerate(self.blocks):
            block.build((batch, res, res, channels))
            res, channels = res * 2, block.out_channels
            if i == self._attention_index:
                self.g_non_local.build((batch, res, res, channels))
        self.g_bn.build((batch, res, res, channels))
        self.g_snconv_last.build((batch, res, res, channels))

    def call(
        self, z, labels, training=False, update_sn=None,
        return_attention=False,
    ):
        if return_attention:
            _require_attention(self.g_non_local, "Generator")
        if update_sn is None:
            update_sn = bool(training) or self.sn_update_at_inference
        sn_kw = dict(training=training, update_sn=update_sn)
        r = _INITIAL_RESOLUTION
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
        return _config_of(self, _G_CONFIG_KEYS)

    def get_build_config(self):
        # `build` is called explicitly (not through __call__), so Keras has
        # no recorded shapes; `.keras` loading rebuilds from these.
        if not self.built:
            return None
        return {"z_shape": [None, self.z_dim], "labels_shape": [None]}

    def build_from_config(self, config):
        self.build(**config)


@keras.saving.register_keras_serializable(package="sagan_tf")
class Discriminator(keras.Model):
    """Projection discriminator (released `discriminator_test`).

    Args:
        num_classes: classes of the projection embedding.
        image_size: 32, 64, 128 (released) or 256.
        df_dim: base width.
        attention_resolution: resolution of the attention block; None gives
            the released baseline network.
        sn_stop_gradient_uv: stop SN gradients at u and v.

    Call arguments:
        images: float [B, S, S, 3]; labels: int [B]; training: Python bool;
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
        _check_image_size(image_size, "Discriminator")
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.df_dim = int(df_dim)
        self.attention_resolution = attention_resolution
        self.sn_stop_gradient_uv = bool(sn_stop_gradient_uv)

        mults = _D_SCHEDULE[image_size]
        num_down = len(mults) - 1
        resolutions = [image_size // 2 ** (i + 1) for i in range(num_down)]
        resolutions.append(resolutions[-1])
        self._attention_index = _attention_index(
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
        self.d_embedding = layers.SNEmbedding(
            num_classes, in_channels, stop_gradient_uv=sn_stop_gradient_uv,
            dtype="float32", name="d_embedding",
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
        self.d_embedding.build((batch,))

    def call(
        self, images, labels, training=False, update_sn=None,
        return_attention=False,
    ):
        if return_attention:
            _require_attention(self.d_non_local, "Discriminator")
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
        # Projection: <h, embed(label)>.
        logits += tf.reduce_sum(
            h * self.d_embedding(labels, **sn_kw), axis=1, keepdims=True
        )
        logits = tf.squeeze(logits, axis=1)
        if return_attention:
            return logits, beta
        return logits

    def get_config(self):
        return _config_of(self, _D_CONFIG_KEYS)

    def get_build_config(self):
        # As in Generator: `.keras` loading rebuilds from these shapes.
        if not self.built:
            return None
        size = self.image_size
        return {"images_shape": [None, size, size, 3], "labels_shape": [None]}

    def build_from_config(self, config):
        self.build(**config)


def build_generator(model_config):
    """Builds G from a `config.ModelConfig`, variables created."""
    generator = Generator(
        num_classes=model_config.number_classes,
        image_size=model_config.image_size,
        z_dim=model_config.z_dim,
        gf_dim=model_config.gf_dim,
        attention_resolution=model_config.generator_attention(),
        sn_stop_gradient_uv=model_config.sn_stop_gradient_uv,
        sync_batch_norm=model_config.sync_batch_norm,
        sn_update_at_inference=model_config.sn_update_at_inference,
    )
    generator.build((None, model_config.z_dim), (None,))
    return generator


def build_discriminator(model_config):
    """Builds D from a `config.ModelConfig`, variables created."""
    discriminator = Discriminator(
        num_classes=model_config.number_classes,
        image_size=model_config.image_size,
        df_dim=model_config.df_dim,
        attention_resolution=model_config.discriminator_attention(),
        sn_stop_gradient_uv=model_config.sn_stop_gradient_uv,
    )
    size = model_config.image_size
    discriminator.build((None, size, size, 3), (None,))
    return discriminator


def build_models(model_config):
    """Builds G and D from a `config.ModelConfig`, variables created.

    Args:
        model_config: `sagan_tf.config.ModelConfig`.

    Returns:
        (generator, discriminator), both built, so optimizers can be built
        on their trainable variables right away.
    """
    return build_generator(model_config), build_discriminator(model_config)
