"""Precision, recall, density and coverage against a brute-force reference."""

import numpy as np
import pytest

from sagan_tf.evaluation import manifold_metrics

NAMES = ("precision", "recall", "density", "coverage")


def _distances(a, b):
    """Full [len(a), len(b)] Euclidean distances from explicit differences."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1))


def _reference(real, generated, k, radius_rank=None, strict_pr=False):
    """The four scores from full float64 distance matrices.

    Written from the definitions, independently of the module: the radius
    is entry `radius_rank` (default k) of each row's sorted distances to its
    own set, the point itself (distance 0) first. `radius_rank=k + 1` and
    `strict_pr` give the off-by-one and `<` variants the tests must tell
    apart.
    """
    rank = k if radius_rank is None else radius_rank
    real = np.asarray(real, np.float64)
    generated = np.asarray(generated, np.float64)
    real_radii = np.sort(_distances(real, real), axis=1)[:, rank]
    generated_radii = np.sort(_distances(generated, generated), axis=1)[:, rank]
    cross = _distances(real, generated)  # [N, M]
    within = np.less if strict_pr else np.less_equal
    return {
        "precision": within(cross, real_radii[:, None]).any(axis=0).mean(),
        "recall": within(cross, generated_radii[None, :]).any(axis=1).mean(),
        "density": (cross < real_radii[:, None]).sum() / (k * len(generated)),
        "coverage": (cross.min(axis=1) < real_radii).mean(),
    }


def _scores(real, generated, k, block_size=1024):
    scores = manifold_metrics.manifold_scores(real, generated, k, block_size)
    return {name: getattr(scores, name) for name in NAMES}


def _random_sets(num_real, num_generated, dim, seed=0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(num_real, dim))
    # Shifted and narrower: every score lands well inside (0, 1).
    generated = 0.9 * rng.normal(size=(num_generated, dim)) + 0.5
    return real, generated


def _integer_points(count, dim, seed, offset=0):
    """Integer coordinates: float64 distances (squared) are exact."""
    rng = np.random.default_rng(seed)
    points = rng.integers(-1000, 1000, size=(count, dim)).astype(np.float64)
    points[:, 0] += offset
    return points


def _assert_no_ties(points, k):
    # The textbook values assume each point's k-th distance is unique.
    ordered = np.sort(_distances(points, points), axis=1)
    assert (ordered[:, k - 1] < ordered[:, k]).all()
    assert (ordered[:, k] < ordered[:, k + 1]).all()


@pytest.mark.parametrize(
    "num_real, num_generated, dim, k, block_size",
    [
        (120, 90, 8, 3, 32),  # blocks of 32, the last one partial
        (50, 150, 16, 1, 7),  # more generated than real, k = 1
        (200, 60, 12, 5, 1024),  # one block
    ],
)
def test_matches_the_brute_force_reference(num_real, num_generated, dim, k,
                                           block_size):
    real, generated = _random_sets(num_real, num_generated, dim)
    got = _scores(real, generated, k, block_size)
    want = _reference(real, generated, k)
    # Shares of counts: the same counts give the same floats.
    assert got == want
    for name in ("precision", "recall", "coverage"):
        assert 0 < got[name] < 1, name
    # On this data the (k+1)-th neighbour's radius changes every score, so
    # the comparison above catches an off-by-one in k.
    shifted = _reference(real, generated, k, radius_rank=k + 1)
    for name in NAMES:
        assert shifted[name] != want[name], name


def test_hand_worked_case_pins_every_comparison():
    # 1-d points, k = 1. Real 0, 1, 3: radii 1, 1, 2. Generated 5, 10, 11:
    # radii 5, 1, 1. Generated 5 lies on the surface of real 3's ball and
    # real 0 on that of generated 5's.
    real = np.array([[0.0], [1.0], [3.0]])
    generated = np.array([[5.0], [10.0], [11.0]])
    want = {"precision": 1 / 3, "recall": 1.0, "density": 0.0,
            "coverage": 0.0}
    assert _scores(real, generated, 1) == want
    assert _reference(real, generated, 1) == want
    # With `<` the surface points drop out of precision and recall.
    strict = _reference(real, generated, 1, strict_pr=True)
    assert strict["precision"] == 0 and strict["recall"] == 2 / 3


@pytest.mark.parametrize("integer", [True, False])
def test_identical_sets(integer):
    k = 3
    if integer:
        points = _integer_points(80, 8, seed=1)
    else:
        points, _ = _random_sets(80, 1, 8, seed=1)
    _assert_no_ties(points, k)
    # Each real ball holds its centre and the centre's k - 1 nearest
    # strictly inside, the k-th on its surface: k * N pairs, density 1.
    want = dict.fromkeys(NAMES, 1.0)
    assert _reference(points, points, k) == want
    assert _scores(points, points.copy(), k, block_size=16) == want


def test_generated_is_one_of_two_far_apart_real_clusters():
    k = 3
    near = _integer_points(60, 8, seed=2)
    far = _integer_points(40, 8, seed=3, offset=100000)
    real = np.concatenate([near, far])
    _assert_no_ties(real, k)
    # Generated = the near cluster: all on the real manifold, each near
    # real ball holds k of them (as for identical sets), and no far real
    # point is reached or covered.
    want = {"precision": 1.0, "recall": 0.6, "density": 1.0,
            "coverage": 0.6}
    assert _reference(real, near, k) == want
    assert _scores(real, near, k, block_size=16) == want


def test_far_apart_sets_score_zero():
    real = _integer_points(50, 8, seed=4)
    generated = _integer_points(70, 8, seed=5, offset=100000)
    assert _scores(real, generated, 3, block_size=16) == dict.fromkeys(
        NAMES, 0.0)


def test_radii_count_a_duplicate_but_not_the_point_itself():
    points = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    radii = manifold_metrics.knn_squared_radii(
        manifold_metrics._features("real", points), k=1, block_size=3)
    np.testing.assert_array_equal(radii.numpy(), [0.0, 0.0, 25.0, 25.0])
    radii = manifold_metrics.knn_squared_radii(
        manifold_metrics._features("real", points), k=2, block_size=3)
    np.testing.assert_array_equal(radii.numpy(), [25.0, 25.0, 25.0, 100.0])


@pytest.mark.parametrize(
    "real_shape, generated_shape, k, block_size, message",
    [
        ((10, 4), (10, 4), 0, 8, "k must be >= 1"),
        ((10, 4), (10, 4), 3, 0, "block_size must be >= 1"),
        ((3, 4), (10, 4), 3, 8, "3 real feature vectors: k = 3 needs at "
                                "least 4"),
        ((10, 4), (10, 5), 3, 8, "4-d, generated ones 5-d"),
        ((10,), (10, 4), 3, 8, r"must be \[N, D\]"),
    ],
)
def test_bad_input_is_refused(real_shape, generated_shape, k, block_size,
                              message):
    with pytest.raises(ValueError, match=message):
        manifold_metrics.manifold_scores(
            np.zeros(real_shape), np.ones(generated_shape), k, block_size)
