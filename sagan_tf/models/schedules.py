"""Channel schedules of G and D, and where the attention block goes.

Shared by `generator.py`, `discriminator.py` and the flag checks
(`checks.py`); the tables are in the package docstring (`__init__.py`).
"""

# image_size -> (multiple of gf for the linear layer, block outputs).
G_SCHEDULE = {
    32: (4, (4, 2, 1)),
    64: (8, (8, 4, 2, 1)),
    128: (16, (16, 8, 4, 2, 1)),
    256: (16, (16, 8, 8, 4, 2, 1)),
}
# image_size -> block outputs; the last block does not downsample.
D_SCHEDULE = {
    32: (1, 2, 4, 4),
    64: (1, 2, 4, 8, 8),
    128: (1, 2, 4, 8, 16, 16),
    256: (1, 2, 4, 8, 8, 16, 16),
}
INITIAL_RESOLUTION = 4
G_CONFIG_KEYS = (
    "name", "num_classes", "image_size", "z_dim", "gf_dim",
    "attention_resolution", "sn_stop_gradient_uv", "sync_batch_norm",
    "sn_update_at_inference",
)
D_CONFIG_KEYS = (
    "name", "num_classes", "image_size", "df_dim", "attention_resolution",
    "sn_stop_gradient_uv",
)


def config_of(model, keys):
    """The `get_config` dict of a model: its attributes named in `keys`."""
    return {key: getattr(model, key) for key in keys}


def check_image_size(image_size, owner):
    """Raises ValueError unless G and D have a schedule for image_size."""
    if image_size not in G_SCHEDULE:
        raise ValueError(
            f"{owner}: image_size must be one of {sorted(G_SCHEDULE)}, "
            f"got {image_size!r}"
        )


def attention_index(resolutions, attention_resolution, owner):
    """Index of the block after which attention runs, or None."""
    if attention_resolution is None:
        return None
    if attention_resolution not in resolutions:
        raise ValueError(
            f"{owner}: attention_resolution={attention_resolution!r} is not "
            f"the output resolution of any block; valid choices: "
            f"{sorted(set(resolutions))} or None"
        )
    return resolutions.index(attention_resolution)


def require_attention(attention_layer, owner):
    """Raises ValueError when attention is asked of a baseline network."""
    if attention_layer is None:
        raise ValueError(
            f"{owner}: return_attention=True needs attention, but "
            "attention_resolution is None"
        )
