"""Released-format TFRecord shards of random pixels, for the benchmarks.

Each record holds `image_raw` (uint8 bytes, [S, S, 3]) and `label`, as
`data/convert_imagenet.py` writes them; the pixels are noise, which is all
a timing needs.
"""

import os

import numpy as np
import tensorflow as tf


def write(folder, image_size, count, num_classes, shards=4):
    """Writes `count` records to <folder>/train_<i>.tfrecords."""
    rng = np.random.default_rng(0)
    writers = [tf.io.TFRecordWriter(os.path.join(
        folder, f"train_{i}.tfrecords")) for i in range(shards)]
    for index in range(count):
        pixels = rng.integers(0, 256, (image_size, image_size, 3), np.uint8)
        example = tf.train.Example(features=tf.train.Features(feature={
            "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[pixels.tobytes()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(
                value=[index % num_classes])),
        }))
        writers[index % shards].write(example.SerializeToString())
    for writer in writers:
        writer.close()
