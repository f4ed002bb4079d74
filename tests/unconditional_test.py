"""Unconditional SAGAN (--number_classes 0) end to end on tiny data.

The converter on unlabeled folders, G and D against a hand count, one real
training run through the command line on the converted images, evaluation,
sampling and export of its checkpoint, the mismatch messages and
--random_flip.
"""

import dataclasses
import io
import json
import os
import re
import subprocess
import sys

import eval_fixtures as fx
import image_fixtures
import keras
import numpy as np
import pytest
import replica_inputs
import tensorflow as tf

from sagan_tf import config as config_lib
from sagan_tf import layers, models
from sagan_tf.data import converter, pipeline
from sagan_tf.evaluation import evaluator as evaluator_lib
from sagan_tf.evaluation import (
    export,
    inception,
    restore,
    sampling,
    standing_stats,
)
from sagan_tf.models import checks
from sagan_tf.training import checkpoints, updates

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, BATCH, Z, WIDTH = 32, 4, 16, 8
MODEL = config_lib.ModelConfig(
    image_size=SIZE, z_dim=Z, gf_dim=WIDTH, df_dim=WIDTH, number_classes=0,
    attention_resolution=16,
)


# --------------------------------------------------------------------------
# Models.


def _conv(k, c_in, c_out):
    return k * k * c_in * c_out + c_out


def _attention(c):
    # gamma + theta, phi (c -> c/8) + g (c -> c/2) + o (c/2 -> c), no bias.
    return 1 + 2 * c * (c // 8) + 2 * c * (c // 2)


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def test_unconditional_models_shapes_and_hand_counts():
    g, d = models.build_models(MODEL)
    # G at 32x32, gf 8: 4x4x32 -> blocks 32, 16, 8 channels, attention at
    # 16x16 (16 channels); per block two plain BNs (gamma, beta) of its
    # input and output width.
    g_count = Z * 4 * 4 * 32 + 4 * 4 * 32
    for c_in, c_out in ((32, 32), (32, 16), (16, 8)):
        g_count += (2 * c_in + _conv(3, c_in, c_out) + 2 * c_out
                    + _conv(3, c_out, c_out) + _conv(1, c_in, c_out))
    g_count += _attention(16) + 2 * 8 + _conv(3, 8, 3)
    # D: blocks 8, 16, 32, 32 (the last keeps its size and width: no
    # shortcut conv), attention at 16x16 (8 channels), linear 32 -> 1,
    # and no embedding.
    d_count = 0
    for c_in, c_out in ((3, 8), (8, 16), (16, 32)):
        d_count += (_conv(3, c_in, c_out) + _conv(3, c_out, c_out)
                    + _conv(1, c_in, c_out))
    d_count += 2 * _conv(3, 32, 32) + _attention(8) + 32 + 1
    assert _trainable(g) == g_count == 38436
    assert _trainable(d) == d_count
    names = [v.path for v in g.weights + d.weights]
    assert not [n for n in names if "cbn" in n or "embedding" in n]
    for block in g.blocks:
        for bn in (block.bn_0, block.bn_1):
            # The released ops.batch_norm, as G's head.
            assert type(bn) is layers.BatchNorm
            assert bn.momentum == g.g_bn.momentum == 0.9999
            assert bn.epsilon == g.g_bn.epsilon
            assert bn.gamma.shape.rank == 1
    # The conditional model with K classes differs by the class tables
    # (K - 1 more gamma/beta rows in G, K x 32 embedding in D).
    k = 5
    cond_g, cond_d = models.build_models(
        dataclasses.replace(MODEL, number_classes=k))
    bn_width = 2 * (32 + 32 + 32 + 16 + 16 + 8)
    assert _trainable(cond_g) == g_count + (k - 1) * bn_width
    assert _trainable(cond_d) == d_count + k * 32

    z = tf.random.stateless_normal([3, Z], seed=[1, 2])
    images, beta = g(z, training=False, update_sn=False,
                     return_attention=True)
    assert images.shape == (3, SIZE, SIZE, 3) and beta.shape == (3, 256, 64)
    # Labels are accepted and ignored.
    with_labels = g(z, tf.constant([0, 4, 9]), training=False,
                    update_sn=False)
    np.testing.assert_array_equal(images.numpy(), with_labels.numpy())
    logits = d(images, training=False, update_sn=False)
    assert logits.shape == (3,)
    np.testing.assert_array_equal(
        logits.numpy(),
        d(images, tf.constant([1, 2, 3]), update_sn=False).numpy())


def test_unconditional_mixed_bfloat16_forward():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        g, d = models.build_models(MODEL)
        images = g(tf.random.normal([2, Z]), training=True)
        logits = d(images, training=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert images.dtype == tf.float32 and logits.dtype == tf.float32
    assert np.all(np.isfinite(logits.numpy()))
    bn = g.blocks[0].bn_0
    assert bn.gamma.dtype == "float32" and bn.compute_dtype == "bfloat16"


def test_demo_mode_coverage_counts_the_classifier_votes(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "demo"))
    try:
        import unconditional as demo_unconditional
    finally:
        sys.path.pop(0)
    classifier = fx.StandinClassifier()
    module = str(tmp_path / "classifier")
    inception.save_classifier_as_savedmodel(classifier, module)
    rng = np.random.default_rng(0)
    # One image 290 times and 10 others: one digit dominates, a few get
    # a vote or two (under the 1% threshold), so `found` is a subset.
    images = rng.integers(0, 256, (300, 8, 8, 3), np.uint8)
    images[10:] = images[10]
    np.savez(tmp_path / "samples.npz", images=images,
             labels=np.zeros(300, np.int32))
    shares, found = demo_unconditional.mode_coverage(
        module, str(tmp_path / "samples.npz"), 8)
    _, logits = classifier(tf.constant(images / 127.5 - 1.0, tf.float32))
    votes = np.bincount(np.argmax(logits.numpy(), 1), minlength=12) / 300
    assert shares == pytest.approx(dict(enumerate(votes[:10])))
    assert found == [c for c in range(10) if votes[c] >= 0.01]
    assert 0 < len(found) < 10  # the threshold matters here


def test_standing_stats_reach_the_plain_block_norms():
    # One batch of standing statistics makes G in inference mode draw what
    # G in training mode draws from it: every block's bn_0 / bn_1 must be
    # among the recomputed layers (a stale one leaves a large gap).
    tf.keras.utils.set_random_seed(5)
    g = models.build_generator(MODEL)
    z = np.random.default_rng(4).standard_normal((64, Z)).astype(np.float32)
    zeros = np.zeros(64, np.int32)
    saved = [(v, v.numpy()) for v in g.variables]
    expected = g(z, zeros, training=True).numpy()
    for v, value in saved:
        v.assign(value)
    stale = g(z, training=False, update_sn=False).numpy()
    assert np.abs(stale - expected).max() > 0.1
    layers_found = standing_stats.batch_norm_layers(g)
    assert len(layers_found) == 2 * len(g.blocks) + 1
    standing_stats.recompute_moving_statistics(g, [(z, zeros)])
    # Plain BN feeds its average the n / (n - 1) variance (n >= 64 * 4 * 4
    # here), the only gap left.
    np.testing.assert_allclose(
        g(z, training=False, update_sn=False).numpy(), expected, atol=1e-2)


def test_two_replicas_share_the_synchronized_block_norms(two_cpu_strategy):
    # --sync_batch_norm: each replica's bn_0 normalizes with the moments of
    # the global batch, so with momentum 0 its moving variance is the
    # (Bessel-corrected) variance over both replicas' inputs, computed here
    # with numpy; per-replica moments would average two smaller variances.
    strategy = two_cpu_strategy
    with strategy.scope():
        g = models.build_generator(
            dataclasses.replace(MODEL, sync_batch_norm=True))
    bn = g.blocks[0].bn_0
    bn.momentum = 0.0
    z = np.random.default_rng(0).standard_normal((4, Z)).astype(np.float32)

    @tf.function
    def step(z):
        return strategy.run(lambda z: g(z, training=True), args=(z,))

    # G's first layer as the step will compute it (sigma from the stored u).
    h = g.g_snh0(z, update_sn=False).numpy().reshape(4, 4, 4, 4 * WIDTH)
    images = step(replica_inputs.split(strategy, z))
    assert strategy.experimental_local_results(images)[1].shape == (
        2, SIZE, SIZE, 3)
    h = h.astype(np.float64)
    n = h.size // h.shape[-1]  # 4 x 4 x 4 values per channel
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), h.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), h.var(axis=(0, 1, 2)) * n / (n - 1),
        rtol=1e-4)


def test_number_classes_validation_names_the_flag():
    with pytest.raises(ValueError, match="--number_classes=-1: must be >= 0"):
        checks.check_model_config(
            dataclasses.replace(MODEL, number_classes=-1))
    with pytest.raises(ValueError, match="--num_classes=-2"):
        checks.check_model_config(
            dataclasses.replace(MODEL, number_classes=-2),
            discriminator=False, flags={"number_classes": "num_classes"})
    bad = config_lib.TrainConfig(model=config_lib.ModelConfig(
        number_classes=-1))
    with pytest.raises(ValueError, match="--number_classes=-1"):
        updates.validate_config(bad)
    checks.check_model_config(MODEL)
    updates.validate_config(config_lib.TrainConfig(model=MODEL))


# --------------------------------------------------------------------------
# --random_flip and ignored labels.


def test_random_flip_mirrors_real_images_per_image(tmp_path):
    side = 8
    data_dir = tmp_path / "records"
    os.makedirs(data_dir)
    image = np.zeros((side, side, 3), np.uint8)
    image[:, side // 2:] = 255  # black left half, white right half
    with tf.io.TFRecordWriter(str(data_dir / "train.tfrecords")) as writer:
        for i in range(64):
            feature = {
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[image.tobytes()])),
                # Out of range for any class count: ignored with 0 classes.
                "label": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[1000 + i])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(
                feature=feature)).SerializeToString())

    def batch(random_flip):
        config = config_lib.DataConfig(
            data_dir=str(data_dir), shuffle_buffer_size=0, seed=7,
            random_flip=random_flip)
        dataset = pipeline.build_dataset(
            config, image_size=side, batch_size=64, num_classes=0,
            repeat=False, shuffle=False)
        images, labels = next(iter(dataset))
        return images.numpy(), labels.numpy()

    real = image.astype(np.float32) * 2.0 / 255.0 - 1.0
    images, labels = batch(False)
    assert labels.tolist() == [0] * 64
    np.testing.assert_array_equal(images, np.broadcast_to(real, images.shape))
    images, _ = batch(True)
    mirrored = np.array([np.array_equal(x, real[:, ::-1]) for x in images])
    kept = np.array([np.array_equal(x, real) for x in images])
    assert np.all(mirrored | kept)
    # One coin per image: both kinds in one batch, about half each
    # (binomial(64, 1/2) lies in [20, 44] with probability > 0.99).
    assert 20 <= mirrored.sum() <= 44, mirrored.sum()


def test_random_flip_leaves_generated_images_alone():
    # The flip lives in the input pipeline: D's update gets G's images as
    # G draws them, with --random_flip too.
    config = config_lib.TrainConfig(
        model=MODEL, batch_size=4,
        data=config_lib.DataConfig(random_flip=True))
    trainer = updates.GANTrainer(config, tf.distribute.get_strategy())
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, Z)).astype(np.float32)
    images = rng.uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    # Sigma from the stored u, as the update's forward pass computes it.
    expected = trainer.generator(z, training=True, update_sn=False).numpy()
    zeros = np.zeros(4, np.int32)
    _, fake = trainer.d_update(images, zeros, z, zeros)
    np.testing.assert_allclose(fake.numpy(), expected, atol=1e-5)
    assert np.abs(expected - expected[:, :, ::-1]).max() > 1e-3


# --------------------------------------------------------------------------
# One real run through the command line, then eval, sample and export.


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return env


def _train(data_dir, checkpoint_dir, *args):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "train_imagenet.py"),
         f"--data_dir={data_dir}", f"--checkpoint_dir={checkpoint_dir}",
         f"--image_size={SIZE}", f"--gf_dim={WIDTH}", f"--df_dim={WIDTH}",
         f"--z_dim={Z}", "--attention_resolution=16",
         f"--batch_size={BATCH}", "--shuffle_buffer_size=16", "--seed=3",
         *args],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=420,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Converts a flat folder of 24 images, trains 2 steps on it."""
    root = tmp_path_factory.mktemp("unconditional")
    image_fixtures.write_pngs(str(root / "pictures"), 24)
    data_dir = str(root / "data")
    summary = converter.convert(
        str(root / "pictures"), data_dir, image_size=SIZE, num_shards=2,
        stream=io.StringIO())
    assert summary.unlabeled
    checkpoint_dir = str(root / "checkpoint")
    result = _train(
        data_dir, checkpoint_dir, "--number_classes=0", "--random_flip",
        "--max_steps=2", "--save_checkpoint_steps=2",
        "--save_summaries_steps=2", "--ema_decay=0.9",
        )
    assert result.returncode == 0, result.stdout + result.stderr
    return root, data_dir, checkpoint_dir


def test_cli_run_checkpoint_has_no_class_tables(run):
    _, _, checkpoint_dir = run
    run_dir = os.path.join(checkpoint_dir, f"imagenet_{BATCH}")
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    assert saved["model"]["number_classes"] == 0
    assert saved["data"]["random_flip"] is True
    latest = tf.train.latest_checkpoint(run_dir)
    variables = dict(tf.train.list_variables(latest))
    assert not [n for n in variables if "embedding" in n or "cbn" in n]
    # Trainable weights are stored under the optimizers' paths, the rest
    # under the model's.
    norms = {n: shape for n, shape in variables.items()
             if re.search(r"g_block\d/bn_[01]/", n)}
    assert "generator/g_block1/bn_0/moving_mean/.ATTRIBUTES/VARIABLE_VALUE" \
        in norms
    assert norms[
        "ema_generator/g_block1/bn_0/gamma/.ATTRIBUTES/VARIABLE_VALUE"] == [
            4 * WIDTH]
    assert all(len(shape) == 1 for shape in norms.values())  # no class rows
    assert any(n.startswith("discriminator/d_sn_linear") for n in variables)
    events = [n for n in os.listdir(run_dir) if n.startswith("events")]
    tags = set()
    for name in events:
        for event in tf.compat.v1.train.summary_iterator(
                os.path.join(run_dir, name)):
            tags.update(v.tag for v in event.summary.value)
    assert {"generator_grid", "attention/g_non_local",
            "attention/d_non_local", "d_loss"} <= tags


def test_other_class_count_is_refused(run):
    _, _, checkpoint_dir = run
    run_dir = os.path.join(checkpoint_dir, f"imagenet_{BATCH}")
    conditional = dataclasses.replace(MODEL, number_classes=3)
    # What training checks before it restores (the one paragraph that
    # cli.run prints), and what evaluation checks.
    with pytest.raises(ValueError, match=re.escape(
            "--number_classes=3 (the run used 0)")):
        checkpoints.check_model_config(conditional, run_dir)
    with pytest.raises(ValueError, match=re.escape(
            "--num_classes=3 (the run used 0)")):
        restore.check_run_config(conditional, run_dir)
    # And the other way round: an unconditional model on a conditional run.
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    other = os.path.join(str(run[0]), "conditional_run")
    os.makedirs(other)
    saved["model"]["number_classes"] = 3
    with open(os.path.join(other, "config.json"), "w") as f:
        json.dump(saved, f)
    open(os.path.join(other, "ckpt-1.index"), "wb").close()
    with pytest.raises(ValueError, match=re.escape(
            "--number_classes=0 (the run used 3)")):
        checkpoints.check_model_config(MODEL, other)


def test_eval_sample_and_export(run, tmp_path, capsys):
    root, data_dir, checkpoint_dir = run
    module = str(tmp_path / "classifier")
    inception.save_classifier_as_savedmodel(fx.StandinClassifier(), module)
    config = config_lib.EvalConfig(
        model=MODEL,
        data=config_lib.DataConfig(data_dir=data_dir, shuffle_buffer_size=16,
                                   seed=0),
        checkpoint_dir=checkpoint_dir, batch_size=BATCH,
        eval_sample_size=16, dcgan_generator_batch_size=8,
        kid_sample_size=16, kid_block_size=8, inception_path=module,
        intra_fid_classes=(0, 1), samples_per_class=3,
        sample_classes=(0, 1), num_npz_samples=5, interpolation_steps=4,
        sample_dir=str(tmp_path / "sample"), seed=1,
        standing_stats_batches=2, standing_stats_batch_size=8,
    )
    evaluator = evaluator_lib.Evaluator(config)
    (path,) = evaluator.checkpoints()
    result = evaluator.evaluate_checkpoint(path)
    assert "no intra-class FID" in capsys.readouterr().out
    assert np.isfinite(result["fid"]) and np.isfinite(result["kid"])
    assert result["incscore"] >= 1.0 and "intra_fid" not in result
    assert result["num_real"] == 16 and result["num_generated"] == 16

    restorer = restore.GeneratorRestorer.from_config(config)
    _, step = restore.restore_newest(restorer, config)
    g = restorer.generator
    paths = sampling.write_samples(g, config, config.sample_dir, step, 16)
    assert sorted(paths) == ["attention", "interpolation", "sample_grid",
                             "samples"]
    grid = tf.io.decode_png(tf.io.read_file(paths["sample_grid"]))
    assert grid.shape == (3 * SIZE, 3 * SIZE, 3)  # 3 x 3, no class rows
    strip = tf.io.decode_png(tf.io.read_file(paths["interpolation"]))
    assert strip.shape == (SIZE, 4 * SIZE, 3)
    with np.load(paths["samples"]) as data:
        assert data["images"].shape == (5, SIZE, SIZE, 3)
        assert data["labels"].tolist() == [0] * 5

    export_dir = export.export_generator(g, str(tmp_path / "export"))
    loaded = tf.saved_model.load(export_dir)
    signature = loaded.signatures["generate"]
    assert set(signature.structured_input_signature[1]) == {"z"}
    z = tf.random.stateless_normal([2, Z], seed=[3, 4])
    expected = g(z, training=False, update_sn=False)
    np.testing.assert_allclose(loaded.generate(z).numpy(), expected.numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(signature(z=z)["images"].numpy(),
                               expected.numpy(), atol=1e-5)
