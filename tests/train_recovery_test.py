"""train_imagenet.py never loses a run: checkpoint fallback, the run lock,
a full disk, a damaged config.json and SIGKILL.

The command's `main` runs in this process where it can (no TensorFlow
start-up per case); runs that stop before the first step cost no tracing.
Every case checks the exit status, a message naming the culprit, that no
traceback was printed, and that no checkpoint file that existed before the
run changed (md5).
"""

import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import eval_fixtures as fx
import pytest
import tensorflow as tf
from absl import flags
from tensorflow.python.training import py_checkpoint_reader

from sagan_tf.commands import train as train_command
from sagan_tf.training import (
    checkpoint_files,
    checkpoints,
    updates,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIZE, CLASSES, BATCH = 32, 4, 4
TINY = [
    f"--image_size={SIZE}", "--gf_dim=8", "--df_dim=8", "--z_dim=16",
    f"--number_classes={CLASSES}", "--attention_resolution=16",
    f"--batch_size={BATCH}", "--shuffle_buffer_size=64", "--seed=3",
    "--log_every_steps=1", "--save_checkpoint_steps=2",
]


def _parse(*args, command=train_command, program="train_imagenet.py"):
    fv = flags.FlagValues()
    command.define_flags(fv)
    fv([program, *args])
    return fv


def run_main(capsys, *args, command=train_command,
             program="train_imagenet.py"):
    """A command's main in this process (train_imagenet.py unless
    `command`, a sagan_tf.commands module, says otherwise): (exit status,
    output)."""
    fv = _parse(*args, command=command, program=program)
    code = 0
    try:
        command.main([program], fv)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def md5s(directory):
    """{file name: md5} of the checkpoint files under `directory`, any
    depth (moved-aside files keep their names)."""
    sums = {}
    for root, _, names in os.walk(directory):
        for name in names:
            if name.startswith("ckpt-"):
                with open(os.path.join(root, name), "rb") as f:
                    sums[name] = hashlib.md5(f.read()).hexdigest()
    return sums


def assert_unchanged(before, directory):
    after = md5s(directory)
    for name, digest in before.items():
        assert after.get(name) == digest, name


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("records"))
    fx.write_records(data_dir, 32, SIZE, CLASSES)
    return data_dir


@pytest.fixture(scope="module")
def base_run(records, tmp_path_factory):
    """A run directory with ckpt-2 and ckpt-4 of the full training state,
    saved without training (no tracing)."""
    checkpoint_dir = str(tmp_path_factory.mktemp("base") / "ck")
    config = train_command.train_config_from_flags(_parse(
        f"--data_dir={records}", f"--checkpoint_dir={checkpoint_dir}", *TINY
    ))
    save_untrained_run(config)
    return checkpoint_dir


def save_untrained_run(config):
    """ckpt-2 and ckpt-4 of the full training state of `config`, and its
    config.json, saved without training (no tracing); returns the run
    directory."""
    run_dir = checkpoints.run_dir(config)
    gan = updates.GANTrainer(config, tf.distribute.get_strategy())
    keeper = checkpoints.CheckpointKeeper(
        run_dir, gan.step, gan.checkpoint_objects(), max_to_keep=5
    )
    for step in (2, 4):
        gan.step.assign(step)
        keeper.save()
    checkpoints.write_config(run_dir, config)
    return run_dir


def copy_run(base_run, tmp_path):
    checkpoint_dir = str(tmp_path / "ck")
    shutil.copytree(base_run, checkpoint_dir)
    return checkpoint_dir, os.path.join(checkpoint_dir, f"imagenet_{BATCH}")


def flags_for(records, checkpoint_dir, *extra):
    return [f"--data_dir={records}", f"--checkpoint_dir={checkpoint_dir}",
            *TINY, *extra]


@pytest.fixture(scope="module")
def newest_deleted_then_disk_full(records, base_run, tmp_path_factory):
    """ckpt-4 deleted, as a user would after a crash; the run falls back to
    ckpt-2, trains to step 4 and meets a full disk when saving there."""
    checkpoint_dir, run_dir = copy_run(
        base_run, tmp_path_factory.mktemp("deleted"))
    for name in os.listdir(run_dir):
        if name.startswith("ckpt-4."):
            os.remove(os.path.join(run_dir, name))
    before = md5s(run_dir)

    real_save = tf.train.CheckpointManager.save

    def full_disk(manager, checkpoint_number=None, **kwargs):
        # What SaveV2 leaves when the disk fills: a partial temp folder.
        temp = os.path.join(run_dir, f"ckpt-{checkpoint_number}_temp")
        os.makedirs(temp, exist_ok=True)
        with open(os.path.join(temp, "part-00000-of-00001.data-00000-of-"
                               "00001"), "wb") as f:
            f.write(b"\0" * 100)
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{temp}/part-00000-of-00001.data-00000-of-00001; "
            "No space left on device")

    patch = pytest.MonkeyPatch()
    patch.setattr(tf.train.CheckpointManager, "save", full_disk)
    fv = _parse(*flags_for(records, checkpoint_dir, "--max_steps=6"))
    out, code = io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            train_command.main(["train_imagenet.py"], fv)
    except SystemExit as stop:
        code = stop.code
    finally:
        patch.undo()
    assert tf.train.CheckpointManager.save is real_save
    return run_dir, before, code, out.getvalue()


def test_missing_newest_checkpoint_falls_back_to_older_one(
    newest_deleted_then_disk_full
):
    run_dir, before, _, out = newest_deleted_then_disk_full
    assert "skipping checkpoint ckpt-4" in out and "files are gone" in out
    assert "resuming at global step 2" in out, out
    assert "starting at step 0" not in out
    assert re.search(r"^step 4/6 ", out, re.M), out
    assert "Traceback" not in out
    assert_unchanged(before, run_dir)


def test_disk_full_names_the_last_intact_checkpoint(
    newest_deleted_then_disk_full
):
    run_dir, before, code, out = newest_deleted_then_disk_full
    assert code == 1, out
    ckpt2 = os.path.join(run_dir, "ckpt-2")
    assert re.search(
        r"train_imagenet.py: error: the disk holding \S+ is full: saving "
        r"checkpoint ckpt-4 at global step 4 failed .* The last intact "
        rf"checkpoint is {re.escape(ckpt2)}\.", out), out
    assert not os.path.exists(os.path.join(run_dir, "ckpt-4_temp"))
    assert "Traceback" not in out
    assert_unchanged(before, run_dir)


@pytest.mark.parametrize("damaged", ["data", "index"])
def test_truncated_newest_checkpoint_is_skipped_and_moved_aside(
    records, base_run, tmp_path, capsys, damaged
):
    checkpoint_dir, run_dir = copy_run(base_run, tmp_path)
    (victim,) = [n for n in os.listdir(run_dir)
                 if n.startswith("ckpt-4.") and damaged in n]
    path = os.path.join(run_dir, victim)
    os.truncate(path, os.path.getsize(path) // 2)
    before = md5s(run_dir)
    # --max_steps 2: the fallback reaches it, so no step runs.
    code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                            "--max_steps=2"))
    assert code == 0, out
    assert re.search(rf"WARNING: skipping checkpoint \S+ckpt-4: its "
                     rf"{damaged} file {re.escape(victim)} is truncated", out)
    assert "resuming at global step 2" in out
    aside = os.path.join(run_dir, checkpoint_files.UNREADABLE_DIR)
    assert victim in os.listdir(aside)
    assert "Traceback" not in out
    assert_unchanged(before, run_dir)
    state = tf.train.get_checkpoint_state(run_dir)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths
            ] == ["ckpt-2"]


def test_no_readable_checkpoint_stops_and_start_over_moves_all_aside(
    records, base_run, tmp_path, capsys
):
    checkpoint_dir, run_dir = copy_run(base_run, tmp_path)
    for name in os.listdir(run_dir):
        if name.startswith("ckpt-") and name.endswith(".index"):
            os.truncate(os.path.join(run_dir, name), 10)
    before = md5s(run_dir)
    code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                            "--max_steps=6"))
    assert code == 1, out
    assert "error: none of the 2 checkpoint(s) in" in out
    assert "ckpt-4 (" in out and "ckpt-2 (" in out and "--start_over" in out
    assert "Traceback" not in out
    assert sorted(md5s(run_dir)) == sorted(before)  # nothing moved
    assert_unchanged(before, run_dir)

    # --start_over moves everything aside and starts at step 0. The data
    # folder holds only empty shards, so the run stops before tracing.
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train-0.tfrecords").write_bytes(b"")
    code, out = run_main(capsys, f"--data_dir={empty}",
                         *flags_for(records, checkpoint_dir,
                                    "--max_steps=6", "--start_over")[1:])
    assert "--start_over: moved the files of" in out, out
    assert "starting at step 0" in out
    (aside,) = [n for n in os.listdir(run_dir) if n.startswith("set_aside_")]
    assert sorted(md5s(os.path.join(run_dir, aside))) == sorted(before)
    assert_unchanged(before, run_dir)
    assert code == 1 and "no records in the 1 shard(s)" in out, out


def _flaky_reader(monkeypatch, error, failures):
    """The checkpoint reader that every checkpoint read opens (checks and
    restores) raising `error` on its first `failures` calls: a storage
    fault under the checkpoint code. Returns the calls."""
    real, calls = py_checkpoint_reader.NewCheckpointReader, []

    def flaky(prefix):
        calls.append(prefix)
        if len(calls) <= failures:
            raise error(None, None, f"{prefix}.index; injected fault")
        return real(prefix)

    monkeypatch.setattr(py_checkpoint_reader, "NewCheckpointReader", flaky)
    return calls


def _layout(run_dir):
    return sorted(
        os.path.relpath(os.path.join(root, name), run_dir)
        for root, _, names in os.walk(run_dir) for name in names
        if name.startswith("ckpt-")
    )


@pytest.mark.parametrize("error", [
    tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
])
def test_passing_storage_error_is_retried_not_taken_for_damage(
    records, base_run, tmp_path, capsys, monkeypatch, error
):
    checkpoint_dir, run_dir = copy_run(base_run, tmp_path)
    before, layout = md5s(run_dir), _layout(run_dir)
    calls = _flaky_reader(monkeypatch, error, failures=2)
    code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                            "--max_steps=4"))
    assert code == 0 and "resuming at global step 4" in out, out
    assert len(calls) >= 3 and "skipping" not in out
    assert _layout(run_dir) == layout
    assert_unchanged(before, run_dir)


@pytest.mark.parametrize("error, tries", [
    (tf.errors.UnavailableError, None),
    (tf.errors.PermissionDeniedError, 1),
])
def test_lasting_storage_error_stops_and_moves_nothing(
    records, base_run, tmp_path, capsys, monkeypatch, error, tries
):
    checkpoint_dir, run_dir = copy_run(base_run, tmp_path)
    before, layout = md5s(run_dir), _layout(run_dir)
    calls = _flaky_reader(monkeypatch, error, failures=10**6)
    code, out = run_main(capsys, *flags_for(
        records, checkpoint_dir, "--max_steps=6",
        "--storage_retry_secs=0.6"))
    assert code == 1, out
    ckpt4 = os.path.join(run_dir, "ckpt-4")
    assert re.search(
        rf"error: reading {re.escape(ckpt4)} failed with {error.__name__} "
        r"\(.*injected fault\).* not evidence that the files are damaged: "
        r"nothing was moved", out), out
    if tries is None:
        assert len(calls) > 1 and "--storage_retry_secs" in out
    else:
        assert len(calls) == tries and "read access" in out
    assert "skipping" not in out and "Traceback" not in out
    assert _layout(run_dir) == layout
    assert not os.path.exists(
        os.path.join(run_dir, checkpoint_files.UNREADABLE_DIR))
    assert_unchanged(before, run_dir)


def test_damaged_config_json_is_named(records, base_run, tmp_path, capsys):
    checkpoint_dir, run_dir = copy_run(base_run, tmp_path)
    config_path = os.path.join(run_dir, "config.json")
    with open(config_path, "w") as f:
        f.write('{"model": {"image_size": 3')
    before = md5s(run_dir)
    code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                            "--max_steps=4"))
    assert code == 1, out
    assert f"error: {config_path} is damaged" in out
    assert "Traceback" not in out
    assert_unchanged(before, run_dir)


def test_second_trainer_exits_naming_the_holder(
    records, base_run, tmp_path, capsys
):
    checkpoint_dir, run_dir = copy_run(base_run, tmp_path)
    before = md5s(run_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from sagan_tf.training.run_lock import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); "
         "time.sleep(120)", run_dir],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                                "--max_steps=4"))
        assert code == 1, out
        assert f"error: another trainer is using {run_dir}" in out
        assert f"PID {holder.pid}" in out and "host " in out
        assert "Traceback" not in out
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # A killed holder leaves no stale lock.
    code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                            "--max_steps=4"))
    assert code == 0 and "nothing to do" in out, out
    assert_unchanged(before, run_dir)


def test_default_attention_resolution_at_32_pixels_is_resolved(
    records, base_run, tmp_path, capsys
):
    checkpoint_dir, _ = copy_run(base_run, tmp_path)
    args = [a for a in flags_for(records, checkpoint_dir, "--max_steps=4")
            if not a.startswith("--attention_resolution")]
    code, out = run_main(capsys, *args)
    assert code == 0, out
    assert "--attention_resolution auto: 16 at --image_size 32." in out
    assert "resuming at global step 4" in out


def _train_process(records, checkpoint_dir, max_steps):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train_imagenet.py"),
         *flags_for(records, checkpoint_dir, f"--max_steps={max_steps}")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def _read_until(proc, pattern):
    lines = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line) or time.monotonic() > deadline:
            break
    return "".join(lines)


def test_sigkill_twice_then_resume(records, tmp_path):
    checkpoint_dir = str(tmp_path / "ck")
    run_dir = os.path.join(checkpoint_dir, f"imagenet_{BATCH}")
    # A config.json left by a start that failed (other flags, no
    # checkpoint) does not bind this run.
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write('{"model": {"image_size": 64, "gf_dim": 3}}')

    # 1: killed while training, after the save at step 2.
    proc = _train_process(records, checkpoint_dir, 1000)
    out = _read_until(proc, r"^step 3/")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "starting at step 0" in out and "step 3/" in out, out
    first = [c.step for c in checkpoint_files.find(run_dir) if c.complete]
    assert first and max(first) >= 2

    # 2: killed just after restoring, before the first step.
    proc = _train_process(records, checkpoint_dir, 1000)
    out = _read_until(proc, r"resuming at global step")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"resuming at global step {max(first)}" in out, out

    before = md5s(run_dir)
    newest = max(c.step for c in checkpoint_files.find(run_dir)
                 if c.complete)
    proc = _train_process(records, checkpoint_dir, newest + 2)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"resuming at global step {newest}" in out
    assert "Traceback" not in out
    assert_unchanged(before, run_dir)
    for found in checkpoint_files.find(run_dir):
        assert checkpoint_files.problem(found) is None, found
    latest = tf.train.latest_checkpoint(run_dir)
    assert latest.endswith(f"ckpt-{newest + 2}")


def test_remote_filesystem_resume_moves_aside_without_a_lock(
    records, base_run, capsys
):
    # TF's in-memory filesystem stands in for gs://: no flock, moves by
    # tf.io.gfile.rename, the state file rewritten through gfile.
    checkpoint_dir = f"ram://recovery_{os.getpid()}/ck"
    run_dir = f"{checkpoint_dir}/imagenet_{BATCH}"
    local = os.path.join(base_run, f"imagenet_{BATCH}")
    tf.io.gfile.makedirs(run_dir)
    before = {}
    for name in os.listdir(local):
        with open(os.path.join(local, name), "rb") as f:
            data = f.read()
        if name.startswith("ckpt-4.data"):
            data = data[: len(data) // 2]
        with tf.io.gfile.GFile(f"{run_dir}/{name}", "wb") as f:
            f.write(data)
        if name.startswith("ckpt-"):
            before[name] = hashlib.md5(data).hexdigest()
    code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                            "--max_steps=2"))
    assert code == 0, out
    assert re.search(r"skipping checkpoint ram://\S+ckpt-4: its data file "
                     r"ckpt-4.data-00000-of-00001 is truncated", out), out
    assert "resuming at global step 2" in out and "Traceback" not in out
    aside = f"{run_dir}/{checkpoint_files.UNREADABLE_DIR}"
    assert sorted(tf.io.gfile.listdir(aside)) == sorted(
        n for n in before if n.startswith("ckpt-4."))
    for name, digest in before.items():
        path = (f"{aside}/{name}" if name.startswith("ckpt-4.")
                else f"{run_dir}/{name}")
        with tf.io.gfile.GFile(path, "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == digest, name
    assert not tf.io.gfile.exists(f"{run_dir}/.trainer.lock")
    state = tf.train.get_checkpoint_state(run_dir)
    assert os.path.basename(state.model_checkpoint_path) == "ckpt-2"
