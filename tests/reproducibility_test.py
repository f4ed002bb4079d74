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
from sagan_tf import determinism
from sagan_tf.commands import train as train_command
from sagan_tf.data import pipeline
from sagan_tf.training import checkpoints, loop

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


def _main(capsys, *args, seed=True):
    """train_imagenet.py's main in this process (with --seed 3 unless
    `seed` is False): (exit status, output; "" without capsys)."""
    code = 0
    try:
        train_command.main(["train_imagenet.py"], _config(*args, seed=seed))
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
    # 2 batches of 4 in epochs of 6 records: epoch 1, 2 records into it.
    assert "at batch 2 per replica" in out, out
    assert "resuming at epoch 1, skipping the 2 record(s)" in out, out
    _assert_same_checkpoints(
        os.path.join(straight_run, f"imagenet_{BATCH}"), resumed_run, (4,))


def test_resume_over_changed_shards_stops_with_one_paragraph(
    records, straight_run, tmp_path, capsys
):
    resumed = str(tmp_path / "resumed")
    shutil.copytree(straight_run, resumed)
    run_dir = os.path.join(resumed, f"imagenet_{BATCH}")
    before = sorted(os.listdir(run_dir))
    data_dir = str(tmp_path / "more")
    shutil.copytree(records, data_dir)
    fx.write_records(os.path.join(data_dir, "new"), 2, SIZE, CLASSES)
    shutil.move(os.path.join(data_dir, "new", "train_0.tfrecords"),
                os.path.join(data_dir, "extra.tfrecords"))
    code, out = _main(capsys, f"--data_dir={data_dir}", "--max_steps=6",
                      f"--checkpoint_dir={resumed}", "--deterministic")
    assert code == 1, out
    assert ("changed since this run started: 1 shard(s) added "
            "(extra.tfrecords)") in out, out
    assert "pass a --seed other than 3" in out and "Traceback" not in out
    assert sorted(os.listdir(run_dir)) == before


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
    # 2 steps of 2 replicas x 4 records: epoch 2 of 6 records, 4 into it.
    assert "resuming at epoch 2, skipping the 4 record(s)" in out, out
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
    # SIGTERM: the default run, without --seed or --deterministic: it picks
    # a seed, records it in config.json and resumes with it; the reference
    # is a straight run with that seed. SIGKILL: --seed 3 --deterministic,
    # against the straight run of the module.
    seeded = signal_name == "SIGKILL"
    checkpoint_dir = str(tmp_path / "signaled")
    args = [f"--data_dir={records}", "--max_steps=4",
            f"--checkpoint_dir={checkpoint_dir}"]
    if seeded:
        args.append("--deterministic")
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNALED_AT_STEP_3.format(name=signal_name),
         *TINY, *(["--seed=3"] if seeded else []), *args],
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
    straight = os.path.join(straight_run, f"imagenet_{BATCH}")
    if not seeded:
        with open(os.path.join(run_dir, "config.json")) as f:
            seed = json.load(f)["seed"]
        assert f"no --seed given; using --seed {seed}" in out, out
        straight = str(tmp_path / "straight")
        code, out = _main(
            capsys, f"--data_dir={records}", "--max_steps=4",
            f"--checkpoint_dir={straight}", f"--seed={seed}", seed=False)
        assert code == 0, out
        straight = os.path.join(straight, f"imagenet_{BATCH}")
    code, out = _main(capsys, *args, seed=seeded)
    assert code == 0, out
    if not seeded:
        assert f"using the run's --seed {seed} (from its config.json)" in out
    assert f"resuming at global step {resumed_from}" in out, out
    _assert_same_checkpoints(straight, run_dir, (4,))
    assert f"at batch {resumed_from} per replica" in out, out
    epoch, offset = divmod(resumed_from * BATCH, RECORDS)
    assert (f"resuming at epoch {epoch}, skipping the {offset} record(s)"
            in out), out


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


def _run_state_after_restore(records, checkpoint_dir, *args, seed=True):
    """(log, skip steps, noise RNG state) of a start, up to the first step
    (no training, no tracing)."""
    config = train_command.train_config_from_flags(_config(
        f"--checkpoint_dir={checkpoint_dir}", f"--data_dir={records}",
        "--ema_decay=0.9", *args, seed=seed))
    lines = []
    run = _loop_of(config, lines.append)
    try:
        skip, _ = run._resume_run_state(run._restore())
        return "\n".join(lines), skip, run.trainer.noise_rng.state.numpy()
    finally:
        run.close()


def _loop_of(config, log):
    # As loop.run does: every start has a seed.
    seed_given = config.seed is not None
    config = determinism.with_seed(config, log=log, needed=True)
    return loop._Loop(config, tf.distribute.get_strategy(), log,
                      seed_given=seed_given)


def _state_of_seed(seed):
    return tf.random.Generator.from_seed(seed).state.numpy()


def test_old_checkpoint_without_run_state_is_seeded_afresh(records,
                                                           tmp_path):
    # v0.1 wrote the tiny configuration with --seed 3 at step 2.
    run_dir = tmp_path / "ck" / f"imagenet_{BATCH}"
    shutil.copytree(
        os.path.join(os.path.dirname(__file__), "testdata",
                     "checkpoint_v0_1"), run_dir)
    out, skip, state = _run_state_after_restore(records, str(tmp_path / "ck"))
    assert "resuming at global step 2" in out
    assert "holds no noise RNG or input position" in out, out
    assert skip == 0
    # As every start did before the RNG was saved: seed and step.
    np.testing.assert_array_equal(state, _state_of_seed(3 * 1_000_003 + 2))


def _save_run_state(records, checkpoint_dir, objects=None):
    """A checkpoint at step 7: position 5, the noise RNG of seed 11 and
    the input order of --seed 3; `objects` picks the run-state keys saved
    (default: all of them)."""
    config = train_command.train_config_from_flags(_config(
        f"--checkpoint_dir={checkpoint_dir}", f"--data_dir={records}",
        "--ema_decay=0.9"))
    run = _loop_of(config, print)
    try:
        trainer = run.trainer
        trainer.step.assign(7)
        trainer.run_state.data_position.assign(5)
        trainer.run_state.input_seed.assign(3)
        trainer.noise_rng.reset_from_seed(11)
        state = trainer.run_state_objects()
        keeper = checkpoints.CheckpointKeeper(
            run.directory, trainer.step,
            {**trainer.checkpoint_objects(),
             **{k: state[k] for k in (objects or state)}}, max_to_keep=5)
        keeper.save()
    finally:
        run.close()


def test_run_state_is_restored_with_or_without_seed(records, tmp_path):
    checkpoint_dir = str(tmp_path / "ck")
    _save_run_state(records, checkpoint_dir)
    out, skip, state = _run_state_after_restore(records, checkpoint_dir)
    assert "at batch 5 per replica" in out, out
    assert skip == 5
    np.testing.assert_array_equal(state, _state_of_seed(11))

    # Without --seed (and here without config.json) the checkpoint's seed
    # is the run's: the same continuation.
    out, skip, state = _run_state_after_restore(
        records, checkpoint_dir, seed=False)
    assert "Using the checkpoint's --seed 3" in out, out
    assert "at batch 5 per replica" in out, out
    assert skip == 5
    np.testing.assert_array_equal(state, _state_of_seed(11))


def test_another_seed_starts_a_new_input_order(records, tmp_path, capsys):
    checkpoint_dir = str(tmp_path / "ck")
    _save_run_state(records, checkpoint_dir)
    capsys.readouterr()
    out, skip, state = _run_state_after_restore(
        records, checkpoint_dir, "--seed=4", seed=False)
    warning = capsys.readouterr().err
    assert "come from --seed 3; with --seed 4 they start anew" in warning
    assert skip == 0 and "per replica" not in out
    np.testing.assert_array_equal(state, _state_of_seed(4 * 1_000_003 + 7))


def test_v0_3_checkpoint_keeps_its_noise_and_restarts_the_order(records,
                                                                tmp_path):
    # v0.3 saved the noise RNG and the position, counted in one stream
    # from step 0, but no input seed.
    checkpoint_dir = str(tmp_path / "ck")
    _save_run_state(records, checkpoint_dir,
                    objects=("noise_rng", "data_position"))
    out, skip, state = _run_state_after_restore(records, checkpoint_dir)
    assert "counts its input position in v0.3's single input stream" in out
    assert "restarts at the first epoch of --seed 3's order" in out, out
    assert skip == 0
    np.testing.assert_array_equal(state, _state_of_seed(11))
