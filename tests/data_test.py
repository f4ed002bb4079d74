"""Tests of the input pipeline (sagan_tf/data.py)."""

import dataclasses
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from image_fixtures import patterned
from PIL import Image

from sagan_tf import data
from sagan_tf.config import DataConfig
from sagan_tf.data import preprocessing, tfrecord_check

S = 8  # image side used throughout
RED, BLUE = (200, 30, 40), (10, 60, 220)


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _raw_record(pixels, label):
    return tf.train.Example(features=tf.train.Features(feature={
        "image_raw": _bytes(np.asarray(pixels, np.uint8).tobytes()),
        "label": _int(label),
    })).SerializeToString()


def _jpeg_record(encoded, label):
    return tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes(encoded),
        "image/class/label": _int(label),
    })).SerializeToString()


def _write(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return str(path)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _raw_shards(folder, num_examples, num_files, size=S):
    """Shards whose example i has label i and pixels equal to i % 256."""
    pixels = [np.full((size, size, 3), i % 256, np.uint8)
              for i in range(num_examples)]
    for f in range(num_files):
        _write(folder / f"part-{f}.tfrecords",
               [_raw_record(pixels[i], i)
                for i in range(f, num_examples, num_files)])
    return pixels


def _config(folder, **kwargs):
    kwargs.setdefault("shuffle_buffer_size", 16)
    kwargs.setdefault("seed", 1)
    return DataConfig(data_dir=str(folder), **kwargs)


def _collect(dataset, config=None):
    images, labels = [], []
    with data.clear_errors(config):
        for image_batch, label_batch in dataset:
            images.append(image_batch.numpy())
            labels.append(label_batch.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_round_trip_returns_stored_pixels(tmp_path):
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (10, S, S, 3), dtype=np.uint8)
    _write(tmp_path / "a.tfrecords",
           [_raw_record(stored[i], i) for i in range(5)])
    _write(tmp_path / "b.tfrecords",
           [_raw_record(stored[i], i) for i in range(5, 10)])
    dataset = data.build_dataset(
        _config(tmp_path), image_size=S, batch_size=3, num_classes=10,
        repeat=False)
    images, labels = _collect(dataset)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.shape == (9, S, S, 3)  # drop_remainder: 10 -> 3 batches
    assert len(set(labels)) == 9
    for image, label in zip(images, labels):
        expected = stored[label].astype(np.float32) * 2.0 / 255.0 - 1.0
        np.testing.assert_allclose(image, expected, atol=1e-6)


def test_repeat_and_label_offset(tmp_path):
    _raw_shards(tmp_path, 4, 1)
    dataset = data.build_dataset(
        _config(tmp_path, label_offset=1), image_size=S, batch_size=4,
        num_classes=5)
    labels = np.concatenate([b[1].numpy() for b in dataset.take(3)])
    assert sorted(labels) == sorted([1, 2, 3, 4] * 3)


@pytest.mark.parametrize("num_files", [4, 1])
def test_input_contexts_get_disjoint_examples(tmp_path, num_files):
    # 4 files: file-level sharding; 1 file: record-level sharding.
    _raw_shards(tmp_path, 12, num_files)
    seen = []
    for index in range(2):
        context = tf.distribute.InputContext(2, index, 2)
        dataset = data.build_dataset(
            _config(tmp_path, seed=None), image_size=S, batch_size=1,
            num_classes=12, input_context=context, repeat=False)
        seen.append(set(_collect(dataset)[1].tolist()))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(12))


def test_mirrored_replicas_get_different_examples(tmp_path):
    _raw_shards(tmp_path, 16, 4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    dist = data.distributed_dataset(
        strategy, _config(tmp_path), image_size=S, per_replica_batch_size=2,
        num_classes=16)
    images, labels = next(iter(dist))
    per_replica = [t.numpy() for t in
                   strategy.experimental_local_results(labels)]
    assert [len(x) for x in per_replica] == [2, 2]
    assert not set(per_replica[0]) & set(per_replica[1])
    for image, label in zip(strategy.experimental_local_results(images),
                            per_replica):
        # Pixel value i belongs to label i: images travel with their labels.
        np.testing.assert_allclose(
            image.numpy()[:, 0, 0, 0], label * 2.0 / 255.0 - 1.0, atol=1e-6)


# ---------------------------------------------------------------- sources


def _test_images():
    rng = np.random.default_rng(3)
    smooth = np.clip(
        np.linspace(0, 255, 24)[None, :, None]
        + rng.normal(0, 20, (17, 24, 3)), 0, 255).astype(np.uint8)
    return [
        patterned(10, 25, BLUE, RED),   # wide, odd surplus
        patterned(19, 12, BLUE, RED),   # tall, odd surplus
        patterned(4, 6, BLUE, RED),     # smaller than S: upsampled
        smooth,                          # detail: compare against PIL
    ]


def _jpeg_source(folder, images, offset_labels):
    _write(folder / "train-00000-of-00001",
           [_jpeg_record(_png(img), i + 1) for i, img in enumerate(images)])
    _write(folder / "validation-00000-of-00001",
           [_jpeg_record(b"not an image", 999)])
    cfg = _config(folder, data_format="jpeg",
                  label_offset=-1 if offset_labels else 0)
    return cfg


def _check_preprocessing(images, labels, sources):
    order = np.argsort(labels)
    images, labels = images[order], labels[order]
    assert labels.tolist() == list(range(len(sources)))
    pixels = (images + 1.0) * 255.0 / 2.0
    # Centre squares are uniformly red: nothing from the sides leaks in.
    for i in range(3):
        np.testing.assert_allclose(
            pixels[i], np.broadcast_to(RED, (S, S, 3)), atol=1e-3)
    # PIL's antialiased bilinear resize (the converter) agrees to 1 level.
    reference = preprocessing.square_rgb_array(Image.fromarray(sources[3]), S)
    np.testing.assert_allclose(pixels[3], reference, atol=1.0 + 1e-3)
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)


def test_jpeg_shards_preprocessing(tmp_path):
    sources = _test_images()
    cfg = _jpeg_source(tmp_path, sources, offset_labels=True)
    assert data.list_files(cfg) == [str(tmp_path / "train-00000-of-00001")]
    dataset = data.build_dataset(
        cfg, image_size=S, batch_size=4, num_classes=10, repeat=False)
    _check_preprocessing(*_collect(dataset), sources)


def test_tfds_source_matches_jpeg_source(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    sources = _test_images()

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        assert self.name == "imagenet2012"
        return tf.data.Dataset.from_tensor_slices({
            "image": [_png(img) for img in sources],
            "label": np.arange(len(sources), dtype=np.int64),
            "file_name": [f"n0_{i}.JPEG" for i in range(len(sources))],
        })

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        cfg = _config(tmp_path, data_format="tfds",
                      tfds_manual_dir=str(tmp_path))
        dataset = data.build_dataset(
            cfg, image_size=S, batch_size=4, num_classes=10, repeat=False)
        tfds_images, tfds_labels = _collect(dataset)
    _check_preprocessing(tfds_images, tfds_labels, sources)
    jpeg = data.build_dataset(
        _jpeg_source(tmp_path, sources, True), image_size=S, batch_size=4,
        num_classes=10, repeat=False)
    jpeg_images, jpeg_labels = _collect(jpeg)
    np.testing.assert_array_equal(
        tfds_images[np.argsort(tfds_labels)],
        jpeg_images[np.argsort(jpeg_labels)])


# ---------------------------------------------------------------- errors


def _error(tmp_path, config=None, **kwargs):
    config = config or _config(tmp_path)
    kwargs = {"image_size": S, "batch_size": 1, "num_classes": 10,
              "repeat": False, "shuffle": False, **kwargs}
    with pytest.raises(ValueError) as info:
        _collect(data.build_dataset(config, **kwargs), config)
    return str(info.value)


def test_missing_empty_and_unmatched_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    assert "nowhere" in _error(tmp_path, _config(missing))
    (tmp_path / "empty").mkdir()
    message = _error(tmp_path, _config(tmp_path / "empty"))
    assert "empty" in message
    (tmp_path / "other").mkdir()
    _write(tmp_path / "other" / "train-00000-of-00001", [])
    message = _error(tmp_path, _config(tmp_path / "other"))
    assert "*.tfrecords" in message and str(tmp_path / "other") in message
    assert "train-00000-of-00001" in message


def test_wrong_image_size_fails_at_build_time(tmp_path):
    _raw_shards(tmp_path, 2, 1, size=16)
    with pytest.raises(data.DataError) as info:
        data.build_dataset(_config(tmp_path), image_size=S, batch_size=1,
                           num_classes=10)
    message = str(info.value)
    assert "part-0.tfrecords" in message
    assert "768" in message and "192" in message and "16x16x3" in message


def test_wrong_byte_count_in_a_later_record(tmp_path):
    good = np.zeros((S, S, 3), np.uint8)
    path = _write(tmp_path / "x.tfrecords", [
        _raw_record(good, 0), _raw_record(np.zeros(S * S), 1)])
    message = _error(tmp_path)
    assert path in message and "expected 192" in message
    assert f"has {S * S} image_raw bytes" in message
    assert "{{" not in message and "Op:" not in message


def test_label_out_of_range(tmp_path):
    good = np.zeros((S, S, 3), np.uint8)
    path = _write(tmp_path / "x.tfrecords", [
        _raw_record(good, 3), _raw_record(good, 10)])
    message = _error(tmp_path)
    assert "label 10" in message and path in message
    assert "[0, 10)" in message and "--number_classes" in message
    # Wrong in the first record: caught before training starts.
    message = _error(tmp_path, num_classes=3)
    assert "label 3" in message and "[0, 3)" in message
    assert "--number_classes" in message


def test_jpeg_labels_without_offset_get_a_hint(tmp_path):
    cfg = _jpeg_source(tmp_path, _test_images()[:1], offset_labels=False)
    message = _error(tmp_path, cfg, num_classes=1)
    assert "label 1" in message and "--label_offset -1" in message


def test_undecodable_image_is_named(tmp_path):
    path = _write(tmp_path / "train-00000-of-00001", [
        _jpeg_record(_png(np.zeros((4, 4, 3))), 1),
        _jpeg_record(b"<html>not found</html>", 1)])
    message = _error(tmp_path, _config(tmp_path, data_format="jpeg"))
    assert path in message and "holds no JPEG, PNG" in message


def test_wrong_format_is_named(tmp_path):
    _raw_shards(tmp_path, 2, 1)
    _write(tmp_path / "train-00000-of-00001", [_raw_record(
        np.zeros((S, S, 3)), 0)])
    cfg = _config(tmp_path, data_format="jpeg")
    message = _error(tmp_path, cfg)
    assert "image/encoded" in message and "--data_format records" in message


@pytest.mark.parametrize("damage", ["truncated", "data", "header"])
def test_damaged_shard_is_named(tmp_path, damage):
    _raw_shards(tmp_path, 6, 2)
    path = str(tmp_path / "part-1.tfrecords")
    with open(path, "rb") as stream:
        content = bytearray(stream.read())
    record = len(content) // 3  # three records of equal size
    if damage == "truncated":
        content = content[:-30]
    elif damage == "data":
        content[len(content) - 100] ^= 0xFF
    else:
        content[2 * record + 3] ^= 0xFF  # the last record's length
    with open(path, "wb") as stream:
        stream.write(bytes(content))
    message = _error(tmp_path, num_classes=6)
    kind = "truncated" if damage == "truncated" else "corrupt"
    assert f"shard {path} is {kind}" in message
    assert f"{damage} checksum" in message or damage == "truncated"
    assert f"byte {2 * record}" in message
    assert "part-0" not in message
    assert tfrecord_check.main(["check", str(tmp_path)]) == 1


def test_tfrecord_check_crc_matches_tensorflow(tmp_path):
    path = _write(tmp_path / "ok.tfrecords", [b"abc", b"x" * 1000])
    assert tfrecord_check.find_damaged_shards([path]) == []
    # Published CRC-32C check value.
    assert tfrecord_check.crc32c(b"123456789") == 0xE3069283
    assert os.path.getsize(path) == 2 * 16 + 3 + 1000


def test_distributed_dataset_validates_eagerly(tmp_path):
    _raw_shards(tmp_path, 2, 1, size=16)
    strategy = tf.distribute.get_strategy()
    cfg = dataclasses.replace(_config(tmp_path))
    with pytest.raises(data.DataError, match="image_raw of 768 bytes"):
        data.distributed_dataset(
            strategy, cfg, image_size=S, per_replica_batch_size=1,
            num_classes=2)


def test_error_inside_distributed_tf_function_step(tmp_path):
    good = np.zeros((S, S, 3), np.uint8)
    path = _write(tmp_path / "x.tfrecords",
                  [_raw_record(good, 1)] * 3 + [_raw_record(good, 50)])
    cfg = _config(tmp_path, shuffle_buffer_size=1)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    iterator = iter(data.distributed_dataset(
        strategy, cfg, image_size=S, per_replica_batch_size=1,
        num_classes=10, shuffle=False))

    @tf.function
    def step(iterator):
        images, labels = next(iterator)
        return strategy.run(lambda x, y: tf.reduce_sum(x), (images, labels))

    with pytest.raises(data.DataError) as info:
        with data.clear_errors(cfg):
            for _ in range(3):
                step(iterator)
    assert str(info.value).startswith(f"label 50 in {path} is outside")
