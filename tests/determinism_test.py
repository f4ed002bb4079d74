"""--deterministic (issue 17): the picked seed, the warning on a changed
flag, the message for an op without a deterministic kernel, the input
pipeline's option. Two --deterministic runs giving identical variables is
in reproducibility_test.py (it shares a run with the resume test)."""

import dataclasses
import json
import os

import eval_fixtures as fx
import pytest
import tensorflow as tf
from absl import flags
from tensorflow.python.framework import config as tf_config
from train_recovery_test import run_main

from sagan_tf import config as config_lib
from sagan_tf import determinism
from sagan_tf.commands import evaluate as evaluate_command
from sagan_tf.commands import train as train_command
from sagan_tf.data import pipeline

SIZE, CLASSES, BATCH = 32, 4, 4
TINY = [
    f"--image_size={SIZE}", "--gf_dim=8", "--df_dim=8", "--z_dim=16",
    f"--number_classes={CLASSES}", "--attention_resolution=16",
    f"--batch_size={BATCH}", "--shuffle_buffer_size=8",
    "--log_every_steps=100", "--save_summaries_steps=100",
]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("records"))
    fx.write_records(data_dir, 12, SIZE, CLASSES)
    return data_dir


def _train(capsys, *args):
    return run_main(capsys, *TINY, *args)


def test_resume_with_another_value_warns(records, tmp_path, capsys):
    checkpoint_dir = str(tmp_path / "ck")
    run_dir = tmp_path / "ck" / f"imagenet_{BATCH}"
    os.makedirs(run_dir)
    # A finished deterministic run: nothing is trained on resuming it.
    for name in ("checkpoint", "ckpt-2.index",
                 "ckpt-2.data-00000-of-00001"):
        src = os.path.join(os.path.dirname(__file__), "testdata",
                           "checkpoint_v0_1", name)
        with open(src, "rb") as f, open(run_dir / name, "wb") as g:
            g.write(f.read())
    config = train_command.train_config_from_flags(_flag_values(
        f"--data_dir={records}", f"--checkpoint_dir={checkpoint_dir}",
        "--ema_decay=0.9", "--seed=3", "--deterministic"))
    with open(run_dir / "config.json", "w") as f:
        json.dump(dataclasses.asdict(config), f)
    code, out = _train(capsys, f"--data_dir={records}",
                       f"--checkpoint_dir={checkpoint_dir}",
                       "--ema_decay=0.9", "--seed=3", "--max_steps=2")
    assert code == 0, out
    assert ("started with --deterministic=True and resumes with "
            "--deterministic=False") in out, out
    # Without --seed, --deterministic takes the run's.
    code, out = _train(capsys, f"--data_dir={records}",
                       f"--checkpoint_dir={checkpoint_dir}",
                       "--ema_decay=0.9", "--deterministic", "--max_steps=2")
    assert code == 0, out
    assert "using the run's --seed 3" in out, out
    assert "WARNING" not in out, out


def _flag_values(*args):
    fv = flags.FlagValues()
    train_command.define_flags(fv)
    fv(["train_imagenet.py", *TINY, *args])
    return fv


def test_a_seed_is_picked_and_said():
    lines = []
    config = config_lib.TrainConfig(deterministic=True)
    chosen = determinism.with_seed(config, log=lines.append)
    assert chosen.seed is not None and chosen.data.seed == chosen.seed
    assert chosen.data.deterministic
    assert f"using --seed {chosen.seed}" in lines[0]


def test_without_the_flag_nothing_changes():
    config = config_lib.TrainConfig()
    assert determinism.with_seed(config, log=print) is config
    with determinism.op_determinism(config):
        assert not tf_config.is_op_determinism_enabled()
    fv = flags.FlagValues()
    evaluate_command.define_flags(fv)
    fv(["eval_imagenet.py"])
    assert evaluate_command.config_from_flags(fv).deterministic is False


# What TF puts before an error raised inside a tf.function (the training
# step): the graph preamble and the Python stack of the node.
GRAPH_PREAMBLE = (
    "Graph execution error:\n\nDetected at node d_update/segment defined at "
    "(most recent call last):\n  File \"/x/train_imagenet.py\", line 11, "
    "in <module>\n\n  File \"/x/sagan_tf/training/updates.py\", line 9, "
    "in _d_update_fn\n\n")


@pytest.mark.parametrize("preamble", ["", GRAPH_PREAMBLE],
                         ids=["eager", "graph"])
def test_missing_deterministic_kernel_is_one_paragraph_naming_op_and_flag(
    preamble
):
    error = tf.errors.UnimplementedError(
        None, None, preamble +
        "A deterministic GPU implementation of UnsortedSegmentSum is not "
        "currently available.\n\t [[{{node d_update/segment}}]]")
    with pytest.raises(determinism.DeterminismError) as caught:
        with determinism.explained_errors(
            config_lib.TrainConfig(deterministic=True)
        ):
            raise error
    message = str(caught.value)
    assert "UnsortedSegmentSum" in message and "--deterministic" in message
    assert "(A deterministic GPU implementation of UnsortedSegmentSum is " \
        "not currently available.)" in message, message
    assert "\n" not in message and "Graph execution" not in message
    # Other errors, and runs without the flag, pass through unchanged.
    with pytest.raises(tf.errors.UnimplementedError):
        with determinism.explained_errors(config_lib.TrainConfig()):
            raise error


def test_deterministic_pipeline_sets_tf_data_determinism(records):
    data = config_lib.DataConfig(data_dir=records, seed=1, deterministic=True)
    dataset = pipeline.build_dataset(
        data, image_size=SIZE, batch_size=BATCH, num_classes=CLASSES)
    assert dataset.options().deterministic is True
    plain = pipeline.build_dataset(
        dataclasses.replace(data, deterministic=False), image_size=SIZE,
        batch_size=BATCH, num_classes=CLASSES)
    assert plain.options().deterministic is not False  # tf.data's default
