r"""`sagan-convert` / `data/convert_imagenet.py`: converts an ImageNet-style
folder of class folders to training shards.

    sagan-convert --input_dir ILSVRC2012/train \
        --output_dir ./data --image_size 128 --num_shards 1024

A folder of images without class folders (or any tree, with --unlabeled)
converts as unlabeled data: every label 0, for training with
--number_classes 0.

Writes <output_dir>/train-NNNNN-of-MMMMM.tfrecords in the released format
(raw uint8 image_raw + int64 label = index of the sorted class folder name)
and labels.txt. Each image becomes RGB, is cropped to its largest centred
square and resized with antialiased bilinear filtering. Unreadable files are
skipped with a warning and counted in the final summary; a shard that
would hold no image is not written, and the command then fails. Re-running
the same command resumes: finished shards are kept. Errors end with status
1 and one paragraph (--debug: the traceback).
"""

import os

from absl import flags

from sagan_tf import cli, paths
from sagan_tf import config as config_lib
from sagan_tf.data import converter

PROGRAM = "sagan-convert"


_C = config_lib.ConvertConfig()


def define_flags(fv=flags.FLAGS):
    """Defines every flag on `fv`; defaults come from sagan_tf/config.py."""
    flags.DEFINE_string(
        "input_dir", _C.input_dir,
        "Folder with one sub-folder per class (e.g. ILSVRC2012/train with one"
        " folder per WordNet ID). Labels are the indices of the sorted folder"
        " names. A folder of images without class folders converts as"
        " unlabeled data (every label 0; train with --number_classes 0).",
        flag_values=fv)
    flags.DEFINE_string(
        "output_dir", _C.output_dir,
        "Where the .tfrecords shards, labels.txt and conversion.json go; this"
        " is the --data_dir of training and evaluation.",
        flag_values=fv)
    flags.DEFINE_integer(
        "image_size", _C.image_size,
        "Side in pixels of the stored square images; training's --image_size"
        " must match.",
        flag_values=fv)
    flags.DEFINE_integer(
        "num_shards", _C.num_shards,
        "Number of output files; more shards allow more parallel reading and"
        " finer-grained resuming.",
        flag_values=fv)
    flags.DEFINE_integer(
        "num_workers", _C.num_workers,
        "Processes that decode and resize images in parallel (1 = no worker"
        " processes; 0 = one per CPU core).",
        flag_values=fv)
    flags.DEFINE_integer(
        "seed", _C.seed,
        "Seed of the shuffle that assigns images to shards; the same seed"
        " gives the same shards, which resuming relies on.",
        flag_values=fv)
    flags.DEFINE_boolean(
        "unlabeled", _C.unlabeled,
        "Take every image under --input_dir, recursively, as unlabeled data"
        " (every label 0; train with --number_classes 0), class folders or"
        " not: for datasets shipped in nested folders, e.g. LSUN exports.",
        flag_values=fv)
    cli.define_debug_flag(fv)
    flags.mark_flag_as_required("input_dir", flag_values=fv)


def _convert(fv):
    c = config_lib.from_flags(config_lib.ConvertConfig, fv)
    if c.num_workers < 0:
        raise ValueError(f"--num_workers={c.num_workers}: must be >= 0 "
                         "(0 = one per CPU core)")
    # Before TensorFlow does any work: a wrong path fails in a moment.
    paths.check_folder(c.output_dir, "--output_dir")
    summary = converter.convert(
        c.input_dir, c.output_dir,
        image_size=c.image_size, num_shards=c.num_shards,
        seed=c.seed, num_workers=c.num_workers or os.cpu_count() or 1,
        unlabeled=c.unlabeled)
    return 0 if summary.images_written or summary.shards_resumed else 1


main = cli.command_main(_convert, PROGRAM)


def run():
    """The console entry point."""
    cli.run_command(define_flags, main, __name__)


if __name__ == "__main__":
    run()
