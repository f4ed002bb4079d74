"""The evaluator: IS, FID, KID, intra-class FID, precision, recall, density
and coverage of each new checkpoint.

It reproduces the released `eval_imagenet.py` protocol: G in inference mode
with uniform random classes and standard-normal z, real images from the
training records, both resized with TF1 bilinear to the classifier's 299,
Inception `pool_3` and `logits`, IS over all samples in one split and FID in
float64; the k-NN manifold metrics (`manifold_metrics.py`) use the same
pool_3 features. Opt-in beyond the release: `--standing_stats_batches`
recomputes G's BN moving averages after each restore (`standing_stats.py`).
Layout, as released:

* checkpoints: `<checkpoint_dir>/imagenet_<batch_size>/ckpt-<step>`;
* which: each poll scores the newest checkpoint not yet in results.jsonl
  (`--eval_all_checkpoints`: every one not in it, oldest first);
* summaries (`eval/fid`, `eval/incscore`, ... at the checkpoint's step, and
  the `eval_vis/*_grid` images), `results.jsonl` (one line per evaluated
  checkpoint) and the real-statistics cache:
  `<checkpoint_dir>/eval/imagenet_<batch_size>/` (summaries with standing
  statistics in its `standing_stats_<N>/`).
"""

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf

from sagan_tf import cli
from sagan_tf.evaluation import inception, manifold_metrics, metrics
from sagan_tf.evaluation.restore import (
    CheckpointGoneError,
    GeneratorRestorer,
    UnreadableCheckpointError,
    check_run_config,
    eval_dir,
    run_dir,
)
from sagan_tf.training import checkpoint_files, summaries

RESULTS_FILE = "results.jsonl"


class Evaluator:
    """Evaluates checkpoints of one run; see the module docstring.

    Args:
        config: `EvalConfig`.
        classifier: an `inception.Classifier`; default: load
            `config.inception_path` (once per process).
    """

    def __init__(self, config, classifier=None):
        if config.eval_sample_size < 2:
            raise ValueError(
                f"--eval_sample_size must be >= 2, got "
                f"{config.eval_sample_size}"
            )
        if config.dcgan_generator_batch_size < 1:
            raise ValueError("--dcgan_generator_batch_size must be >= 1")
        _check_prdc_flags(config)
        if config.intra_fid_classes and not config.model.number_classes:
            print("Note: --num_classes 0 (unconditional G): no intra-class "
                  "FID; --intra_fid_classes is ignored.", flush=True)
            config = dataclasses.replace(config, intra_fid_classes=())
        for c in config.intra_fid_classes:
            if not 0 <= c < config.model.number_classes:
                raise ValueError(
                    f"--intra_fid_classes: class {c} is outside "
                    f"[0, {config.model.number_classes})"
                )
        self.config = config
        self.run_dir = run_dir(config)
        self.eval_dir = eval_dir(config)
        check_run_config(config.model, self.run_dir)
        self.classifier = classifier or inception.load_classifier(
            config.inception_path, config.classifier_image_size
        )
        self.restorer = GeneratorRestorer.from_config(config)
        self.real = metrics.RealStatistics(
            config, self.classifier, config.stats_cache_dir or self.eval_dir
        )
        if config.seed is None:
            self._rng = tf.random.Generator.from_non_deterministic_state()
        else:
            self._rng = tf.random.Generator.from_seed(config.seed)
        self._writer = None

    # Generated images ------------------------------------------------------

    @tf.function(reduce_retracing=True)
    def _generate_and_classify(self, labels):
        z = self._rng.normal([tf.shape(labels)[0], self.config.model.z_dim])
        images = self.restorer.generator(z, labels, training=False)
        images = tf.cast(images, tf.float32)
        pool, logits = self.classifier(images)
        return images, pool, logits

    def _random_labels(self, n):
        return self._rng.uniform(
            # Unconditional G (0 classes) ignores them: all zeros.
            [n], 0, max(self.config.model.number_classes, 1), dtype=tf.int32
        )

    def generated_activations(self, count, label=None, tag="generated"):
        """pool_3 [count, D], logits [count, K] and the first images.

        Classes are uniform at random, or all `label`.
        """
        batch = self.config.dcgan_generator_batch_size
        pools, logits, vis = [], [], None
        done, next_report = 0, 0
        while done < count:
            n = min(batch, count - done)
            labels = (
                self._random_labels(n)
                if label is None
                else tf.fill([n], tf.constant(label, tf.int32))
            )
            images, pool, logit = self._generate_and_classify(labels)
            if vis is None:
                vis = images[: self.config.num_vis_images].numpy()
            pools.append(pool.numpy())
            logits.append(logit.numpy())
            done += n
            if done >= next_report or done == count:
                print(f"  {tag}: {done}/{count} images", flush=True)
                next_report = done + max(count // 10, batch)
        return np.concatenate(pools), np.concatenate(logits), vis

    # One checkpoint --------------------------------------------------------

    def evaluate_checkpoint(self, path):
        """Computes and records the metrics of one checkpoint.

        Returns:
            The result dict (also appended to results.jsonl).

        Raises:
            CheckpointGoneError: the checkpoint vanished while being read.
        """
        config = self.config
        start = time.time()
        check_run_config(config.model, self.run_dir)
        step = self.restorer.restore(path)
        print(f"Evaluating {path} (step {step})", flush=True)
        real_stats, extras = self.real.overall()
        pools, logits, vis = self.generated_activations(
            config.eval_sample_size
        )
        result = {
            "checkpoint": os.path.basename(path),
            "step": step,
            "standing_stats_batches": config.standing_stats_batches,
            "fid": metrics.frechet_distance(real_stats, pools),
            "incscore": metrics.inception_score(logits),
        }
        if config.kid_sample_size:
            result["kid"] = metrics.kernel_distance(
                extras["first_activations"][: config.kid_sample_size],
                pools[: config.kid_sample_size],
                config.kid_block_size,
            )
        if config.prdc_sample_size:
            result.update(self._manifold_scores(
                extras["first_activations"], pools
            ))
        if config.intra_fid_classes:
            class_stats = self.real.per_class()
            intra = {}
            for c, stats in class_stats.items():
                gen, _, _ = self.generated_activations(
                    config.intra_fid_sample_size, label=c, tag=f"class {c}"
                )
                intra[str(c)] = metrics.frechet_distance(stats, gen)
            result["intra_fid"] = intra
            result["intra_fid_mean"] = float(np.mean(list(intra.values())))
        result["num_generated"] = int(pools.shape[0])
        result["num_real"] = int(real_stats.count)
        result["eval_secs"] = round(time.time() - start, 2)
        self._write_summaries(result, vis, extras["vis_images"])
        self._append_result(result)
        print("  " + ", ".join(
            f"{k}={v:.4f}" for k, v in result.items()
            if isinstance(v, float) and k != "eval_secs"), flush=True)
        return result

    def _manifold_scores(self, real_pools, generated_pools):
        """Precision, recall, density, coverage and how they were measured.

        Args:
            real_pools: the first real pool_3 vectors [<= first_count, D]
                (`RealStatistics.first_count`).
            generated_pools: generated pool_3 vectors [eval_sample_size, D].

        Returns:
            A dict for the result line.
        """
        config = self.config
        count = config.prdc_sample_size
        real_pools = real_pools[:count]
        if real_pools.shape[0] < config.prdc_k + 1:
            raise ValueError(
                f"--data_dir {config.data.data_dir!r} gave "
                f"{real_pools.shape[0]} real images; --prdc_k "
                f"{config.prdc_k} needs at least {config.prdc_k + 1} (or "
                "--prdc_sample_size 0)."
            )
        scores = manifold_metrics.manifold_scores(
            real_pools, generated_pools[:count], config.prdc_k,
            config.prdc_block_size,
        )
        return {
            **dataclasses.asdict(scores),
            "prdc_k": config.prdc_k,
            # The setting: num_generated and num_real say where fewer
            # vectors were there to take.
            "prdc_sample_size": count,
        }

    def _write_summaries(self, result, generated, real):
        if self._writer is None:
            self._writer = summaries.SummaryWriter(self.summary_dir)
        names = ("fid", "incscore", "kid", "intra_fid_mean", "precision",
                 "recall", "density", "coverage")
        scalars = {f"eval/{k}": result[k] for k in names if k in result}
        for c, value in result.get("intra_fid", {}).items():
            scalars[f"eval/intra_fid/class_{c}"] = value
        step = result["step"]
        self._writer.scalars(step, scalars)
        self._writer.images(step, {
            "eval_vis/generated_images_grid": summaries.image_grid(generated),
            "eval_vis/real_images_grid": summaries.image_grid(real),
        })
        self._writer.flush()

    # Results and the watching loop -----------------------------------------

    @property
    def results_path(self):
        return os.path.join(self.eval_dir, RESULTS_FILE)

    @property
    def summary_dir(self):
        """Where the TensorBoard summaries go.

        The eval directory, or its `standing_stats_<N>` subdirectory when
        standing statistics are on, so that TensorBoard shows the two
        evaluations of a checkpoint as separate runs.
        """
        n = self.config.standing_stats_batches
        if n:
            return os.path.join(self.eval_dir, f"standing_stats_{n}")
        return self.eval_dir

    def evaluated(self):
        """Basenames of the checkpoints already in results.jsonl.

        Only results with this config's `standing_stats_batches` count
        (lines without the field are from runs without standing stats). A
        line that is not JSON is skipped with a warning.
        """
        return set(self._scored_lines())

    def _scored_lines(self):
        """{checkpoint basename: its last line} of the results that count
        (see `evaluated`)."""
        lines = {}
        wanted = self.config.standing_stats_batches
        for entry in self._read_results():
            if entry.get("standing_stats_batches", 0) == wanted:
                lines[entry.get("checkpoint")] = entry
        return lines

    def _read_results(self):
        if not tf.io.gfile.exists(self.results_path):
            return []
        entries = []
        with tf.io.gfile.GFile(self.results_path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as err:
                    entry = None
                    why = str(err)
                if not isinstance(entry, dict):
                    cli.warn(
                        f"{self.results_path}, line {number}, is not a "
                        f"result ({why if entry is None else 'not an object'}"
                        "); skipping it."
                    )
                    continue
                entries.append(entry)
        return entries

    def _append_result(self, result):
        tf.io.gfile.makedirs(self.eval_dir)
        # Object stores (gs://) cannot append: rewrite the small file, under
        # a temporary name and then renamed, so that a crash never leaves
        # it cut short.
        text = ""
        if tf.io.gfile.exists(self.results_path):
            with tf.io.gfile.GFile(self.results_path) as f:
                text = f.read()
        if text and not text.endswith("\n"):
            text += "\n"
        checkpoint_files.write_atomic(
            self.results_path, text + json.dumps(result) + "\n"
        )

    def checkpoints(self):
        """Paths of the run's complete checkpoints, oldest first."""
        found = checkpoint_files.retrying(
            lambda: checkpoint_files.find(self.run_dir), self.run_dir,
            self.config.storage_retry_secs,
        )
        return [c.prefix for c in reversed(found) if c.complete]

    def run(self, stop=None):
        """Watches the run directory and scores checkpoints, each once.

        Each poll takes the newest checkpoint, as the released evaluator's
        `checkpoints_iterator` does; when results.jsonl shows it scored
        already (also by an earlier process), it waits for a newer one.
        With `eval_all_checkpoints`, every unscored checkpoint is scored,
        oldest first. A damaged checkpoint is skipped with a warning naming
        its file (the next older one is then the newest), and one that
        training rotated out while it was being read, too. When the newest
        checkpoint was scored before this call, the first wait says so,
        with the settings of its line.

        Args:
            stop: optional threading.Event that ends the loop.

        Returns:
            The results computed by this call.
        """
        config = self.config
        earlier = self._scored_lines()
        done = set(earlier)
        skipped = set()
        results = []
        explained = None
        print(f"Watching {self.run_dir}; results in {self.results_path}",
              flush=True)
        while stop is None or not stop.is_set():
            listed = [p for p in self.checkpoints()
                      if os.path.basename(p) not in skipped]
            path = self._next(listed, done)
            if path is None:
                newest = os.path.basename(listed[-1]) if listed else None
                # Said once: a restarted evaluator otherwise seems to hang.
                if newest is not None and newest in earlier and (
                        newest != explained):
                    print(self._scored_before_line(
                        newest, earlier[newest], len(listed)), flush=True)
                    explained = newest
                else:
                    print(self._waiting_line(done), flush=True)
                if stop is not None:
                    stop.wait(config.eval_interval_secs)
                else:
                    time.sleep(config.eval_interval_secs)
                continue
            name = os.path.basename(path)
            try:
                results.append(self.evaluate_checkpoint(path))
            except CheckpointGoneError as err:
                skipped.add(name)
                cli.warn(f"skipping checkpoint {err}. Taking the newest "
                         "checkpoint again.")
                continue
            except UnreadableCheckpointError as err:
                skipped.add(name)
                cli.warn(f"skipping checkpoint {err}. Taking the next "
                         "older one, or waiting for a new one.")
                continue
            done.add(name)
            if config.num_evals and len(results) >= config.num_evals:
                break
        return results

    def _next(self, listed, done):
        """The checkpoint of `listed` (oldest first) to score now, or None
        to wait."""
        if self.config.eval_all_checkpoints:
            pending = [p for p in listed if os.path.basename(p) not in done]
            return pending[0] if pending else None
        if listed and os.path.basename(listed[-1]) not in done:
            return listed[-1]
        return None

    def _scored_before_line(self, newest, line, num_listed):
        """Why the loop waits although checkpoints exist: the newest one
        (`newest`, whose results.jsonl entry is `line`) was scored before.
        """
        step = f" (step {line['step']})" if "step" in line else ""
        settings = ", ".join(
            [f"standing_stats_batches={self.config.standing_stats_batches}"]
            + [f"{k}={line[k]}" for k in ("num_generated", "num_real",
                                          "prdc_k", "prdc_sample_size")
               if k in line]
        )
        where = (f"in {self.results_path} ({settings}; a line counts when "
                 "its standing_stats_batches matches, whatever its other "
                 "settings)")
        if self.config.eval_all_checkpoints:
            return (
                f"All {num_listed} checkpoints in {self.run_dir}, the newest "
                f"{newest}{step}, are already scored {where}; waiting for a "
                "newer checkpoint. To score one again, remove its line from "
                f"{RESULTS_FILE}."
            )
        return (
            f"{newest}{step} is already scored {where}; waiting for a newer "
            f"checkpoint. To score it again, remove its line from "
            f"{RESULTS_FILE}; --eval_all_checkpoints also scores the older "
            "checkpoints not yet scored."
        )

    def _waiting_line(self, done):
        if not tf.io.gfile.isdir(self.run_dir):
            what = f"{self.run_dir} to appear (no training has saved yet)"
        elif done:
            what = (f"a new checkpoint in {self.run_dir} (evaluated "
                    f"{len(done)} so far)")
        else:
            what = f"the first checkpoint in {self.run_dir}"
        return (f"Waiting for {what}; looking again in "
                f"{self.config.eval_interval_secs:g} s.")


def _check_prdc_flags(config):
    """ValueError naming the flag when the manifold metrics cannot run."""
    k, count = config.prdc_k, config.prdc_sample_size
    if k < 1:
        raise ValueError(f"--prdc_k must be >= 1, got {k}")
    if count < 0 or 0 < count < k + 1:
        raise ValueError(
            f"--prdc_sample_size must be 0 (off) or at least --prdc_k + 1 "
            f"= {k + 1}, got {count}"
        )
    if count and config.eval_sample_size < k + 1:
        raise ValueError(
            f"--eval_sample_size {config.eval_sample_size} is too small for "
            f"--prdc_k {k}: precision, recall, density and coverage need at "
            f"least {k + 1} images (or --prdc_sample_size 0)"
        )
