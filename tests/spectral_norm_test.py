"""Tests of the SpectralNormalization wrapper against plain-TF references.

Each reference is written here independently: a hand-written power
iteration and the op of the wrapped layer from `tf.nn`, differentiated by
plain TF autodiff.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import layers


def _rng(seed=0):
    return np.random.default_rng(seed)


def _ref_sn(w_mat, u, stop=False, iterations=1):
    """Plain-TF released SN of a [K, C] matrix: (W / sigma, u')."""
    def l2n(t):
        return t / (tf.sqrt(tf.reduce_sum(t * t)) + 1e-12)

    u_new = u
    for _ in range(iterations):
        v = l2n(tf.matmul(u_new, tf.transpose(w_mat)))
        u_new = l2n(tf.matmul(v, w_mat))
    if stop:
        v, u_new = tf.stop_gradient(v), tf.stop_gradient(u_new)
    sigma = tf.reduce_sum(tf.matmul(v, w_mat) * u_new)
    return w_mat / sigma, u_new


# kind -> (inner layer, input shape, plain-TF op of (x, kernel)).
def _case(kind, batch):
    if kind == "dense":
        return (
            keras.layers.Dense(3, activation="tanh"), (batch, 5),
            lambda x, k: tf.matmul(x, k),
        )
    if kind == "conv":
        return (
            keras.layers.Conv2D(5, 3, strides=2, padding="same",
                                activation="relu"),
            (batch, 6, 6, 4),
            lambda x, k: tf.nn.conv2d(x, k, 2, "SAME"),
        )
    if kind == "conv_transpose":
        return (
            keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
            (batch, 3, 3, 6),
            lambda x, k: tf.nn.conv2d_transpose(
                x, k, [batch, 6, 6, 4], 2, "SAME"),
        )
    raise ValueError(kind)


# Batch 1 gives outputs smaller than the kernel (the layer divides the
# output by sigma), batch 8 larger ones (it divides the kernel).
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("stop", [False, True])
@pytest.mark.parametrize("kind", ["dense", "conv", "conv_transpose"])
def test_wrapper_matches_plain_tf_autodiff(kind, stop, batch):
    rng = _rng(1)
    inner, x_shape, op = _case(kind, batch)
    wrapper = layers.SpectralNormalization(inner, stop_gradient_uv=stop)
    wrapper.build(x_shape)
    kernel = rng.normal(size=inner.kernel.shape).astype(np.float32)
    bias = rng.normal(size=inner.bias.shape).astype(np.float32)
    u = rng.normal(size=wrapper.u.shape).astype(np.float32)
    inner.kernel.assign(kernel)
    inner.bias.assign(bias)
    wrapper.u.assign(u)
    x = tf.constant(rng.normal(size=x_shape).astype(np.float32))
    r = tf.constant(rng.normal(size=inner.compute_output_shape(x_shape)),
                    tf.float32)

    with tf.GradientTape() as tape:
        tape.watch(x)
        out = wrapper(x, training=True)
        loss = tf.reduce_sum(tf.sin(out) * r)
    grads = tape.gradient(loss, [inner.kernel.value, inner.bias.value, x])

    ref_kernel, ref_bias = tf.Variable(kernel), tf.Variable(bias)
    with tf.GradientTape() as tape:
        tape.watch(x)
        w_mat = tf.reshape(ref_kernel, [-1, kernel.shape[-1]])
        w_bar, u_new = _ref_sn(w_mat, tf.constant(u), stop)
        ref_out = op(x, tf.reshape(w_bar, kernel.shape)) + ref_bias
        if inner.activation is not None:
            ref_out = inner.activation(ref_out)
        ref_loss = tf.reduce_sum(tf.sin(ref_out) * r)
    ref_grads = tape.gradient(ref_loss, [ref_kernel, ref_bias, x])

    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(wrapper.u.numpy(), u_new, rtol=1e-5,
                               atol=1e-6)
    # The kernel variable itself is never written.
    np.testing.assert_array_equal(inner.kernel.numpy(), kernel)


def test_gradient_flows_through_sigma():
    # With sigma held constant the kernel gradient differs: the wrapper is
    # not Keras' assign-the-kernel algorithm.
    rng = _rng(2)
    inner = keras.layers.Dense(3, use_bias=False)
    wrapper = layers.SpectralNormalization(inner)
    wrapper.build((None, 4))
    kernel = rng.normal(size=(4, 3)).astype(np.float32)
    inner.kernel.assign(kernel)
    x = tf.constant(rng.normal(size=(2, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(wrapper(x, update_sn=False)))
    grad = tape.gradient(loss, inner.kernel.value).numpy()
    ref_kernel = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        w_bar, _ = _ref_sn(ref_kernel, tf.constant(wrapper.u.numpy()))
        sigma = tf.stop_gradient(ref_kernel / w_bar)
        loss = tf.reduce_sum(tf.sin(tf.matmul(x, ref_kernel / sigma)))
    constant_sigma_grad = tape.gradient(loss, ref_kernel).numpy()
    assert np.max(np.abs(grad - constant_sigma_grad)) > 1e-3


def test_embedding_normalizes_the_transposed_table():
    rng = _rng(3)
    inner = keras.layers.Embedding(6, 4)
    wrapper = layers.SpectralNormalization(inner)
    wrapper.build((None,))
    assert wrapper.u.shape == (1, 6)
    table = rng.normal(size=(6, 4)).astype(np.float32)
    u = rng.normal(size=(1, 6)).astype(np.float32)
    inner.embeddings.assign(table)
    wrapper.u.assign(u)
    labels = tf.constant([5, 0, 2, 5])
    r = tf.constant(rng.normal(size=(4, 4)), tf.float32)
    with tf.GradientTape() as tape:
        out = wrapper(labels, training=True)
        loss = tf.reduce_sum(out * r)
    grad = tf.convert_to_tensor(tape.gradient(loss, inner.embeddings.value))

    ref_table = tf.Variable(table)
    with tf.GradientTape() as tape:
        w_bar, u_new = _ref_sn(tf.transpose(ref_table), tf.constant(u))
        ref_out = tf.gather(tf.transpose(w_bar), labels)
        ref_loss = tf.reduce_sum(ref_out * r)
    ref_grad = tf.convert_to_tensor(tape.gradient(ref_loss, ref_table))
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(wrapper.u.numpy(), u_new, rtol=1e-5,
                               atol=1e-6)


def test_power_iterations():
    rng = _rng(4)
    inner = keras.layers.Dense(5, use_bias=False)
    wrapper = layers.SpectralNormalization(inner, power_iterations=3)
    wrapper.build((None, 7))
    u = wrapper.u.numpy()
    x = tf.constant(rng.normal(size=(2, 7)).astype(np.float32))
    out = wrapper(x, training=True)
    w_bar, u_new = _ref_sn(tf.constant(inner.kernel.numpy()), u,
                           iterations=3)
    np.testing.assert_allclose(out, x @ w_bar, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(wrapper.u.numpy(), u_new, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize(
    "training,update_sn,written",
    [(False, None, False), (True, None, True), (False, True, True),
     (True, False, False), (False, False, False), (True, True, True)],
)
def test_u_written_when_asked(training, update_sn, written):
    wrapper = layers.SpectralNormalization(keras.layers.Conv2D(4, 3))
    wrapper.build((None, 4, 4, 2))
    before = wrapper.u.numpy().copy()
    wrapper(tf.ones([1, 4, 4, 2]), training=training, update_sn=update_sn)
    assert np.allclose(wrapper.u.numpy(), before) != written


def test_wrapper_equals_snconv2d_on_the_same_weights():
    rng = _rng(5)
    sn = layers.SNConv2D(6, 3, strides=2, padding="valid")
    wrapper = layers.SpectralNormalization(
        keras.layers.Conv2D(6, 3, strides=2, padding="valid"))
    sn.build((None, 9, 9, 4))
    wrapper.build((None, 9, 9, 4))
    for a, b in ((sn.kernel, wrapper.layer.kernel),
                 (sn.bias, wrapper.layer.bias), (sn.u, wrapper.u)):
        value = rng.normal(size=a.shape).astype(np.float32)
        a.assign(value)
        b.assign(value)
    x = tf.constant(rng.normal(size=(2, 9, 9, 4)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        out_sn = sn(x, training=True)
        out_wrapper = wrapper(x, training=True)
        loss_sn = tf.reduce_sum(tf.sin(out_sn))
        loss_wrapper = tf.reduce_sum(tf.sin(out_wrapper))
    np.testing.assert_allclose(out_wrapper, out_sn, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wrapper.u.numpy(), sn.u.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        tape.gradient(loss_wrapper, wrapper.layer.kernel.value),
        tape.gradient(loss_sn, sn.kernel.value), rtol=1e-4, atol=1e-6)


def test_u_identical_on_two_replicas():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        inner = keras.layers.Conv2D(4, 3, padding="same")
        wrapper = layers.SpectralNormalization(inner)
        wrapper.build((None, 5, 5, 3))
    kernel = inner.kernel.numpy()
    u = wrapper.u.numpy()
    data = _rng(6).normal(size=(2, 2, 5, 5, 3)).astype(np.float32)

    @tf.function
    def step(x):
        def replica_fn(t):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(wrapper(t, training=True)))
            return tape.gradient(loss, inner.kernel)

        return strategy.run(replica_fn, args=(x,))

    x = strategy.experimental_distribute_values_from_function(
        lambda ctx: data[ctx.replica_id_in_sync_group])
    grads = strategy.experimental_local_results(step(x))
    assert all(g is not None for g in grads)
    _, u_new = _ref_sn(tf.reshape(kernel, [-1, 4]), u)
    local = strategy.experimental_local_results(wrapper.u.value)
    np.testing.assert_array_equal(local[0].numpy(), local[1].numpy())
    np.testing.assert_allclose(local[0].numpy(), u_new, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    rng = _rng(7)
    inner = keras.layers.Conv2D(8, 3, padding="same", dtype=policy)
    wrapper = layers.SpectralNormalization(inner)
    wrapper.build((None, 4, 4, 3))
    assert inner.kernel.dtype == "float32" and wrapper.u.dtype == "float32"
    u = wrapper.u.numpy()
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    out = wrapper(tf.constant(x), training=True)
    assert out.dtype == inner.compute_dtype != "float32"
    kernel = inner.kernel.numpy()
    w_bar, u_new = _ref_sn(tf.reshape(kernel, [-1, 8]), u)
    ref = tf.nn.conv2d(x, tf.reshape(w_bar, kernel.shape), 1, "SAME")
    np.testing.assert_allclose(tf.cast(out, tf.float32), ref, rtol=0.05,
                               atol=0.05)
    # The power iteration itself runs in float32.
    np.testing.assert_allclose(wrapper.u.numpy(), u_new, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize(
    "layer", [keras.layers.LSTM(3), keras.layers.DepthwiseConv2D(3)],
    ids=lambda layer: type(layer).__name__,
)
def test_other_layers_are_refused_by_type(layer):
    with pytest.raises(ValueError, match=type(layer).__name__):
        layers.SpectralNormalization(layer)


def test_power_iterations_must_be_positive():
    with pytest.raises(ValueError, match="power_iterations"):
        layers.SpectralNormalization(keras.layers.Dense(2),
                                     power_iterations=0)
