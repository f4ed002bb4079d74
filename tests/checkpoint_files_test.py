"""Damage versus storage errors, the atomic write and the full disk."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from sagan_tf.training import checkpoint_files, checkpoints


@pytest.fixture
def saved(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(tf.range(5000, dtype=tf.float32))
    prefix = tf.train.Checkpoint(m=module).write(str(tmp_path / "ckpt-1"))
    return checkpoint_files.at(prefix)


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", [
    lambda c: os.truncate(c.prefix + ".index", 10),
    lambda c: os.truncate(c.prefix + ".data-00000-of-00001", 100),
    lambda c: _flip(c.prefix + ".data-00000-of-00001", 8000),
    lambda c: os.remove(c.prefix + ".data-00000-of-00001"),
])
def test_damage_is_named_as_damage(saved, damage):
    damage(saved)
    reason = checkpoint_files.problem(saved)
    assert reason and "truncated or damaged" in reason, reason


@pytest.mark.parametrize("error, kind", [
    (tf.errors.UnavailableError(None, None, "503"), "transient"),
    (tf.errors.InternalError(None, None, "HTTP 500"), "transient"),
    # The checkpoint reader hides the filesystem's code.
    (tf.errors.OpError(None, None, "HTTP 503 Service Unavailable", 2),
     "transient"),
    (tf.errors.PermissionDeniedError(None, None, "403"), "denied"),
    (tf.errors.OpError(None, None, "Checksum does not match", 2), "damage"),
    (tf.errors.DataLossError(None, None, "x"), "damage"),
    (IndexError("Read less bytes than requested"), "damage"),
])
def test_error_kind(error, kind):
    assert checkpoint_files.error_kind(error) == kind


def test_write_atomic_syncs_before_rename_and_removes_stale_temporaries(
    tmp_path, monkeypatch
):
    target = tmp_path / "config.json"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f"config.json.tmp-{dead}"
    live = tmp_path / f"config.json.tmp-{os.getppid()}"
    stale.write_text("half")
    live.write_text("being written")
    events = []
    real_fsync, real_rename = os.fsync, tf.io.gfile.rename
    monkeypatch.setattr(os, "fsync",
                        lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        tf.io.gfile, "rename",
        lambda *a, **k: events.append("rename") or real_rename(*a, **k))
    checkpoint_files.write_atomic(str(target), "{}\n")
    assert target.read_text() == "{}\n"
    assert events[:2] == ["fsync", "rename"]
    assert not stale.exists() and live.read_text() == "being written"


@pytest.mark.parametrize("message, disk_full", [
    ("ckpt-3_temp/part-0.data; No space left on device", True),
    ("OOM when allocating tensor with shape[4096,4096]", False),
])
def test_only_enospc_is_a_full_disk(tmp_path, monkeypatch, message,
                                    disk_full):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    step = tf.Variable(3, dtype=tf.int64)
    keeper = checkpoints.CheckpointKeeper(str(tmp_path), step, {"m": module},
                                          max_to_keep=2)

    def fail(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, message)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", fail)
    expected = (checkpoints.DiskFullError if disk_full
                else tf.errors.ResourceExhaustedError)
    with pytest.raises(expected) as caught:
        keeper.save()
    assert ("is full" in str(caught.value)) == disk_full


def test_one_read_restore_falls_back_whole_to_the_older_checkpoint(
    tmp_path
):
    module = tf.Module()
    module.vs = [tf.Variable(tf.fill([300], float(i))) for i in range(8)]
    step = tf.Variable(2, dtype=tf.int64)
    keeper = checkpoints.CheckpointKeeper(str(tmp_path), step,
                                          {"m": module}, max_to_keep=5)
    keeper.save()
    for v in module.vs:
        v.assign_add(tf.fill([300], 100.0))
    step.assign(4)
    newest = keeper.save()
    # Damage one tensor in the middle of ckpt-4's data file.
    data = newest + ".data-00000-of-00001"
    raw = tf.fill([300], 104.0).numpy().tobytes()
    with open(data, "rb") as f:
        offset = f.read().find(raw)
    assert offset >= 0
    _flip(data, offset + 600)
    for v in module.vs:
        v.assign(tf.fill([300], -1.0))
    warnings = []
    fresh = checkpoints.CheckpointKeeper(
        str(tmp_path), step, {"m": module}, max_to_keep=5,
        warn=warnings.append)
    assert fresh.restore_latest().endswith("ckpt-2")
    assert int(step.numpy()) == 2
    for i, v in enumerate(module.vs):
        assert (v.numpy() == i).all(), i
    assert "ckpt-4: its data file" in warnings[0]
    assert os.path.exists(os.path.join(
        str(tmp_path), checkpoint_files.UNREADABLE_DIR,
        "ckpt-4.data-00000-of-00001"))
