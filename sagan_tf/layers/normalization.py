"""Batch normalization layers of the released generator.

`ConditionalBatchNorm` is the released `ops.ConditionalBatchNorm` (per-class
gamma and beta, decay 0.999) and `BatchNorm` the `tf.contrib.layers.batch_norm`
head of G (decay 0.9999). Both are exported from `sagan_tf.layers` too.

Distribution: the moving statistics are mirrored variables with MEAN
aggregation, so they may be assigned inside `strategy.run` and stay identical
on every replica; each replica normalizes with its own batch moments unless
`synchronized=True`, which all-reduces the moments first. Keras'
BatchNormalization is not used because its moving statistics lack that
aggregation. The statistics are computed in float32 under mixed precision.
"""

import keras
import tensorflow as tf

# TF's fused batch-norm kernel silently raises epsilon to at least this.
FUSED_MIN_EPSILON = 1.001e-5


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
        """Biased float32 moments over (B, H, W) of x [B, H, W, C].

        Two passes, as `tf.nn.moments` (the released CBN) and TF's fused
        kernel (the released head) compute them: the mean, then the mean of
        squared differences. E[x^2] - E[x]^2 cancels catastrophically when
        a channel's |mean| is much larger than its std.
        """
        x = tf.cast(x, tf.float32)
        axes = [0, 1, 2]
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        ctx = None
        if self.synchronized:
            ctx = tf.distribute.get_replica_context()
            if ctx is None or ctx.num_replicas_in_sync == 1:
                ctx = None
        mean = tf.reduce_mean(x, axis=axes)
        if ctx is not None:
            # Equal per-replica batches, so the mean of means is exact.
            mean = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, mean)
            count *= ctx.num_replicas_in_sync
        # stop_gradient as in tf.nn.moments: the derivative of the squared
        # deviations with respect to the mean is zero anyway.
        variance = tf.reduce_mean(
            tf.math.squared_difference(x, tf.stop_gradient(mean)), axis=axes
        )
        if ctx is not None:
            variance = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, variance)
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


@keras.saving.register_keras_serializable(package="sagan_tf")
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


@keras.saving.register_keras_serializable(package="sagan_tf")
class BatchNorm(_BatchNormBase):
    """Plain BN of the released generator head (`ops.batch_norm`).

    The released code calls `tf.contrib.layers.batch_norm` (scale and
    center, decay 0.9999, eps 1e-5), which on 4-D inputs runs TF 1.5's
    fused kernel. That kernel raises epsilon to max(eps, 1.001e-5), hence
    the default here; it normalizes with the biased batch variance but
    feeds the moving average the Bessel-corrected one (n / (n - 1)). This
    layer does the same.

    Args:
        momentum: moving-average decay (released 0.9999).
        epsilon: variance epsilon (released: effectively 1.001e-5).
        synchronized: all-reduce the batch moments across replicas.

    Call arguments:
        x: [B, H, W, C].
        training: Python bool.

    Returns:
        [B, H, W, C].
    """

    def __init__(
        self, momentum=0.9999, epsilon=FUSED_MIN_EPSILON, synchronized=False,
        **kwargs,
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
