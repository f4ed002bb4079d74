"""Mixed precision and --xla steps against the float32 run (updates.py).

Every run starts from the float32 trainer's weights (G, D, EMA) and takes
the same inputs, so whatever differs comes from the precision (or XLA).

Tolerance. The updates run with a large Adam epsilon (`_ADAM_EPSILON`),
which makes Adam's step lr * g / (sqrt(v) + eps) nearly linear in the
gradient g. With the released epsilon the first steps are lr * sign(g),
and every weight whose gradient is ~0 (the conv biases in front of a BN
layer have an exactly zero gradient) would take a random +-lr step from
rounding noise alone, in float32 too. Linear, a relative error e in the
gradients gives a relative error e in the weight change dw. Each rounding
to the compute dtype costs a relative error of at most eps / 2, and the
error through the network stays a few eps: we allow `_TOL_ULPS` eps on the
norm of dw over all of G's and D's weights (per weight it is meaningless
for the weights whose gradient is zero), plus the float32 storage of
w + dw (eps32 / 2 relative, once per step and run); learning rates 10x
the released ones keep that term near 1e-3 of dw. bf16 (eps 2^-7)
measures about 2 eps, fp16 (eps 2^-10) about 4 eps: 8 eps. XLA vs
non-XLA float32 differ only in the order of summation, yet with
cancellation (a BN beta or CBN table gradient sums B x H x W terms much
larger than the sum) that reaches 1e-5 relative on this CPU, and varies
from run to run: 1024 eps32 = 1.2e-4 there, still 10^3 times below the
10% by which an optimizer that squares the table's slices before summing
them would change v. The float32 vs float64 gap, for comparison: D's
float32 gradients match the float64 reference D of tests/updates_test.py
within rtol 2e-4 per element, i.e. 10^2 times below the bf16 tolerance
and 30 times below fp16's.
"""

import contextlib
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
import updates_test as ut

from sagan_tf.training import updates

STEPS = 3
_ADAM_EPSILON = 1.0
_TOL_ULPS = {"bf16": 8, "fp16": 8, "xla": 1024}
_LR_SCALE = 10.0
_EPS = {
    "none": np.finfo(np.float32).eps,
    "xla": np.finfo(np.float32).eps,
    "bf16": 2.0**-7,
    "fp16": np.finfo(np.float16).eps,
}
# XLA's Adam slots of the gathered tables against the non-XLA run's
# gradients, norm-wise: the tables' gradients cancel (sums of B x H x W
# terms much larger than the result), so the order of summation shows; on
# an AVX2 CPU with two test processes sharing its cores it reached 6.2e-4
# relative (Eigen splits reductions by the threads it gets). 2e-3 is still
# 50 times below the 10 % by which squaring the slices would change v.
_XLA_SLOT_TOL = 2e-3
# D's bias gradients at this size overflow float16 at the default 2^15
# (sums over B x H x W). LossScaleOptimizer halves and skips until they fit
# (test_fp16_inf_gradient_halves_the_scale_and_skips_the_step); the
# tracking run starts where it would settle.
_D_SCALE = 2.0**12
_G_GROWTH_STEPS = 2


@contextlib.contextmanager
def _policy(name):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _trainer(kind, source=None):
    precision = kind if kind in ("bf16", "fp16") else "none"
    with _policy(updates.POLICIES[precision]):
        config = ut._config(
            ut.BATCH, mixed_precision=precision, xla=kind == "xla",
            ema_decay=0.9, adam_epsilon=_ADAM_EPSILON, seed=0,
            generator_learning_rate=1e-4 * _LR_SCALE,
            discriminator_learning_rate=4e-4 * _LR_SCALE,
        )
        t = updates.GANTrainer(config, tf.distribute.get_strategy())
    if source is not None:
        for a, b in zip(_all_weights(t), source):
            a.assign(b)
    if kind == "fp16":
        # Read when the update is traced.
        t.g_optimizer.dynamic_growth_steps = _G_GROWTH_STEPS
        t.d_optimizer.dynamic_scale.assign(_D_SCALE)
    return t


def _all_weights(t):
    return [
        w for name in ("generator", "discriminator", "ema_generator")
        for w in getattr(t, name).weights
    ]


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)


def _step_fn(t, spy):
    """One global step on given inputs; with `spy`, also the raw gradients.

    The gradients are the ones `updates.apply_gradients` receives (scaled
    under fp16; IndexedSlices for gathered tables), caught while tracing.
    """
    seen = []
    apply = updates.apply_gradients

    def capture(optimizer, grads, variables):
        seen.append(list(grads))
        apply(optimizer, grads, variables)

    @tf.function
    def step(images, labels, z, fake_labels):
        seen.clear()
        patch = mock.patch.object(updates, "apply_gradients", capture)
        with patch if spy else contextlib.nullcontext():
            g_loss = t.g_update(z, fake_labels)
            t.update_ema()
            metrics, _ = t.d_update(images, labels, z, fake_labels)
        return g_loss, metrics, seen

    return step


def _snapshot(t):
    return {
        ut._path(v): np.float64(v.numpy())
        for v in t.generator.weights + t.discriminator.weights
    }


def _run(t, steps, reference=None):
    """Runs `steps` global steps; returns what the tests compare.

    After step 1 Adam's slots are checked against a numpy Adam on the
    duplicate-summed, unscaled gradients (tests/updates_test.py), from this
    run's gradients, or for XLA (whose compiled updates cannot hand them
    out) from the non-XLA `reference` run's.
    """
    spy = reference is None
    step = _step_fn(t, spy)
    out = dict(before=_snapshot(t), losses=[], g_scale=[], adam_error=None,
               step=step)
    for i in range(steps):
        x = ut._inputs(ut.BATCH, seed=10 + i)
        args = (x["images"], x["labels"], x["z"], x["fake_labels"])
        before = [
            [v.numpy() for v in m.trainable_variables]
            for m in (t.generator, t.discriminator)
        ]
        scales = [
            float(getattr(o, "dynamic_scale", 1.0))
            for o in (t.g_optimizer, t.d_optimizer)
        ]
        g_loss, metrics, seen = step(*args)
        out["losses"].append(np.r_[g_loss.numpy(), metrics.numpy()])
        if hasattr(t.g_optimizer, "dynamic_scale"):
            out["g_scale"].append(float(t.g_optimizer.dynamic_scale))
        if i:
            continue
        out["step1_after"] = _snapshot(t)
        if spy:
            grads = [
                [ut._dense_sum(g) / s for g in gs]
                for gs, s in zip(seen, scales)
            ]
            out["grads"] = grads
            out["tables_repeat"] = _squares_differ(seen[0], t)
        else:
            grads = reference["grads"]
        check = _check_adam_first_step if spy else _check_slots_near
        try:
            out["tables"] = [
                check(t, _inner(o), m.trainable_variables, b, g)
                for o, m, b, g in zip(
                    (t.g_optimizer, t.d_optimizer),
                    (t.generator, t.discriminator), before, grads,
                )
            ]
        except AssertionError as e:
            out["adam_error"] = e
    out["after"] = _snapshot(t)
    return out


def _check_adam_first_step(t, optimizer, variables, before, grads):
    """Adam's first step on this run's own gradients (updates_test)."""
    return ut._check_adam_first_step(t, optimizer, variables, before, grads)


def _is_table(variable):
    return "/cbn_" in variable.path or "d_embedding" in variable.path


def _check_slots_near(t, optimizer, variables, before, grads):
    """Adam's slots after step 1 against another run's gradients (XLA).

    Norm-wise over the gathered tables: single elements can cancel, and the
    conv biases in front of a BN layer have an exactly zero gradient whose
    float32 rounding noise differs from run to run (tolerance: see the
    module docstring).
    """
    del before
    b1, b2 = t.config.beta1, t.config.adam_beta2
    tol = _XLA_SLOT_TOL
    tables, err, norm = 0, np.zeros(2), np.zeros(2)
    for v, g in zip(variables, grads):
        if not _is_table(v):
            continue
        i = optimizer._get_variable_index(v)
        m, vel = optimizer._momentums[i], optimizer._velocities[i]
        for k, (got, want) in enumerate(
            ((m, (1 - b1) * g), (vel, (1 - b2) * g**2))
        ):
            err[k] += np.sum((got.numpy() - want) ** 2)
            norm[k] += np.sum(want**2)
        tables += 1
    # Over all of the model's tables: a small table whose gradient cancels
    # almost exactly would otherwise set the bar alone.
    assert np.all(np.sqrt(err) <= tol * np.sqrt(norm)), np.sqrt(err / norm)
    return tables


def _squares_differ(g_grads, t):
    """Whether squaring slices before summing them would change Adam's v.

    (The test can fail: with repeated labels it does.)
    """
    names = [v.path for v in t.generator.trainable_variables]
    g = g_grads[names.index(t.generator.g_block1.cbn_0.gamma.path)]
    dense = ut._dense_sum(g)
    squares = np.zeros(dense.shape)
    np.add.at(squares, g.indices.numpy(), np.float64(g.values.numpy()) ** 2)
    return np.abs(squares - dense**2).max() > 0.1 * np.abs(dense**2).max()


_RUNS = {}


def _get(kind):
    """Runs are shared by the tests (building and tracing dominate)."""
    if kind not in _RUNS:
        if "none" not in _RUNS:
            ref = _trainer("none")
            _RUNS["init"] = [w.numpy() for w in _all_weights(ref)]
            _RUNS["none"] = (ref, _run(ref, STEPS))
        if kind != "none":
            t = _trainer(kind, source=_RUNS["init"])
            if kind == "xla":
                _RUNS[kind] = (t, _run(t, 1, reference=_RUNS["none"][1]))
            else:
                _RUNS[kind] = (t, _run(t, STEPS))
    return _RUNS[kind]


def _errors(run, ref, keys):
    """Norms of (the difference, the float32 run's weight change, weights)."""

    def norm(f):
        return np.linalg.norm(np.concatenate([f(k).ravel() for k in keys]))

    return (
        norm(lambda k: run["after"][k] - ref["after"][k]),
        norm(lambda k: ref["after"][k] - ref["before"][k]),
        norm(lambda k: ref["after"][k]),
    )


@pytest.mark.parametrize("kind", ["bf16", "fp16", "xla"])
def test_steps_track_float32(kind):
    t, run = _get(kind)
    ref_t, ref = _get("none")
    if kind == "xla":
        # One step of each, from the same weights.
        ref = dict(ref, after=ref["step1_after"])
    tol = _TOL_ULPS[kind] * _EPS[kind]
    trainable = [
        ut._path(v)
        for v in t.generator.trainable_variables
        + t.discriminator.trainable_variables
    ]
    err, dw, w = _errors(run, ref, trainable)
    # Plus the float32 storage of the weights: each run rounds w + dw to
    # float32 once per step (at most eps32 / 2 relative).
    storage = len(run["losses"]) * _EPS["none"] * w
    assert err < tol * dw + storage, (kind, err / dw, tol, storage / dw)
    # u and the BN moving statistics, on their own scale.
    for k in run["after"]:
        if k in trainable:
            continue
        want = ref["after"][k]
        assert np.linalg.norm(run["after"][k] - want) <= tol * max(
            np.linalg.norm(want), 1.0
        ), k
    # Hinge losses and mean logits are O(1).
    n = len(run["losses"])
    np.testing.assert_allclose(
        run["losses"], ref["losses"][:n], rtol=tol, atol=tol
    )


@pytest.mark.parametrize("kind", ["bf16", "fp16", "xla"])
def test_adam_on_duplicate_summed_unscaled_table_gradients(kind):
    t, run = _get(kind)
    if run["adam_error"] is not None:
        raise run["adam_error"]
    # Every CBN gamma and beta table of G and D's class embedding.
    assert run["tables"] == [4 * len(t.generator.blocks), 1]
    assert _get("none")[1]["tables_repeat"]


@pytest.mark.parametrize("kind", ["bf16", "fp16"])
def test_state_stays_float32(kind):
    t, _ = _get(kind)
    compute = tf.as_dtype(t.generator.compute_dtype)
    assert compute != tf.float32
    state = {
        "u": [w for m in (t.generator, t.discriminator)
              for w in m.non_trainable_variables if w.path.endswith("/u")],
        "bn": [w for w in t.generator.non_trainable_variables
               if "moving_" in w.path],
        "adam": [w for o in (t.g_optimizer, t.d_optimizer)
                 for w in _inner(o)._momentums + _inner(o)._velocities],
        "ema": t.ema_generator.weights,
    }
    for name, variables in state.items():
        assert variables, name
        for v in variables:
            assert v.dtype == "float32", (name, v.path)
    # Values, not only storage: updates computed in the compute dtype and
    # stored in float32 would all be exactly representable in it.
    for name in ("u", "bn", "ema"):
        values = np.concatenate([v.numpy().ravel() for v in state[name]])
        rounded = tf.cast(tf.cast(values, compute), tf.float32).numpy()
        assert np.mean(rounded == values) < 0.5, name
    velocity = np.concatenate(
        [v.numpy().ravel() for v in state["adam"][len(state["adam"]) // 2:]])
    velocity = velocity[velocity != 0]
    rounded = tf.cast(tf.cast(velocity, compute), tf.float32).numpy()
    assert np.mean(rounded == velocity) < 0.5


def test_fp16_loss_scale_doubles_after_the_growth_interval():
    t, run = _get("fp16")
    # 2 finite steps: doubled after the second; the third starts a count.
    assert run["g_scale"] == [2.0**15, 2.0**16, 2.0**16]
    assert int(t.g_optimizer.step_counter.numpy()) == 1
    assert float(t.d_optimizer.dynamic_scale) == _D_SCALE


def test_fp16_inf_gradient_halves_the_scale_and_skips_the_step():
    t, run = _get("fp16")
    # The scaled loss's gradient overflows float16 where it enters D's
    # float16 layers: every G and D gradient is inf or NaN.
    for o in (t.g_optimizer, t.d_optimizer):
        o.dynamic_scale.assign(2.0**30)
    trainable = [
        v for m in (t.generator, t.discriminator)
        for v in m.trainable_variables
    ]
    slots = [
        w for o in (t.g_optimizer, t.d_optimizer)
        for w in _inner(o).variables
    ]
    before = [v.numpy() for v in trainable + slots]
    x = ut._inputs(ut.BATCH)
    run["step"](x["images"], x["labels"], x["z"], x["fake_labels"])
    for v, b in zip(trainable + slots, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    for o in (t.g_optimizer, t.d_optimizer):
        assert float(o.dynamic_scale) == 2.0**29
        assert int(o.step_counter.numpy()) == 0
