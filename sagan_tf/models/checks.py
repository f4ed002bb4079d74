"""Checks that the model flags describe networks that can be built.

The entry points run these with their other flag checks, before anything is
written, so that a bad value names its flag instead of failing deep inside a
layer's build ("SelfAttention ... needs channels divisible by 8").
"""

from sagan_tf import config as config_lib
from sagan_tf.models.discriminator import Discriminator
from sagan_tf.models.generator import Generator

# SelfAttention maps C channels to C/8 (theta, phi) and C/2 (g).
_ATTENTION_DIVISOR = 8
_IMAGE_SIZES = (32, 64, 128, 256)


def check_model_config(model_config, discriminator=True, flags=None):
    """Raises ValueError naming the flag when G (or D) cannot be built.

    Args:
      model_config: `config.ModelConfig`, attention resolution resolved.
      discriminator: also check D (evaluation builds only G).
      flags: dict ModelConfig field -> flag name, for entry points whose
        flags are named otherwise.
    """
    flags = flags or {}

    def name(field):
        return "--" + flags.get(field, field)

    m = model_config
    if m.image_size not in _IMAGE_SIZES:
        raise ValueError(
            f"{name('image_size')}={m.image_size}: must be one of "
            f"{', '.join(map(str, _IMAGE_SIZES))}"
        )
    fields = ["z_dim", "gf_dim"]
    if discriminator:
        fields.append("df_dim")
    for field in fields:
        if getattr(m, field) < 1:
            raise ValueError(
                f"{name(field)}={getattr(m, field)}: must be >= 1"
            )
    if m.number_classes < 0:
        raise ValueError(
            f"{name('number_classes')}={m.number_classes}: must be >= 0 "
            "(0 trains an unconditional model)"
        )
    _check_attention(m, "generator", m.generator_attention(), name)
    if discriminator:
        _check_attention(m, "discriminator", m.discriminator_attention(),
                         name)


def _check_attention(m, network, resolution, name):
    if resolution is None:  # baseline network
        return
    if network == "generator":
        sides = config_lib.generator_resolutions(m.image_size)
        width_field, letter = "gf_dim", "G"
    else:
        sides = config_lib.discriminator_resolutions(m.image_size)
        width_field, letter = "df_dim", "D"
    if resolution not in sides:
        raise ValueError(
            f"{name('attention_resolution')}={resolution}: {letter} has no "
            f"{resolution}x{resolution} block at {name('image_size')} "
            f"{m.image_size}; choose one of "
            f"{', '.join(map(str, sorted(set(sides))))}, or "
            f"{config_lib.ATTENTION_AUTO!r}"
        )
    channels = _attention_channels(m, network, sides.index(resolution))
    if channels % _ATTENTION_DIVISOR:
        width = getattr(m, width_field)
        step = _ATTENTION_DIVISOR // _gcd(channels // width,
                                          _ATTENTION_DIVISOR)
        suggestion = -(-width // step) * step
        raise ValueError(
            f"{name(width_field)}={width}: {letter}'s self-attention block "
            f"at {resolution}x{resolution} would get {channels} channels, "
            f"and needs a multiple of {_ATTENTION_DIVISOR}; use a "
            f"{name(width_field)} that is a multiple of {step} (for example "
            f"{suggestion}), or "
            f"{name(network + '_type')} baseline"
        )


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def _attention_channels(m, network, block_index):
    """Output channels of the block the attention layer follows.

    The networks are constructed (not built: no variables), so the channel
    schedule stays defined in one place, `schedules.py`.
    """
    if network == "generator":
        net = Generator(
            num_classes=m.number_classes, image_size=m.image_size,
            z_dim=m.z_dim, gf_dim=m.gf_dim, attention_resolution=None,
        )
    else:
        net = Discriminator(
            num_classes=m.number_classes, image_size=m.image_size,
            df_dim=m.df_dim, attention_resolution=None,
        )
    return net.blocks[block_index].out_channels
