"""Tests of the update steps (sagan_tf/training/updates.py) and loop helpers.

The expensive part is tracing G and D; both replica-layout trainers are
built once per module and driven with explicit, deterministic inputs.
"""

import dataclasses

import numpy as np
import pytest
import replica_inputs
import tensorflow as tf

from sagan_tf import config as config_lib
from sagan_tf.training import checkpoints, summaries, updates

GLOBAL_BATCH = 4
Z_DIM = 16
NUM_CLASSES = 4
SIZE = 32
EMA_DECAY = 0.75


def _config(per_replica_batch):
    model = config_lib.ModelConfig(
        image_size=SIZE,
        z_dim=Z_DIM,
        gf_dim=8,
        df_dim=8,
        number_classes=NUM_CLASSES,
        attention_resolution=16,
        # Two replicas of batch 2 normalize like one replica of batch 4
        # only with synchronized moments (released: per replica).
        sync_batch_norm=True,
    )
    return config_lib.TrainConfig(
        model=model, batch_size=per_replica_batch, ema_decay=EMA_DECAY
    )


def _inputs():
    rng = np.random.RandomState(7)
    return dict(
        z=rng.randn(GLOBAL_BATCH, Z_DIM).astype(np.float32),
        fake_labels=rng.randint(0, NUM_CLASSES, GLOBAL_BATCH).astype(np.int32),
        images=rng.uniform(-1, 1, (GLOBAL_BATCH, SIZE, SIZE, 3)).astype(
            np.float32
        ),
        labels=rng.randint(0, NUM_CLASSES, GLOBAL_BATCH).astype(np.int32),
        z2=rng.randn(GLOBAL_BATCH, Z_DIM).astype(np.float32),
        fake_labels2=rng.randint(0, NUM_CLASSES, GLOBAL_BATCH).astype(
            np.int32
        ),
    )


def _one_step(t, inputs):
    """One global step as train_step runs it (G, EMA, D) on given inputs."""
    s = t.strategy
    d = {k: replica_inputs.split(s, v) for k, v in inputs.items()}

    @tf.function
    def step():
        g = s.run(t.g_update, args=(d["z"], d["fake_labels"]))
        t.update_ema()
        metrics, _ = s.run(
            t.d_update,
            args=(d["images"], d["labels"], d["z2"], d["fake_labels2"]),
        )
        total = tf.distribute.ReduceOp.SUM
        return s.reduce(total, g, None), s.reduce(total, metrics, None)

    g_loss, metrics = step()
    return float(g_loss), metrics.numpy()


def _state(t):
    """numpy copies of every weight and Adam slot, by position."""
    return dict(
        g=[w.numpy() for w in t.generator.weights],
        d=[w.numpy() for w in t.discriminator.weights],
        ema=[w.numpy() for w in t.ema_generator.weights],
        g_opt=[v.numpy() for v in t.g_optimizer.variables],
        d_opt=[v.numpy() for v in t.d_optimizer.variables],
    )


def _sn_layers(model):
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if hasattr(layer, "u")
    ]


def _w_matrix(layer):
    if hasattr(layer, "kernel"):
        kernel = layer.kernel.numpy()
        return kernel.reshape(-1, kernel.shape[-1])
    return layer.embeddings.numpy().T


def _power_step(u, w):
    """Released one-iteration update u' = l2n(l2n(u Wᵀ) W), in float64."""
    u, w = u.astype(np.float64), w.astype(np.float64)
    v = u @ w.T
    v /= np.sqrt(np.sum(v**2)) + 1e-12
    u = v @ w
    return u / (np.sqrt(np.sum(u**2)) + 1e-12)


@pytest.fixture(scope="module")
def stepped(two_cpu_strategy):
    """Both layouts after one step from the same weights and inputs."""
    inputs = _inputs()
    one = updates.GANTrainer(
        _config(GLOBAL_BATCH), tf.distribute.get_strategy()
    )
    two = updates.GANTrainer(
        _config(GLOBAL_BATCH // 2),
        two_cpu_strategy,
    )
    for a, b in zip(one.generator.weights, two.generator.weights):
        b.assign(a.numpy())
    for a, b in zip(one.discriminator.weights, two.discriminator.weights):
        b.assign(a.numpy())
    two.copy_generator_to_ema()
    before = _state(one)
    before_sn = {
        name: [(layer.u.numpy(), _w_matrix(layer)) for layer in _sn_layers(m)]
        for name, m in (("g", one.generator), ("d", one.discriminator))
    }
    out_one = _one_step(one, inputs)
    out_two = _one_step(two, inputs)
    return dict(
        one=one, two=two, before=before, before_sn=before_sn,
        out_one=out_one, out_two=out_two,
    )


def _tolerances(t, model, optimizer, learning_rate, scale=1.0):
    """Per-weight absolute tolerances for comparing updated weights.

    A weight whose true gradient is zero (a conv bias right before batch
    norm) gets float32 round-off as its gradient, and Adam's first step
    scales any nonzero gradient to about +-lr; such elements may differ by up
    to 2 lr between layouts. "Round-off" is any gradient within the slot
    check's tolerance of zero (1e-5 of the largest gradient, see the test):
    layouts may disagree on its sign. Every other element must agree to
    1e-6.
    """
    momentum = {id(v): np.abs(m.numpy()) for v, m in zip(
        model.trainable_variables, optimizer._momentums)}
    noise = max(1e-6, 1e-5 * max(m.max() for m in momentum.values()))
    out = []
    for w in model.weights:
        if id(w) in momentum:
            grad = momentum[id(w)]
            out.append(
                np.where(grad < noise, 2.5 * learning_rate, 1e-6) * scale)
        else:
            out.append(np.full(w.shape, 1e-6))
    return out


def test_two_replicas_match_one_replica_on_the_same_global_batch(stepped):
    (g1, m1), (g2, m2) = stepped["out_one"], stepped["out_two"]
    np.testing.assert_allclose(g2, g1, rtol=1e-5, atol=1e-6)
    # d_loss, d_loss_real, d_loss_fake, logit_real, logit_fake.
    np.testing.assert_allclose(m2, m1, rtol=1e-5, atol=1e-6)
    one, two = stepped["one"], stepped["two"]
    s1, s2 = _state(one), _state(two)
    c = one.config
    g_tol = _tolerances(one, one.generator, one.g_optimizer,
                        c.generator_learning_rate)
    tolerances = dict(
        g=g_tol,
        d=_tolerances(one, one.discriminator, one.d_optimizer,
                      c.discriminator_learning_rate),
        ema=[t * (1 - EMA_DECAY) for t in g_tol],
    )
    before = stepped["before"]
    for key in ("g", "d", "ema"):
        changed = 0
        for a, b, w0, atol in zip(s1[key], s2[key], before[key],
                                  tolerances[key]):
            assert np.all(np.abs(a - b) <= atol + 1e-4 * np.abs(a)), key
            changed += not np.array_equal(a, w0)
        assert changed > 0, key
    # beta1 = 0: Adam's first moment IS the gradient averaged over the
    # global batch (and the second its square), so this pins the loss
    # scaling across replicas.
    for key in ("g_opt", "d_opt"):
        scale = max(np.max(np.abs(a)) for a in s1[key][2:])
        for a, b in zip(s1[key], s2[key]):
            np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5 * scale)


def test_logged_d_losses_are_the_released_means():
    """d_loss_real and logit_real are plain means over the global batch.

    The reference applies the released formulas with numpy to D's logits
    from the same weights, computed before the update writes anything.
    """
    t = updates.GANTrainer(
        _config(GLOBAL_BATCH), tf.distribute.get_strategy()
    )
    inputs = _inputs()
    logits = t.discriminator(
        inputs["images"], inputs["labels"], training=True, update_sn=False
    ).numpy().astype(np.float64)
    metrics, _ = t.d_update(
        inputs["images"], inputs["labels"], inputs["z2"],
        inputs["fake_labels2"],
    )
    metrics = metrics.numpy()
    np.testing.assert_allclose(
        metrics[1], np.mean(np.maximum(0.0, 1.0 - logits)), rtol=1e-5)
    np.testing.assert_allclose(metrics[3], np.mean(logits), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(metrics[0], metrics[1] + metrics[2],
                               rtol=1e-6)


def test_one_step_runs_one_g_and_one_d_update(stepped):
    one = stepped["one"]
    assert int(one.g_optimizer.iterations.numpy()) == 1
    assert int(one.d_optimizer.iterations.numpy()) == 1


def test_d_writes_u_once_and_g_writes_u_on_both_updates(stepped):
    one = stepped["one"]
    # D: only the pass over real images writes u (one iteration from the
    # initial u on the initial W; the G update and the fake pass add none).
    for layer, (u0, w0) in zip(
        _sn_layers(one.discriminator), stepped["before_sn"]["d"]
    ):
        np.testing.assert_allclose(
            layer.u.numpy(), _power_step(u0, w0), atol=2e-5,
            err_msg=layer.path,
        )
    # G: its training pass in the G update (on W0), then its training pass
    # in the D update (on the updated W1 = final W).
    for layer, (u0, w0) in zip(
        _sn_layers(one.generator), stepped["before_sn"]["g"]
    ):
        expected = _power_step(_power_step(u0, w0), _w_matrix(layer))
        np.testing.assert_allclose(
            layer.u.numpy(), expected, atol=2e-5, err_msg=layer.path
        )


def test_ema_tracks_generator_weights(stepped):
    one = stepped["one"]
    before = stepped["before"]
    g0 = {id(w): x for w, x in zip(one.generator.weights, before["g"])}
    for w, e in zip(one.generator.weights, one.ema_generator.weights):
        if not w.trainable:
            continue
        # Trainable weights change only in the G update, right before the
        # EMA update: EMA = d * G0 + (1 - d) * G1 (EMA started as G0).
        expected = EMA_DECAY * g0[id(w)] + (1 - EMA_DECAY) * w.numpy()
        np.testing.assert_allclose(e.numpy(), expected, rtol=1e-5,
                                   atol=1e-7, err_msg=w.path)
    moving = [
        (w, e) for w, e in zip(one.generator.weights, one.ema_generator.weights)
        if "moving_mean" in w.path
    ]
    assert moving, "G has BN moving means"
    for w, e in moving:
        assert np.any(e.numpy() != 0.0), w.path  # BN statistics tracked too


def test_checkpoint_refuses_non_finite_weights(tmp_path):
    step = tf.Variable(3, dtype=tf.int64)
    weight = tf.Variable([1.0, 2.0])
    model = tf.Module()
    model.w = weight
    keeper = checkpoints.CheckpointKeeper(
        str(tmp_path), step, {"generator": model}, max_to_keep=2
    )
    # tf.Module exposes `variables`, like Keras models and optimizers.
    assert keeper.save().endswith("ckpt-3")
    weight.assign([1.0, np.nan])
    step.assign(4)
    with pytest.raises(checkpoints.NonFiniteError, match="global step 4"):
        keeper.save()
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-3")


@pytest.mark.parametrize(
    "field, value",
    [
        ("batch_size", 0),
        ("d_step", 0),
        ("generator_learning_rate", -1.0),
        ("adam_beta2", 1.0),
        ("ema_decay", 1.0),
        ("mixed_precision", "fp8"),
        ("save_checkpoint_secs", -5),
        ("loss_type", "wgan"),
    ],
)
def test_validate_config_names_the_flag(field, value):
    config = dataclasses.replace(config_lib.TrainConfig(), **{field: value})
    with pytest.raises(ValueError, match=f"--{field}="):
        updates.validate_config(config)


def test_image_grid_layout():
    # 6 images: the released rule gives 3 rows x 2 columns.
    assert summaries.squarest_grid_size(6) == (3, 2)
    assert summaries.squarest_grid_size(64) == (8, 8)
    images = np.zeros((6, 2, 3, 3), np.float32) - 1.0
    images[5] = 1.0  # last image white: bottom-right cell
    grid = summaries.image_grid(images)
    assert grid.shape == (1, 6, 6, 3) and grid.dtype == np.uint8
    assert np.all(grid[0, 4:, 3:] == 255) and np.all(grid[0, :4] == 0)


def test_resume_with_another_architecture_names_the_flags(tmp_path):
    saved = _config(GLOBAL_BATCH)
    checkpoints.write_config(str(tmp_path), saved)
    other = dataclasses.replace(saved.model, gf_dim=16, number_classes=9)
    # A config.json with no checkpoint beside it (a failed first start)
    # binds nothing.
    checkpoints.check_model_config(other, str(tmp_path))
    (tmp_path / "ckpt-1.index").write_bytes(b"")
    with pytest.raises(ValueError) as e:
        checkpoints.check_model_config(other, str(tmp_path))
    assert "--gf_dim=16 (the run used 8)" in str(e.value)
    assert "--number_classes=9 (the run used 4)" in str(e.value)
    # Settings that do not change any shape are not compared.
    same_shapes = dataclasses.replace(saved.model, sync_batch_norm=False)
    checkpoints.check_model_config(same_shapes, str(tmp_path))
