"""The released self-attention block (`non_local.sn_non_local_block_sim`).

Mixed precision: the attention softmax runs in float32.
"""

import keras
import tensorflow as tf

from sagan_tf.layers.spectral_norm import SNConv2D


@keras.saving.register_keras_serializable(package="sagan_tf")
class SelfAttention(keras.layers.Layer):
    """Released self-attention block (`non_local.sn_non_local_block_sim`).

    With x [B, H, W, C] and N = H*W:
        theta = SN conv1x1(x) -> C/8                       [B, N, C/8]
        phi = maxpool2x2(SN conv1x1(x) -> C/8)             [B, N/4, C/8]
        g = maxpool2x2(SN conv1x1(x) -> C/2)               [B, N/4, C/2]
        beta = softmax(theta phi^T) over the last axis     [B, N, N/4]
        y = x + gamma * o(reshape(beta g, [B, H, W, C/2]))
    where o is an SN conv1x1 to C and gamma a trainable scalar initialized
    to 0 (`sigma_ratio` in the released code). No conv has a bias.

    Args:
        stop_gradient_uv: passed to the four SN convs.

    Call arguments:
        x: [B, H, W, C] with even H and W and C divisible by 8.
        training, update_sn: as in `SNConv2D`.
        return_attention: also return beta.

    Returns:
        y [B, H, W, C], or (y, beta) with beta float32 [B, N, N/4].
    """

    def __init__(self, stop_gradient_uv=False, **kwargs):
        super().__init__(**kwargs)
        self.stop_gradient_uv = bool(stop_gradient_uv)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % 8:
            raise ValueError(
                f"SelfAttention {self.name!r} needs channels divisible by 8, "
                f"got {channels}"
            )

        def conv(filters, name):
            return SNConv2D(
                filters, 1, use_bias=False,
                stop_gradient_uv=self.stop_gradient_uv,
                dtype=self.dtype_policy, name=name,
            )

        self.theta = conv(channels // 8, "theta")
        self.phi = conv(channels // 8, "phi")
        self.g = conv(channels // 2, "g")
        self.o = conv(channels, "o")
        self.theta.build(input_shape)
        self.phi.build(input_shape)
        self.g.build(input_shape)
        self.o.build((*input_shape[:-1], channels // 2))
        self.gamma = self.add_weight(
            name="gamma", shape=(), initializer="zeros"
        )

    def call(
        self, x, training=False, update_sn=None, return_attention=False
    ):
        height, width, channels = x.shape[1], x.shape[2], x.shape[3]
        num_locations = height * width
        sn_kw = dict(training=training, update_sn=update_sn)
        theta = self.theta(x, **sn_kw)
        theta = tf.reshape(theta, [-1, num_locations, channels // 8])
        phi = _max_pool(self.phi(x, **sn_kw))
        phi = tf.reshape(phi, [-1, num_locations // 4, channels // 8])
        logits = tf.matmul(theta, phi, transpose_b=True)  # [B, N, N/4]
        # A bf16/fp16 softmax over N/4 entries loses too much precision.
        beta = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        g = _max_pool(self.g(x, **sn_kw))
        g = tf.reshape(g, [-1, num_locations // 4, channels // 2])
        attn_g = tf.matmul(tf.cast(beta, g.dtype), g)  # [B, N, C/2]
        attn_g = tf.reshape(attn_g, [-1, height, width, channels // 2])
        o = self.o(attn_g, **sn_kw)
        y = x + tf.cast(self.gamma, x.dtype) * o
        if return_attention:
            return y, beta
        return y

    def get_config(self):
        config = super().get_config()
        config.update(stop_gradient_uv=self.stop_gradient_uv)
        return config


def _max_pool(x):
    """2x2 max-pool, stride 2, VALID ([B, H, W, C] -> [B, H/2, W/2, C])."""
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
