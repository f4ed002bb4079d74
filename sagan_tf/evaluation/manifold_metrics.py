"""Precision, recall, density and coverage from k-NN manifolds of features.

Each feature set is taken to cover the union of balls around its points,
each ball's radius being the distance to the point's k-th nearest neighbour
in its own set (the point itself excluded). With real features R_1..R_N and
their radii r_i, generated features F_1..F_M and their radii f_j, Euclidean
distance d and k neighbours:

* precision (Kynkaanniemi et al. 2019, "Improved Precision and Recall
  Metric for Assessing Generative Models"): the share of F_j with
  d(F_j, R_i) <= r_i for some i;
* recall (same paper): the share of R_i with d(R_i, F_j) <= f_j for some j;
* density (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
  Generative Models"): (1 / kM) * the number of pairs (i, j) with
  d(F_j, R_i) < r_i;
* coverage (same paper): the share of R_i with min_j d(R_i, F_j) < r_i.

The comparisons follow the papers' public code: `<=` in Kynkaanniemi et
al.'s precision_recall.py, strict `<` in Naeem et al.'s prdc/prdc.py (whose
own precision and recall also use `<`; the two differ only for a point that
lies exactly on a ball's surface). Both take the radius as the distance to
the k-th nearest other point; here the point itself is left out explicitly
(an exact duplicate still counts as a neighbour at distance 0), which is
the references' k-th entry of the sorted distances with the point itself
first. With no ties among each point's distances, identical sets give
precision = recall = coverage = 1 and density = 1 exactly: each real ball
holds exactly k generated points strictly inside (its centre and the
centre's k - 1 nearest; the k-th lies on its surface), kN pairs in all.
"""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ManifoldScores:
    """The four scores of one generated set against one real set.

    Attributes:
        precision: in [0, 1]; the share of generated points on the real
            manifold (fidelity).
        recall: in [0, 1]; the share of real points on the generated
            manifold (diversity).
        density: >= 0 (1 for generated points distributed like the real
            ones); how many real balls hold a generated point, on average,
            divided by k.
        coverage: in [0, 1]; the share of real balls that hold a generated
            point.
    """

    precision: float
    recall: float
    density: float
    coverage: float


def _features(name, values):
    """values as float64 [N, D], checked."""
    # float64 keeps the expanded-square distances below exact enough that
    # rounding decides no comparison short of a real tie at a radius.
    features = tf.cast(tf.convert_to_tensor(values), tf.float64)
    if features.shape.rank != 2:
        raise ValueError(
            f"{name} features must be [N, D], got shape {features.shape}"
        )
    return features


def _squared_norms(features):
    """[N, D] -> [N]."""
    return tf.reduce_sum(tf.square(features), axis=1)


def _block_squared_distances(rows, row_norms, columns, column_norms):
    """Squared Euclidean distances of rows [B, D] to columns [C, D].

    |x|^2 - 2 x.y + |y|^2 with one matrix product: the [B, C, D] tensor of
    differences would not fit for 2048-d features. Every pass calls it the
    same way, with the real points as rows, so for identical real and
    generated sets the real-to-generated block is the very computation of
    the real-to-real one and a real ball's k-th neighbour lies exactly on
    its surface in both. Elsewhere a tie at a radius is decided by float64
    rounding, unless the distances are exact (e.g. integer features).

    Returns:
        float64 [B, C], >= 0.
    """
    cross = tf.linalg.matmul(rows, columns, transpose_b=True)
    squared = row_norms[:, None] - 2.0 * cross + column_norms[None, :]
    # Cancellation can leave (near-)identical points slightly below zero.
    return tf.maximum(squared, 0.0)


def knn_squared_radii(features, k, block_size):
    """Squared distance of each point to its k-th nearest other point.

    Args:
        features: float64 [N, D], N >= k + 1.
        k: the neighbour, >= 1.
        block_size: rows of the [block_size, N] distance block held at once.

    Returns:
        float64 [N].
    """
    count = features.shape[0]
    norms = _squared_norms(features)
    columns = tf.range(count)
    radii = []
    for start in range(0, count, block_size):
        stop = min(start + block_size, count)
        squared = _block_squared_distances(
            features[start:stop], norms[start:stop], features, norms
        )
        # Leaving the point out by index, not by skipping the smallest
        # distance: its own distance may round above an exact duplicate's.
        is_self = tf.range(start, stop)[:, None] == columns[None, :]
        squared = tf.where(
            is_self, tf.constant(float("inf"), tf.float64), squared
        )
        nearest = tf.math.top_k(-squared, k=k, sorted=True).values
        radii.append(-nearest[:, k - 1])
    return tf.concat(radii, axis=0)


def manifold_scores(real, generated, k, block_size):
    """Precision, recall, density and coverage; see the module docstring.

    TensorFlow ops, so that the three passes of distances (N^2 + M^2 + NM
    dot products of D-vectors: about 10^12 flops at 10,000 x 2048) run on
    the evaluator's GPU when it has one. Memory stays at a few
    [block_size, max(N, M)] float64 blocks: only the radii [N] and [M] and
    per-point flags and counts are kept between blocks.

    Args:
        real: real features [N, D] (the classifier's pool_3), N >= k + 1.
        generated: generated features [M, D], M >= k + 1.
        k: the neighbour that sets each ball's radius, >= 1.
        block_size: rows of each distance block, >= 1.

    Returns:
        `ManifoldScores`.

    Raises:
        ValueError: wrong shapes, too few points for k, or k or block_size
            below 1.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    real = _features("real", real)
    generated = _features("generated", generated)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(
            f"real features are {real.shape[1]}-d, generated ones "
            f"{generated.shape[1]}-d"
        )
    num_real, num_generated = real.shape[0], generated.shape[0]
    for name, count in (("real", num_real), ("generated", num_generated)):
        if count < k + 1:
            raise ValueError(
                f"{count} {name} feature vectors: k = {k} needs at least "
                f"{k + 1}"
            )
    real_radii = knn_squared_radii(real, k, block_size)
    generated_radii = knn_squared_radii(generated, k, block_size)
    real_norms = _squared_norms(real)
    generated_norms = _squared_norms(generated)

    # Real points are the rows, so that the real-to-generated distances are
    # computed as the real-to-real ones of the radii were.
    on_real_manifold = tf.zeros([num_generated], tf.bool)
    inside_real_balls = tf.zeros([num_generated], tf.int64)
    recalled, covered = [], []
    for start in range(0, num_real, block_size):
        stop = min(start + block_size, num_real)
        squared = _block_squared_distances(
            real[start:stop], real_norms[start:stop], generated,
            generated_norms,
        )
        radii = real_radii[start:stop]
        on_real_manifold |= tf.reduce_any(
            squared <= radii[:, None], axis=0
        )
        inside_real_balls += tf.reduce_sum(
            tf.cast(squared < radii[:, None], tf.int64), axis=0
        )
        recalled.append(tf.reduce_any(
            squared <= generated_radii[None, :], axis=1
        ))
        covered.append(tf.reduce_min(squared, axis=1) < radii)

    def share(flags, total):
        return int(tf.math.count_nonzero(flags)) / total

    return ManifoldScores(
        precision=share(on_real_manifold, num_generated),
        recall=share(tf.concat(recalled, axis=0), num_real),
        density=int(tf.reduce_sum(inside_real_balls)) / (k * num_generated),
        coverage=share(tf.concat(covered, axis=0), num_real),
    )
