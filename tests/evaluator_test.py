"""The evaluator end to end with a stand-in classifier and a tiny G."""

import dataclasses
import glob
import hashlib
import json
import os
import re
import threading

import eval_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from tensorflow.python.training import py_checkpoint_reader

from sagan_tf import config as config_lib
from sagan_tf import evaluation
from sagan_tf.commands import evaluate as evaluate_command
from sagan_tf.evaluation import inception, manifold_metrics, metrics
from sagan_tf.training import checkpoint_files

MODEL = fx.tiny_model_config()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("eval_assets"))
    fx.write_records(os.path.join(root, "data"), 48, MODEL.image_size,
                     MODEL.number_classes)
    model_dir = os.path.join(root, "module")
    inception.save_classifier_as_savedmodel(fx.StandinClassifier(), model_dir)
    return root, model_dir


def _config(assets, tmp_path, **overrides):
    root, model_dir = assets
    values = dict(
        model=MODEL,
        data=config_lib.DataConfig(
            data_dir=os.path.join(root, "data"), shuffle_buffer_size=64,
            seed=0),
        checkpoint_dir=str(tmp_path / "checkpoint"),
        eval_sample_size=32,
        dcgan_generator_batch_size=16,
        eval_interval_secs=0.05,
        num_evals=1,
        inception_path=model_dir,
        kid_sample_size=32,
        seed=3,
    )
    values.update(overrides)
    config = config_lib.EvalConfig(**values)
    os.makedirs(evaluation.run_dir(config), exist_ok=True)
    return config


def _events(directory):
    """{tag: [(step, value-or-None)]} of the event files in directory."""
    found = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                scalar = float(tensor) if tensor.dtype.kind == "f" else None
                found.setdefault(value.tag, []).append((event.step, scalar))
    return found


def _results(config):
    path = os.path.join(evaluation.eval_dir(config), "results.jsonl")
    with open(path) as f:
        return [json.loads(line) for line in f]


PRDC = ("precision", "recall", "density", "coverage")


def test_full_evaluation_writes_results_summaries_and_cache(
    assets, tmp_path, capsys, monkeypatch
):
    # KID takes the first 16 real pool vectors, the manifold metrics 24.
    config = _config(assets, tmp_path, intra_fid_classes=(0, 2),
                     intra_fid_sample_size=8, kid_sample_size=16,
                     prdc_sample_size=24, prdc_k=2)
    fx.write_checkpoint(evaluation.run_dir(config), MODEL, step=7)
    evaluator = evaluation.Evaluator(config)
    prdc_calls = []
    scores = manifold_metrics.manifold_scores

    def recorded(real, generated, k, block_size):
        prdc_calls.append((np.array(real), generated.shape, k))
        return scores(real, generated, k, block_size)

    monkeypatch.setattr(manifold_metrics, "manifold_scores", recorded)
    (result,) = evaluator.run()
    assert result["checkpoint"] == "ckpt-7" and result["step"] == 7
    for key in ("fid", "incscore", "kid", "intra_fid_mean") + PRDC:
        assert np.isfinite(result[key])
    assert result["fid"] > 0 and result["incscore"] >= 1.0
    assert set(result["intra_fid"]) == {"0", "2"}
    for key in ("precision", "recall", "coverage"):
        assert 0 <= result[key] <= 1
    assert result["prdc_k"] == 2 and result["prdc_sample_size"] == 24
    ((prdc_real, prdc_generated_shape, prdc_k),) = prdc_calls
    assert prdc_real.shape == prdc_generated_shape == (24, fx.FEATURE_DIM)
    assert prdc_k == 2
    assert _results(config) == [result]
    printed = capsys.readouterr().out
    for key in PRDC:
        assert f"{key}={result[key]:.4f}" in printed

    events = _events(evaluation.eval_dir(config))
    assert events["eval/fid"] == [(7, pytest.approx(result["fid"]))]
    assert events["eval/incscore"][0][0] == 7
    assert "eval/kid" in events and "eval/intra_fid/class_2" in events
    for key in PRDC:
        assert events[f"eval/{key}"] == [(7, pytest.approx(result[key]))]
    assert events["eval_vis/generated_images_grid"][0][0] == 7
    assert "eval_vis/real_images_grid" in events

    caches = sorted(os.listdir(evaluation.eval_dir(config)))
    assert len([c for c in caches if c.startswith("real_class")]) == 2
    (main,) = [c for c in caches if c.startswith("real_")
               and not c.startswith("real_class")]
    with np.load(os.path.join(evaluation.eval_dir(config), main)) as data:
        assert int(data["count"]) == 32
        assert data["cov"].shape == (fx.FEATURE_DIM, fx.FEATURE_DIM)
        assert data["cov"].dtype == np.float64
        assert len(data["files"]) == 2
        first = data["first_activations"]
        assert first.shape == (24, fx.FEATURE_DIM)

    # The cached covariance is numpy's unbiased one of the real activations
    # (the seeded shuffle gives the same images again), the cached vectors
    # are the first of them.
    stats, _ = evaluator.real.overall()
    real_acts, _ = evaluator.real.compute_activations(32)
    np.testing.assert_allclose(
        stats.cov, np.cov(real_acts.astype(np.float64), rowvar=False),
        atol=1e-9,
    )
    np.testing.assert_array_equal(first, real_acts[:24])
    np.testing.assert_array_equal(prdc_real, first)
    # Another --prdc_sample_size selects another cache file.
    other = metrics.RealStatistics(
        dataclasses.replace(config, prdc_sample_size=20),
        evaluator.classifier, evaluator.real.cache.directory)
    assert other.cache.path(other._key("real", 32)) != (
        evaluator.real.cache.path(evaluator.real._key("real", 32)))

    # Second evaluator, new checkpoint: the cached statistics are reused.
    fx.write_checkpoint(evaluation.run_dir(config), MODEL, step=9, seed=1)
    second = evaluation.Evaluator(config)

    def fail(*args, **kwargs):
        raise AssertionError("real images were read again")

    second.real.compute_activations = fail
    second.real.compute_class_activations = fail
    (result,) = second.run()
    assert result["checkpoint"] == "ckpt-9"
    assert [r["step"] for r in _results(config)] == [7, 9]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(prdc_k=0), "--prdc_k must be >= 1, got 0"),
        (dict(prdc_sample_size=3), r"--prdc_sample_size must be 0 \(off\) "
                                   r"or at least --prdc_k \+ 1 = 4, got 3"),
        (dict(prdc_sample_size=-1), "--prdc_sample_size must be 0"),
        (dict(eval_sample_size=3), "--eval_sample_size 3 is too small for "
                                   "--prdc_k 3"),
    ],
)
def test_manifold_metric_flags_are_checked(assets, tmp_path, overrides,
                                           message):
    config = _config(assets, tmp_path, **{"prdc_k": 3, **overrides})
    with pytest.raises(ValueError, match=message):
        evaluation.Evaluator(config)


def test_manifold_metric_flags_reach_the_config():
    fv = flags.FlagValues()
    evaluate_command.define_flags(fv)
    fv(["eval_imagenet.py"])
    default = evaluate_command.config_from_flags(fv)
    assert (default.prdc_sample_size, default.prdc_k) == (10000, 3)
    fv(["eval_imagenet.py", "--prdc_sample_size=500", "--prdc_k=5"])
    config = evaluate_command.config_from_flags(fv)
    assert (config.prdc_sample_size, config.prdc_k) == (500, 5)


def test_watching_loop_picks_up_new_checkpoints(assets, tmp_path):
    config = _config(assets, tmp_path, num_evals=2, kid_sample_size=0)
    run_dir = evaluation.run_dir(config)
    fx.write_checkpoint(run_dir, MODEL, step=1)
    evaluator = evaluation.Evaluator(config)
    results, errors = [], []

    def watch():
        try:
            results.extend(evaluator.run())
        except Exception as err:  # Surfaced by the assertion below.
            errors.append(err)

    thread = threading.Thread(target=watch)
    thread.start()
    results_path = evaluator.results_path
    for _ in range(600):
        if os.path.exists(results_path) or errors:
            break
        thread.join(0.1)
    fx.write_checkpoint(run_dir, MODEL, step=2, seed=1)
    thread.join(120)
    assert not errors and not thread.is_alive()
    assert [r["step"] for r in results] == [1, 2]
    assert "kid" not in results[0]

    # Checkpoints already in results.jsonl are not evaluated again.
    stop = threading.Event()
    again = evaluation.Evaluator(config)
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    assert again.run(stop=stop) == []
    assert len(_results(config)) == 2


def test_deleted_checkpoint_is_skipped(assets, tmp_path):
    config = _config(assets, tmp_path, kid_sample_size=0)
    run_dir = evaluation.run_dir(config)
    fx.write_checkpoint(run_dir, MODEL, step=3)
    fx.write_checkpoint(run_dir, MODEL, step=4)
    # Training rotated ckpt-3 out after the evaluator listed it.
    for path in glob.glob(os.path.join(run_dir, "ckpt-3.*")):
        os.remove(path)
    evaluator = evaluation.Evaluator(config)
    assert [r["step"] for r in evaluator.run()] == [4]


def test_config_json_mismatch_names_the_fields(assets, tmp_path):
    config = _config(assets, tmp_path)
    fx.write_checkpoint(evaluation.run_dir(config), MODEL, step=1)
    wrong = dataclasses.replace(
        config, model=dataclasses.replace(MODEL, gf_dim=8, number_classes=5)
    )
    with pytest.raises(ValueError, match="--gf_dim=8.*--num_classes=5"):
        evaluation.Evaluator(wrong)


def test_use_ema_restores_the_averaged_generator(assets, tmp_path):
    config = _config(assets, tmp_path, use_ema=True)
    run_dir = evaluation.run_dir(config)
    g = fx.write_checkpoint(run_dir, MODEL, step=5, ema=True)
    restorer = evaluation.GeneratorRestorer(MODEL, use_ema=True)
    assert restorer.restore(tf.train.latest_checkpoint(run_dir)) == 5
    kernel = g.g_snh0.weights[0]
    restored = {w.path: w for w in restorer.generator.weights}[kernel.path]
    np.testing.assert_allclose(restored.numpy(), kernel.numpy() * 0.5)

    plain_dir = str(tmp_path / "plain")
    fx.write_checkpoint(plain_dir, MODEL, step=6)
    with pytest.raises(ValueError, match="ema_generator"):
        restorer.restore(tf.train.latest_checkpoint(plain_dir))


def _md5s(directory):
    sums = {}
    for name in os.listdir(directory):
        if name.startswith("ckpt-"):
            with open(os.path.join(directory, name), "rb") as f:
                sums[name] = hashlib.md5(f.read()).hexdigest()
    return sums


def test_damaged_generator_weight_is_damage_and_older_one_is_scored(
    assets, tmp_path, capsys
):
    config = _config(assets, tmp_path, kid_sample_size=0)
    run_dir = evaluation.run_dir(config)
    fx.write_training_checkpoint(run_dir, MODEL, step=1)
    _, newest = fx.write_training_checkpoint(run_dir, MODEL, step=2, seed=1)
    fx.flip_byte_of(newest, fx.g_kernel_key(newest))
    before = _md5s(run_dir)
    (result,) = evaluation.Evaluator(config).run()
    assert result["checkpoint"] == "ckpt-1"
    err = capsys.readouterr().err
    assert re.search(
        rf"WARNING: skipping checkpoint {re.escape(newest)}: its data file "
        r"ckpt-2.data-00000-of-00001 is truncated or damaged \(.*[Cc]hecksum",
        err), err
    assert "deleted" not in err
    assert _md5s(run_dir) == before


def test_restore_is_all_or_nothing(assets, tmp_path, monkeypatch):
    run_dir = str(tmp_path / "run")
    good_g, good = fx.write_training_checkpoint(run_dir, MODEL, step=1)
    _, bad = fx.write_training_checkpoint(run_dir, MODEL, step=2, seed=1)
    fx.flip_byte_of(bad, fx.g_kernel_key(bad))
    restorer = evaluation.GeneratorRestorer(MODEL)
    assert restorer.restore(good) == 1
    # Without the read-back check the damage meets the restore itself.
    def keys_only(found, keys, **kwargs):
        keys(tf.train.load_checkpoint(found.prefix))

    monkeypatch.setattr(checkpoint_files, "problem", keys_only)
    with pytest.raises(evaluation.UnreadableCheckpointError,
                       match="ckpt-2: it cannot be restored"):
        restorer.restore(bad)
    assert int(restorer.step.numpy()) == 1
    for live, saved in zip(restorer.generator.variables, good_g.variables,
                           strict=True):
        np.testing.assert_array_equal(live.numpy(), saved.numpy())


def test_checkpoint_rotated_out_mid_read_is_skipped(
    assets, tmp_path, monkeypatch, capsys
):
    config = _config(assets, tmp_path, kid_sample_size=0)
    run_dir = evaluation.run_dir(config)
    fx.write_training_checkpoint(run_dir, MODEL, step=1)
    real = py_checkpoint_reader.NewCheckpointReader

    def rotating(prefix):
        # Training saves ckpt-2 and, --keep_checkpoints 1, deletes ckpt-1
        # while the evaluator is reading it.
        if prefix.endswith("ckpt-1"):
            fx.write_training_checkpoint(run_dir, MODEL, step=2, seed=1)
            for path in glob.glob(os.path.join(run_dir, "ckpt-1.*")):
                os.remove(path)
        return real(prefix)

    monkeypatch.setattr(py_checkpoint_reader, "NewCheckpointReader",
                        rotating)
    (result,) = evaluation.Evaluator(config).run()
    assert result["checkpoint"] == "ckpt-2"
    err = capsys.readouterr().err
    assert "ckpt-1: training deleted it while it was being read" in err, err


def test_newest_is_scored_once_and_all_with_eval_all_checkpoints(
    assets, tmp_path
):
    config = _config(assets, tmp_path, kid_sample_size=0)
    run_dir = evaluation.run_dir(config)
    for step in (1, 2, 3):
        fx.write_checkpoint(run_dir, MODEL, step=step, seed=step)
    (result,) = evaluation.Evaluator(config).run()
    assert result["checkpoint"] == "ckpt-3"
    # A restart remembers it: the newest is scored, so it waits.
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert evaluation.Evaluator(config).run(stop=stop) == []
    full = dataclasses.replace(config, eval_all_checkpoints=True, num_evals=2)
    assert [r["step"] for r in evaluation.Evaluator(full).run()] == [1, 2]
    assert [r["step"] for r in _results(config)] == [3, 1, 2]


def test_waiting_on_a_scored_newest_checkpoint_says_why_once(
    assets, tmp_path, capsys
):
    config = _config(assets, tmp_path, kid_sample_size=0,
                     eval_interval_secs=0.02)
    run_dir = evaluation.run_dir(config)
    fx.write_checkpoint(run_dir, MODEL, step=1)
    fx.write_checkpoint(run_dir, MODEL, step=2, seed=1)
    # An earlier evaluator scored the newest one.
    os.makedirs(evaluation.eval_dir(config))
    line = {"checkpoint": "ckpt-2", "step": 2, "standing_stats_batches": 0,
            "fid": 1.0, "num_generated": 32, "num_real": 32}
    with open(os.path.join(evaluation.eval_dir(config), "results.jsonl"),
              "w") as f:
        f.write(json.dumps(line) + "\n")
    evaluator = evaluation.Evaluator(config)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    capsys.readouterr()
    assert evaluator.run(stop=stop) == []
    timer.join()
    out = capsys.readouterr().out
    assert out.count("is already scored") == 1, out
    assert (
        f"ckpt-2 (step 2) is already scored in {evaluator.results_path} "
        "(standing_stats_batches=0, num_generated=32, num_real=32; a line "
        "counts when its standing_stats_batches matches, whatever its other "
        "settings); waiting for a newer checkpoint. To score it again, "
        "remove its line from results.jsonl; --eval_all_checkpoints also "
        "scores the older checkpoints not yet scored.\n"
    ) in out, out
    # It kept polling, with the usual line.
    assert out.count("Waiting for a new checkpoint") >= 2, out


def test_damaged_statistics_cache_is_computed_again(assets, tmp_path, capsys):
    config = _config(assets, tmp_path, kid_sample_size=0)
    run_dir = evaluation.run_dir(config)
    fx.write_checkpoint(run_dir, MODEL, step=1)
    (first,) = evaluation.Evaluator(config).run()
    eval_dir = evaluation.eval_dir(config)
    (cache,) = [os.path.join(eval_dir, n) for n in os.listdir(eval_dir)
                if n.endswith(".npz")]
    with open(cache, "rb") as f:
        intact = f.read()
    with open(cache, "wb") as f:
        f.write(intact[: len(intact) // 2])
    fx.write_checkpoint(run_dir, MODEL, step=2)  # the same G again
    capsys.readouterr()
    (second,) = evaluation.Evaluator(config).run()
    err = capsys.readouterr().err
    assert f"WARNING: the real-statistics cache {cache} is damaged" in err
    assert "computing the statistics again" in err
    assert second["fid"] == pytest.approx(first["fid"])
    with open(cache, "rb") as f:
        assert f.read() == intact  # rewritten, whole
    assert not [n for n in os.listdir(eval_dir) if ".tmp" in n]


def test_evaluator_on_a_remote_filesystem(assets, tmp_path):
    # TF's in-memory filesystem stands in for gs://: results.jsonl and
    # the statistics cache are written through gfile, never appended to.
    local = _config(assets, tmp_path, kid_sample_size=0)
    fx.write_checkpoint(evaluation.run_dir(local), MODEL, step=1)
    config = dataclasses.replace(
        local, checkpoint_dir=f"ram://eval_{os.getpid()}/ck")
    run_dir = evaluation.run_dir(config)
    tf.io.gfile.makedirs(run_dir)
    for name in os.listdir(evaluation.run_dir(local)):
        tf.io.gfile.copy(os.path.join(evaluation.run_dir(local), name),
                         f"{run_dir}/{name}")
    (result,) = evaluation.Evaluator(config).run()
    assert result["checkpoint"] == "ckpt-1"
    results = f"{evaluation.eval_dir(config)}/results.jsonl"
    with tf.io.gfile.GFile(results) as f:
        assert json.loads(f.read())["step"] == 1
    assert [n for n in tf.io.gfile.listdir(evaluation.eval_dir(config))
            if n.endswith(".npz")]
