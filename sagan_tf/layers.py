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

    def _normalize(self, training, update_sn):
        """Returns float32 W / sigma as [K, C_out]; writes u when asked."""
        w_mat = self._weight_matrix()
        u = tf.convert_to_tensor(self.u)
        sigma, u_new = power_iteration(w_mat, u, self.stop_gradient_uv)
        if training and update_sn:
            self.u.assign(u_new)
        return w_mat / sigma

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
        training: Python bool; u is written only when training and
            update_sn are both true.
        update_sn: Python bool; False is the released "NO_OPS" pass.

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

    def call(self, inputs, training=False, update_sn=True):
        w_bar = self._normalize(training, update_sn)
        w_bar = tf.cast(tf.reshape(w_bar, self.kernel.shape), inputs.dtype)
        outputs = tf.nn.conv2d(
            inputs, w_bar, [1, *self.strides, 1], self.padding.upper()
        )
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
        return outputs

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

    def call(self, inputs, training=False, update_sn=True):
        w_bar = tf.cast(self._normalize(training, update_sn), inputs.dtype)
        outputs = tf.matmul(inputs, w_bar)
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

    def call(self, inputs, training=False, update_sn=True):
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

    def call(self, x, training=False, update_sn=True, return_attention=False):
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


class _BatchNormBase(keras.layers.Layer):
    """Moving statistics and float32 moments shared by the two BN layers."""

    def __init__(self, momentum, epsilon, synchronized, **kwargs):
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.synchronized = bool(synchronized)

    def _add_moving_stats(self, channels):
        def stat(name, initializer):
            return self.add_weight(
                name=name,
                shape=(channels,),
                initializer=initializer,
                trainable=False,
                autocast=False,
                aggregation="mean",
            )

        self.moving_mean = stat("moving_mean", "zeros")
        self.moving_variance = stat("moving_variance", "ones")

    def _moments(self, x):
        """Biased float32 moments over (B, H, W) of x [B, H, W, C]."""
        x = tf.cast(x, tf.float32)
        mean = tf.reduce_mean(x, axis=[0, 1, 2])
        mean_sq = tf.reduce_mean(tf.square(x), axis=[0, 1, 2])
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        if self.synchronized:
            ctx = tf.distribute.get_replica_context()
            if ctx is not None and ctx.num_replicas_in_sync > 1:
                # Equal per-replica batches, so the mean of means is exact.
                mean, mean_sq = ctx.all_reduce(
                    tf.distribute.ReduceOp.MEAN, [mean, mean_sq]
                )
                count *= ctx.num_replicas_in_sync
        variance = tf.maximum(mean_sq - tf.square(mean), 0.0)
        return mean, variance, count

    def _update_moving_stats(self, mean, variance):
        decay = self.momentum
        self.moving_mean.assign(
            self.moving_mean * decay + mean * (1.0 - decay)
        )
        self.moving_variance.assign(
            self.moving_variance * decay + variance * (1.0 - decay)
        )

    def _normalize(self, x, mean, variance, gamma, beta):
        x32 = tf.cast(x, tf.float32)
        inv = tf.math.rsqrt(variance + self.epsilon) * gamma
        return tf.cast((x32 - mean) * inv + beta, x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum, epsilon=self.epsilon,
            synchronized=self.synchronized,
        )
        return config


class ConditionalBatchNorm(_BatchNormBase):
    """Class-conditional BN of the released generator blocks.

    Per-class gamma (init 1) and beta (init 0) tables [num_classes, C] are
    gathered by label. Training normalizes with the biased batch moments
    over (B, H, W) and updates the moving averages
    m <- m * momentum + batch * (1 - momentum); inference uses the moving
    averages. Statistics are per replica (released) unless `synchronized`.

    Args:
        num_classes: rows of the gamma / beta tables.
        momentum: moving-average decay (released 0.999).
        epsilon: variance epsilon (released 1e-5).
        synchronized: all-reduce the batch moments across replicas.

    Call arguments:
        x: [B, H, W, C].
        labels: int [B].
        training: Python bool.

    Returns:
        [B, H, W, C].
    """

    def __init__(
        self, num_classes, momentum=0.999, epsilon=1e-5, synchronized=False,
        **kwargs,
    ):
        super().__init__(momentum, epsilon, synchronized, **kwargs)
        self.num_classes = int(num_classes)

    def build(self, x_shape, labels_shape=None):
        channels = int(x_shape[-1])
        shape = (self.num_classes, channels)
        self.gamma = self.add_weight(
            name="gamma", shape=shape, initializer="ones", autocast=False
        )
        self.beta = self.add_weight(
            name="beta", shape=shape, initializer="zeros", autocast=False
        )
        self._add_moving_stats(channels)

    def call(self, x, labels, training=False):
        # [B, C] -> [B, 1, 1, C] so each example gets its class's gain.
        gamma = tf.gather(tf.convert_to_tensor(self.gamma), labels)
        beta = tf.gather(tf.convert_to_tensor(self.beta), labels)
        gamma = gamma[:, None, None, :]
        beta = beta[:, None, None, :]
        if training:
            mean, variance, _ = self._moments(x)
            self._update_moving_stats(mean, variance)
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            variance = tf.convert_to_tensor(self.moving_variance)
        return self._normalize(x, mean, variance, gamma, beta)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes)
        return config


class BatchNorm(_BatchNormBase):
    """Plain BN of the released generator head (`ops.batch_norm`).

    The released code calls `tf.contrib.layers.batch_norm` (scale and
    center, decay 0.9999, eps 1e-5), whose fused kernel normalizes with the
    biased batch variance but feeds the moving average the Bessel-corrected
    one (n / (n - 1)); this layer does the same.

    Args:
        momentum: moving-average decay (released 0.9999).
        epsilon: variance epsilon.
        synchronized: all-reduce the batch moments across replicas.

    Call arguments:
        x: [B, H, W, C].
        training: Python bool.

    Returns:
        [B, H, W, C].
    """

    def __init__(
        self, momentum=0.9999, epsilon=1e-5, synchronized=False, **kwargs
    ):
        super().__init__(momentum, epsilon, synchronized, **kwargs)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(
            name="gamma", shape=(channels,), initializer="ones", autocast=False
        )
        self.beta = self.add_weight(
            name="beta", shape=(channels,), initializer="zeros", autocast=False
        )
        self._add_moving_stats(channels)

    def call(self, x, training=False):
        if training:
            mean, variance, count = self._moments(x)
            unbiased = variance * count / tf.maximum(count - 1.0, 1.0)
            self._update_moving_stats(mean, unbiased)
        else:
            mean = tf.convert_to_tensor(self.moving_mean)
            variance = tf.convert_to_tensor(self.moving_variance)
        gamma = tf.convert_to_tensor(self.gamma)
        beta = tf.convert_to_tensor(self.beta)
        return self._normalize(x, mean, variance, gamma, beta)


def _pair(value):
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def _max_pool(x):
    """2x2 max-pool, stride 2, VALID ([B, H, W, C] -> [B, H/2, W/2, C])."""
    return tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
