"""Layers of the released SAGAN: spectral norm, self-attention and BN.

Every layer here reproduces one op of the released TF1 code
(github.com/brain-research/self-attention-gan, `ops.py` and
`non_local.py`) as a Keras 3 layer.

Spectral normalization follows the released `spectral_normed_weight`: one
power iteration from the stored vector u on every call, gradients flowing
through sigma, u' and v (an option stops them at u and v, as Miyato's and
TF-GAN's versions do), and the kernel variable itself never overwritten.
This is why `keras.layers.SpectralNormalization`, which assigns W / sigma
to the kernel and so passes no gradient through sigma, is not used.

Mixed precision: the power iteration, sigma and W / sigma run in float32
and only the normalized kernel is cast to the layer's compute dtype; the
attention softmax and the BN statistics are float32 too.

Distribution: u and the BN moving statistics are mirrored variables with
MEAN aggregation, so they may be assigned inside `strategy.run` and stay
identical on every replica. u' depends only on W and u, which every
replica shares, so the mean changes nothing; per-replica BN statistics are
averaged when written (each replica still normalizes with its own batch
moments unless `synchronized=True`).
"""

import keras
import tensorflow as tf

# The BN layers live in their own module; they are part of this API too.
from sagan_tf.normalization import (  # noqa: F401
    BatchNorm,
    ConditionalBatchNorm,
)

_L2_EPSILON = 1e-12


def l2_normalize(x, epsilon=_L2_EPSILON):
    """Released `_l2normalize`: x / (sqrt(sum x^2) + eps), over all axes."""
    return x / (tf.sqrt(tf.reduce_sum(tf.square(x))) + epsilon)


def power_iteration(w_mat, u, stop_gradient_uv=False):
    """One power iteration of the released spectral norm.

    Args:
        w_mat: float32 [K, C_out], the kernel reshaped to [-1, C_out].
        u: float32 [1, C_out], the stored left vector.
        stop_gradient_uv: stop the gradient at u' and v (Miyato / TF-GAN)
            instead of letting it flow through them (released).

    Returns:
        (sigma, u_new): the scalar estimate sigma = v W u'^T and the updated
        vector u' [1, C_out].
    """
    v = l2_normalize(tf.matmul(u, w_mat, transpose_b=True))  # [1, K]
    u_new = l2_normalize(tf.matmul(v, w_mat))  # [1, C_out]
    if stop_gradient_uv:
        v = tf.stop_gradient(v)
        u_new = tf.stop_gradient(u_new)
    sigma = tf.squeeze(tf.matmul(tf.matmul(v, w_mat), u_new, transpose_b=True))
    return sigma, u_new


def writes_u(training, update_sn):
    """Whether an SN call writes u: `update_sn` if given, else `training`.

    update_sn=False is the released "NO_OPS" pass (sigma from the stored u,
    u not written); update_sn=True writes u even in inference mode, as the
    released generator does on every call.
    """
    if update_sn is None:
        return bool(training)
    return bool(update_sn)


class _SpectralNormMixin:
    """Shared u handling of the three SN layers.

    Subclasses set `self.stop_gradient_uv`, call `_add_u(c_out)` in build
    and implement `_weight_matrix()` returning the float32 [K, C_out]
    matrix that is normalized.
    """

    def _add_u(self, c_out):
        self.u = self.add_weight(
            name="u",
            shape=(1, c_out),
            initializer=keras.initializers.TruncatedNormal(stddev=1.0),
            trainable=False,
            autocast=False,
            aggregation="mean",
        )

    def _sigma(self, training, update_sn):
        """Returns float32 (W [K, C_out], sigma); writes u when asked."""
        w_mat = self._weight_matrix()
        u = tf.convert_to_tensor(self.u)
        sigma, u_new = power_iteration(w_mat, u, self.stop_gradient_uv)
        if writes_u(training, update_sn):
            self.u.assign(u_new)
        return w_mat, sigma

    def _normalize(self, training, update_sn):
        """Returns float32 W / sigma as [K, C_out]; writes u when asked."""
        w_mat, sigma = self._sigma(training, update_sn)
        return w_mat / sigma

    def _apply(self, op, inputs, training, update_sn, output_size):
        """op(inputs, W / sigma), the cheaper way round.

        op is linear in W, so op(x, W) / sigma is the same function with the
        same gradients; dividing the output instead of W saves work (forward
        and backward) when the output holds fewer elements than W, as in the
        wide low-resolution layers. Under mixed precision the division stays
        on the float32 kernel.

        Args:
          op: callable (inputs, kernel [K, C_out] in the inputs' dtype).
          output_size: static number of output elements, or None.
        """
        w_mat, sigma = self._sigma(training, update_sn)
        scale_outputs = (
            inputs.dtype == tf.float32
            and output_size is not None
            and output_size < w_mat.shape.num_elements()
        )
        if scale_outputs:
            return op(inputs, w_mat) / sigma
        return op(inputs, tf.cast(w_mat / sigma, inputs.dtype))

    def compute_sigma(self):
        """sigma as the next call would compute it (u is not written)."""
        sigma, _ = power_iteration(
            self._weight_matrix(), tf.convert_to_tensor(self.u)
        )
        return sigma


class SNConv2D(_SpectralNormMixin, keras.layers.Layer):
    """Spectrally normalized 2-D convolution (released `ops.snconv2d`).

    Args:
        filters: output channels C_out.
        kernel_size: int or (kh, kw).
        strides: int or (sh, sw).
        padding: "same" (released) or "valid".
        use_bias: add a zero-initialized bias (the attention 1x1 convs have
            none).
        stop_gradient_uv: stop gradients at u and v.

    Call arguments:
        inputs: [B, H, W, C_in].
        training: Python bool.
        update_sn: Python bool or None. None writes u in training mode
            only; False never writes it (the released "NO_OPS" pass); True
            writes it in inference mode too (the released generator).

    Returns:
        [B, H', W', filters].
    """

    def __init__(
        self, filters, kernel_size, strides=1, padding="same", use_bias=True,
        stop_gradient_uv=False, **kwargs,
    ):
        super().__init__(**kwargs)
        if padding.lower() not in ("same", "valid"):
            raise ValueError(
                f"SNConv2D padding must be 'same' or 'valid', got {padding!r}"
            )
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.strides = _pair(strides)
        self.padding = padding.lower()
        self.use_bias = bool(use_bias)
        self.stop_gradient_uv = bool(stop_gradient_uv)

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels, self.filters),
            initializer="glorot_uniform",
            autocast=False,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer="zeros"
            )
        self._add_u(self.filters)

    def _weight_matrix(self):
        return tf.reshape(tf.convert_to_tensor(self.kernel), [-1, self.filters])

    def call(self, inputs, training=False, update_sn=None):
        def conv(x, w_mat):
            kernel = tf.reshape(w_mat, self.kernel.shape)
            return tf.nn.conv2d(
                x, kernel, [1, *self.strides, 1], self.padding.upper()
            )

        outputs = self._apply(
            conv, inputs, training, update_sn, self._output_size(inputs)
        )
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        return outputs

    def _output_size(self, inputs):
        """Static element count of the output, or None if not static."""
        batch, height, width, _ = inputs.shape
        if None in (batch, height, width):
            return None
        sh, sw = self.strides
        if self.padding == "valid":
            height -= self.kernel_size[0] - 1
            width -= self.kernel_size[1] - 1
        return batch * -(-height // sh) * -(-width // sw) * self.filters

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, kernel_size=self.kernel_size,
            strides=self.strides, padding=self.padding,
            use_bias=self.use_bias, stop_gradient_uv=self.stop_gradient_uv,
        )
        return config


class SNDense(_SpectralNormMixin, keras.layers.Layer):
    """Spectrally normalized linear layer (released `ops.snlinear`).

    Args:
        units: output features.
        use_bias: add a zero-initialized bias.
        stop_gradient_uv: stop gradients at u and v.

    Call arguments:
        inputs: [B, F_in].
        training, update_sn: as in `SNConv2D`.

    Returns:
        [B, units].
    """

    def __init__(self, units, use_bias=True, stop_gradient_uv=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.use_bias = bool(use_bias)
        self.stop_gradient_uv = bool(stop_gradient_uv)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(int(input_shape[-1]), self.units),
            initializer="glorot_uniform",
            autocast=False,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer="zeros"
            )
        self._add_u(self.units)

    def _weight_matrix(self):
        return tf.convert_to_tensor(self.kernel)

    def call(self, inputs, training=False, update_sn=None):
        batch = inputs.shape[0]
        outputs = self._apply(
            tf.matmul, inputs, training, update_sn,
            None if batch is None else batch * self.units,
        )
        if self.use_bias:
            outputs = outputs + tf.cast(self.bias, outputs.dtype)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, use_bias=self.use_bias,
            stop_gradient_uv=self.stop_gradient_uv,
        )
        return config


class SNEmbedding(_SpectralNormMixin, keras.layers.Layer):
    """Spectrally normalized class embedding (released `ops.sn_embedding`).

    As released, the table is transposed before normalizing: the matrix is
    embeddings^T [output_dim, input_dim], so u is [1, input_dim].

    Args:
        input_dim: number of classes.
        output_dim: embedding size.
        stop_gradient_uv: stop gradients at u and v.

    Call arguments:
        inputs: int [B] class labels.
        training, update_sn: as in `SNConv2D`.

    Returns:
        [B, output_dim].
    """

    def __init__(self, input_dim, output_dim, stop_gradient_uv=False, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.stop_gradient_uv = bool(stop_gradient_uv)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer="glorot_uniform",
            autocast=False,
        )
        self._add_u(self.input_dim)

    def _weight_matrix(self):
        return tf.transpose(tf.convert_to_tensor(self.embeddings))

    def call(self, inputs, training=False, update_sn=None):
        table = tf.transpose(self._normalize(training, update_sn))
        table = tf.cast(table, self.compute_dtype)
        return tf.gather(table, inputs)

    def compute_output_spec(self, inputs, **kwargs):
        return keras.KerasTensor(
            (*inputs.shape, self.output_dim), dtype=self.compute_dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim, output_dim=self.output_dim,
            stop_gradient_uv=self.stop_gradient_uv,
        )
        return config


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


def _pair(value):
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _max_pool(x):
    """2x2 max-pool, stride 2, VALID ([B, H, W, C] -> [B, H/2, W/2, C])."""
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
