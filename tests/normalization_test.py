"""BN layers against float64 numpy: two-pass moments and the head's epsilon.

The released CBN uses `tf.nn.moments` (the mean, then the mean of squared
differences) and the released head BN runs TF 1.5's fused kernel, which
raises epsilon to 1.001e-5. The references below follow those definitions
in float64.
"""

import numpy as np
import pytest

from sagan_tf.layers import normalization


def _reference(x, gamma, beta, epsilon):
    """Training-mode BN in float64: (output, mean, biased variance)."""
    x = np.float64(x)
    mean = x.mean(axis=(0, 1, 2))
    variance = ((x - mean) ** 2).mean(axis=(0, 1, 2))
    out = (x - mean) / np.sqrt(variance + epsilon) * gamma + beta
    return out, mean, variance


def _large_mean_batch(ratio, seed=0):
    """float32 [8, 4, 4, 3] whose channels have mean = ratio * std."""
    rng = np.random.default_rng(seed)
    std = np.array([0.5, 1.0, 3.0])
    x = rng.standard_normal((8, 4, 4, 3)) * std + ratio * std
    return x.astype(np.float32)


@pytest.mark.parametrize("kind", ["cbn", "bn"])
def test_moments_are_exact_when_the_mean_is_50_stds(kind):
    x = _large_mean_batch(50.0)
    if kind == "cbn":
        layer = normalization.ConditionalBatchNorm(2, momentum=0.0)
        labels = np.zeros(8, np.int32)
        out = layer(x, labels, training=True).numpy()
    else:
        layer = normalization.BatchNorm(momentum=0.0)
        out = layer(x, training=True).numpy()
    want, mean, variance = _reference(x, 1.0, 0.0, layer.epsilon)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-6)
    if kind == "bn":  # the head's moving average gets n / (n - 1)
        n = x.size // x.shape[-1]
        variance = variance * n / (n - 1)
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), variance, rtol=1e-5
    )
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_one_pass_moments_would_fail_this_check():
    # The check above can fail: E[x^2] - E[x]^2 in float32 misses the
    # variance of such a batch by far more than 1e-5.
    x = _large_mean_batch(50.0)
    mean = x.mean(axis=(0, 1, 2), dtype=np.float32)
    one_pass = (x * x).mean(axis=(0, 1, 2), dtype=np.float32) - mean * mean
    _, _, variance = _reference(x, 1.0, 0.0, 0.0)
    assert np.max(np.abs(one_pass / variance - 1)) > 1e-4


@pytest.mark.parametrize("training", [True, False])
def test_head_bn_uses_the_fused_kernels_epsilon(training):
    # A near-constant channel makes epsilon dominate the denominator.
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 2, 2, 2)) * 1e-3).astype(np.float32)
    layer = normalization.BatchNorm()
    layer.build(x.shape)
    gamma = np.array([1.5, 0.5])
    beta = np.array([0.1, -0.2])
    layer.gamma.assign(gamma)
    layer.beta.assign(beta)
    assert layer.epsilon == pytest.approx(1.001e-5)
    if training:
        want, _, _ = _reference(x, gamma, beta, 1.001e-5)
        wrong, _, _ = _reference(x, gamma, beta, 1e-5)
    else:
        mean, var = np.array([1e-4, -2e-4]), np.array([2e-6, 5e-6])
        layer.moving_mean.assign(mean)
        layer.moving_variance.assign(var)

        def infer(eps):
            return (np.float64(x) - mean) / np.sqrt(var + eps) * gamma + beta

        want, wrong = infer(1.001e-5), infer(1e-5)
    out = layer(x, training=training).numpy()
    np.testing.assert_allclose(out, want, rtol=2e-6, atol=1e-6)
    # ... and epsilon 1e-5 would have been told apart.
    assert np.max(np.abs(wrong - want)) > 20 * np.max(np.abs(out - want))
