"""Tests for sagan_tf.layers against independent numpy / plain-TF math."""

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import layers


def _np_l2n(x):
    return x / (np.sqrt(np.sum(x**2)) + 1e-12)


def _np_sn(w_mat, u):
    """Released one-iteration SN in float64: (W / sigma, sigma, u')."""
    w_mat = w_mat.astype(np.float64)
    v = _np_l2n(u @ w_mat.T)
    u_new = _np_l2n(v @ w_mat)
    sigma = (v @ w_mat @ u_new.T).item()
    return w_mat / sigma, sigma, u_new


def _set(variable, value):
    variable.assign(np.asarray(value, np.float32))


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- SN layers


@pytest.mark.parametrize("kind", ["dense", "conv", "embedding"])
def test_sigma_converges_to_top_singular_value(kind):
    if kind == "dense":
        layer = layers.SNDense(7)
        layer.build((None, 12))
        inputs = tf.ones([1, 12])
        matrix = lambda: layer.kernel.numpy()  # noqa: E731
    elif kind == "conv":
        layer = layers.SNConv2D(6, 3)
        layer.build((None, 5, 5, 4))
        inputs = tf.ones([1, 5, 5, 4])
        matrix = lambda: layer.kernel.numpy().reshape(-1, 6)  # noqa: E731
    else:
        layer = layers.SNEmbedding(9, 5)
        layer.build()
        inputs = tf.constant([0, 3])
        matrix = lambda: layer.embeddings.numpy().T  # noqa: E731
    for _ in range(300):
        layer(inputs, training=True)
    w_mat = matrix()
    top = np.linalg.svd(w_mat, compute_uv=False)[0]
    np.testing.assert_allclose(float(layer.compute_sigma()), top, rtol=1e-3)
    normalized = w_mat / float(layer.compute_sigma())
    np.testing.assert_allclose(
        np.linalg.svd(normalized, compute_uv=False)[0], 1.0, atol=1e-3
    )


def test_dense_one_call_matches_numpy():
    rng = _rng(1)
    layer = layers.SNDense(4)
    layer.build((None, 6))
    kernel = rng.normal(size=(6, 4))
    u = rng.normal(size=(1, 4))
    bias = rng.normal(size=(4,))
    _set(layer.kernel, kernel)
    _set(layer.u, u)
    _set(layer.bias, bias)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    w_bar, _, u_new = _np_sn(kernel.astype(np.float32), u.astype(np.float32))
    out = layer(tf.constant(x), training=True)
    np.testing.assert_allclose(out, x @ w_bar + bias, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.u.numpy(), u_new, rtol=1e-5, atol=1e-6)
    # The kernel itself is never overwritten.
    np.testing.assert_array_equal(layer.kernel.numpy(), kernel.astype("f4"))


def test_conv_one_call_matches_numpy():
    rng = _rng(2)
    layer = layers.SNConv2D(5, 3)
    layer.build((None, 4, 4, 3))
    kernel = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    u = rng.normal(size=(1, 5)).astype(np.float32)
    _set(layer.kernel, kernel)
    _set(layer.u, u)
    _set(layer.bias, np.arange(5) * 0.1)
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    w_bar, _, _ = _np_sn(kernel.reshape(-1, 5), u)
    w_bar = w_bar.reshape(3, 3, 3, 5)
    # Direct "same" convolution in numpy (zero padding of 1).
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 4, 4, 5))
    for i in range(4):
        for j in range(4):
            patch = padded[:, i : i + 3, j : j + 3, :]
            expected[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, w_bar)
    expected += np.arange(5) * 0.1
    out = layer(tf.constant(x), training=False)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_embedding_one_call_matches_numpy():
    rng = _rng(3)
    layer = layers.SNEmbedding(6, 4)
    layer.build()
    table = rng.normal(size=(6, 4)).astype(np.float32)
    u = rng.normal(size=(1, 6)).astype(np.float32)
    _set(layer.embeddings, table)
    _set(layer.u, u)
    assert layer.u.shape == (1, 6)
    # Released: normalize the transposed table [4, 6].
    w_bar_t, _, u_new = _np_sn(table.T, u)
    labels = np.array([5, 0, 2])
    out = layer(tf.constant(labels), training=True)
    np.testing.assert_allclose(out, w_bar_t.T[labels], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.u.numpy(), u_new, rtol=1e-5, atol=1e-6)


def _plain_tf_sn_loss(kernel, u, x, stop):
    """Plain-TF reference of the released SN (written independently)."""
    def l2n(t):
        return t / (tf.norm(t) + 1e-12)

    v = l2n(tf.matmul(u, tf.transpose(kernel)))
    u_new = l2n(tf.matmul(v, kernel))
    if stop:
        v, u_new = tf.stop_gradient(v), tf.stop_gradient(u_new)
    sigma = tf.reduce_sum(tf.matmul(v, kernel) * u_new)
    return tf.reduce_sum(tf.sin(tf.matmul(x, kernel / sigma)))


# Batch 4 gives an output smaller than the kernel (12 < 15 elements), batch
# 8 a larger one: the layer then divides the output, or the kernel, by sigma.
@pytest.mark.parametrize("stop,batch", [(False, 4), (True, 4), (False, 8)])
def test_gradient_through_sigma_matches_plain_tf(stop, batch):
    rng = _rng(4)
    kernel = rng.normal(size=(5, 3)).astype(np.float32)
    u = rng.normal(size=(1, 3)).astype(np.float32)
    x = tf.constant(rng.normal(size=(batch, 5)).astype(np.float32))
    layer = layers.SNDense(3, use_bias=False, stop_gradient_uv=stop)
    layer.build((None, 5))
    _set(layer.kernel, kernel)
    _set(layer.u, u)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(layer(x)))
    grad = tape.gradient(loss, layer.kernel.value)

    ref_kernel = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        ref_loss = _plain_tf_sn_loss(ref_kernel, tf.constant(u), x, stop)
    ref_grad = tape.gradient(ref_loss, ref_kernel)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)

    # The two modes really differ, so this test can tell them apart.
    with tf.GradientTape() as tape:
        other = _plain_tf_sn_loss(ref_kernel, tf.constant(u), x, not stop)
    other_grad = tape.gradient(other, ref_kernel)
    assert np.max(np.abs(grad.numpy() - other_grad.numpy())) > 1e-3


@pytest.mark.parametrize(
    "spatial,batch",
    # The output is smaller than the kernel (216 elements) in the first
    # case and larger in the second: the layer divides the output by sigma
    # in one and the kernel in the other, which must not change anything.
    [(2, 1), (8, 2)],
)
def test_conv_output_and_gradient_match_plain_tf(spatial, batch):
    rng = _rng(5)
    kernel = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    u = rng.normal(size=(1, 6)).astype(np.float32)
    x = tf.constant(
        rng.normal(size=(batch, spatial, spatial, 4)).astype(np.float32))
    layer = layers.SNConv2D(6, 3, use_bias=False)
    layer.build(x.shape)
    _set(layer.kernel, kernel)
    _set(layer.u, u)
    with tf.GradientTape() as tape:
        out = layer(x)
        loss = tf.reduce_sum(tf.sin(out))
    grad = tape.gradient(loss, layer.kernel.value)

    ref_kernel = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        w_mat = tf.reshape(ref_kernel, [-1, 6])
        v = tf.matmul(tf.constant(u), tf.transpose(w_mat))
        v = v / (tf.norm(v) + 1e-12)
        u_new = tf.matmul(v, w_mat)
        u_new = u_new / (tf.norm(u_new) + 1e-12)
        sigma = tf.reduce_sum(tf.matmul(v, w_mat) * u_new)
        ref_out = tf.nn.conv2d(x, ref_kernel / sigma, 1, "SAME")
        ref_loss = tf.reduce_sum(tf.sin(ref_out))
    ref_grad = tape.gradient(ref_loss, ref_kernel)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "training,update_sn,written",
    [(False, None, False), (True, None, True), (False, True, True),
     (True, False, False), (False, False, False), (True, True, True)],
)
def test_u_written_when_asked(training, update_sn, written):
    # None follows `training`; an explicit bool overrides it (the released
    # generator writes u in inference mode, D's fake pass never writes).
    layer = layers.SNConv2D(4, 3)
    layer.build((None, 4, 4, 2))
    before = layer.u.numpy().copy()
    layer(tf.ones([1, 4, 4, 2]), training=training, update_sn=update_sn)
    assert np.allclose(layer.u.numpy(), before) != written


# ----------------------------------------------------------- SelfAttention


def _np_attention(layer, x, gamma):
    """Released sn_non_local_block_sim in numpy (float64)."""
    b, h, w, c = x.shape
    n = h * w

    def conv1x1(sub, t):
        kernel = sub.kernel.numpy()
        w_bar, _, _ = _np_sn(kernel.reshape(-1, kernel.shape[-1]),
                             sub.u.numpy())
        return np.einsum("bhwc,co->bhwo", t, w_bar)

    def pool(t):
        bb, hh, ww, cc = t.shape
        return t.reshape(bb, hh // 2, 2, ww // 2, 2, cc).max(axis=(2, 4))

    theta = conv1x1(layer.theta, x).reshape(b, n, c // 8)
    phi = pool(conv1x1(layer.phi, x)).reshape(b, n // 4, c // 8)
    logits = theta @ phi.transpose(0, 2, 1)
    logits -= logits.max(axis=-1, keepdims=True)
    beta = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    g = pool(conv1x1(layer.g, x)).reshape(b, n // 4, c // 2)
    attn_g = (beta @ g).reshape(b, h, w, c // 2)
    return x + gamma * conv1x1(layer.o, attn_g), beta


def _attention_layer(x_shape):
    layer = layers.SelfAttention()
    layer.build(x_shape)
    return layer


def test_attention_gamma_zero_is_identity():
    x = _rng(5).normal(size=(2, 4, 4, 16)).astype(np.float32)
    layer = _attention_layer(x.shape)
    assert float(layer.gamma.numpy()) == 0.0
    y = layer(tf.constant(x), training=True)
    np.testing.assert_array_equal(y, x)


def test_attention_matches_numpy_reference():
    rng = _rng(6)
    x = rng.normal(size=(2, 4, 6, 16)).astype(np.float32)
    layer = _attention_layer(x.shape)
    assert layer.theta.kernel.shape == (1, 1, 16, 2)
    assert layer.phi.kernel.shape == (1, 1, 16, 2)
    assert layer.g.kernel.shape == (1, 1, 16, 8)
    assert layer.o.kernel.shape == (1, 1, 8, 16)
    assert not any(hasattr(s, "bias") for s in
                   (layer.theta, layer.phi, layer.g, layer.o))
    for sub in (layer.theta, layer.phi, layer.g, layer.o):
        # Larger weights make the softmax far from uniform.
        _set(sub.kernel, sub.kernel.numpy() * 3)
    _set(layer.gamma, 0.7)
    expected_y, expected_beta = _np_attention(layer, x.astype(np.float64), 0.7)
    y, beta = layer(tf.constant(x), return_attention=True)
    assert beta.shape == (2, 24, 6)
    np.testing.assert_allclose(beta, expected_beta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(y, expected_y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.sum(beta, axis=-1), 1.0, rtol=1e-5)


# ------------------------------------------------------------- BatchNorm


def test_cbn_training_uses_class_gains_and_updates_moving_stats():
    rng = _rng(7)
    num_classes, channels = 3, 4
    layer = layers.ConditionalBatchNorm(num_classes)
    layer.build((None, 2, 2, channels))
    gamma = rng.normal(size=(num_classes, channels))
    beta = rng.normal(size=(num_classes, channels))
    _set(layer.gamma, gamma)
    _set(layer.beta, beta)
    x = rng.normal(loc=2.0, scale=3.0, size=(5, 2, 2, channels))
    labels = np.array([2, 0, 1, 2, 0])
    out = layer(tf.constant(x, tf.float32), tf.constant(labels),
                training=True)
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    normalized = (x - mean) / np.sqrt(var + 1e-5)
    expected = (normalized * gamma[labels][:, None, None, :]
                + beta[labels][:, None, None, :])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean * 0.001,
                               rtol=1e-4)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               0.999 + var * 0.001, rtol=1e-5)


def test_cbn_inference_uses_moving_stats():
    rng = _rng(8)
    layer = layers.ConditionalBatchNorm(2, epsilon=1e-3)
    layer.build((None, 3, 3, 2))
    gamma = rng.normal(size=(2, 2))
    beta = rng.normal(size=(2, 2))
    _set(layer.gamma, gamma)
    _set(layer.beta, beta)
    _set(layer.moving_mean, [0.5, -1.0])
    _set(layer.moving_variance, [4.0, 0.25])
    x = rng.normal(size=(2, 3, 3, 2))
    labels = np.array([1, 0])
    out = layer(tf.constant(x, tf.float32), tf.constant(labels))
    expected = ((x - [0.5, -1.0]) / np.sqrt(np.array([4.0, 0.25]) + 1e-3)
                * gamma[labels][:, None, None, :]
                + beta[labels][:, None, None, :])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    # Inference leaves the statistics alone.
    np.testing.assert_array_equal(layer.moving_mean.numpy(), [0.5, -1.0])


def test_head_batch_norm_feeds_unbiased_variance_to_moving_average():
    rng = _rng(9)
    layer = layers.BatchNorm()
    layer.build((None, 2, 2, 3))
    x = rng.normal(size=(2, 2, 2, 3))
    out = layer(tf.constant(x, tf.float32), training=True)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + 1e-5),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        layer.moving_variance.numpy(),
        0.9999 + x.var(axis=(0, 1, 2), ddof=1) * 1e-4,
        rtol=1e-6,
    )


@pytest.mark.parametrize("synchronized", [False, True])
def test_cbn_under_mirrored_strategy(synchronized):
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        layer = layers.ConditionalBatchNorm(1, synchronized=synchronized)
        layer.build((None, 2, 2, 2))
    data = _rng(10).normal(size=(2, 3, 2, 2, 2)).astype(np.float32)
    data[1] += 1.5  # replicas see different batch statistics

    @tf.function
    def step(x):
        return strategy.run(
            lambda t: layer(t, tf.zeros([3], tf.int32), training=True),
            args=(x,),
        )

    x = strategy.experimental_distribute_values_from_function(
        lambda ctx: data[ctx.replica_id_in_sync_group]
    )
    outs = strategy.experimental_local_results(step(x))
    axes = (0, 1, 2)
    if synchronized:
        whole = data.reshape(6, 2, 2, 2)
        mean, var = whole.mean(axis=axes), whole.var(axis=axes)
        expected = (whole - mean) / np.sqrt(var + 1e-5)
    else:
        expected = np.concatenate([
            (d - d.mean(axis=axes)) / np.sqrt(d.var(axis=axes) + 1e-5)
            for d in data
        ])
    np.testing.assert_allclose(np.concatenate(outs), expected, atol=1e-4)
    # Either way the written statistics are identical on both replicas:
    # the per-replica means are averaged when assigned.
    expected_mean = np.mean([d.mean(axis=axes) for d in data], axis=0)
    for variable in (layer.moving_mean, layer.moving_variance):
        local = strategy.experimental_local_results(variable.value)
        np.testing.assert_array_equal(local[0].numpy(), local[1].numpy())
    local_mean = strategy.experimental_local_results(layer.moving_mean.value)
    np.testing.assert_allclose(local_mean[0].numpy(), expected_mean * 1e-3,
                               rtol=1e-4)


# ------------------------------------------------------------- get_config


@pytest.mark.parametrize(
    "layer",
    [
        layers.SNConv2D(8, 3, strides=2, padding="valid", use_bias=False,
                        stop_gradient_uv=True, name="c"),
        layers.SNDense(5, use_bias=False, stop_gradient_uv=True),
        layers.SNEmbedding(10, 3, stop_gradient_uv=True),
        layers.SelfAttention(stop_gradient_uv=True),
        layers.ConditionalBatchNorm(7, momentum=0.9, epsilon=1e-3,
                                    synchronized=True),
        layers.BatchNorm(momentum=0.99, synchronized=True),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_get_config_round_trips(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    assert type(clone) is type(layer)


def test_bad_padding_raises():
    with pytest.raises(ValueError, match="padding"):
        layers.SNConv2D(4, 3, padding="causal")
