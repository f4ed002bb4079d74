"""Every bad input gives one paragraph and a non-zero status, no traceback.

eval_imagenet.py's and train_imagenet.py's `main` run in this process
(several cases per TensorFlow start-up); the converter, whose flags would
clash with eval_imagenet.py's in one process, and the evaluator's endless
watching run as subprocesses. Each case checks the exit status, a message
naming the culprit, and that no traceback was printed; checkpoint cases
check that no pre-existing checkpoint file changed.
"""

import os
import re
import subprocess
import sys
import time

import eval_fixtures as fx
import numpy as np
import pytest
from absl import flags
from train_recovery_test import md5s, run_main

from sagan_tf import inception

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import eval_imagenet  # noqa: E402

MODEL = fx.tiny_model_config()
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
# The commands' own default log level, as a user gets it.
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)


def eval_main(capsys, *args):
    """eval_imagenet.py's main in this process: (exit status, output)."""
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["eval_imagenet.py", *args])
    code = 0
    try:
        eval_imagenet.main(["eval_imagenet.py"])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def one_paragraph_error(code, out, pattern):
    assert code == 1, out
    assert "Traceback" not in out, out
    assert re.search(pattern, out), out


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    data_dir = str(root / "data")
    fx.write_records(data_dir, 24, MODEL.image_size, MODEL.number_classes)
    graph = str(root / "standin.pb")
    inception.save_classifier_as_graphdef(fx.StandinClassifier(), graph)
    return root, data_dir, graph


def eval_flags(checkpoint_dir, data_dir, graph):
    return [
        f"--checkpoint_dir={checkpoint_dir}", "--batch_size=8",
        f"--data_dir={data_dir}", f"--inception_path={graph}",
        f"--image_size={MODEL.image_size}", f"--z_dim={MODEL.z_dim}",
        f"--gf_dim={MODEL.gf_dim}", f"--num_classes={MODEL.number_classes}",
        "--dcgan_generator_batch_size=10", "--seed=0",
        "--eval_sample_size=20", "--kid_sample_size=0",
    ]


def truncate(run_dir, step):
    (name,) = [n for n in os.listdir(run_dir)
               if n.startswith(f"ckpt-{step}.data")]
    path = os.path.join(run_dir, name)
    os.truncate(path, os.path.getsize(path) // 2)
    return name


def test_sample_and_export_without_checkpoint(assets, tmp_path, capsys):
    _, data_dir, graph = assets
    for mode in ("sample", "export"):
        code, out = eval_main(
            capsys, *eval_flags(tmp_path / "none", data_dir, graph),
            f"--mode={mode}", f"--sample_dir={tmp_path / 's'}",
            f"--export_dir={tmp_path / 'e'}")
        one_paragraph_error(
            code, out, r"eval_imagenet.py: error: no checkpoint in \S+"
            r"imagenet_8 \(--checkpoint_dir=.*Train first")


def test_sample_and_export_skip_a_truncated_newest_checkpoint(
    assets, tmp_path, capsys
):
    _, data_dir, graph = assets
    run_dir = str(tmp_path / "ck" / "imagenet_8")
    fx.write_checkpoint(run_dir, MODEL, step=10)
    fx.write_checkpoint(run_dir, MODEL, step=12)
    victim = truncate(run_dir, 12)
    before = md5s(run_dir)
    for mode in ("sample", "export"):
        code, out = eval_main(
            capsys, *eval_flags(tmp_path / "ck", data_dir, graph),
            f"--mode={mode}", f"--sample_dir={tmp_path / 's'}",
            f"--export_dir={tmp_path / 'e'}", "--num_npz_samples=4",
            "--samples_per_class=2", "--sample_classes=0,2")
        assert code == 0, out
        assert re.search(rf"WARNING: skipping checkpoint \S+ckpt-12: its "
                         rf"data file {re.escape(victim)} is truncated", out)
        assert re.search(r"Restored generator from \S+ckpt-10 \(step 10\)",
                         out), out
        assert "Traceback" not in out
    assert md5s(run_dir) == before
    assert os.path.exists(tmp_path / "e" / "saved_model.pb")


@pytest.mark.parametrize("kind", [
    "missing", "empty_folder", "other_file", "random_pb", "unreachable_url",
])
def test_bad_inception_path(assets, tmp_path, capsys, kind):
    _, data_dir, _ = assets
    expected = {
        "missing": r"--inception_path='\S+nope\.pb' does not exist",
        "empty_folder": r"--inception_path='\S+' is a folder without "
                        r"saved_model\.pb",
        "other_file": r"--inception_path='\S+notes\.txt' is a file but not "
                      r"a frozen GraphDef",
        "random_pb": r"--inception_path='\S+random\.pb'(: the frozen graph "
                     r"must have input| is not a frozen GraphDef)",
        "unreachable_url": r"Could not load the Inception classifier from "
                           r"--inception_path='http://127\.0\.0\.1:9/m'",
    }[kind]
    path = {"missing": str(tmp_path / "nope.pb"),
            "empty_folder": str(tmp_path / "module"),
            "other_file": str(tmp_path / "notes.txt"),
            "random_pb": str(tmp_path / "random.pb"),
            "unreachable_url": "http://127.0.0.1:9/m"}[kind]
    (tmp_path / "module").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "random.pb").write_bytes(
        np.random.default_rng(1).bytes(3000))
    code, out = eval_main(
        capsys, *eval_flags(tmp_path / "ck", data_dir, path),
        "--num_evals=1")
    one_paragraph_error(code, out, "eval_imagenet.py: error: " + expected)


def test_evaluator_skips_an_unreadable_checkpoint_and_a_bad_result_line(
    assets, tmp_path, capsys
):
    _, data_dir, graph = assets
    run_dir = str(tmp_path / "ck" / "imagenet_8")
    fx.write_checkpoint(run_dir, MODEL, step=10)
    fx.write_checkpoint(run_dir, MODEL, step=12)
    victim = truncate(run_dir, 10)  # evaluated first: oldest
    results = tmp_path / "ck" / "eval" / "imagenet_8" / "results.jsonl"
    results.parent.mkdir(parents=True)
    results.write_text('{"checkpoint": "ckpt-4", "st\n')
    before = md5s(run_dir)
    code, out = eval_main(
        capsys, *eval_flags(tmp_path / "ck", data_dir, graph),
        "--num_evals=1")
    assert code == 0, out
    assert re.search(rf"{re.escape(str(results))}, line 1, is not a "
                     r"result .*skipping it", out), out
    assert re.search(rf"WARNING: skipping checkpoint \S+ckpt-10: its data "
                     rf"file {re.escape(victim)} is truncated.*Watching "
                     r"for the next one", out), out
    assert re.search(r"Evaluating \S+ckpt-12 \(step 12\)", out), out
    assert "Traceback" not in out
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and '"checkpoint": "ckpt-12"' in lines[1]
    assert md5s(run_dir) == before


def test_evaluator_without_checkpoint_says_what_it_waits_for(
    assets, tmp_path
):
    _, data_dir, graph = assets
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "eval_imagenet.py"),
         *eval_flags(tmp_path / "ck", data_dir, graph),
         "--eval_interval_secs=1"],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    lines, waiting = [], 0
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            lines.append(line)
            waiting += line.startswith("Waiting for ")
            if waiting >= 2 or time.monotonic() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    out = "".join(lines)
    assert waiting >= 2, out
    assert re.search(r"Waiting for \S+imagenet_8 to appear \(no training "
                     r"has saved yet\); looking again in 1 s\.", out), out
    assert "Traceback" not in out
    # Start-up noise of a CPU machine is filtered.
    assert "cuInit" not in out and "cuda drivers" not in out, out


# train_imagenet.py ---------------------------------------------------------


@pytest.fixture(scope="module")
def records(assets):
    return assets[1]


TRAIN = ["--image_size=32", "--z_dim=16", "--number_classes=3",
         "--batch_size=4", "--max_steps=2"]


@pytest.mark.parametrize("flag,pattern", [
    ("--gf_dim=3", r"--gf_dim=3: G's self-attention block at 16x16 would "
                   r"get 6 channels, and needs a multiple of 8; use a "
                   r"--gf_dim that is a multiple of 4 \(for example 4\)"),
    ("--df_dim=3", r"--df_dim=3: D's self-attention block at 16x16 would "
                   r"get 3 channels, and needs a multiple of 8"),
])
def test_widths_are_checked_before_anything_is_written(
    records, tmp_path, capsys, flag, pattern
):
    checkpoint_dir = tmp_path / "ck"
    widths = {"--gf_dim=8", "--df_dim=8"} - {flag.replace("3", "8")}
    code, out = run_main(capsys, f"--data_dir={records}",
                         f"--checkpoint_dir={checkpoint_dir}", *TRAIN,
                         *widths, flag)
    one_paragraph_error(code, out, "train_imagenet.py: error: " + pattern)
    assert not checkpoint_dir.exists()


def test_checkpoint_dir_that_is_a_file(records, tmp_path, capsys):
    a_file = tmp_path / "ck"
    a_file.write_text("")
    code, out = run_main(capsys, f"--data_dir={records}",
                         f"--checkpoint_dir={a_file}", *TRAIN,
                         "--gf_dim=8", "--df_dim=8")
    one_paragraph_error(
        code, out, rf"error: --checkpoint_dir '{re.escape(str(a_file))}' "
        r"is a file, not a folder")


def test_empty_shards_say_no_records(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    for i in range(2):
        (empty / f"train-{i}.tfrecords").write_bytes(b"")
    code, out = run_main(capsys, f"--data_dir={empty}",
                         f"--checkpoint_dir={tmp_path / 'ck'}", *TRAIN,
                         "--gf_dim=8", "--df_dim=8")
    one_paragraph_error(code, out, r"error: no records in the 2 shard\(s\) "
                        rf"of --data_dir '{re.escape(str(empty))}'")
    # The failed start leaves no config.json to bind the next one.
    assert not (tmp_path / "ck" / "imagenet_4" / "config.json").exists()


# data/convert_imagenet.py --------------------------------------------------


def _convert(input_dir, output_dir):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "data", "convert_imagenet.py"),
         f"--input_dir={input_dir}", f"--output_dir={output_dir}",
         "--image_size=8", "--num_shards=2", "--num_workers=1"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )


def test_converter_output_dir_at_or_under_a_file(tmp_path):
    (tmp_path / "in" / "a").mkdir(parents=True)
    a_file = tmp_path / "f"
    a_file.write_text("")
    for output, pattern in [
        (a_file, r"--output_dir '\S+f' is a file, not a folder"),
        (a_file / "sub", r"--output_dir '\S+f/sub' cannot be created: "
                         r"'\S+f' is a file"),
    ]:
        proc = _convert(tmp_path / "in", output)
        one_paragraph_error(proc.returncode, proc.stdout + proc.stderr,
                            "convert_imagenet.py: error: " + pattern)


def test_converter_refuses_to_write_empty_shards(tmp_path):
    for name in ("cat", "dog"):
        (tmp_path / "in" / name).mkdir(parents=True)
        (tmp_path / "in" / name / "readme.txt").write_text("no image")
    out_dir = tmp_path / "out"
    proc = _convert(tmp_path / "in", out_dir)
    one_paragraph_error(
        proc.returncode, proc.stdout + proc.stderr,
        r"convert_imagenet.py: error: no readable image under --input_dir "
        r"'\S+in': all 2 file\(s\) in its class folders were skipped")
    assert not out_dir.exists() or not os.listdir(out_dir)
