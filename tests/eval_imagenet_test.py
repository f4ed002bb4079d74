"""The eval_imagenet.py command line on tiny data (subprocesses)."""

import json
import os
import re
import subprocess
import sys

import eval_fixtures as fx
import numpy as np
import pytest

from sagan_tf.evaluation import inception

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = fx.tiny_model_config()


def _run(*args, check=True):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "eval_imagenet.py"), *args],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )
    if check and proc.returncode:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cli"))
    data_dir = os.path.join(root, "data")
    fx.write_records(data_dir, 40, MODEL.image_size, MODEL.number_classes)
    graph = os.path.join(root, "standin.pb")
    inception.save_classifier_as_graphdef(fx.StandinClassifier(), graph)
    checkpoint_dir = os.path.join(root, "checkpoint")
    run_dir = os.path.join(checkpoint_dir, "imagenet_8")
    fx.write_checkpoint(run_dir, MODEL, step=12)
    flags = [
        f"--checkpoint_dir={checkpoint_dir}", "--batch_size=8",
        f"--data_dir={data_dir}", f"--inception_path={graph}",
        f"--image_size={MODEL.image_size}", f"--z_dim={MODEL.z_dim}",
        f"--gf_dim={MODEL.gf_dim}", f"--num_classes={MODEL.number_classes}",
        f"--attention_resolution={MODEL.attention_resolution}",
        "--dcgan_generator_batch_size=10", "--seed=0",
    ]
    return root, checkpoint_dir, flags


def test_help_lists_released_flags_and_defaults():
    # absl's --help exits with status 1.
    out = _run("--help", check=False).stdout
    for flag, default in [("eval_sample_size", "50000"),
                          ("dcgan_generator_batch_size", "100"),
                          ("checkpoint_dir", "checkpoint"),
                          ("batch_size", "64"),
                          ("shuffle_buffer_size", "5000"),
                          ("eval_interval_secs", "300"),
                          ("num_classes", "1000"),
                          ("z_dim", "128"),
                          ("gf_dim", "64"),
                          ("generator_type", "test"),
                          ("num_evals", "0"),
                          ("use_ema", "false"),
                          ("sn_update_at_inference", "true")]:
        after = out.split(f"--{flag}:")[-1] if f"--{flag}:" in out else (
            out.split(f"--[no]{flag}:")[1])
        assert f"(default: '{default}')" in after[:600], flag
    assert "tfhub.dev/tensorflow/tfgan/eval/inception/1" in out


def test_eval_mode(run):
    _, checkpoint_dir, flags = run
    proc = _run(*flags, "--eval_sample_size=20", "--num_evals=1",
                "--kid_sample_size=20", "--intra_fid_classes=1",
                "--intra_fid_sample_size=4")
    assert "fid=" in proc.stdout
    path = os.path.join(checkpoint_dir, "eval", "imagenet_8", "results.jsonl")
    with open(path) as f:
        (result,) = [json.loads(line) for line in f]
    assert result["step"] == 12 and np.isfinite(result["fid"])
    assert set(result["intra_fid"]) == {"1"}


def test_sample_mode(run):
    root, _, flags = run
    sample_dir = os.path.join(root, "samples")
    _run(*flags, "--mode=sample", f"--sample_dir={sample_dir}",
         "--sample_classes=0,2", "--num_npz_samples=6",
         "--attention_queries=4:4,20:28")
    for name in ("class_grid.png", "samples.npz", "interpolation.png",
                 "attention.png"):
        assert os.path.exists(os.path.join(sample_dir, name)), name


def test_export_mode(run):
    root, _, flags = run
    export_dir = os.path.join(root, "export")
    _run(*flags, "--mode=export", f"--export_dir={export_dir}")
    assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))


# --mode export restores through the same checkpoint fallback as sample.
@pytest.mark.parametrize("mode", ["sample"])
def test_damaged_generator_weight_is_skipped_by_sample_and_export(
    run, tmp_path, mode
):
    """A flipped byte in a G kernel of the newest checkpoint is damage: the
    command says so, naming the file, and uses the older checkpoint."""
    _, _, flags = run
    checkpoint_dir = str(tmp_path / "checkpoint")
    run_dir = os.path.join(checkpoint_dir, "imagenet_8")
    fx.write_training_checkpoint(run_dir, MODEL, step=1)
    _, newest = fx.write_training_checkpoint(run_dir, MODEL, step=2, seed=1)
    fx.flip_byte_of(newest, fx.g_kernel_key(newest))
    out_dir = str(tmp_path / mode)
    where = (f"--sample_dir={out_dir}" if mode == "sample"
             else f"--export_dir={out_dir}")
    proc = _run(*flags, f"--checkpoint_dir={checkpoint_dir}",
                f"--mode={mode}", where, "--num_npz_samples=4",
                "--sample_classes=0")
    out = proc.stdout + proc.stderr
    assert re.search(
        rf"skipping checkpoint {re.escape(newest)}: its data file "
        r"ckpt-2.data-00000-of-00001 is truncated or damaged", out), out
    assert re.search(r"Restored generator from \S+ckpt-1 \(step 1\)", out)
    assert "Traceback" not in out
    made = "samples.npz" if mode == "sample" else "saved_model.pb"
    assert os.path.exists(os.path.join(out_dir, made)), os.listdir(out_dir)
    assert os.path.exists(newest + ".index")  # evaluation moves nothing
