"""Checks of a TrainConfig before anything is built or written: each bad
value raises ValueError naming its flag."""

import math

from sagan_tf.augmentation import augmenter
from sagan_tf.data import records

# --mixed_precision -> Keras policy.
POLICIES = {
    "none": "float32",
    "bf16": "mixed_bfloat16",
    "fp16": "mixed_float16",
}


def validate_config(config):
    """Checks a TrainConfig; raises ValueError naming the offending flag."""

    def need(ok, flag, value, rule):
        if not ok:
            raise ValueError(f"--{flag}={value!r}: {rule}")

    c = config
    for flag in ("batch_size", "d_step", "g_step", "max_steps"):
        need(getattr(c, flag) >= 1, flag, getattr(c, flag), "must be >= 1")
    for flag in (
        "save_summaries_steps",
        "keep_checkpoints",
        "log_every_steps",
    ):
        need(getattr(c, flag) >= 1, flag, getattr(c, flag), "must be >= 1")
    for flag in ("save_checkpoint_secs", "save_checkpoint_steps"):
        need(getattr(c, flag) >= 0, flag, getattr(c, flag), "must be >= 0")
    need(
        c.save_checkpoint_secs > 0 or c.save_checkpoint_steps > 0,
        "save_checkpoint_secs",
        c.save_checkpoint_secs,
        "must be > 0 unless --save_checkpoint_steps is set",
    )
    for flag in ("discriminator_learning_rate", "generator_learning_rate"):
        value = getattr(c, flag)
        need(
            math.isfinite(value) and value > 0, flag, value, "must be > 0"
        )
    need(0.0 <= c.beta1 < 1.0, "beta1", c.beta1, "must be in [0, 1)")
    need(
        0.0 <= c.adam_beta2 < 1.0,
        "adam_beta2",
        c.adam_beta2,
        "must be in [0, 1)",
    )
    need(c.adam_epsilon > 0, "adam_epsilon", c.adam_epsilon, "must be > 0")
    need(
        0.0 <= c.ema_decay < 1.0, "ema_decay", c.ema_decay, "must be in [0, 1)"
    )
    need(
        c.mixed_precision in POLICIES,
        "mixed_precision",
        c.mixed_precision,
        f"must be one of {sorted(POLICIES)}",
    )
    need(c.num_cpu_devices >= 0, "num_cpu_devices", c.num_cpu_devices,
         "must be >= 0")
    need(c.inject_nan_at_step >= 0, "inject_nan_at_step",
         c.inject_nan_at_step, "must be >= 0")
    need(c.loss_type in ("hinge_loss", "kl_loss"), "loss_type", c.loss_type,
         "must be 'hinge_loss' or 'kl_loss'")
    need(c.data.data_format in records.DATA_FORMATS, "data_format",
         c.data.data_format, f"must be one of {records.DATA_FORMATS}")
    need(c.data.shuffle_buffer_size >= 0, "shuffle_buffer_size",
         c.data.shuffle_buffer_size, "must be >= 0")
    augmenter.validate(c)
    m = c.model
    need(m.image_size in (32, 64, 128, 256), "image_size", m.image_size,
         "must be 32, 64, 128 or 256")
    for flag in ("z_dim", "gf_dim", "df_dim", "attention_resolution"):
        need(getattr(m, flag) >= 1, flag, getattr(m, flag), "must be >= 1")
    need(m.number_classes >= 0, "number_classes", m.number_classes,
         "must be >= 0 (0 trains an unconditional model)")
    for flag in ("generator_type", "discriminator_type"):
        need(
            getattr(m, flag) in ("test", "baseline"),
            flag,
            getattr(m, flag),
            "must be 'test' (self-attention) or 'baseline'",
        )
