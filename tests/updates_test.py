"""One G and one D update against independent references (training/updates.py).

- D's update: both of D's passes normalize with sigma from the stored u and
  u is written once, as in the released graph; its gradients equal those of
  a plain-TF float64 reference D (tests/reference_discriminator.py).
- Adam on gathered tables: the optimizer must see duplicate-summed
  gradients, as TF1's Adam did; m and v are checked against a numpy Adam
  on the dense gradient, with one and with two replicas.
"""

import threading

import numpy as np
import pytest
import reference_discriminator as ref
import replica_inputs
import tensorflow as tf

from sagan_tf import config as config_lib
from sagan_tf.training import updates

BATCH = 4
Z_DIM = 16
NUM_CLASSES = 4
SIZE = 32
D_BLOCKS = ("d_optimized_block1", "d_block2", "d_block3", "d_block4")


def _config(batch, **train):
    model = config_lib.ModelConfig(
        image_size=SIZE, z_dim=Z_DIM, gf_dim=8, df_dim=8,
        number_classes=NUM_CLASSES, attention_resolution=16,
    )
    return config_lib.TrainConfig(model=model, batch_size=batch, **train)


def _inputs(batch, seed=3):
    rng = np.random.RandomState(seed)
    return dict(
        images=rng.uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32),
        # Repeated classes, as in most real batches.
        labels=np.resize(np.array([0, 0, 3, 0], np.int32), batch),
        z=rng.randn(batch, Z_DIM).astype(np.float32),
        fake_labels=np.resize(np.array([1, 1, 2, 1], np.int32), batch),
    )


def _path(variable):
    return variable.path.split("/", 1)[1]  # drop the model's name


# ------------------------------------------------------------- D update


@pytest.mark.parametrize("two_pass", [False, True], ids=["concat", "two_pass"])
def test_d_update_uses_stored_u_on_both_passes_and_writes_it_once(two_pass):
    t = updates.GANTrainer(
        _config(BATCH, d_two_pass=two_pass), tf.distribute.get_strategy()
    )
    d = t.discriminator
    x = _inputs(BATCH)
    u0 = {_path(v): v.numpy() for v in d.non_trainable_variables}
    w0 = {_path(v): v.numpy() for v in d.trainable_variables}

    metrics, grads, fake = tf.function(t._d_grads_fn)(
        x["images"], x["labels"], x["z"], x["fake_labels"]
    )

    # u: exactly one power iteration from the stored u, on every SN layer.
    for v in d.non_trainable_variables:
        scope = _path(v)[: -len("/u")]
        if scope == "d_embedding":
            w_mat = w0["d_embedding/embeddings"].T
        else:
            kernel = w0[f"{scope}/kernel"]
            w_mat = kernel.reshape(-1, kernel.shape[-1])
        np.testing.assert_allclose(
            v.numpy(), ref.power_step_numpy(u0[_path(v)], w_mat),
            rtol=1e-5, atol=1e-6, err_msg=v.path,
        )

    # Gradients of the released D loss, both passes from the stored u.
    params = {k: tf.Variable(np.float64(w)) for k, w in w0.items()}
    us = {k: tf.constant(np.float64(u)) for k, u in u0.items()}
    fake = np.float64(fake.numpy())

    def logits(images, labels, u):
        return ref.discriminator(
            images, labels, params, u, D_BLOCKS, "d_optimized_block1"
        )

    with tf.GradientTape() as tape:
        real_logits = logits(np.float64(x["images"]), x["labels"], us)
        fake_logits = logits(fake, x["fake_labels"], us)
        loss = tf.reduce_mean(tf.nn.relu(1.0 - real_logits)) + tf.reduce_mean(
            tf.nn.relu(1.0 + fake_logits)
        )
    expected = tape.gradient(loss, params)
    metrics = metrics.numpy()
    np.testing.assert_allclose(metrics[0], loss.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        metrics[3:], [np.mean(real_logits), np.mean(fake_logits)],
        rtol=1e-4, atol=1e-6,
    )
    for v, g in zip(d.trainable_variables, grads):
        want = expected[_path(v)].numpy()
        np.testing.assert_allclose(
            tf.convert_to_tensor(g).numpy(), want,
            rtol=2e-4, atol=2e-5 * np.abs(want).max() + 1e-9,
            err_msg=v.path,
        )

    # The test can fail: a fake pass that read the u just written (the
    # port's earlier order) gives clearly different logits at a fresh u.
    us_new = {
        k: tf.constant(np.float64(v.numpy()))
        for k, v in zip(u0, d.non_trainable_variables)
    }
    stale = np.mean(logits(fake, x["fake_labels"], us_new))
    assert abs(stale - metrics[4]) > 100 * (1e-4 * abs(metrics[4]) + 1e-6)


# ------------------------------------------------- Adam on gathered tables


def _dense_sum(grad):
    """Dense gradient with repeated indices summed, in numpy."""
    if not isinstance(grad, tf.IndexedSlices):
        return np.float64(grad.numpy())
    out = np.zeros(grad.dense_shape.numpy(), np.float64)
    np.add.at(out, grad.indices.numpy(), np.float64(grad.values.numpy()))
    return out


def _update_seeing_grads(t, update, args, monkeypatch):
    """Runs one real update; returns the gradients it handed to Adam.

    `updates.apply_gradients` is wrapped to keep each replica's raw
    gradients (IndexedSlices for gathered tables), which the update then
    returns from the same trace.

    Returns:
        (dense gradients summed over duplicates and replicas, numpy; and
        for each the sum of its squared slices: what an optimizer that
        squares slices before summing them would use).
    """
    seen = {}
    apply = updates.apply_gradients

    def spy(optimizer, grads, variables):
        seen[threading.get_ident()] = list(grads)
        apply(optimizer, grads, variables)

    def replica_fn(*inputs):
        update(*inputs)
        return seen[threading.get_ident()]

    monkeypatch.setattr(updates, "apply_gradients", spy)
    s = t.strategy
    grads = _run(s, replica_fn, args)
    monkeypatch.setattr(updates, "apply_gradients", apply)
    dense, squares = [], []
    for grad in grads:
        parts = s.experimental_local_results(grad)
        dense.append(np.sum([_dense_sum(g) for g in parts], axis=0))
        sq = np.zeros(dense[-1].shape)
        for g in parts:
            if isinstance(g, tf.IndexedSlices):
                np.add.at(sq, g.indices.numpy(), g.values.numpy() ** 2)
            else:
                sq += np.float64(g.numpy()) ** 2
        squares.append(sq)
    return dense, squares


def _run(strategy, fn, args):
    """strategy.run(fn) inside one tf.function, as the trainer runs it.

    (A tf.function per replica would trace each replica separately, and
    their collective ops need not match.)
    """
    return tf.function(lambda: strategy.run(fn, args=args))()


def _check_adam_first_step(t, optimizer, variables, before, grads):
    """m, v and the weights after Adam's first step from zero slots.

    numpy Adam (TF1's, on the dense gradient g): m = (1 - b1) g,
    v = (1 - b2) g^2, w -= lr sqrt(1 - b2) / (1 - b1) m / (sqrt(v) + eps).
    """
    c = t.config
    b1, b2, eps = c.beta1, c.adam_beta2, c.adam_epsilon
    lr = float(optimizer.learning_rate.numpy())
    checked_tables = 0
    for v, w0, g in zip(variables, before, grads):
        i = optimizer._get_variable_index(v)
        m, vel = optimizer._momentums[i], optimizer._velocities[i]
        scale = np.abs(g).max() + 1e-30
        np.testing.assert_allclose(
            m.numpy(), (1 - b1) * g, rtol=1e-5, atol=1e-6 * scale,
            err_msg=v.path,
        )
        np.testing.assert_allclose(
            vel.numpy(), (1 - b2) * g**2, rtol=1e-4,
            atol=1e-6 * (1 - b2) * scale**2, err_msg=v.path,
        )
        m_hat, v_hat = (1 - b1) * g, (1 - b2) * g**2
        step = lr * np.sqrt(1 - b2) / (1 - b1) * m_hat / (np.sqrt(v_hat) + eps)
        np.testing.assert_allclose(
            v.numpy(), w0 - step, rtol=1e-5, atol=1e-3 * lr, err_msg=v.path
        )
        checked_tables += "/cbn_" in v.path or "d_embedding" in v.path
    return checked_tables


# One replica: mixed_precision_test's float32 run checks the same Adam
# step on duplicate table rows.
@pytest.mark.parametrize("replicas", [2])
def test_adam_sees_duplicate_summed_table_gradients(
    replicas, two_cpu_strategy, monkeypatch
):
    if replicas == 1:
        strategy = tf.distribute.get_strategy()
    else:
        strategy = two_cpu_strategy
    global_batch = 2 * BATCH
    t = updates.GANTrainer(_config(global_batch // replicas), strategy)
    x = {
        k: replica_inputs.split(strategy, v)
        for k, v in _inputs(global_batch).items()
    }

    # G update.
    g_vars = t.generator.trainable_variables
    before = [v.numpy() for v in g_vars]
    grads, squares = _update_seeing_grads(
        t, t.g_update, (x["z"], x["fake_labels"]), monkeypatch
    )
    tables = _check_adam_first_step(t, t.g_optimizer, g_vars, before, grads)
    assert tables == 2 * 2 * len(t.generator.blocks)  # CBN gamma and beta

    # The test can fail: with repeated labels, squaring the slices before
    # summing them (Keras 3's sparse Adam) gives another v.
    i = [v.path for v in g_vars].index(t.generator.g_block1.cbn_0.gamma.path)
    assert np.abs(squares[i] - grads[i] ** 2).max() > 0.1 * np.abs(
        grads[i] ** 2
    ).max()

    # D update (after G's, as in a global step).
    d_vars = t.discriminator.trainable_variables
    before = [v.numpy() for v in d_vars]
    args = (x["images"], x["labels"], x["z"], x["fake_labels"])
    grads, _ = _update_seeing_grads(t, t.d_update, args, monkeypatch)
    assert _check_adam_first_step(
        t, t.d_optimizer, d_vars, before, grads
    ) == 1
