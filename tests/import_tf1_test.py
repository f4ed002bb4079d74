"""Tests of the TF1 checkpoint importer (sagan_tf/import_tf1.py)."""

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import config as config_lib
from sagan_tf import import_tf1
from sagan_tf.training import checkpoints, run_lock, updates

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TSV = os.path.join(ROOT, "tests", "testdata", "original_variables.tsv")

TINY_MODEL = config_lib.ModelConfig(
    image_size=32, z_dim=8, gf_dim=4, df_dim=8, number_classes=3,
    attention_resolution=16,
)


def _released_variables():
    """name -> shape, read from the released graph's variable list."""
    out = {}
    with open(TSV) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, shape, _ = line.rstrip("\n").split("\t")
            out[name] = () if shape == "scalar" else tuple(
                int(d) for d in shape.split("x"))
    return out


def _write_tf1_checkpoint(path, values):
    """Writes `values` (name -> array) with the TF1 Saver, as released."""
    graph = tf.Graph()
    with graph.as_default():
        var_list = {
            name: tf.compat.v1.Variable(value, name=name.replace("/", "_"))
            for name, value in values.items()
        }
        saver = tf.compat.v1.train.Saver(var_list=var_list)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, path)


def _random_values(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape).astype(np.float32)
        for name, shape in shapes.items()
    }


def _restored_trainer(train_config):
    run = updates.GANTrainer(train_config, tf.distribute.get_strategy())
    keeper = checkpoints.CheckpointKeeper(
        checkpoints.run_dir(train_config), run.step,
        run.checkpoint_objects(), max_to_keep=1)
    assert keeper.restore_latest() is not None
    return run


def test_released_checkpoint_every_value_arrives(tmp_path):
    shapes = _released_variables()
    assert len(shapes) == 169
    values = _random_values(shapes)
    values["global_step"] = np.array(123456, np.int64)
    prefix = _write_tf1_checkpoint(str(tmp_path / "tf1" / "model.ckpt"),
                                   values)

    config = config_lib.TrainConfig(checkpoint_dir=str(tmp_path / "out"))
    out_dir = checkpoints.run_dir(config)
    import_tf1.import_checkpoint(prefix, out_dir, config, log=lambda *a: 0)
    run = _restored_trainer(config)

    by_path = {v.path: v.numpy() for v in run.generator.variables}
    by_path.update({v.path: v.numpy() for v in run.discriminator.variables})
    # Hand-checked correspondences, one of each kind.
    expected = {
        "generator/g_snh0/kernel": "model/g_snh0/Matrix",
        "generator/g_snh0/u": "model/g_snh0/u",
        "generator/g_block3/cbn_1/gamma": "model/g_block3/cbn_1/gamma",
        "generator/g_block3/cbn_1/moving_mean": "model/g_block3/cbn_1/mean",
        "generator/g_block5/cbn_0/moving_variance":
            "model/g_block5/cbn_0/var",
        "generator/g_block2/snconv3/bias": "model/g_block2/snconv3/biases",
        "generator/g_non_local/gamma": "model/g_non_local/sigma_ratio",
        "generator/g_non_local/o/kernel": "model/g_non_local/sn_conv_attn/w",
        "generator/g_non_local/phi/u": "model/g_non_local/sn_conv_phi/u",
        "generator/g_bn/moving_variance": "model/g_bn/moving_variance",
        "discriminator/d_embedding/embeddings":
            "model/d_embedding/embedding_map",
        "discriminator/d_embedding/u": "model/d_embedding/u",
        "discriminator/d_sn_linear/bias": "model/d_sn_linear/bias",
        "discriminator/d_non_local/theta/kernel":
            "model/d_non_local/sn_conv_theta/w",
        "discriminator/d_block6/sn_conv2/kernel":
            "model/d_block6/sn_conv2/w",
    }
    for path, name in expected.items():
        np.testing.assert_array_equal(
            by_path[path].ravel(), values[name].ravel(), err_msg=path)
    # Every released value lands in exactly one variable of the same size.
    fingerprints = sorted(
        (v.size, float(v.ravel()[0]), float(v.ravel()[-1]))
        for v in by_path.values())
    released = sorted(
        (v.size, float(v.ravel()[0]), float(v.ravel()[-1]))
        for n, v in values.items() if n != "global_step")
    assert fingerprints == released
    assert int(run.step.numpy()) == 123456
    assert os.path.exists(os.path.join(out_dir, "config.json"))


def _tiny_tf1_values(config, with_adam=True):
    run = updates.GANTrainer(config, tf.distribute.get_strategy())
    shapes = {}
    for v in run.generator.variables + run.discriminator.variables:
        name = import_tf1.tf1_name(v.path)
        shapes[name] = import_tf1.tf1_shape(v.path, v.shape)
        if with_adam and v.trainable:
            shapes[name + "/Adam"] = tuple(v.shape)
            shapes[name + "/Adam_1"] = tuple(v.shape)
    values = _random_values(shapes, seed=1)
    values["global_step"] = np.array(7, np.int64)
    values["beta2_power"] = np.array(0.999**7, np.float32)
    return values


def test_cli_imports_adam_moments(tmp_path):
    config = config_lib.TrainConfig(
        model=TINY_MODEL, checkpoint_dir=str(tmp_path / "out"),
        batch_size=4)
    values = _tiny_tf1_values(config)
    _write_tf1_checkpoint(str(tmp_path / "tf1" / "model.ckpt-7"),
                          values)
    out_dir = checkpoints.run_dir(config)
    cmd = [
        sys.executable, "-m", "sagan_tf.import_tf1",
        f"--tf1_checkpoint={tmp_path / 'tf1'}", f"--output_dir={out_dir}",
        "--image_size=32", "--z_dim=8", "--gf_dim=4", "--df_dim=8",
        "--number_classes=3", "--attention_resolution=16",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Adam moments imported" in result.stdout

    run = _restored_trainer(config)
    kernel = run.discriminator.get_layer("d_sn_linear").kernel
    m, v = import_tf1._adam_slots(run.d_optimizer, kernel)
    np.testing.assert_array_equal(
        m.numpy(), values["model/d_sn_linear/Matrix/Adam"])
    np.testing.assert_array_equal(
        v.numpy(), values["model/d_sn_linear/Matrix/Adam_1"])
    assert int(run.g_optimizer.iterations.numpy()) == 7
    assert int(run.step.numpy()) == 7

    # A second import into the same directory refuses to overwrite.
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 1
    assert "already holds a run" in again.stderr


def test_mismatches_are_all_listed(tmp_path):
    config = config_lib.TrainConfig(
        model=TINY_MODEL, checkpoint_dir=str(tmp_path / "out"))
    values = _tiny_tf1_values(config, with_adam=False)
    del values["model/g_block2/cbn_1/mean"]
    values["model/d_block2/sn_conv1/w"] = np.zeros((3, 3, 1, 1), np.float32)
    values["model/d_extra/w"] = np.zeros((2,), np.float32)
    prefix = _write_tf1_checkpoint(str(tmp_path / "tf1" / "model.ckpt"),
                                   values)
    with pytest.raises(import_tf1.CheckpointMismatchError) as e:
        import_tf1.import_checkpoint(
            prefix, checkpoints.run_dir(config), config, log=lambda *a: 0)
    message = str(e.value)
    assert "missing: model/g_block2/cbn_1/mean" in message
    assert "wrong shape: model/d_block2/sn_conv1/w" in message
    assert "unmapped: model/d_extra/w" in message
    assert tf.train.latest_checkpoint(checkpoints.run_dir(config)) is None


def test_missing_checkpoint_names_the_path(tmp_path):
    config = dataclasses.replace(
        config_lib.TrainConfig(model=TINY_MODEL),
        checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no checkpoint in directory"):
        import_tf1.import_checkpoint(
            str(tmp_path), str(tmp_path / "out"), config)


def _tiny_import(tmp_path):
    """(config, a one-variable TF1 checkpoint, an empty output folder)."""
    prefix = _write_tf1_checkpoint(
        str(tmp_path / "tf1" / "model.ckpt"),
        {"model/x": np.zeros(2, np.float32)})
    out = tmp_path / "out"
    out.mkdir()
    return config_lib.TrainConfig(model=TINY_MODEL), prefix, out


@pytest.mark.parametrize("existing", [
    ("config.json",),  # a run whose state file is gone
    ("ckpt-3.index", "ckpt-3.data-00000-of-00001"),  # no state file
])
def test_import_never_writes_over_a_run(tmp_path, existing):
    config, prefix, out = _tiny_import(tmp_path)
    for name in existing:
        (out / name).write_bytes(name.encode())
    with pytest.raises(ValueError, match=rf"already holds a run \(.*"
                       rf"{re.escape(existing[0])}"):
        import_tf1.import_checkpoint(prefix, str(out), config)
    for name in existing:
        assert (out / name).read_bytes() == name.encode()
    assert sorted(os.listdir(out)) == sorted((*existing, ".trainer.lock"))


def test_import_takes_the_run_lock(tmp_path):
    config, prefix, out = _tiny_import(tmp_path)
    with run_lock.RunLock(str(out)):
        with pytest.raises(run_lock.RunLockedError,
                           match="another trainer is using"):
            import_tf1.import_checkpoint(prefix, str(out), config)
    assert os.listdir(out) == [".trainer.lock"]
