"""Tests for sagan_tf.losses against numpy formulas."""

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.training import losses

_REAL = np.array([-2.0, -0.5, 0.0, 0.7, 3.0], np.float32)
_FAKE = np.array([1.5, -3.0, 0.2, -0.9, 0.0], np.float32)


def _softplus(x):
    return np.log1p(np.exp(x))


def test_hinge_per_example():
    loss_real, loss_fake = losses.d_hinge_loss(
        tf.constant(_REAL), tf.constant(_FAKE)
    )
    np.testing.assert_allclose(loss_real, np.maximum(0.0, 1.0 - _REAL))
    np.testing.assert_allclose(loss_fake, np.maximum(0.0, 1.0 + _FAKE))
    np.testing.assert_allclose(losses.g_hinge_loss(tf.constant(_FAKE)), -_FAKE)


def test_kl_per_example():
    loss_real, loss_fake = losses.d_kl_loss(
        tf.constant(_REAL), tf.constant(_FAKE)
    )
    np.testing.assert_allclose(loss_real, _softplus(-_REAL), rtol=1e-6)
    np.testing.assert_allclose(loss_fake, _softplus(_FAKE), rtol=1e-6)
    np.testing.assert_allclose(losses.g_kl_loss(tf.constant(_FAKE)), -_FAKE)


def test_compute_average_loss_matches_released_mean():
    loss_real, loss_fake = losses.d_hinge_loss(
        tf.constant(_REAL), tf.constant(_FAKE)
    )
    total = tf.nn.compute_average_loss(loss_real + loss_fake)
    released = np.mean(np.maximum(0.0, 1.0 - _REAL)) + np.mean(
        np.maximum(0.0, 1.0 + _FAKE)
    )
    np.testing.assert_allclose(total, released, rtol=1e-6)


def test_get_losses():
    d_fn, g_fn = losses.get_losses("hinge_loss")
    assert d_fn is losses.d_hinge_loss and g_fn is losses.g_hinge_loss
    fns = losses.get_losses("kl_loss")
    assert fns.discriminator is losses.d_kl_loss
    assert fns.generator is losses.g_kl_loss
    with pytest.raises(ValueError, match="wasserstein"):
        losses.get_losses("wasserstein")
