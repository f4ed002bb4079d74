"""Two worker processes under TF_CONFIG resume from the chief's choice.

Only the chief inspects and moves checkpoint files; the step it picks
reaches the other worker through a collective before either restores.
Each case runs `train_imagenet.py` twice on localhost ports (one cluster of
two workers), so the file is slow (~1 min); it runs in `make test`.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import eval_fixtures as fx
import pytest
import tensorflow as tf
from absl import flags
from train_imagenet_test import free_ports
from train_recovery_test import save_untrained_run

from sagan_tf.commands import train as train_command
from sagan_tf.training import checkpoint_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, CLASSES, BATCH = 32, 4, 4
TIMEOUT = 420
TINY = [
    f"--image_size={SIZE}", "--gf_dim=8", "--df_dim=8", "--z_dim=16",
    f"--number_classes={CLASSES}", "--generator_type=baseline",
    "--discriminator_type=baseline", f"--batch_size={BATCH}",
    "--shuffle_buffer_size=64", "--seed=3", "--log_every_steps=1",
    "--save_checkpoint_steps=2",
]


def _flags(records, checkpoint_dir, *extra):
    return [f"--data_dir={records}", f"--checkpoint_dir={checkpoint_dir}",
            *TINY, *extra]



# Worker 1 as train_imagenet.py, with every checkpoint read refused: a
# storage fault on that machine only.
_DENIED = """
import sys
import tensorflow as tf
from tensorflow.python.training import py_checkpoint_reader


def deny(prefix):
    raise tf.errors.PermissionDeniedError(None, None, prefix + ": injected")


py_checkpoint_reader.NewCheckpointReader = deny
sys.argv[0] = "train_imagenet.py"
from sagan_tf.commands import train
train.run()
"""

# A worker as train_imagenet.py that is killed (SIGKILL, no clean-up) as
# soon as it starts to restore a checkpoint: a machine lost mid-restore.
_KILLED_IN_RESTORE = """
import os
import signal
import sys
from sagan_tf.training import checkpoints


def die(self, prefix):
    print("injected: SIGKILL while restoring " + prefix, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


checkpoints.CheckpointKeeper.restore = die
sys.argv[0] = "train_imagenet.py"
from sagan_tf.commands import train
train.run()
"""


def _two_workers(args, second=None, first=None):
    """Runs train_imagenet.py as workers 0 and 1 (worker 0 as the Python
    program `first`, worker 1 as `second`, when given).

    Returns:
      [(exit status, output, seconds from start to exit)] per worker; a
      worker still running after TIMEOUT seconds is killed (status -9).
    """
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs, logs = [], []
    for index in range(2):
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({
                       "cluster": {"worker": workers},
                       "task": {"type": "worker", "index": index},
                   }))
        program = [os.path.join(ROOT, "train_imagenet.py")]
        code = (first, second)[index]
        if code:
            program = ["-c", code]
        logs.append(tempfile.TemporaryFile("w+"))
        procs.append(subprocess.Popen(
            [sys.executable, *program, *args],
            cwd=ROOT, env=env, stdout=logs[-1], stderr=subprocess.STDOUT,
            text=True,
        ))
    start = time.monotonic()
    ended = [None, None]
    try:
        # Polled, so each worker's exit time is its own.
        while None in ended and time.monotonic() - start < TIMEOUT:
            for index, proc in enumerate(procs):
                if ended[index] is None and proc.poll() is not None:
                    ended[index] = time.monotonic() - start
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    results = []
    for proc, log, seconds in zip(procs, logs, ended):
        proc.wait()
        log.seek(0)
        results.append((proc.returncode, log.read(),
                        TIMEOUT if seconds is None else seconds))
        log.close()
    return results


def _md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("records"))
    fx.write_records(data_dir, 32, SIZE, CLASSES)
    return data_dir


@pytest.fixture
def run_with_damaged_newest(records, tmp_path):
    """ckpt-2 and ckpt-4 of the full training state (saved without
    training), ckpt-4's data file cut short."""
    checkpoint_dir = str(tmp_path / "ck")
    fv = flags.FlagValues()
    train_command.define_flags(fv)
    fv(["train_imagenet.py", *_flags(records, checkpoint_dir)])
    run_dir = save_untrained_run(train_command.train_config_from_flags(fv))
    (data,) = [n for n in os.listdir(run_dir)
               if n.startswith("ckpt-4.data")]
    os.truncate(os.path.join(run_dir, data), 100)
    return checkpoint_dir, run_dir


def test_workers_resume_from_the_chiefs_choice_then_start_over_together(
    records, run_with_damaged_newest
):
    checkpoint_dir, run_dir = run_with_damaged_newest
    before = {n: _md5(os.path.join(run_dir, n)) for n in os.listdir(run_dir)
              if n.startswith("ckpt-")}

    # The newest checkpoint is damaged: both resume from ckpt-2.
    results = _two_workers(_flags(records, checkpoint_dir, "--max_steps=4"))
    for code, out, _ in results:
        assert code == 0, out
        assert "resuming at global step 2" in out, out
        assert re.search(r"^step 4/4 ", out, re.M), out
        assert "Traceback" not in out
    (_, chief, _), (_, worker, _) = results
    assert re.search(r"WARNING: skipping checkpoint \S+ckpt-4: its data "
                     r"file \S+ is truncated", chief), chief
    # Only the chief looks at the files.
    assert "skipping" not in worker and "moved the" not in worker, worker
    aside = os.path.join(run_dir, checkpoint_files.UNREADABLE_DIR)
    for name, digest in before.items():
        where = aside if name.startswith("ckpt-4.") else run_dir
        assert _md5(os.path.join(where, name)) == digest, name
    steps = [re.search(r"^step 4/4 .*", out, re.M).group(0)
             for _, out, _ in results]
    strip = [re.sub(r"\s+\S+ img/s.*", "", line) for line in steps]
    assert strip[0] == strip[1]  # same weights, same global losses

    # --start_over: the chief sets the run aside, both start at step 0.
    results = _two_workers(_flags(records, checkpoint_dir, "--max_steps=2",
                                  "--start_over"))
    for code, out, _ in results:
        assert code == 0, out
        assert "starting at step 0" in out and "resuming" not in out, out
        assert re.search(r"^step 2/2 ", out, re.M), out
        assert "Traceback" not in out
    assert "--start_over: moved the files of" in results[0][1]
    assert "moved the files" not in results[1][1]
    for _, out, _ in results:
        assert "CollectiveAllReduceStrategy with 2 replica(s)" in out, out
    # Synchronous training from step 0: the same global losses.
    steps = [re.search(r"^step 2/2 .*", out, re.M).group(0)
             for _, out, _ in results]
    assert len({re.sub(r"\s+\S+ img/s.*", "", line) for line in steps}) == 1
    # Worker 1's scratch checkpoints are deleted after each save.
    assert not [n for n in os.listdir(run_dir) if n.startswith(".worker")]
    (folder,) = [n for n in os.listdir(run_dir) if n.startswith("set_aside")]
    assert _md5(os.path.join(run_dir, folder, "ckpt-2.index")) == (
        before["ckpt-2.index"])
    latest = tf.train.latest_checkpoint(run_dir)
    assert latest.endswith("ckpt-2")


def test_a_worker_that_cannot_read_the_choice_stops_them_all(
    records, run_with_damaged_newest
):
    checkpoint_dir, run_dir = run_with_damaged_newest
    # The chief sets the damaged ckpt-4 aside and chooses ckpt-2 before
    # this run starts; worker 1 then cannot read ckpt-2.
    before = {n: _md5(os.path.join(run_dir, n)) for n in os.listdir(run_dir)
              if n.startswith("ckpt-2.")}
    (chief_code, chief, _), (worker_code, worker, _) = _two_workers(
        _flags(records, checkpoint_dir, "--max_steps=4"), second=_DENIED)
    ckpt2 = re.escape(os.path.join(run_dir, "ckpt-2"))
    assert worker_code == 1, worker
    assert re.search(
        rf"error: the chief chose {ckpt2} to resume from, but this worker "
        r"could not read it \(reading \S+ failed with PermissionDeniedError"
        r".*All workers stop here", worker), worker
    assert chief_code == 1, chief
    assert re.search(
        rf"error: the chief chose {ckpt2} to resume from, but another "
        r"worker could not read it; its output says why", chief), chief
    for out in (chief, worker):
        assert "Traceback" not in out and not re.search(r"^step ", out, re.M)
    for name, digest in before.items():
        assert _md5(os.path.join(run_dir, name)) == digest, name


# The chief killed: a worker killed stops the chief the same way, through
# the same collective (kept out of `make test` for its time).
@pytest.mark.parametrize("killed", [0], ids=["chief"])
def test_a_worker_killed_during_the_restore_stops_the_other(
    records, run_with_damaged_newest, killed
):
    """kill -9 of one worker while it restores: the other one stops soon,
    with one paragraph, instead of waiting in the collective forever."""
    checkpoint_dir, run_dir = run_with_damaged_newest
    ckpt2 = {n: _md5(os.path.join(run_dir, n)) for n in os.listdir(run_dir)
             if n.startswith("ckpt-2.")}
    programs = {("first", "second")[killed]: _KILLED_IN_RESTORE}
    results = _two_workers(
        _flags(records, checkpoint_dir, "--max_steps=4"), **programs)
    dead_code, dead, died_at = results[killed]
    code, out, ended_at = results[1 - killed]
    assert dead_code == -9 and "injected: SIGKILL" in dead, dead
    # TF's coordination service notices a lost worker by its heartbeats
    # (10 s) or by the broken connection.
    assert code == 1, out
    assert ended_at - died_at < 120, (died_at, ended_at, out)
    assert re.search(
        r"error: lost the other workers while agreeing on the checkpoint "
        r"to resume from in \S+imagenet_4 \(\w+Error: [^\n]*\b"
        r"(heartbeats|Connection reset|Socket closed|connect)", out), out
    assert "Detected at node" not in out and "Traceback" not in out, out
    assert not re.search(r"^step ", out, re.M), out
    for name, digest in ckpt2.items():
        assert _md5(os.path.join(run_dir, name)) == digest, name
