"""`SpectralNormalization`: the released spectral norm around a stock Keras
`Dense`, `Conv2D`, `Conv2DTranspose` or `Embedding`.

It shares u, the power iteration and W / sigma with `SNConv2D`, `SNDense`
and `SNEmbedding` (`spectral_norm._SpectralNormMixin`), so the wrapper and
those layers compute the same function on the same weights.
"""

import math

import keras
import tensorflow as tf

from sagan_tf.layers.spectral_norm import _SpectralNormMixin

_register = keras.saving.register_keras_serializable(package="sagan_tf")


# Exact types: a subclass may change `call`, which the wrapper replaces.
_WRAPPABLE = (
    keras.layers.Dense,
    keras.layers.Conv2D,
    keras.layers.Conv2DTranspose,
    keras.layers.Embedding,
)


@_register
class SpectralNormalization(_SpectralNormMixin, keras.layers.Wrapper):
    """Released spectral norm around a Keras `Dense`, `Conv2D`,
    `Conv2DTranspose` or `Embedding`.

    Unlike `keras.layers.SpectralNormalization`, which assigns W / sigma to
    the wrapped kernel in training mode so that no gradient flows through
    sigma, this wrapper never writes the kernel: it forms W / sigma in the
    forward pass, and gradients flow through sigma. Its only state is u, a
    MEAN-aggregated non-trainable weight, so it also works inside
    `strategy.run` under MirroredStrategy, where Keras' layer fails
    (tensorflow/tensorflow#37834).

    The wrapped layer's `call` is not used: its op (matmul, convolution,
    transposed convolution or gather), settings, bias and activation are
    applied to W / sigma.

    W is the kernel reshaped to [-1, kernel.shape[-1]] (as Keras' wrapper
    does; for `Conv2DTranspose` the last axis is the input channels), and
    for `Embedding` the transposed table [output_dim, input_dim], as the
    released `sn_embedding`. u is [1, W.shape[1]].

    Args:
        layer: an unbuilt or built `keras.layers.Dense`, `Conv2D`,
            `Conv2DTranspose` or `Embedding` (exactly these types).
        power_iterations: power iterations per call (released: 1).
        stop_gradient_uv: stop gradients at u and v (Miyato / TF-GAN).
        **kwargs: Layer arguments. The dtypes are the wrapped layer's
            (a `dtype` argument is ignored).

    Call arguments:
        inputs: the wrapped layer's input ([B, ..., F_in], [B, H, W, C] or
            integer ids).
        training: Python bool.
        update_sn: Python bool or None. None writes u in training mode
            only; False never writes it (the released "NO_OPS" pass); True
            writes it in inference mode too (the released generator).

    Returns:
        The wrapped layer's output, in its compute dtype.
    """

    def __init__(
        self, layer, power_iterations=1, stop_gradient_uv=False, **kwargs
    ):
        if type(layer) not in _WRAPPABLE:
            names = ", ".join(cls.__name__ for cls in _WRAPPABLE)
            raise ValueError(
                f"SpectralNormalization wraps {names}; got a layer of type "
                f"{type(layer).__name__}"
            )
        if int(power_iterations) < 1:
            raise ValueError(
                f"SpectralNormalization power_iterations must be >= 1, got "
                f"{power_iterations!r}"
            )
        # Under a mixed policy Keras would hand `call` the kernel already
        # cast to the compute dtype; the power iteration needs float32. So
        # the wrapper runs in the variable dtype without autocasting and
        # casts inputs and W / sigma to the inner compute dtype itself.
        kwargs["dtype"] = layer.dtype_policy.variable_dtype
        kwargs["autocast"] = False
        super().__init__(layer, **kwargs)
        self.power_iterations = int(power_iterations)
        self.stop_gradient_uv = bool(stop_gradient_uv)
        self._is_embedding = type(layer) is keras.layers.Embedding

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = self._kernel()
        self._add_u(kernel.shape[0 if self._is_embedding else -1])

    def _kernel(self):
        if self._is_embedding:
            return self.layer.embeddings
        return self.layer.kernel

    def _weight_matrix(self):
        kernel = tf.cast(tf.convert_to_tensor(self._kernel()), tf.float32)
        if self._is_embedding:
            return tf.transpose(kernel)
        return tf.reshape(kernel, [-1, kernel.shape[-1]])

    def call(self, inputs, training=False, update_sn=None):
        layer = self.layer
        if self._is_embedding:
            table = tf.transpose(self._normalize(training, update_sn))
            if not inputs.dtype.is_integer:
                inputs = tf.cast(inputs, tf.int32)
            return tf.gather(tf.cast(table, layer.compute_dtype), inputs)
        inputs = tf.cast(inputs, layer.compute_dtype)
        kernel_shape = self._kernel().shape

        def op(x, w_mat):
            kernel = tf.reshape(w_mat, kernel_shape)
            if type(layer) is keras.layers.Dense:
                return keras.ops.matmul(x, kernel)
            if type(layer) is keras.layers.Conv2D:
                return layer.convolution_op(x, kernel)
            return keras.ops.conv_transpose(
                x, kernel, strides=list(layer.strides), padding=layer.padding,
                output_padding=layer.output_padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            )

        outputs = self._apply(
            op, inputs, training, update_sn, self._output_size(inputs)
        )
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias = tf.cast(tf.convert_to_tensor(bias), outputs.dtype)
            if getattr(layer, "data_format", None) == "channels_first":
                bias = tf.reshape(bias, [-1] + [1] * (outputs.shape.rank - 2))
            outputs = outputs + bias
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return outputs

    def _output_size(self, inputs):
        """Static element count of the output, or None if not static."""
        shape = self.layer.compute_output_shape(tuple(inputs.shape))
        if any(dim is None for dim in shape):
            return None
        return math.prod(shape)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, **kwargs):
        return keras.KerasTensor(
            self.layer.compute_output_shape(inputs.shape),
            dtype=self.layer.compute_dtype,
        )

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    def get_config(self):
        config = super().get_config()
        config.update(
            power_iterations=self.power_iterations,
            stop_gradient_uv=self.stop_gradient_uv,
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = dict(config.pop("layer"))
        # Built by the wrapper's build rather than on deserialization, so
        # its variable paths stay under the wrapper's, as when first built.
        inner.pop("build_config", None)
        layer = keras.saving.deserialize_keras_object(
            inner, custom_objects=custom_objects
        )
        return cls(layer, **config)
