"""Tests for sagan_tf.models: shapes, names, parameter counts, replicas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import config, layers, models

# Released sizes (original.md): trainable parameters / variables.
RELEASED_G_PARAMS = 42_078_852
RELEASED_D_PARAMS = 39_463_618
RELEASED_G_VARIABLES = 61
RELEASED_D_VARIABLES = 42


def _count(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _released_variable_table():
    """name -> shape of the released variables (original_variables.tsv)."""
    import pathlib

    path = pathlib.Path(__file__).parent / "testdata/original_variables.tsv"
    table = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, _ = line.split("\t")
        table[name] = () if shape == "scalar" else tuple(
            int(s) for s in shape.split("x")
        )
    return table


def test_released_parameter_counts():
    generator, discriminator = models.build_models(config.ModelConfig())
    g_vars = generator.trainable_variables
    d_vars = discriminator.trainable_variables
    assert _count(g_vars) == RELEASED_G_PARAMS
    assert _count(d_vars) == RELEASED_D_PARAMS
    assert len(g_vars) == RELEASED_G_VARIABLES
    assert len(d_vars) == RELEASED_D_VARIABLES
    # u of every SN layer plus the BN moving statistics.
    assert len(generator.non_trainable_variables) == 43
    assert len(discriminator.non_trainable_variables) == 23
    # Every released variable's size appears under the released scope.
    table = _released_variable_table()
    assert len(table) > 100
    ours = {}
    for model in (generator, discriminator):
        for v in model.variables:
            scope = "/".join(v.path.split("/")[1:-1])
            ours.setdefault(scope, []).append(int(np.prod(v.shape)))
    renames = {"sn_conv_theta": "theta", "sn_conv_phi": "phi",
               "sn_conv_g": "g", "sn_conv_attn": "o"}
    released = {}
    for name, shape in table.items():
        parts = name.split("/")[1:-1]
        parts = [renames.get(p, p) for p in parts]
        released.setdefault("/".join(parts), []).append(
            int(np.prod(shape)) if shape else 1
        )
    assert sorted(released) == sorted(ours)
    for scope, sizes in released.items():
        assert sorted(sizes) == sorted(ours[scope]), scope


def test_variable_paths_follow_released_scopes():
    generator = models.Generator(num_classes=3, image_size=32, gf_dim=8)
    generator.build((None, 128), (None,))
    paths = {v.path for v in generator.variables}
    for expected in [
        "generator/g_snh0/kernel",
        "generator/g_snh0/u",
        "generator/g_block1/cbn_0/gamma",
        "generator/g_block1/cbn_1/moving_variance",
        "generator/g_block3/snconv3/kernel",
        "generator/g_non_local/theta/u",
        "generator/g_non_local/gamma",
        "generator/g_bn/moving_mean",
        "generator/g_snconv_last/bias",
    ]:
        assert expected in paths, expected
    discriminator = models.Discriminator(
        num_classes=3, image_size=32, df_dim=8, attention_resolution=16
    )
    discriminator.build((None, 32, 32, 3), (None,))
    paths = {v.path for v in discriminator.variables}
    for expected in [
        "discriminator/d_optimized_block1/sn_conv3/kernel",
        "discriminator/d_block2/sn_conv1/u",
        "discriminator/d_non_local/o/kernel",
        "discriminator/d_sn_linear/kernel",
        "discriminator/d_embedding/embeddings",
        "discriminator/d_embedding/u",
    ]:
        assert expected in paths, expected
    # The last block keeps resolution and channels: identity shortcut.
    last = "discriminator/d_block4/sn_conv3"
    assert not any(p.startswith(last) for p in paths)


# (image_size, attention_resolution); width 8 keeps C/8 >= 1 everywhere.
@pytest.mark.parametrize(
    "image_size,attention", [(32, 16), (64, 32), (128, 64), (256, 32)]
)
def test_output_shapes(image_size, attention):
    batch, num_classes = 2, 3
    generator = models.Generator(
        num_classes=num_classes,
        image_size=image_size,
        z_dim=16,
        gf_dim=8,
        attention_resolution=attention,
    )
    discriminator = models.Discriminator(
        num_classes=num_classes,
        image_size=image_size,
        df_dim=8,
        attention_resolution=attention,
    )
    z = tf.random.normal([batch, 16])
    labels = tf.constant([0, 2])
    images, beta = generator(z, labels, training=True, return_attention=True)
    assert images.shape == (batch, image_size, image_size, 3)
    assert images.dtype == tf.float32
    assert beta.shape == (batch, attention**2, attention**2 // 4)
    assert float(tf.reduce_max(tf.abs(images))) <= 1.0
    logits = discriminator(images, labels, training=True)
    assert logits.shape == (batch,)
    assert logits.dtype == tf.float32
    assert len(generator.attention_layers) == 1
    assert len(discriminator.attention_layers) == 1


def test_baseline_has_no_attention():
    generator = models.Generator(
        num_classes=2, image_size=32, z_dim=8, gf_dim=4,
        attention_resolution=None,
    )
    discriminator = models.Discriminator(
        num_classes=2, image_size=32, df_dim=4, attention_resolution=None
    )
    images = generator(tf.zeros([1, 8]), tf.constant([1]))
    assert discriminator(images, tf.constant([1])).shape == (1,)
    assert generator.attention_layers == []
    assert discriminator.attention_layers == []
    with pytest.raises(ValueError, match="attention_resolution"):
        generator(tf.zeros([1, 8]), tf.constant([1]), return_attention=True)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="image_size"):
        models.Generator(image_size=48)
    with pytest.raises(ValueError, match="image_size"):
        models.Discriminator(image_size=512)
    with pytest.raises(ValueError, match=r"valid choices: \[8, 16, 32\]"):
        models.Generator(image_size=32, attention_resolution=64)
    with pytest.raises(ValueError, match=r"valid choices: \[4, 8, 16\]"):
        models.Discriminator(image_size=32, attention_resolution=32)


def test_attention_placement():
    # Released *_64 variants: G after block 4, D after the optimized block.
    generator = models.Generator(gf_dim=1, attention_resolution=64)
    assert generator._attention_index == 3
    discriminator = models.Discriminator(df_dim=1, attention_resolution=64)
    assert discriminator._attention_index == 0
    # Default: G after block 3, D after block 2 (both 32x32).
    assert models.Generator(gf_dim=1)._attention_index == 2
    assert models.Discriminator(df_dim=1)._attention_index == 1


def test_build_models_baseline_config():
    model_config = config.ModelConfig(
        image_size=32, z_dim=8, gf_dim=4, df_dim=4, number_classes=5,
        generator_type="baseline", discriminator_type="baseline",
    )
    generator, discriminator = models.build_models(model_config)
    assert generator.built and discriminator.built
    assert generator.attention_layers == []
    assert generator.blocks[0].cbn_0.gamma.shape == (5, 16)


def test_mixed_bfloat16_forward_outputs_float32():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        generator = models.Generator(
            num_classes=3, image_size=32, z_dim=8, gf_dim=8,
            attention_resolution=16,
        )
        discriminator = models.Discriminator(
            num_classes=3, image_size=32, df_dim=8, attention_resolution=16
        )
        labels = tf.constant([0, 1])
        images, beta = generator(
            tf.random.normal([2, 8]), labels, training=True,
            return_attention=True,
        )
        logits = discriminator(images, labels, training=True)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert images.dtype == tf.float32
    assert beta.dtype == tf.float32
    assert logits.dtype == tf.float32
    assert np.all(np.isfinite(images.numpy()))
    assert np.all(np.isfinite(logits.numpy()))
    # Variables stay float32; the SN vector was written in float32.
    block = generator.blocks[0]
    assert block.snconv1.kernel.dtype == "float32"
    assert block.snconv1.compute_dtype == "bfloat16"
    np.testing.assert_allclose(
        np.linalg.norm(block.snconv1.u.numpy()), 1.0, rtol=1e-5
    )


def test_mirrored_discriminator_update_keeps_u_identical():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest should make 2 logical CPUs"
    strategy = tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        discriminator = models.Discriminator(
            num_classes=4, image_size=32, df_dim=8, attention_resolution=16
        )
        discriminator.build((None, 32, 32, 3), (None,))
        optimizer = keras.optimizers.Adam(1e-3, beta_1=0.0)
        optimizer.build(discriminator.trainable_variables)
    sn_layer = discriminator.blocks[1].sn_conv1
    u_before = sn_layer.u.numpy()
    bn_free_vars = discriminator.trainable_variables

    @tf.function
    def step(images, labels):
        def replica_fn(images, labels):
            with tf.GradientTape() as tape:
                logits = discriminator(images, labels, training=True)
                loss = tf.nn.compute_average_loss(
                    tf.nn.relu(1.0 - logits), global_batch_size=4
                )
            grads = tape.gradient(loss, bn_free_vars)
            optimizer.apply_gradients(zip(grads, bn_free_vars))
            return loss

        return strategy.run(replica_fn, args=(images, labels))

    def per_replica(ctx):
        index = ctx.replica_id_in_sync_group
        rng = np.random.default_rng(index)
        return rng.normal(size=(2, 32, 32, 3)).astype(np.float32)

    images = strategy.experimental_distribute_values_from_function(per_replica)
    labels = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant([ctx.replica_id_in_sync_group, 3])
    )
    step(images, labels)

    values = [
        v.numpy() for v in strategy.experimental_local_results(sn_layer.u.value)
    ]
    assert len(values) == 2
    np.testing.assert_array_equal(values[0], values[1])
    assert not np.allclose(values[0], u_before)
    # The weights moved too, identically on both replicas.
    kernel = strategy.experimental_local_results(sn_layer.kernel.value)
    np.testing.assert_array_equal(kernel[0].numpy(), kernel[1].numpy())
    # Every u of D stays mirrored.
    for layer in discriminator._flatten_layers():
        if isinstance(layer, layers.SNConv2D | layers.SNDense):
            local = strategy.experimental_local_results(layer.u.value)
            np.testing.assert_array_equal(local[0].numpy(), local[1].numpy())


def test_checkpoint_saves_u_and_moving_statistics(tmp_path):
    def make():
        generator = models.Generator(
            num_classes=2, image_size=32, z_dim=8, gf_dim=8,
            attention_resolution=16,
        )
        generator.build((None, 8), (None,))
        return generator

    generator = make()
    generator(tf.random.normal([2, 8]), tf.constant([0, 1]), training=True)
    path = tf.train.Checkpoint(generator=generator).write(
        str(tmp_path / "ckpt")
    )
    restored = make()
    tf.train.Checkpoint(generator=restored).read(path).assert_consumed()
    for a, b in zip(generator.variables, restored.variables):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    moving = restored.blocks[0].cbn_0.moving_mean.numpy()
    assert np.any(moving != 0.0)


def test_model_get_config_round_trips():
    generator = models.Generator(
        num_classes=7, image_size=64, z_dim=16, gf_dim=8,
        attention_resolution=None, sn_stop_gradient_uv=True,
        sync_batch_norm=True,
    )
    discriminator = models.Discriminator(
        num_classes=7, image_size=256, df_dim=8, attention_resolution=64
    )
    for model in (generator, discriminator):
        config_dict = model.get_config()
        clone = type(model).from_config(config_dict)
        assert clone.get_config() == config_dict


def _power_step(u, w_mat):
    """Released one-iteration u' = l2n(l2n(u Wᵀ) W), float64 numpy."""
    v = np.float64(u) @ np.float64(w_mat).T
    v /= np.sqrt(np.sum(v**2)) + 1e-12
    u = v @ np.float64(w_mat)
    return u / (np.sqrt(np.sum(u**2)) + 1e-12)


@pytest.mark.parametrize("update_at_inference", [True, False])
def test_generator_inference_writes_u_as_released(update_at_inference):
    # Released: G's SN layers always use update_collection=None, so each
    # inference call advances u; the flag freezes it.
    generator = models.build_generator(config.ModelConfig(
        image_size=32, z_dim=16, gf_dim=8, number_classes=4,
        attention_resolution=16,
        sn_update_at_inference=update_at_inference,
    ))
    sn = [layer for layer in generator._flatten_layers(include_self=False)
          if hasattr(layer, "u")]
    w_mats = [layer.kernel.numpy().reshape(-1, layer.u.shape[-1])
              for layer in sn]
    u0 = [layer.u.numpy() for layer in sn]
    bn = [v.numpy() for layer in generator._flatten_layers()
          if hasattr(layer, "moving_mean")
          for v in (layer.moving_mean, layer.moving_variance)]
    z = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    labels = np.array([0, 3, 3], np.int32)
    first = generator(z, labels, training=False).numpy()
    u1 = [layer.u.numpy() for layer in sn]
    second = generator(z, labels, training=False).numpy()
    for layer, w, a, b in zip(sn, w_mats, u0, u1):
        if update_at_inference:
            # The second call starts from the u the first one wrote.
            np.testing.assert_allclose(b, _power_step(a, w), atol=1e-5,
                                       err_msg=layer.path)
            np.testing.assert_allclose(layer.u.numpy(), _power_step(b, w),
                                       atol=1e-5, err_msg=layer.path)
        else:
            np.testing.assert_array_equal(layer.u.numpy(), a,
                                          err_msg=layer.path)
    if update_at_inference:
        assert np.abs(first - second).max() > 1e-6
    else:
        np.testing.assert_array_equal(first, second)
    # Inference never moves the BN statistics.
    after = [v.numpy() for layer in generator._flatten_layers()
             if hasattr(layer, "moving_mean")
             for v in (layer.moving_mean, layer.moving_variance)]
    for a, b in zip(bn, after):
        np.testing.assert_array_equal(a, b)
    # An explicit update_sn=False (the SavedModel export) is stateless.
    before = [layer.u.numpy() for layer in sn]
    generator(z, labels, training=False, update_sn=False)
    for layer, u in zip(sn, before):
        np.testing.assert_array_equal(layer.u.numpy(), u)
