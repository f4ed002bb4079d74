"""Residual blocks of the released generator and discriminator.

`GeneratorBlock` is the released `generator.block` (conditional BN, nearest
up-sampling, SN convolutions; with num_classes 0 the released plain
`ops.batch_norm` replaces the conditional BN) and `DiscriminatorBlock`
covers both `discriminator.block` and `discriminator.optimized_block`.
"""

import keras
import tensorflow as tf

from sagan_tf import layers


def _upsample(x):
    """Nearest-neighbour x2: [B, H, W, C] -> [B, 2H, 2W, C]."""
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


def _downsample(x):
    """2x2 average pool: [B, H, W, C] -> [B, H/2, W/2, C]."""
    return tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="VALID")


@keras.saving.register_keras_serializable(package="sagan_tf")
class GeneratorBlock(keras.layers.Layer):
    """Released generator up-block (`generator.block`).

    x -> relu(cbn_0) -> upsample -> snconv1 (3x3) -> relu(cbn_1) -> snconv2
    (3x3), plus the shortcut upsample(x) -> snconv3 (1x1).

    num_classes 0 makes the block unconditional: `bn_0` / `bn_1`, the
    released `ops.batch_norm` (per-channel gamma and beta, decay 0.9999,
    the same layer as G's head), replace `cbn_0` / `cbn_1`.

    Call arguments:
        x: [B, H, W, C_in]; labels: int [B] (ignored, may be None, when
        num_classes is 0); training: Python bool;
        update_sn: as in `layers.SNConv2D` (None writes u when training).

    Returns:
        [B, 2H, 2W, out_channels].
    """

    def __init__(
        self,
        out_channels,
        num_classes,
        sn_stop_gradient_uv=False,
        sync_batch_norm=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.sn_stop_gradient_uv = bool(sn_stop_gradient_uv)
        self.sync_batch_norm = bool(sync_batch_norm)

        def cbn(name):
            return layers.ConditionalBatchNorm(
                num_classes, synchronized=sync_batch_norm, name=name
            )

        def bn(name):
            return layers.BatchNorm(synchronized=sync_batch_norm, name=name)

        def conv(kernel_size, name):
            return layers.SNConv2D(
                out_channels, kernel_size,
                stop_gradient_uv=sn_stop_gradient_uv, name=name,
            )

        # Attribute names are checkpoint keys: the conditional block keeps
        # the released cbn_* and has no bn_* attribute at all.
        if self.num_classes:
            self.cbn_0 = cbn("cbn_0")
        else:
            self.bn_0 = bn("bn_0")
        self.snconv1 = conv(3, "snconv1")
        if self.num_classes:
            self.cbn_1 = cbn("cbn_1")
        else:
            self.bn_1 = bn("bn_1")
        self.snconv2 = conv(3, "snconv2")
        self.snconv3 = conv(1, "snconv3")

    def build(self, x_shape, labels_shape=None):
        batch, height, width, _ = x_shape
        up_shape = (batch, height * 2, width * 2, x_shape[-1])
        out_shape = (batch, height * 2, width * 2, self.out_channels)
        self._norm(0).build(x_shape)
        self.snconv1.build(up_shape)
        self._norm(1).build(out_shape)
        self.snconv2.build(out_shape)
        self.snconv3.build(up_shape)

    def _norm(self, index):
        prefix = "cbn" if self.num_classes else "bn"
        return getattr(self, f"{prefix}_{index}")

    @property
    def batch_norms(self):
        """(cbn_0, cbn_1), or (bn_0, bn_1) when unconditional."""
        return self._norm(0), self._norm(1)

    def _normalize(self, index, x, labels, training):
        if self.num_classes:
            return self._norm(index)(x, labels, training=training)
        return self._norm(index)(x, training=training)

    def call(self, x, labels=None, training=False, update_sn=None):
        sn_kw = dict(training=training, update_sn=update_sn)
        h = tf.nn.relu(self._normalize(0, x, labels, training))
        h = self.snconv1(_upsample(h), **sn_kw)  # [B, 2H, 2W, C]
        h = tf.nn.relu(self._normalize(1, h, labels, training))
        h = self.snconv2(h, **sn_kw)
        shortcut = self.snconv3(_upsample(x), **sn_kw)
        return shortcut + h

    def get_config(self):
        config = super().get_config()
        config.update(
            out_channels=self.out_channels,
            num_classes=self.num_classes,
            sn_stop_gradient_uv=self.sn_stop_gradient_uv,
            sync_batch_norm=self.sync_batch_norm,
        )
        return config


@keras.saving.register_keras_serializable(package="sagan_tf")
class DiscriminatorBlock(keras.layers.Layer):
    """Released discriminator blocks (`discriminator.block` and
    `optimized_block`).

    optimized: x -> sn_conv1 -> relu -> sn_conv2 -> avgpool, shortcut
        avgpool(x) -> sn_conv3 (pool first).
    otherwise: x -> relu -> sn_conv1 -> relu -> sn_conv2 [-> avgpool],
        shortcut sn_conv3(x) [-> avgpool] (conv first), or the identity when
        the block neither downsamples nor changes the channel count.

    Call arguments:
        x: [B, H, W, C_in]; training, update_sn: as in `layers.SNConv2D`.

    Returns:
        [B, H/2, W/2, out_channels], or [B, H, W, out_channels] when
        downsample is False.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        downsample=True,
        optimized=False,
        sn_stop_gradient_uv=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.downsample = bool(downsample)
        self.optimized = bool(optimized)
        self.sn_stop_gradient_uv = bool(sn_stop_gradient_uv)

        def conv(kernel_size, name):
            return layers.SNConv2D(
                out_channels, kernel_size,
                stop_gradient_uv=sn_stop_gradient_uv, name=name,
            )

        self.sn_conv1 = conv(3, "sn_conv1")
        self.sn_conv2 = conv(3, "sn_conv2")
        self.sn_conv3 = None
        if optimized or downsample or in_channels != out_channels:
            self.sn_conv3 = conv(1, "sn_conv3")

    def build(self, input_shape):
        out_shape = (*input_shape[:-1], self.out_channels)
        self.sn_conv1.build(input_shape)
        self.sn_conv2.build(out_shape)
        if self.sn_conv3 is not None:
            self.sn_conv3.build(input_shape)

    def call(self, x, training=False, update_sn=None):
        sn_kw = dict(training=training, update_sn=update_sn)
        h = x if self.optimized else tf.nn.relu(x)
        h = self.sn_conv1(h, **sn_kw)
        h = self.sn_conv2(tf.nn.relu(h), **sn_kw)
        if self.optimized or self.downsample:
            h = _downsample(h)
        if self.sn_conv3 is None:
            shortcut = x
        elif self.optimized:
            shortcut = self.sn_conv3(_downsample(x), **sn_kw)
        else:
            shortcut = self.sn_conv3(x, **sn_kw)
            if self.downsample:
                shortcut = _downsample(shortcut)
        return shortcut + h

    def get_config(self):
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            downsample=self.downsample,
            optimized=self.optimized,
            sn_stop_gradient_uv=self.sn_stop_gradient_uv,
        )
        return config
