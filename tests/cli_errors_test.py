"""Every bad input gives one paragraph and a non-zero status, no traceback.

train_imagenet.py's `main` runs in this process; eval_imagenet.py's runs
for every case in one subprocess (its flags are global and would clash
with other commands' here); the converter and the evaluator's endless
watching run as subprocesses of their own. Each case checks the exit
status, a message naming the culprit, and that no traceback was printed;
checkpoint cases check that no pre-existing checkpoint file changed.
"""

import json
import os
import re
import subprocess
import sys
import time

import eval_fixtures as fx
import numpy as np
import pytest
from train_recovery_test import md5s, run_main

from sagan_tf.evaluation import inception

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = fx.tiny_model_config()
ENV = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
# The commands' own default log level, as a user gets it.
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)


# Runs eval_imagenet.py's main once per argv list, in one process started
# as a user's would be (its start-up filter owns file descriptor 2).
_DRIVER = r"""
import contextlib, io, json, sys
from absl import flags
from sagan_tf.commands import evaluate
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    fv = flags.FlagValues()
    evaluate.define_flags(fv)
    fv(["eval_imagenet.py", *argv])
    out, code = io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            evaluate.main(["eval_imagenet.py"], fv)
        except SystemExit as stop:
            code = stop.code
    results[name] = [code, out.getvalue()]
print("RESULTS" + json.dumps(results))
"""


def run_eval_cases(cases):
    """{name: argv} -> {name: (exit status, output)}."""
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(cases)], cwd=ROOT,
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    marker = proc.stdout.rfind("RESULTS")
    assert marker >= 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout[marker + len("RESULTS"):])


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


INCEPTION_ERRORS = {
    "missing": r"--inception_path='\S+nope\.pb' does not exist",
    "empty_folder": r"--inception_path='\S+' is a folder without "
                    r"saved_model\.pb",
    "other_file": r"--inception_path='\S+notes\.txt' is a file but not a "
                  r"frozen GraphDef",
    "random_pb": r"--inception_path='\S+random\.pb'(: the frozen graph "
                 r"must have input| is not a frozen GraphDef)",
    "unreachable_url": r"Could not load the Inception classifier from "
                       r"--inception_path='http://127\.0\.0\.1:9/m'",
}


@pytest.fixture(scope="module")
def eval_runs(assets, tmp_path_factory):
    """Every eval_imagenet.py case, run in one process."""
    _, data_dir, graph = assets
    t = tmp_path_factory.mktemp("eval_cases")
    cases, info = {}, {}
    outputs = [f"--sample_dir={t / 's'}", f"--export_dir={t / 'e'}",
               "--num_npz_samples=4", "--samples_per_class=2",
               "--sample_classes=0,2"]
    for mode in ("sample", "export"):
        cases[f"none_{mode}"] = [*eval_flags(t / "none", data_dir, graph),
                                 f"--mode={mode}", *outputs]
    # Newest checkpoint cut short: sample and export fall back.
    run_dir = str(t / "trunc" / "imagenet_8")
    fx.write_checkpoint(run_dir, MODEL, step=10)
    fx.write_checkpoint(run_dir, MODEL, step=12)
    info["trunc"] = (run_dir, truncate(run_dir, 12), md5s(run_dir))
    for mode in ("sample", "export"):
        cases[f"trunc_{mode}"] = [*eval_flags(t / "trunc", data_dir, graph),
                                  f"--mode={mode}", *outputs]
    (t / "module").mkdir()
    (t / "notes.txt").write_text("not a model")
    (t / "random.pb").write_bytes(np.random.default_rng(1).bytes(3000))
    paths = {"missing": str(t / "nope.pb"), "empty_folder": str(t / "module"),
             "other_file": str(t / "notes.txt"),
             "random_pb": str(t / "random.pb"),
             "unreachable_url": "http://127.0.0.1:9/m"}
    for kind, path in paths.items():
        cases[f"inception_{kind}"] = [
            *eval_flags(t / "ck0", data_dir, path), "--num_evals=1"]
    # Watching: the newest checkpoint is cut short, a result line damaged.
    run_dir = str(t / "watch" / "imagenet_8")
    fx.write_checkpoint(run_dir, MODEL, step=10)
    fx.write_checkpoint(run_dir, MODEL, step=12)
    victim = truncate(run_dir, 12)
    results = t / "watch" / "eval" / "imagenet_8" / "results.jsonl"
    results.parent.mkdir(parents=True)
    results.write_text('{"checkpoint": "ckpt-4", "st\n')
    info["watch"] = (run_dir, victim, md5s(run_dir), results)
    cases["watch"] = [*eval_flags(t / "watch", data_dir, graph),
                      "--num_evals=1"]
    return run_eval_cases(cases), info, t


def test_sample_and_export_without_checkpoint(eval_runs):
    for mode in ("sample", "export"):
        code, out = eval_runs[0][f"none_{mode}"]
        one_paragraph_error(
            code, out, r"eval_imagenet.py: error: no checkpoint in \S+"
            r"imagenet_8 \(--checkpoint_dir=.*Train first")


def test_sample_and_export_skip_a_truncated_newest_checkpoint(eval_runs):
    results, info, t = eval_runs
    run_dir, victim, before = info["trunc"]
    for mode in ("sample", "export"):
        code, out = results[f"trunc_{mode}"]
        assert code == 0, out
        assert re.search(rf"WARNING: skipping checkpoint \S+ckpt-12: its "
                         rf"data file {re.escape(victim)} is truncated", out)
        assert re.search(r"Restored generator from \S+ckpt-10 \(step 10\)",
                         out), out
        assert "Traceback" not in out
    assert md5s(run_dir) == before
    assert os.path.exists(t / "e" / "saved_model.pb")


@pytest.mark.parametrize("kind", sorted(INCEPTION_ERRORS))
def test_bad_inception_path(eval_runs, kind):
    code, out = eval_runs[0][f"inception_{kind}"]
    one_paragraph_error(code, out,
                        "eval_imagenet.py: error: " + INCEPTION_ERRORS[kind])


def test_evaluator_skips_an_unreadable_checkpoint_and_a_bad_result_line(
    eval_runs
):
    code, out = eval_runs[0]["watch"]
    run_dir, victim, before, results = eval_runs[1]["watch"]
    assert code == 0, out
    assert re.search(rf"{re.escape(str(results))}, line 1, is not a "
                     r"result .*skipping it", out), out
    assert re.search(rf"WARNING: skipping checkpoint \S+ckpt-12: its data "
                     rf"file {re.escape(victim)} is truncated.*Taking the "
                     r"next older one", out), out
    assert re.search(r"Evaluating \S+ckpt-10 \(step 10\)", out), out
    assert "Traceback" not in out
    lines = results.read_text().splitlines()
    assert len(lines) == 2 and '"checkpoint": "ckpt-10"' in lines[1]
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
