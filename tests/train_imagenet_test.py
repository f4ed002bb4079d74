"""End-to-end tests of the `train_imagenet.py` command line.

Every run is a real subprocess on tiny released-format records (32x32,
widths 8, 4 classes). The first run's directory is copied for the resume,
SIGTERM and non-finite-loss runs, so only one run starts from scratch.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from sagan_tf import config as config_lib
from sagan_tf.commands import train as train_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIZE, CLASSES, BATCH = 32, 4, 4
TIMEOUT = 420
TINY = [
    f"--image_size={SIZE}", "--gf_dim=8", "--df_dim=8", "--z_dim=16",
    f"--number_classes={CLASSES}", "--attention_resolution=16",
    f"--batch_size={BATCH}", "--shuffle_buffer_size=64", "--seed=3",
]
RELEASED_SCALARS = (
    "d_loss", "d_loss_real", "d_loss_fake", "g_loss", "logit_real",
    "logit_fake", "d_learning_rate", "g_learning_rate",
)
OTHER_TAGS = (
    "g_non_local/gamma", "d_non_local/gamma", "global_step/sec",
    "images/sec", "input_image_grid", "generator_grid",
)


def _env(**extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _summaries(run_dir):
    """tag -> [(step, summary value)] from every event file in run_dir."""
    tags = {}
    for name in os.listdir(run_dir):
        if name.startswith("events.out.tfevents"):
            path = os.path.join(run_dir, name)
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    tags.setdefault(value.tag, []).append((event.step, value))
    return tags


def _cmd(data_dir, checkpoint_dir, *args):
    return [
        sys.executable, os.path.join(ROOT, "train_imagenet.py"),
        f"--data_dir={data_dir}", f"--checkpoint_dir={checkpoint_dir}",
        *TINY, *args,
    ]


def _run(data_dir, checkpoint_dir, *args):
    return subprocess.run(
        _cmd(data_dir, checkpoint_dir, *args), cwd=ROOT, env=_env(),
        capture_output=True, text=True, timeout=TIMEOUT,
    )


def _run_dir(checkpoint_dir):
    return os.path.join(checkpoint_dir, f"imagenet_{BATCH}")


def _ckpt_step(path):
    return int(tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE"))


def _copy_run(src_checkpoint_dir, tmp_path):
    dst = str(tmp_path / "ck")
    shutil.copytree(src_checkpoint_dir, dst)
    return dst


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Two shards of 16 released-format records (raw uint8 + int64 label)."""
    data_dir = tmp_path_factory.mktemp("records")
    rng = np.random.RandomState(0)
    for shard in range(2):
        path = str(data_dir / f"train-{shard:05d}-of-00002.tfrecords")
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(16):
                image = rng.randint(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                feature = {
                    "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(
                        value=[image.tobytes()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(
                        value=[i % CLASSES])),
                }
                example = tf.train.Example(
                    features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
    return str(data_dir)


@pytest.fixture(scope="module")
def first_run(records, tmp_path_factory):
    """4 steps from scratch: checkpoints at 2 and 4, summaries at 2 and 4."""
    checkpoint_dir = str(tmp_path_factory.mktemp("first") / "ck")
    result = _run(
        records, checkpoint_dir, "--max_steps=4", "--save_checkpoint_steps=2",
        "--save_summaries_steps=2", "--log_every_steps=1",
        "--ema_decay=0.999",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return checkpoint_dir, result.stdout


def test_cli_writes_config_checkpoint_and_every_summary(first_run):
    checkpoint_dir, stdout = first_run
    run_dir = _run_dir(checkpoint_dir)
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["batch_size"] == BATCH
    assert saved["model"]["image_size"] == SIZE
    assert saved["adam_beta2"] == 0.999 and saved["adam_epsilon"] == 1e-8
    latest = tf.train.latest_checkpoint(run_dir)
    assert latest.endswith("ckpt-4") and _ckpt_step(latest) == 4
    keys = {name.split("/")[0] for name, _ in tf.train.list_variables(latest)}
    assert {"step", "generator", "discriminator", "g_optimizer",
            "d_optimizer", "ema_generator"} <= keys
    assert re.search(r"^step 4/4 .*img/s\s+ETA", stdout, re.M), stdout

    tags = _summaries(run_dir)
    for tag in RELEASED_SCALARS + OTHER_TAGS:
        assert tag in tags, (tag, sorted(tags))
    assert [step for step, _ in tags["d_loss"]] == [2, 4]
    lr = tf.make_ndarray(tags["d_learning_rate"][0][1].tensor)
    assert lr == pytest.approx(4e-4)
    # A 2x2 grid of 32x32 images.
    grid = tags["generator_grid"][-1][1].tensor.string_val
    assert grid[:2] == [b"64", b"64"]
    assert tf.io.decode_png(grid[2]).shape == (64, 64, 3)


def test_cli_writes_attention_figures_and_config_text(first_run):
    run_dir = _run_dir(first_run[0])
    values = _summaries(run_dir)
    for tag in ("attention/g_non_local", "attention/d_non_local"):
        assert [step for step, _ in values[tag]] == [2, 4], tag
        width, height, png = values[tag][-1][1].tensor.string_val
        image = tf.io.decode_png(png).numpy()
        # 32x32 images in 128 px panels: the image and 4 query maps.
        assert image.shape == (int(height), int(width), 3)
        assert int(width) == 5 * 128 + 4 * 2
    (step, config), = values["config"]
    assert step == 0 and config.metadata.plugin_data.plugin_name == "text"
    assert '"image_size": 32' in config.tensor.string_val[0].decode()


def test_resume_then_non_finite_loss_keeps_last_good_checkpoint(
    first_run, records, tmp_path
):
    checkpoint_dir = _copy_run(first_run[0], tmp_path)
    result = _run(
        records, checkpoint_dir, "--max_steps=10", "--save_checkpoint_steps=1",
        "--log_every_steps=1", "--inject_nan_at_step=7",
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "resuming at global step 4" in out
    assert re.search(r"^step 5/10 ", result.stdout, re.M), out
    # The NaN may show in the losses or (relu can map NaN to 0 on CPU) only
    # in the weights; either way the step is named.
    assert re.search(r"Non-finite (loss|weights) at global step 7",
                     result.stderr), out
    run_dir = _run_dir(checkpoint_dir)
    latest = tf.train.latest_checkpoint(run_dir)
    assert latest.endswith("ckpt-6") and _ckpt_step(latest) == 6
    for name, _ in tf.train.list_variables(latest):
        value = tf.train.load_variable(latest, name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name


def test_sigterm_saves_at_step_reached_and_exits_zero(
    first_run, records, tmp_path
):
    checkpoint_dir = _copy_run(first_run[0], tmp_path)
    proc = subprocess.Popen(
        _cmd(records, checkpoint_dir, "--max_steps=100000",
             "--log_every_steps=1"),
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            match = re.match(r"step (\d+)/", line)
            if match and int(match.group(1)) >= 6:
                proc.send_signal(signal.SIGTERM)
                break
        rest, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "resuming at global step 4" in out
    reached = int(re.search(r"Received SIGTERM at global step (\d+)",
                            out).group(1))
    assert reached >= 6
    latest = tf.train.latest_checkpoint(_run_dir(checkpoint_dir))
    assert latest.endswith(f"ckpt-{reached}")
    assert _ckpt_step(latest) == reached


def free_ports(n):
    """n free TCP ports on localhost, for TF_CONFIG clusters."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _parse(*argv):
    fv = flags.FlagValues()
    train_command.define_flags(fv)
    fv(["train_imagenet.py", *argv])
    return fv


def test_flag_defaults_are_the_released_ones_and_come_from_config():
    fv = _parse()
    released = dict(
        checkpoint_dir="checkpoint", batch_size=64, generator_type="test",
        discriminator_type="test", loss_type="hinge_loss",
        discriminator_learning_rate=0.0004, generator_learning_rate=0.0001,
        beta1=0.0, image_size=128, z_dim=128, gf_dim=64, df_dim=64,
        number_classes=1000, d_step=1, g_step=1, save_summaries_steps=200,
        save_checkpoint_secs=1200, shuffle_buffer_size=100000,
        max_steps=2000000, adam_beta2=0.999, adam_epsilon=1e-8, ema_decay=0.0,
    )
    for name, value in released.items():
        assert fv[name].value == value, name
        assert fv[name].help, name
    assert "data_dir" in fv
    assert train_command.train_config_from_flags(fv) == (
        config_lib.TrainConfig()
    )


def test_flags_map_onto_config_objects():
    config = train_command.train_config_from_flags(_parse(
        "--batch_size=8", "--sync_batch_norm", "--attention_resolution=64",
        "--label_offset=-1", "--data_format=jpeg", "--seed=5",
        "--mixed_precision=bf16", "--xla", "--num_cpu_devices=2",
    ))
    assert config.batch_size == 8 and config.xla and config.seed == 5
    assert config.model.sync_batch_norm
    assert config.model.attention_resolution == 64
    assert config.data.label_offset == -1 and config.data.seed == 5
    assert config.data.data_format == "jpeg"
    assert config.mixed_precision == "bf16" and config.num_cpu_devices == 2


def test_bad_flag_value_is_a_clear_error(records, tmp_path):
    result = _run(records, str(tmp_path / "ck"), "--d_step=0")
    assert result.returncode == 1
    assert "--d_step=0: must be >= 1" in result.stderr
    assert "Traceback" not in result.stderr
