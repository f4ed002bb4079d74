"""G and D built from a `config.ModelConfig`, variables created."""

from sagan_tf.models.discriminator import Discriminator
from sagan_tf.models.generator import Generator


def build_generator(model_config):
    """Builds G from a `config.ModelConfig`, variables created."""
    generator = Generator(
        num_classes=model_config.number_classes,
        image_size=model_config.image_size,
        z_dim=model_config.z_dim,
        gf_dim=model_config.gf_dim,
        attention_resolution=model_config.generator_attention(),
        sn_stop_gradient_uv=model_config.sn_stop_gradient_uv,
        sync_batch_norm=model_config.sync_batch_norm,
        sn_update_at_inference=model_config.sn_update_at_inference,
    )
    generator.build((None, model_config.z_dim), (None,))
    return generator


def build_discriminator(model_config):
    """Builds D from a `config.ModelConfig`, variables created."""
    discriminator = Discriminator(
        num_classes=model_config.number_classes,
        image_size=model_config.image_size,
        df_dim=model_config.df_dim,
        attention_resolution=model_config.discriminator_attention(),
        sn_stop_gradient_uv=model_config.sn_stop_gradient_uv,
    )
    size = model_config.image_size
    discriminator.build((None, size, size, 3), (None,))
    return discriminator


def build_models(model_config):
    """Builds G and D from a `config.ModelConfig`, variables created.

    Args:
        model_config: `sagan_tf.config.ModelConfig`.

    Returns:
        (generator, discriminator), both built, so optimizers can be built
        on their trainable variables right away.
    """
    return build_generator(model_config), build_discriminator(model_config)
