r"""Measures how many images per second the input pipeline delivers.

    python bench/read_throughput.py --image_size 128 --batch_size 64

Without --data_dir it writes shards of random pixels to a temporary folder
first (raw records, or JPEG shards with --data_format jpeg), then pulls
batches from `sagan_tf.data.build_dataset` as fast as it can and prints
images/s. Compare the figure with the training step rate times the batch
size: the reader must be faster.
"""

import io
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from sagan_tf import config, data  # noqa: E402


def define_flags():
    """Defines the command-line flags (when run as a script only: the
    suite imports this module next to others with flags of the same names).
    """
    global _DATA_DIR, _DATA_FORMAT, _IMAGE_SIZE, _BATCH_SIZE, _NUM_IMAGES, \
        _NUM_SHARDS, _SHUFFLE_BUFFER, _WARMUP, _BATCHES
    _DATA_DIR = flags.DEFINE_string(
        "data_dir", "",
        "Existing shards to read; empty = generate random shards in a temporary"
        " folder.")
    _DATA_FORMAT = flags.DEFINE_enum(
        "data_format", "records", ["records", "jpeg"],
        "Shard format read (and generated): released raw records, or JPEG"
        " shards that are decoded, cropped and resized on the fly.")
    _IMAGE_SIZE = flags.DEFINE_integer(
        "image_size", config.RELEASED_IMAGE_SIZE, "Side of the images read.")
    _BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Images per batch.")
    _NUM_IMAGES = flags.DEFINE_integer(
        "num_images", 4096, "Images to generate (without --data_dir).")
    _NUM_SHARDS = flags.DEFINE_integer(
        "num_shards", 16, "Shards to generate (without --data_dir).")
    _SHUFFLE_BUFFER = flags.DEFINE_integer(
        "shuffle_buffer_size", 10000, "Shuffle buffer, in records.")
    _WARMUP = flags.DEFINE_integer(
        "warmup_batches", 50, "Batches pulled before timing (fills buffers).")
    _BATCHES = flags.DEFINE_integer("batches", 300, "Batches timed.")



def _generate(folder, data_format, image_size, num_images, num_shards):
    rng = np.random.default_rng(0)
    writers = [
        tf.io.TFRecordWriter(os.path.join(
            folder, f"train-{i:05d}-of-{num_shards:05d}.tfrecords"))
        for i in range(num_shards)
    ]
    for index in range(num_images):
        if data_format == "records":
            pixels = rng.integers(0, 256, (image_size, image_size, 3),
                                  np.uint8)
            feature = {
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[pixels.tobytes()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[index % 1000])),
            }
        else:
            # ImageNet-like size: about 4:3, larger than the output.
            height, width = image_size * 3, image_size * 4
            pixels = rng.integers(0, 256, (height, width, 3), np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            feature = {
                "image/encoded": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[buffer.getvalue()])),
                "image/class/label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[index % 1000 + 1])),
            }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[index % num_shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()


def measure(data_format="records", image_size=config.RELEASED_IMAGE_SIZE,
            batch_size=64, num_images=4096, num_shards=16,
            shuffle_buffer_size=10000, warmup_batches=50, batches=300,
            data_dir="", log=print):
    """Images/s that `sagan_tf.data.build_dataset` delivers.

    Without `data_dir`, random shards are written to a temporary folder
    first. Arguments as the flags of the same names.
    """
    with tempfile.TemporaryDirectory() as temp:
        if not data_dir:
            data_dir = temp
            log(f"Writing {num_images} random {data_format} images to "
                f"{num_shards} shards in {temp} ...")
            _generate(temp, data_format, image_size, num_images, num_shards)
        cfg = config.DataConfig(
            data_dir=data_dir, data_format=data_format,
            shuffle_buffer_size=shuffle_buffer_size,
            label_offset=-1 if data_format == "jpeg" else 0)
        dataset = data.build_dataset(
            cfg, image_size=image_size, batch_size=batch_size,
            num_classes=config.RELEASED_NUM_CLASSES)
        iterator = iter(dataset)
        with data.clear_errors(cfg):
            for _ in range(warmup_batches):
                next(iterator)
            start = time.perf_counter()
            for step in range(1, batches + 1):
                images, _ = next(iterator)
                if step % 100 == 0:
                    rate = step * batch_size / (time.perf_counter() - start)
                    log(f"  {step} batches, {rate:.0f} images/s")
            images.numpy()
            elapsed = time.perf_counter() - start
    return batches * batch_size / elapsed


def main(argv):
    del argv
    rate = measure(
        _DATA_FORMAT.value, _IMAGE_SIZE.value, _BATCH_SIZE.value,
        _NUM_IMAGES.value, _NUM_SHARDS.value, _SHUFFLE_BUFFER.value,
        _WARMUP.value, _BATCHES.value, _DATA_DIR.value)
    print(f"{_DATA_FORMAT.value} {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value},"
          f" batch {_BATCH_SIZE.value}: {rate:.0f} images/s"
          f" ({rate / _BATCH_SIZE.value:.1f} batches/s,"
          f" {os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    define_flags()
    app.run(main)
