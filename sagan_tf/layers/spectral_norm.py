"""Spectral normalization as released (`ops.spectral_normed_weight`).

`SNConv2D`, `SNDense` and `SNEmbedding` are the released `snconv2d`,
`snlinear` and `sn_embedding`; `SpectralNormalization`
(`spectral_norm_wrapper.py`) wraps a stock Keras `Dense`, `Conv2D`,
`Conv2DTranspose` or `Embedding` with the same rule. All four share
`_SpectralNormMixin`: one power iteration from the stored vector
u on every call, gradients flowing through sigma, u' and v (an option stops
them at u and v, as Miyato's and TF-GAN's versions do), and the kernel
variable itself never overwritten. This is why
`keras.layers.SpectralNormalization`, which assigns W / sigma to the kernel
and so passes no gradient through sigma, is not used.

Mixed precision: the power iteration, sigma and W / sigma run in float32
and only the normalized kernel is cast to the layer's compute dtype.

Distribution: u is a mirrored variable with MEAN aggregation, so it may be
assigned inside `strategy.run` and stays identical on every replica; u'
depends only on W and u, which every replica shares, so the mean changes
nothing.

The public names here are exported from `sagan_tf.layers`.
"""

import keras
import tensorflow as tf

_register = keras.saving.register_keras_serializable(package="sagan_tf")

_L2_EPSILON = 1e-12


def l2_normalize(x, epsilon=_L2_EPSILON):
    """Released `_l2normalize`: x / (sqrt(sum x^2) + eps), over all axes."""
    return x / (tf.sqrt(tf.reduce_sum(tf.square(x))) + epsilon)


def power_iteration(w_mat, u, stop_gradient_uv=False, iterations=1):
    """Power iterations of the released spectral norm (released: one).

    Args:
        w_mat: float32 [K, C_out], the kernel reshaped to [-1, C_out].
        u: float32 [1, C_out], the stored left vector.
        stop_gradient_uv: stop the gradient at u' and v (Miyato / TF-GAN)
            instead of letting it flow through them (released).
        iterations: number of v, u' updates before sigma is formed.

    Returns:
        (sigma, u_new): the scalar estimate sigma = v W u'^T and the updated
        vector u' [1, C_out].
    """
    u_new = u
    for _ in range(iterations):
        v = l2_normalize(tf.matmul(u_new, w_mat, transpose_b=True))  # [1, K]
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
    """The one implementation of u, sigma and W / sigma of all SN layers.

    Subclasses set `self.stop_gradient_uv` (and `power_iterations` if not
    1), call `_add_u(c_out)` in build and implement `_weight_matrix()`
    returning the float32 [K, C_out] matrix that is normalized.
    """

    power_iterations = 1

    def _add_u(self, c_out):
        self.u = self.add_weight(
            name="u",
            shape=(1, c_out),
            dtype="float32",
            initializer=keras.initializers.TruncatedNormal(stddev=1.0),
            trainable=False,
            autocast=False,
            aggregation="mean",
        )

    def _sigma(self, training, update_sn):
        """Returns float32 (W [K, C_out], sigma); writes u when asked."""
        w_mat = self._weight_matrix()
        u = tf.convert_to_tensor(self.u)
        sigma, u_new = power_iteration(
            w_mat, u, self.stop_gradient_uv, self.power_iterations
        )
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
            self._weight_matrix(), tf.convert_to_tensor(self.u),
            iterations=self.power_iterations,
        )
        return sigma


@_register
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
            bias = tf.cast(self.bias, outputs.dtype)
            if outputs.dtype == tf.float32:
                outputs = tf.nn.bias_add(outputs, bias)
            else:
                # TF's CPU BiasAddGrad sums bfloat16 in bfloat16 (75 %
                # relative error over 4 x 32 x 32 terms, measured); the
                # broadcast add's gradient, a Sum, accumulates in float32.
                outputs = outputs + bias
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


@_register
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


@_register
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


def _pair(value):
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)
