"""A resumed run equals the uninterrupted one, and two --deterministic runs
are equal (issue 17).

With `--seed`, training stopped at a checkpoint and resumed must write, at
every later checkpoint, exactly the tensors of the straight run: the noise
RNG and the input position are part of the checkpoint. Checked on one
replica (through train_imagenet.py's main, in this process) and on the two
logical CPUs of conftest.py. The reference is the straight run itself, read
back with the plain checkpoint reader.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import eval_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from tensorflow.python.framework import config as tf_config

from sagan_tf import config as config_lib
from sagan_tf.commands import train as train_command
from sagan_tf.data import pipeline
from sagan_tf.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, CLASSES, BATCH = 32, 4, 4
# 6 records: 1.5 batches an epoch, so the skipped batches (and, on two
# replicas, those of one step) cross epochs.
RECORDS = 6
TINY = [
    f"--image_size={SIZE}", "--gf_dim=8", "--df_dim=8", "--z_dim=16",
    f"--number_classes={CLASSES}", "--attention_resolution=16",
    f"--batch_size={BATCH}", "--shuffle_buffer_size=8",
    "--log_every_steps=100", "--save_checkpoint_steps=2",
    "--save_summaries_steps=100",
]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("records"))
    fx.write_records(data_dir, RECORDS, SIZE, CLASSES)
    return data_dir


def _config(*args, seed=True):
    fv = flags.FlagValues()
    train_command.define_flags(fv)
    fv(["train_imagenet.py", *TINY, *(["--seed=3"] if seed else []), *args])
    return fv


def _main(capsys, *args):
    """train_imagenet.py's main in this process: (exit status, output; ""
    without capsys)."""
    code = 0
    try:
        train_command.main(["train_imagenet.py"], _config(*args))
    except SystemExit as stop:
        code = stop.code
    if capsys is None:
        return code, ""
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        # Bookkeeping, not state: the save count, and the object graph
        # (which records it).
        if not name.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT"))
    }


def _assert_same_checkpoints(straight_dir, resumed_dir, steps):
    for step in steps:
        a = _tensors(os.path.join(straight_dir, f"ckpt-{step}"))
        b = _tensors(os.path.join(resumed_dir, f"ckpt-{step}"))
        assert sorted(a) == sorted(b)
        differ = [n for n in a if not np.array_equal(a[n], b[n])]
        assert not differ, (step, len(differ), len(a), differ[:5])


def _keep_only(run_dir, step):
    """A copy as left by a run stopped at `step` (SIGTERM, kill -9 after
    that save, or --max_steps): the later checkpoints removed."""
    for name in os.listdir(run_dir):
        if name.startswith("ckpt-") and int(
            name.split("-")[1].split(".")[0]
        ) > step:
            os.remove(os.path.join(run_dir, name))
    with open(os.path.join(run_dir, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "ckpt-{step}"\n')


@pytest.fixture(scope="module")
def straight_run(records, tmp_path_factory):
    """A --deterministic run of 4 steps (ckpt-2, ckpt-4) through main."""
    checkpoint_dir = str(tmp_path_factory.mktemp("straight"))
    code, out = _main(None, f"--data_dir={records}", "--max_steps=4",
                      f"--checkpoint_dir={checkpoint_dir}", "--deterministic")
    assert code == 0, out
    return checkpoint_dir


def test_resume_equals_straight_run_on_one_replica(
    records, straight_run, tmp_path, capsys
):
    resumed = str(tmp_path / "resumed")
    shutil.copytree(straight_run, resumed)
    resumed_run = os.path.join(resumed, f"imagenet_{BATCH}")
    _keep_only(resumed_run, 2)
    code, out = _main(capsys, f"--data_dir={records}", "--max_steps=4",
                      f"--checkpoint_dir={resumed}", "--deterministic")
    assert code == 0, out
    assert "resuming at global step 2" in out
    assert "skipping the 2 batch(es)" in out, out
    _assert_same_checkpoints(
        os.path.join(straight_run, f"imagenet_{BATCH}"), resumed_run, (4,))


def test_two_deterministic_runs_give_identical_variables(
    records, straight_run, tmp_path, capsys
):
    again = str(tmp_path / "again")
    code, out = _main(capsys, f"--data_dir={records}", "--max_steps=2",
                      f"--checkpoint_dir={again}", "--deterministic")
    assert code == 0, out
    _assert_same_checkpoints(
        os.path.join(straight_run, f"imagenet_{BATCH}"),
        os.path.join(again, f"imagenet_{BATCH}"), (2,))
    with open(os.path.join(again, f"imagenet_{BATCH}", "config.json")) as f:
        saved = json.load(f)
    assert saved["deterministic"] is True and saved["seed"] == 3
    assert saved["data"]["deterministic"] is True
    # The process-wide switch is back as it was.
    assert not tf_config.is_op_determinism_enabled()


def test_resume_equals_straight_run_on_two_replicas(
    records, tmp_path, two_cpu_strategy
):
    def run(checkpoint_dir):
        config = train_command.train_config_from_flags(_config(
            f"--data_dir={records}", f"--checkpoint_dir={checkpoint_dir}",
            "--max_steps=4",
        ))
        lines = []
        assert loop.run(config, strategy=two_cpu_strategy,
                        log=lines.append) == 4
        return "\n".join(lines)

    straight = str(tmp_path / "straight")
    run(straight)
    resumed = str(tmp_path / "resumed")
    shutil.copytree(straight, resumed)
    resumed_run = os.path.join(resumed, f"imagenet_{BATCH}")
    _keep_only(resumed_run, 2)
    out = run(resumed)
    assert "skipping the 2 batch(es)" in out, out
    _assert_same_checkpoints(
        os.path.join(straight, f"imagenet_{BATCH}"), resumed_run, (4,))


# train_imagenet.py that receives `signal` (a real one, sent to itself) as
# its third step starts: SIGTERM is caught, so step 3 ends and is saved;
# SIGKILL ends the process there, leaving ckpt-2 as the newest.
_SIGNALED_AT_STEP_3 = """
import os
import signal
import sys
from sagan_tf.training import updates

_init = updates.GANTrainer.__init__


def init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    step_fn, calls = self.train_step, []

    def train_step(iterator):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.{name})
        return step_fn(iterator)

    self.train_step = train_step


updates.GANTrainer.__init__ = init
sys.argv[0] = "train_imagenet.py"
from sagan_tf.commands import train
train.run()
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_resume_after_a_signal_equals_straight_run(
    records, straight_run, tmp_path, capsys, signal_name
):
    checkpoint_dir = str(tmp_path / "signaled")
    args = [f"--data_dir={records}", "--max_steps=4",
            f"--checkpoint_dir={checkpoint_dir}", "--deterministic"]
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNALED_AT_STEP_3.format(name=signal_name),
         *TINY, "--seed=3", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    out = proc.stdout + proc.stderr
    run_dir = os.path.join(checkpoint_dir, f"imagenet_{BATCH}")
    if signal_name == "SIGTERM":
        assert proc.returncode == 0, out
        assert "Received SIGTERM at global step 3; saving" in out, out
        resumed_from = 3
    else:
        assert proc.returncode == -signal.SIGKILL, out
        resumed_from = 2
    assert tf.train.latest_checkpoint(run_dir).endswith(
        f"ckpt-{resumed_from}"), out
    code, out = _main(capsys, *args)
    assert code == 0, out
    assert f"resuming at global step {resumed_from}" in out, out
    _assert_same_checkpoints(
        os.path.join(straight_run, f"imagenet_{BATCH}"), run_dir, (4,))
    assert f"skipping the {resumed_from} batch(es)" in out, out


def _batches(strategy, data_config, skip_steps, count):
    dataset = pipeline.distributed_dataset(
        strategy, data_config, image_size=SIZE, per_replica_batch_size=BATCH,
        num_classes=CLASSES, skip_steps=skip_steps,
    )
    iterator = iter(dataset)
    out = []
    for _ in range(count):
        images, labels = next(iterator)
        out.append([
            (image.numpy(), label.numpy())
            for image, label in zip(
                strategy.experimental_local_results(images),
                strategy.experimental_local_results(labels))
        ])
    return out


@pytest.mark.parametrize("replicas", [1, 2])
def test_first_batches_after_resume_are_the_straight_runs(
    records, replicas, request
):
    strategy = (tf.distribute.get_strategy() if replicas == 1
                else request.getfixturevalue("two_cpu_strategy"))
    data = config_lib.DataConfig(data_dir=records, shuffle_buffer_size=8,
                                 seed=3)
    straight = _batches(strategy, data, 0, 5)
    resumed = _batches(strategy, data, 3, 2)
    for seen, again in zip(straight[3:], resumed):
        assert len(seen) == len(again) == replicas
        for (images_a, labels_a), (images_b, labels_b) in zip(seen, again):
            np.testing.assert_array_equal(images_a, images_b)
            np.testing.assert_array_equal(labels_a, labels_b)
    # Not trivially so: the stream does not repeat batch after batch.
    assert not np.array_equal(straight[3][0][0], straight[4][0][0])


def _run_state_after_restore(checkpoint_dir, seed=True):
    """(log, skip steps, noise RNG state) of a start, up to the first step
    (no training, no tracing)."""
    config = train_command.train_config_from_flags(_config(
        f"--checkpoint_dir={checkpoint_dir}", "--ema_decay=0.9", seed=seed))
    lines = []
    run = loop._Loop(config, tf.distribute.get_strategy(), lines.append)
    try:
        skip = run._resume_run_state(run._restore())
        return "\n".join(lines), skip, run.trainer._rng.state.numpy()
    finally:
        run.close()


def _state_of_seed(seed):
    return tf.random.Generator.from_seed(seed).state.numpy()


def test_old_checkpoint_without_run_state_is_seeded_afresh(tmp_path):
    # v0.1 wrote the tiny configuration with --seed 3 at step 2.
    run_dir = tmp_path / "ck" / f"imagenet_{BATCH}"
    shutil.copytree(
        os.path.join(os.path.dirname(__file__), "testdata",
                     "checkpoint_v0_1"), run_dir)
    out, skip, state = _run_state_after_restore(str(tmp_path / "ck"))
    assert "resuming at global step 2" in out
    assert "holds no noise RNG or input position" in out, out
    assert skip == 0
    # As every start did before the RNG was saved: seed and step.
    np.testing.assert_array_equal(state, _state_of_seed(3 * 1_000_003 + 2))


def test_run_state_is_restored_with_seed_and_ignored_without(tmp_path):
    checkpoint_dir = str(tmp_path / "ck")
    config = train_command.train_config_from_flags(_config(
        f"--checkpoint_dir={checkpoint_dir}", "--ema_decay=0.9"))
    run = loop._Loop(config, tf.distribute.get_strategy(), print)
    try:
        run.trainer.step.assign(7)
        run.trainer.data_position.assign(5)
        run.trainer._rng.reset_from_seed(11)
        run.keeper.save()
    finally:
        run.close()

    out, skip, state = _run_state_after_restore(checkpoint_dir)
    assert "skipping the 5 batch(es)" in out, out
    assert skip == 5
    np.testing.assert_array_equal(state, _state_of_seed(11))

    # Without --seed a start is as before: fresh noise, the input from its
    # (unseeded) start.
    out, skip, state = _run_state_after_restore(checkpoint_dir, seed=False)
    assert "skipping" not in out and "noise RNG" not in out, out
    assert skip == 0
    assert not np.array_equal(state, _state_of_seed(11))
