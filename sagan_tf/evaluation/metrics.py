"""IS, FID and KID through TF-GAN, and the cached real-image statistics.

The numbers come from tensorflow-gan's `classifier_score_from_logits`,
`frechet_classifier_distance_from_activations` and
`kernel_classifier_distance_from_activations`, as the released evaluator
used `tfgan.eval`. Both IS and FID are computed in float64; IS uses all
samples in one split.
"""

import dataclasses
import hashlib
import importlib
import importlib.util
import io
import json
import os
import sys
import types
import zipfile

import numpy as np
import scipy.linalg
import tensorflow as tf
from absl import logging

from sagan_tf import cli
from sagan_tf.data import pipeline, records
from sagan_tf.training import checkpoint_files

_CLASSIFIER_METRICS = None


def tfgan_classifier_metrics():
    """TF-GAN's `classifier_metrics` module, loaded without its package.

    `import tensorflow_gan` fails on TF >= 2.16: its top-level `__init__`
    imports the estimator API, which TF removed (tensorflow/gan issue 55).
    The eval modules themselves only need TF and TF-Probability, so we
    import `tensorflow_gan.python.eval.classifier_metrics` under empty
    stand-in parent packages (their `__path__` points at the installed
    files, their `__init__` never runs) and then drop the stand-ins from
    `sys.modules`. Where `tensorflow_gan` imports normally we use it as is.
    """
    global _CLASSIFIER_METRICS
    if _CLASSIFIER_METRICS is not None:
        return _CLASSIFIER_METRICS
    spec = importlib.util.find_spec("tensorflow_gan")
    if spec is None:
        raise ImportError("tensorflow-gan is not installed (pip install "
                          "tensorflow-gan==2.1.0).")
    if "tensorflow_gan" in sys.modules and not getattr(
        sys.modules["tensorflow_gan"], "_sagan_stub", False
    ):
        _CLASSIFIER_METRICS = importlib.import_module(
            "tensorflow_gan.python.eval.classifier_metrics"
        )
        return _CLASSIFIER_METRICS
    root = spec.submodule_search_locations[0]
    parents = {
        "tensorflow_gan": root,
        "tensorflow_gan.python": os.path.join(root, "python"),
        "tensorflow_gan.python.eval": os.path.join(root, "python", "eval"),
    }
    before = set(sys.modules)
    for name, path in parents.items():
        stub = types.ModuleType(name)
        stub.__path__ = [path]
        stub._sagan_stub = True
        sys.modules[name] = stub
    try:
        _CLASSIFIER_METRICS = importlib.import_module(
            "tensorflow_gan.python.eval.classifier_metrics"
        )
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("tensorflow_gan"):
                del sys.modules[name]
    return _CLASSIFIER_METRICS


@dataclasses.dataclass
class ActivationStats:
    """Mean and unbiased covariance of activations, in float64.

    Attributes:
        mean: [D].
        cov: [D, D], normalized by count - 1.
        count: number of activation vectors.
    """

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def from_activations(cls, activations, chunk=4096):
        """Statistics of activations [N, D] (N >= 2), accumulated in float64."""
        activations = np.asarray(activations)
        if activations.ndim != 2 or activations.shape[0] < 2:
            raise ValueError(
                "Need at least 2 activation vectors [N, D], got shape "
                f"{activations.shape}."
            )
        count, dim = activations.shape
        mean = activations.astype(np.float64).sum(axis=0) / count
        scatter = np.zeros((dim, dim), np.float64)
        # Chunks keep a 50k x 2048 float64 copy out of memory.
        for start in range(0, count, chunk):
            block = activations[start:start + chunk].astype(np.float64) - mean
            scatter += block.T @ block
        return cls(mean=mean, cov=scatter / (count - 1), count=count)


def activations_with_moments(stats):
    """D + 1 vectors whose mean and unbiased covariance equal `stats`.

    TF-GAN's FID depends on its inputs only through their mean and
    unbiased covariance, so these points stand in for cached real
    activations. With C = F F^T and Q the [D+1, D] orthonormal Helmert
    columns (orthogonal to the ones vector), x = mean + sqrt(D) Q F^T has
    mean `mean` and covariance x_c^T x_c / D = F Q^T Q F^T = C.

    Args:
        stats: `ActivationStats` with dimension D.

    Returns:
        float64 [D + 1, D].
    """
    dim = stats.mean.shape[0]
    eigvals, eigvecs = np.linalg.eigh(stats.cov)
    # Rounding can leave tiny negative eigenvalues in a PSD matrix.
    factor = eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))
    helmert = scipy.linalg.helmert(dim + 1, full=False).T
    return stats.mean + np.sqrt(dim) * (helmert @ factor.T)


def _quiet(fn, *args, **kwargs):
    """Calls a TF-GAN metric without its TF deprecation warnings.

    TF-GAN's metrics call `tf.map_fn(..., back_prop=False)`, deprecated in
    TF 2; the released protocol is kept by calling them as they are.
    """
    # No public API silences deprecations raised inside another library.
    from tensorflow.python.util import deprecation

    with deprecation.silence():
        return fn(*args, **kwargs)


def inception_score(logits):
    """exp(E_x KL(p(y|x) || p(y))) over all logits [N, K] in one split."""
    cm = tfgan_classifier_metrics()
    logits = tf.constant(np.asarray(logits, np.float64))
    return float(_quiet(cm.classifier_score_from_logits, logits))


def frechet_distance(real, generated):
    """FID in float64.

    Args:
        real: `ActivationStats`, or activations [N, D].
        generated: activations [M, D].

    Returns:
        float.
    """
    cm = tfgan_classifier_metrics()
    if isinstance(real, ActivationStats):
        real = activations_with_moments(real)
    return float(
        _quiet(
            cm.frechet_classifier_distance_from_activations,
            tf.constant(np.asarray(real, np.float64)),
            tf.constant(np.asarray(generated, np.float64)),
        )
    )


def kernel_distance(real, generated, block_size=1024):
    """KID (unbiased MMD^2, cubic polynomial kernel), TF-GAN's estimator.

    Args:
        real: activations [N, D].
        generated: activations [M, D].
        block_size: TF-GAN's `max_block_size`.

    Returns:
        float.
    """
    cm = tfgan_classifier_metrics()
    return float(
        _quiet(
            cm.kernel_classifier_distance_from_activations,
            tf.constant(np.asarray(real, np.float64)),
            tf.constant(np.asarray(generated, np.float64)),
            max_block_size=block_size,
        )
    )


class StatsCache:
    """Real-image statistics on disk, one `.npz` per key.

    The key is a JSON-able dict (data files with sizes and times, sample
    size, classifier fingerprint, ...); any change selects another file.
    """

    def __init__(self, directory):
        self.directory = directory

    def path(self, key):
        text = json.dumps(key, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        name = f"{key.get('name', 'real')}_{digest}.npz"
        return os.path.join(self.directory, name)

    def load(self, key):
        """Returns (ActivationStats, extras dict) or None when absent."""
        path = self.path(key)
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path, "rb") as f:
            buffer = io.BytesIO(f.read())
        # The cache is derived data: a damaged file is computed again.
        try:
            data = dict(np.load(buffer, allow_pickle=False))
            if str(data.pop("key")) != json.dumps(key, sort_keys=True):
                return None
            stats = ActivationStats(
                mean=data.pop("mean"),
                cov=data.pop("cov"),
                count=int(data.pop("count")),
            )
        except (zipfile.BadZipFile, ValueError, KeyError, OSError,
                EOFError) as error:
            cli.warn(
                f"the real-statistics cache {path} is damaged "
                f"({type(error).__name__}: {error}); computing the "
                "statistics again and replacing it."
            )
            return None
        return stats, data

    def save(self, key, stats, files, **extras):
        """Writes stats, the source `files` and extra arrays atomically."""
        tf.io.gfile.makedirs(self.directory)
        path = self.path(key)
        # np.savez seeks, which gfile writers cannot: build it in memory.
        buffer = io.BytesIO()
        np.savez(
            buffer,
            key=np.array(json.dumps(key, sort_keys=True)),
            mean=stats.mean,
            cov=stats.cov,
            count=np.array(stats.count),
            files=np.array(list(files), dtype=str),
            **extras,
        )
        return checkpoint_files.write_atomic(path, buffer.getvalue())


# Bump when the way statistics are computed changes: old caches go stale.
STATS_VERSION = 1


def _file_signature(path):
    stat = tf.io.gfile.stat(path)
    return [path, int(stat.length), int(stat.mtime_nsec)]


class RealStatistics:
    """pool_3 statistics of the real (training) images, cached on disk.

    The cache key holds the data files (with sizes and times), the data
    format, the sample sizes (also KID's and the manifold metrics', whose
    real pool_3 vectors the cache keeps) and the classifier's fingerprint,
    so a change of any of them computes new statistics.

    Args:
        config: `EvalConfig`.
        classifier: `inception.Classifier`.
        cache_dir: directory of the `.npz` cache files.
    """

    def __init__(self, config, classifier, cache_dir):
        self.config = config
        self.classifier = classifier
        self.cache = StatsCache(cache_dir)
        self._memo = {}

    def _key(self, name, count):
        config = self.config
        try:
            files = [_file_signature(f) for f in records.list_files(
                config.data)]
        except (ValueError, tf.errors.OpError):
            files = []
        return {
            "name": name,
            "version": STATS_VERSION,
            "data_dir": config.data.data_dir,
            "data_format": config.data.data_format,
            "label_offset": config.data.label_offset,
            "files": files,
            "image_size": config.model.image_size,
            "sample_size": count,
            "classifier": self.classifier.fingerprint,
            "classifier_image_size": self.classifier.image_size,
            "kid_sample_size": config.kid_sample_size,
            "prdc_sample_size": config.prdc_sample_size,
            "num_vis_images": config.num_vis_images,
        }

    def _real_dataset(self):
        config = self.config
        return pipeline.build_dataset(
            config.data,
            image_size=config.model.image_size,
            batch_size=config.dcgan_generator_batch_size,
            num_classes=config.model.number_classes,
            repeat=False,
            shuffle=True,
        )

    def compute_activations(self, count):
        """pool_3 [<= count, D] of shuffled real images, grid images."""
        pools, vis, done, next_report = [], None, 0, 0
        for images, _ in self._real_dataset():
            if vis is None:
                vis = images[: self.config.num_vis_images].numpy()
            pool, _ = self.classifier(images)
            pools.append(pool.numpy()[: count - done])
            done += pools[-1].shape[0]
            if done >= next_report or done >= count:
                print(f"  real: {done}/{count} images", flush=True)
                next_report = done + count // 10
            if done >= count:
                break
        if done < 2:
            raise ValueError(
                f"--data_dir {self.config.data.data_dir!r} gave {done} real "
                "images; need at least 2 (and at least "
                "--dcgan_generator_batch_size per batch)."
            )
        if done < count:
            logging.warning(
                "Only %d real images in %s (--eval_sample_size=%d); the "
                "statistics use all of them.",
                done, self.config.data.data_dir, count,
            )
        return np.concatenate(pools), vis

    def compute_class_activations(self, classes, count):
        """{class: pool_3 [<= count, D]} of real images of `classes`."""
        wanted = {c: [] for c in classes}
        have = dict.fromkeys(classes, 0)
        for images, labels in self._real_dataset():
            labels = labels.numpy()
            mask = np.isin(labels, list(classes))
            if not mask.any():
                continue
            pool, _ = self.classifier(tf.boolean_mask(images, mask))
            pool = pool.numpy()
            for c in classes:
                rows = pool[labels[mask] == c][: count - have[c]]
                wanted[c].append(rows)
                have[c] += rows.shape[0]
            if all(n >= count for n in have.values()):
                break
        return {
            c: np.concatenate(wanted[c]) if wanted[c] else np.zeros((0, 1))
            for c in classes
        }

    def first_count(self):
        """How many real pool_3 vectors KID and the manifold metrics use."""
        return max(self.config.kid_sample_size, self.config.prdc_sample_size)

    def overall(self):
        """Real pool_3 statistics and extras, cached.

        Returns:
            (`ActivationStats`, extras): extras["vis_images"] holds the grid
            images and, when KID or the manifold metrics are on,
            extras["first_activations"] the first `first_count()` real
            pool_3 vectors [<= first_count(), D].
        """
        if "all" in self._memo:
            return self._memo["all"]
        count = self.config.eval_sample_size
        key = self._key("real", count)
        cached = self.cache.load(key)
        if cached is None:
            print(f"Computing real-image statistics ({count} images from "
                  f"{self.config.data.data_dir}) ...", flush=True)
            acts, vis = self.compute_activations(count)
            stats = ActivationStats.from_activations(acts)
            extras = {"vis_images": vis}
            if self.first_count():
                extras["first_activations"] = acts[: self.first_count()]
            path = self.cache.save(key, stats, [f[0] for f in key["files"]],
                                   **extras)
            print(f"Cached real statistics in {path}", flush=True)
        else:
            stats, extras = cached
            print(f"Reusing real statistics from {self.cache.path(key)} "
                  f"({stats.count} images)", flush=True)
        self._memo["all"] = (stats, extras)
        return self._memo["all"]

    def per_class(self):
        """{class: ActivationStats} for `intra_fid_classes`, cached."""
        classes = tuple(self.config.intra_fid_classes)
        count = self.config.intra_fid_sample_size
        result, missing = {}, []
        for c in classes:
            if ("class", c) in self._memo:
                result[c] = self._memo[("class", c)]
                continue
            cached = self.cache.load(self._key(f"real_class{c}", count))
            if cached is None:
                missing.append(c)
            else:
                result[c] = cached[0]
        if missing:
            print(f"Computing real statistics of classes {missing} ...",
                  flush=True)
            for c, acts in self.compute_class_activations(
                    missing, count).items():
                if acts.shape[0] < 2:
                    raise ValueError(
                        f"--intra_fid_classes: class {c} has "
                        f"{acts.shape[0]} real images in "
                        f"{self.config.data.data_dir}; need at least 2."
                    )
                key = self._key(f"real_class{c}", count)
                result[c] = ActivationStats.from_activations(acts)
                self.cache.save(key, result[c], [f[0] for f in key["files"]])
        for c in classes:
            self._memo[("class", c)] = result[c]
        return result
