r"""Converts an ImageNet-style folder of class folders to training shards.

    python data/convert_imagenet.py --input_dir ILSVRC2012/train \
        --output_dir ./data --image_size 128 --num_shards 1024

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
import sys

from absl import app, flags

# Run as a script from anywhere: make the repository's package importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sagan_tf import cli, config, imagenet_folder, paths  # noqa: E402

_INPUT_DIR = flags.DEFINE_string(
    "input_dir", None,
    "Folder with one sub-folder per class (e.g. ILSVRC2012/train with one"
    " folder per WordNet ID). Labels are the indices of the sorted folder"
    " names.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "./data",
    "Where the .tfrecords shards, labels.txt and conversion.json go; this is"
    " the --data_dir of training and evaluation.")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", config.RELEASED_IMAGE_SIZE,
    "Side in pixels of the stored square images; training's --image_size"
    " must match.")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 1024,
    "Number of output files; more shards allow more parallel reading and"
    " finer-grained resuming.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", os.cpu_count() or 1,
    "Processes that decode and resize images in parallel (1 = no worker"
    " processes).")
_SEED = flags.DEFINE_integer(
    "seed", 0,
    "Seed of the shuffle that assigns images to shards; the same seed gives"
    " the same shards, which resuming relies on.")
cli.define_debug_flag(flags.FLAGS)


def _convert():
    # Before TensorFlow loads: a wrong path fails in a moment.
    paths.check_folder(_OUTPUT_DIR.value, "--output_dir")
    cli.quiet_tensorflow_startup()
    summary = imagenet_folder.convert(
        _INPUT_DIR.value, _OUTPUT_DIR.value,
        image_size=_IMAGE_SIZE.value, num_shards=_NUM_SHARDS.value,
        seed=_SEED.value, num_workers=_NUM_WORKERS.value)
    return 0 if summary.images_written or summary.shards_resumed else 1


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    return cli.run(_convert, "convert_imagenet.py",
                   debug=flags.FLAGS.debug)


if __name__ == "__main__":
    flags.mark_flag_as_required("input_dir")
    app.run(main)
