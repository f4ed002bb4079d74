"""`sagan-import-tf1` (also `python -m sagan_tf.import_tf1`): a checkpoint
of the released TF1 code into this port's run layout.

    sagan-import-tf1 --tf1_checkpoint released/model.ckpt-1000000 \\
        --output_dir checkpoint/imagenet_64

The work is `sagan_tf.import_tf1.import_checkpoint`. Errors end with status
1 and one paragraph (--debug: the traceback). Flag defaults live in
sagan_tf/config.py.
"""

import dataclasses
import os

from absl import flags

from sagan_tf import cli
from sagan_tf import config as config_lib

PROGRAM = "sagan-import-tf1"


def define_flags(fv=flags.FLAGS):
    """Defines every flag on `fv`; defaults come from sagan_tf/config.py."""
    m = config_lib.ModelConfig()
    t = config_lib.TrainConfig()
    flags.DEFINE_string(
        "tf1_checkpoint", None,
        "Checkpoint prefix written by the released code (e.g. "
        "logdir/model.ckpt-1000000), or the directory holding it.",
        flag_values=fv)
    flags.DEFINE_string(
        "output_dir", None,
        "Run directory to create, e.g. checkpoint/imagenet_64; "
        "sagan-train --checkpoint_dir checkpoint --batch_size 64 "
        "resumes from it.",
        flag_values=fv)
    flags.DEFINE_integer("image_size", m.image_size, "Released image size.",
                         flag_values=fv)
    flags.DEFINE_integer("z_dim", m.z_dim, "Size of z in the released run.",
                         flag_values=fv)
    flags.DEFINE_integer("gf_dim", m.gf_dim, "gf_dim of the released run.",
                         flag_values=fv)
    flags.DEFINE_integer("df_dim", m.df_dim, "df_dim of the released run.",
                         flag_values=fv)
    flags.DEFINE_integer(
        "number_classes", m.number_classes, "Classes of the released run.",
        flag_values=fv)
    flags.DEFINE_enum(
        "generator_type", m.generator_type, ["test", "baseline"],
        "test = with self-attention, baseline = without.", flag_values=fv)
    flags.DEFINE_enum(
        "discriminator_type", m.discriminator_type, ["test", "baseline"],
        "test = with self-attention, baseline = without.", flag_values=fv)
    flags.DEFINE_integer(
        "attention_resolution", m.attention_resolution,
        "Attention resolution (32, or 64 for the released *_64 variants).",
        flag_values=fv)
    flags.DEFINE_integer(
        "keep_checkpoints", t.keep_checkpoints,
        "Checkpoints kept in --output_dir by later training.",
        flag_values=fv)
    cli.define_debug_flag(fv)
    flags.mark_flags_as_required(["tf1_checkpoint", "output_dir"],
                                 flag_values=fv)


def train_config_from_flags(fv=flags.FLAGS):
    """The TrainConfig of the run directory --output_dir will become."""
    output_dir = os.path.normpath(fv.output_dir)
    base = config_lib.TrainConfig()
    batch = base.batch_size
    suffix = os.path.basename(output_dir)
    if suffix.startswith("imagenet_") and suffix[9:].isdigit():
        batch = int(suffix[9:])
    return dataclasses.replace(
        base,
        model=config_lib.from_flags(config_lib.ModelConfig, fv),
        checkpoint_dir=os.path.dirname(output_dir) or ".",
        batch_size=batch,
        keep_checkpoints=fv.keep_checkpoints,
    )


def _import(fv):
    train_config = train_config_from_flags(fv)
    from sagan_tf import import_tf1

    import_tf1.import_checkpoint(
        fv.tf1_checkpoint, os.path.normpath(fv.output_dir), train_config
    )


main = cli.command_main(_import, PROGRAM)


def run():
    """The console entry point."""
    cli.run_command(define_flags, main, __name__)


if __name__ == "__main__":
    run()
