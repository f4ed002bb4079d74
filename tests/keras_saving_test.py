"""`.keras` saving: registration, get_config, and a fresh-process round trip.

The round trip saves a functional model built from the public layers, a
tiny Generator and a tiny Discriminator, after training-mode calls have
moved u and the BN statistics away from their initial values. One fresh
process, whose only project import is `import sagan_tf`, loads all three
and repeats the same calls; its weights right after loading and its
outputs in both modes must equal the saving process's.
"""

import os
import subprocess
import sys

import keras
import keras_exercise
import numpy as np
import pytest

from sagan_tf import layers, models
from sagan_tf.models import blocks

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
CLASSES = 4

PUBLIC_CLASSES = [
    layers.SNConv2D, layers.SNDense, layers.SNEmbedding,
    layers.SpectralNormalization, layers.SelfAttention,
    layers.ConditionalBatchNorm, layers.BatchNorm,
    blocks.GeneratorBlock, blocks.DiscriminatorBlock,
    models.Generator, models.Discriminator,
]


@pytest.mark.parametrize("cls", PUBLIC_CLASSES, ids=lambda c: c.__name__)
def test_every_public_class_is_registered(cls):
    name = f"sagan_tf>{cls.__name__}"
    assert keras.saving.get_registered_name(cls) == name
    assert keras.saving.get_registered_object(name) is cls


@pytest.mark.parametrize(
    "make",
    [
        lambda: layers.SpectralNormalization(
            keras.layers.Conv2DTranspose(4, 3, strides=2, name="inner"),
            power_iterations=2, stop_gradient_uv=True),
        lambda: blocks.GeneratorBlock(16, 5, sn_stop_gradient_uv=True,
                                      sync_batch_norm=True),
        lambda: blocks.DiscriminatorBlock(8, 16, downsample=False),
        lambda: models.Generator(num_classes=5, image_size=64, z_dim=8,
                                 gf_dim=16, attention_resolution=None,
                                 sn_update_at_inference=False),
        lambda: models.Discriminator(num_classes=5, image_size=32,
                                     df_dim=8, attention_resolution=8,
                                     sn_stop_gradient_uv=True),
    ],
    ids=["wrapper", "g_block", "d_block", "generator", "discriminator"],
)
def test_get_config_round_trips(make):
    obj = make()
    serialized = keras.saving.serialize_keras_object(obj)
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(obj)
    assert clone.get_config() == obj.get_config()
    if isinstance(obj, layers.SpectralNormalization):
        assert type(clone.layer) is keras.layers.Conv2DTranspose
        assert clone.layer.get_config() == obj.layer.get_config()


def _functional_model():
    x = keras.Input((8, 8, 16))
    labels = keras.Input((), dtype="int32")
    h = layers.SpectralNormalization(
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"))(x)
    h = layers.SNConv2D(16, 3)(h)
    h = layers.SelfAttention()(h)
    h = layers.ConditionalBatchNorm(CLASSES)(h, labels)
    h = layers.BatchNorm()(h)
    return keras.Model([x, labels], h)


def _inputs(rng):
    labels = np.array([0, 3, 1, 3], np.int32)
    return {
        "functional": [rng.normal(size=(4, 8, 8, 16)).astype(np.float32),
                       labels],
        "generator": [rng.normal(size=(4, 16)).astype(np.float32), labels],
        "discriminator": [
            rng.uniform(-1, 1, size=(4, 32, 32, 3)).astype(np.float32),
            labels],
    }


def test_keras_round_trip_in_a_fresh_process(tmp_path):
    rng = np.random.default_rng(0)
    built = {
        "functional": _functional_model(),
        "generator": models.Generator(
            num_classes=CLASSES, image_size=32, z_dim=16, gf_dim=8,
            attention_resolution=16),
        "discriminator": models.Discriminator(
            num_classes=CLASSES, image_size=32, df_dim=8,
            attention_resolution=16),
    }
    built["generator"].build((None, 16), (None,))
    built["discriminator"].build((None, 32, 32, 3), (None,))
    inputs = _inputs(rng)
    saved, record = {}, {}
    for name, model in built.items():
        # Attention must contribute, and u and the BN statistics must
        # differ from their initial values for the test to see them.
        attention = getattr(model, "attention_layers", None) or [
            layer for layer in model.layers
            if isinstance(layer, layers.SelfAttention)]
        for layer in attention:
            layer.gamma.assign(0.7)
        for _ in range(2):
            keras_exercise.exercise(name, model, inputs[name], {})
        model.save(str(tmp_path / f"{name}.keras"))
        saved[name] = keras_exercise.weights(model)
        keras_exercise.exercise(name, model, inputs[name], record)
    moving = [v for k, v in saved["generator"].items()
              if k.endswith("moving_mean")]
    assert moving and all(np.abs(m).max() > 0 for m in moving)
    np.savez(tmp_path / "inputs.npz", **{
        f"{name}/{i}": value
        for name, pair in inputs.items() for i, value in enumerate(pair)})

    # The child's only project import is `import sagan_tf`: that alone
    # must register every layer and both models. keras_exercise is a test
    # helper that imports only keras and numpy.
    code = (
        f"import sys; sys.path.insert(0, {TESTS!r}); "
        "import sagan_tf; import keras_exercise; "
        f"keras_exercise.load_and_exercise({str(tmp_path)!r}); "
        "print('MODULES', sorted(sys.modules))"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    modules = result.stdout.split("MODULES", 1)[1]
    # `import sagan_tf` stays cheap: no evaluation, training or TF-GAN.
    for heavy in ("sagan_tf.evaluation", "sagan_tf.training",
                  "sagan_tf.data", "tensorflow_gan"):
        assert f"'{heavy}" not in modules, heavy

    with np.load(tmp_path / "child.npz") as child:
        child = dict(child)
    for name, weights in saved.items():
        loaded = {k.split("/loaded/", 1)[1]: v for k, v in child.items()
                  if k.startswith(f"{name}/loaded/")}
        assert sorted(loaded) == sorted(weights), name
        for path, value in weights.items():
            np.testing.assert_array_equal(loaded[path], value, err_msg=path)
    checked = [k for k in record if "/after/" not in k]
    assert len(checked) == 6
    for key, value in record.items():
        np.testing.assert_allclose(child[key], value, rtol=1e-6, atol=1e-6,
                                   err_msg=key)
    # The training call changed the state, in both processes alike.
    u = [k for k in record if k.startswith("generator/after/")
         and k.endswith("/u")]
    assert u and any(
        not np.array_equal(record[k], saved["generator"][k.split(
            "/after/", 1)[1]]) for k in u)
