"""TF-GAN metrics against independent float64 numpy / scipy formulas."""

import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.special

from sagan_tf.evaluation import metrics


def _np_inception_score(logits):
    p = scipy.special.softmax(logits.astype(np.float64), axis=1)
    q = p.mean(axis=0)
    kl = (p * (np.log(p) - np.log(q))).sum(axis=1)
    return np.exp(kl.mean())


def _np_fid(a, b):
    m1, m2 = a.mean(0), b.mean(0)
    c1, c2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(c1 @ c2).real
    return ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * root)


def _np_kid(a, b):
    d = a.shape[1]
    k_aa = (a @ a.T / d + 1) ** 3
    k_bb = (b @ b.T / d + 1) ** 3
    k_ab = (a @ b.T / d + 1) ** 3
    m, n = len(a), len(b)
    return (
        (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
        + (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
        - 2 * k_ab.mean()
    )


@pytest.fixture
def activations():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 12))
    mix = rng.normal(size=(12, 12)) * 0.4
    fake = rng.normal(size=(250, 12)) @ mix + 0.3
    return real.astype(np.float32), fake.astype(np.float32)


def test_inception_score_matches_numpy():
    logits = np.random.default_rng(1).normal(size=(500, 20)) * 3
    got = metrics.inception_score(logits)
    assert got == pytest.approx(_np_inception_score(logits), rel=1e-9)
    # Identical rows: p(y|x) = p(y), the score is 1.
    assert metrics.inception_score(np.tile(logits[:1], (10, 1))) == (
        pytest.approx(1.0)
    )


def test_fid_matches_scipy(activations):
    real, fake = activations
    expected = _np_fid(real.astype(np.float64), fake.astype(np.float64))
    assert metrics.frechet_distance(real, fake) == pytest.approx(
        expected, rel=1e-6
    )
    stats = metrics.ActivationStats.from_activations(real, chunk=64)
    assert metrics.frechet_distance(stats, fake) == pytest.approx(
        expected, rel=1e-6
    )
    assert metrics.frechet_distance(real, real) == pytest.approx(0, abs=1e-6)


def test_stats_and_stand_in_points_have_the_moments(activations):
    real, _ = activations
    stats = metrics.ActivationStats.from_activations(real, chunk=7)
    np.testing.assert_allclose(stats.mean, real.mean(0, dtype=np.float64))
    np.testing.assert_allclose(
        stats.cov, np.cov(real.astype(np.float64), rowvar=False), atol=1e-12
    )
    points = metrics.activations_with_moments(stats)
    assert points.shape == (13, 12)
    np.testing.assert_allclose(points.mean(0), stats.mean, atol=1e-12)
    np.testing.assert_allclose(np.cov(points, rowvar=False), stats.cov,
                               atol=1e-12)


def test_kid_matches_numpy(activations):
    real, fake = activations
    expected = _np_kid(real.astype(np.float64), fake.astype(np.float64))
    got = metrics.kernel_distance(real, fake, block_size=1024)
    assert got == pytest.approx(expected, rel=1e-9)


def test_tfgan_loader_leaves_no_stub_packages():
    assert metrics.tfgan_classifier_metrics() is (
        metrics.tfgan_classifier_metrics()
    )
    assert not [m for m in sys.modules if m.startswith("tensorflow_gan")]


def test_stats_cache_round_trip_and_key(tmp_path, activations):
    real, _ = activations
    cache = metrics.StatsCache(str(tmp_path))
    stats = metrics.ActivationStats.from_activations(real)
    key = {"name": "real", "sample_size": 300, "classifier": "a"}
    assert cache.load(key) is None
    cache.save(key, stats, ["f1", "f2"], extra=np.arange(3))
    loaded, extras = cache.load(key)
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    assert loaded.count == 300
    assert list(extras["files"]) == ["f1", "f2"]
    np.testing.assert_array_equal(extras["extra"], np.arange(3))
    assert cache.load(dict(key, classifier="b")) is None
    assert cache.load(dict(key, sample_size=10)) is None


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],  # zipfile.BadZipFile
    lambda data: b"\x80\x04garbage" * 50,  # numpy's pickle message
    lambda data: data.replace(b"mean", b"mEan"),  # a member missing
])
def test_damaged_stats_cache_is_a_miss_with_a_warning(
    tmp_path, activations, capsys, damage
):
    cache = metrics.StatsCache(str(tmp_path))
    key = {"name": "real", "sample_size": 300}
    stats = metrics.ActivationStats.from_activations(activations[0])
    path = cache.save(key, stats, ["f1"])
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(damage(data))
    assert cache.load(key) is None
    assert f"the real-statistics cache {path} is damaged" in (
        capsys.readouterr().err)
