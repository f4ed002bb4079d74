"""Augmentation in training (sagan_tf/augmentation/augmenter.py and the
G and D updates): what D sees, ADA's p, and a resumed ADA run.

The transforms themselves are checked against numpy in
augmentation_test.py; here the references are the same compositions
written out by hand: loss(D(augment(G(z)))) and its gradient.
"""

import json
import os
import shutil

import eval_fixtures as fx
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from reproducibility_test import _assert_same_checkpoints
from updates_test import _config, _inputs

from sagan_tf.augmentation import ada, augmenter
from sagan_tf.commands import train as train_command
from sagan_tf.training import updates

BATCH = 4


def _trainer(**train):
    return updates.GANTrainer(_config(BATCH, seed=0, **train),
                              tf.distribute.get_strategy())


def _snapshot(t):
    return [v.numpy() for v in t.generator.weights + t.discriminator.weights]


def _restore(t, values):
    for v, value in zip(t.generator.weights + t.discriminator.weights,
                        values):
        v.assign(value)


@pytest.mark.parametrize("setting", [
    {"diffaugment": "color"}, {"diffaugment": "translation"},
    {"diffaugment": "cutout"}, {"ada_target": 0.6},
])
def test_g_update_differentiates_through_the_augmentation(setting):
    t = _trainer(**setting)
    if t.augmenter.ada is not None:
        t.augmenter.ada.p.assign(1.0)  # every transform on every image
    x = _inputs(BATCH)
    z, labels = tf.constant(x["z"]), tf.constant(x["fake_labels"])
    params = t.augmenter.sample(tf.random.Generator.from_seed(5), BATCH)
    before = _snapshot(t)
    _, grads = t._g_grads_fn(z, labels, params)
    variables = t.generator.trainable_variables

    def by_hand(augment):
        _restore(t, before)
        with tf.GradientTape() as tape:
            fake = t.generator(z, labels, training=True)
            if augment:
                fake = t.augmenter.apply(fake, params)
            logits = t.discriminator(fake, labels, training=True,
                                     update_sn=False)
            loss = tf.nn.compute_average_loss(
                t.loss_fns.generator(logits), global_batch_size=BATCH)
        return tape.gradient(loss, variables)

    def dense(gradients):
        return [tf.convert_to_tensor(g).numpy() for g in gradients]

    grads = dense(grads)
    for got, want in zip(grads, dense(by_hand(augment=True))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    plain = dense(by_hand(augment=False))
    assert any(not np.allclose(g, p) for g, p in zip(grads, plain))


def test_d_update_augments_real_and_generated_images_each_their_own():
    t = _trainer(diffaugment="color,translation,cutout")
    x = _inputs(BATCH)
    images, labels = tf.constant(x["images"]), tf.constant(x["labels"])
    fake = t.generator(tf.constant(x["z"]), tf.constant(x["fake_labels"]))
    params = t.augmenter.sample(tf.random.Generator.from_seed(5), 2 * BATCH)
    before = _snapshot(t)
    real_logits, fake_logits = t._d_logits(
        images, labels, fake, tf.constant(x["fake_labels"]), params)
    _restore(t, before)
    both = t.augmenter.apply(tf.concat([images, fake], 0), params)
    want = t.discriminator(
        both, tf.concat([labels, x["fake_labels"]], 0), training=True,
        update_sn=True)
    np.testing.assert_allclose(
        np.concatenate([real_logits, fake_logits]), want.numpy(),
        rtol=1e-5, atol=1e-6)
    # Each of the 2B images got its own parameters.
    assert len(set(params["brightness"].numpy().tolist())) == 2 * BATCH


def _augmenter(target=0.6, speed=1000):
    config = _config(BATCH, ada_target=target, ada_speed_images=speed)
    return augmenter.Augmenter(config)


def test_ada_adjusts_p_every_four_d_updates_by_the_law():
    a = _augmenter()
    # Global batch 8: 4 D updates = 32 images = p +- 0.032.
    expected = []
    p = 0.0
    for signs in ([1.0, 1.0, 0.8, 1.0], [0.6, 0.7, 0.9, 0.8],
                  [0.5, 0.5, 0.6, 0.4], [-1.0, -1.0, -1.0, -1.0],
                  [-1.0, -1.0, -1.0, -1.0], [0.0, 1.0, 1.0, 1.0]):
        for i, sign in enumerate(signs):
            a.observe(tf.constant(sign), 1, 8)
            if i < 3:  # mid-interval: p waits
                assert float(a.ada.p) == pytest.approx(p)
                assert int(a.ada.batches) == i + 1
        rt = sum(signs) / 4
        p = min(max(p + np.sign(rt - 0.6) * 32 / 1000, 0.0), 1.0)
        expected.append(round(p, 6))
        assert float(a.ada.rt) == pytest.approx(rt)
        assert int(a.ada.batches) == 0 and float(a.ada.sign_sum) == 0.0
        assert float(a.ada.p) == pytest.approx(p)
    # Up, up, down, down to 0 and held there, up again.
    assert expected == [0.032, 0.064, 0.032, 0.0, 0.0, 0.032]


def test_two_replicas_average_rt(two_cpu_strategy):
    with two_cpu_strategy.scope():
        a = _augmenter(target=0.2)

    @tf.function
    def d_update_signs():
        def share():
            # Replica 0's two real logits are positive, replica 1's one of
            # two: each replica's share of the global mean over 4.
            context = tf.distribute.get_replica_context()
            replica = context.replica_id_in_sync_group
            logits = tf.where(replica == 0, [1.0, 2.0], [-1.0, 3.0])
            return tf.reduce_sum(tf.sign(logits)) / 4
        signs = two_cpu_strategy.reduce(
            tf.distribute.ReduceOp.SUM, two_cpu_strategy.run(share), None)
        a.observe(signs, 1, 4)

    for _ in range(ada.ADA_INTERVAL):
        d_update_signs()
    # The mean over both replicas' 4 logits: (1 + 1 - 1 + 1) / 4.
    assert float(a.ada.rt.numpy()) == 0.5
    assert float(a.ada.p.numpy()) == pytest.approx(16 / 1000)


def test_flags_are_checked():
    for kwargs, flag in (({"diffaugment": "colour"}, "--diffaugment"),
                         ({"ada_target": 1.5}, "--ada_target"),
                         ({"ada_target": 0.6, "ada_speed_images": 0},
                          "--ada_speed_images"),
                         ({"ada_target": 0.6, "diffaugment": "cutout"},
                          "choose one")):
        with pytest.raises(ValueError, match=flag):
            updates.validate_config(_config(BATCH, **kwargs))


# ------------------------------------------------------------------ CLI

TINY = [
    "--image_size=32", "--gf_dim=8", "--df_dim=8", "--z_dim=16",
    "--number_classes=4", "--attention_resolution=16", f"--batch_size={BATCH}",
    "--shuffle_buffer_size=8", "--log_every_steps=1", "--seed=5",
    "--save_checkpoint_steps=2", "--save_summaries_steps=2",
]


def _main(capsys, *args):
    fv = flags.FlagValues()
    train_command.define_flags(fv)
    fv(["train_imagenet.py", *TINY, *args])
    try:
        train_command.main(["train_imagenet.py"], fv)
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("records"))
    fx.write_records(data_dir, 6, 32, 4)
    return data_dir


def _ada(prefix, name):
    return float(tf.train.load_variable(
        prefix, f"ada/{name}/.ATTRIBUTES/VARIABLE_VALUE"))


def test_ada_run_resumes_as_the_straight_run(records, tmp_path, capsys):
    # A fast D (learning rate 0.02) and a low target: r_t passes it within
    # a few intervals on 6 images (at step 12 here), so p moves; 16 real
    # images per interval move it by 16 / 64 = 0.25.
    ada_flags = ["--ada_target=0.05", "--ada_speed_images=64",
                 "--discriminator_learning_rate=0.02",
                 "--keep_checkpoints=10",
                 f"--data_dir={records}"]
    straight = str(tmp_path / "straight")
    code, out = _main(capsys, *ada_flags, "--max_steps=16",
                      f"--checkpoint_dir={straight}")
    assert code == 0, out
    assert "ada p " in out, out
    run_dir = os.path.join(straight, f"imagenet_{BATCH}")
    p = 0.0
    for step in (4, 8, 12, 16):
        prefix = os.path.join(run_dir, f"ckpt-{step}")
        rt = _ada(prefix, "rt")
        p = min(max(p + np.sign(rt - 0.05) * 0.25, 0.0), 1.0)
        assert _ada(prefix, "p") == pytest.approx(p), (step, rt)
    # Mid-interval checkpoints hold the p of the last adjustment; resume
    # from the first one with p > 0.
    mid = {s: _ada(os.path.join(run_dir, f"ckpt-{s}"), "p")
           for s in (6, 10, 14)}
    for s, p in mid.items():
        assert p == _ada(os.path.join(run_dir, f"ckpt-{s - 2}"), "p")
    start = min([s for s, p in mid.items() if p > 0.0], default=None)
    assert start, mid
    events = tf.io.gfile.glob(os.path.join(run_dir, "events.out.*"))
    tags = {v.tag for e in events
            for ev in tf.compat.v1.train.summary_iterator(e)
            for v in ev.summary.value}
    assert {"ada/p", "ada/rt"} <= tags, tags

    resumed = str(tmp_path / "resumed")
    shutil.copytree(straight, resumed)
    resumed_run = os.path.join(resumed, f"imagenet_{BATCH}")
    for name in os.listdir(resumed_run):
        if name.startswith("ckpt-") and int(
                name.split(".")[0][5:]) > start:
            os.remove(os.path.join(resumed_run, name))
    with open(os.path.join(resumed_run, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "ckpt-{start}"\n')
    # Resumed mid-interval (2 of 4 D updates, p > 0): the sums, p and the
    # augmentation draws come back too.
    code, out = _main(capsys, *ada_flags, "--max_steps=16",
                      f"--checkpoint_dir={resumed}")
    assert code == 0, out
    assert f"resuming at global step {start}" in out, out
    _assert_same_checkpoints(
        run_dir, resumed_run, tuple(range(start + 2, 17, 2)))


def test_diffaugment_cli_run_and_bad_policy(records, tmp_path, capsys):
    checkpoint_dir = str(tmp_path / "ck")
    code, out = _main(capsys, "--diffaugment=color,translation,cutout",
                      f"--data_dir={records}", "--max_steps=2",
                      f"--checkpoint_dir={checkpoint_dir}")
    assert code == 0, out
    with open(os.path.join(checkpoint_dir, f"imagenet_{BATCH}",
                           "config.json")) as f:
        assert json.load(f)["diffaugment"] == "color,translation,cutout"
    code, out = _main(capsys, "--diffaugment=colour",
                      f"--data_dir={records}", "--max_steps=2",
                      f"--checkpoint_dir={tmp_path / 'bad'}")
    assert code == 1 and "Traceback" not in out
    assert "--diffaugment='colour': 'colour' is not a policy" in out, out
    assert not os.path.exists(tmp_path / "bad")
