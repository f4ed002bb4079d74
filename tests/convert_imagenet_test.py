"""Tests of the folder-to-shards converter (imagenet_folder, preprocessing,
data/convert_imagenet.py)."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from image_fixtures import patterned
from PIL import Image

from sagan_tf import data
from sagan_tf.config import DataConfig
from sagan_tf.data import converter, preprocessing

S = 8
RED, BLUE, GREEN = (220, 20, 30), (20, 40, 230), (30, 200, 60)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make_tree(root):
    """Three classes; returns {relative path: expected S x S x 3 pixels or
    None when it must be checked otherwise}, and the corrupt file."""
    expected = {}
    for name in ("zebra", "apple", "mango"):
        (root / name).mkdir(parents=True)
    # Wide (odd surplus) and tall: centre squares red/green, sides blue.
    Image.fromarray(patterned(10, 25, BLUE, RED)).save(root / "apple/w.png")
    expected["apple/w.png"] = RED
    Image.fromarray(patterned(21, 12, BLUE, GREEN)).save(root / "apple/t.png")
    expected["apple/t.png"] = GREEN
    Image.new("L", (12, 9), 77).save(root / "apple/gray.png")
    expected["apple/gray.png"] = (77, 77, 77)
    rgba = Image.new("RGBA", (9, 9), RED + (255,))
    rgba.save(root / "mango/opaque.png")
    expected["mango/opaque.png"] = RED
    Image.new("RGBA", (9, 9), RED + (0,)).save(root / "mango/clear.png")
    expected["mango/clear.png"] = (255, 255, 255)
    Image.new("LA", (9, 11), (40, 255)).save(root / "mango/la.png")
    expected["mango/la.png"] = (40, 40, 40)
    palette = Image.new("P", (10, 10), 0)
    palette.putpalette(list(GREEN) + [0] * 765)
    palette.save(root / "mango/palette.gif")
    expected["mango/palette.gif"] = GREEN
    deep = Image.fromarray(np.full((9, 9), 65535, np.uint16))
    deep.save(root / "zebra/deep16.png")
    expected["zebra/deep16.png"] = (255, 255, 255)
    Image.new("CMYK", (12, 8), (0, 0, 0, 0)).save(root / "zebra/cmyk.jpg")
    expected["zebra/cmyk.jpg"] = (255, 255, 255)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8)).save(
        root / "zebra/photo.jpg", quality=90)
    expected["zebra/photo.jpg"] = None
    (root / "zebra/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (root / "zebra/.hidden").write_bytes(b"ignored")
    return expected


def _read_shards(folder):
    records = {}
    for path in sorted(folder.glob("*.tfrecords")):
        for record in tf.data.TFRecordDataset(str(path)):
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature
            pixels = np.frombuffer(
                feature["image_raw"].bytes_list.value[0], np.uint8)
            records.setdefault(path.name, []).append(
                (pixels.reshape(S, S, 3), feature["label"].int64_list.value[0]))
    return records


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    expected = _make_tree(root / "train")
    out = root / "out"
    stream = io.StringIO()
    summary = converter.convert(
        str(root / "train"), str(out), image_size=S, num_shards=3, seed=5,
        stream=stream)
    return root, expected, out, summary, stream.getvalue()


def test_labels_counts_and_summary(converted):
    root, expected, out, summary, log = converted
    assert (out / "labels.txt").read_text() == (
        "0\tapple\n1\tmango\n2\tzebra\n")
    records = _read_shards(out)
    assert sorted(records) == [
        f"train-0000{i}-of-00003.tfrecords" for i in range(3)]
    labels = [label for shard in records.values() for _, label in shard]
    # apple 3, mango 4, zebra 3 readable files (+ 1 broken one, skipped).
    assert np.bincount(labels).tolist() == [3, 4, 3]
    assert sorted(len(s) for s in records.values()) == [3, 3, 4]
    assert summary.images_written == 10 and len(summary.skipped) == 1
    broken = str(root / "train/zebra/broken.jpg")
    assert summary.skipped[0][0] == broken
    assert f"WARNING: skipping unreadable {broken}" in log
    assert "1 unreadable file(s) skipped." in log
    assert "ETA" in log


def test_pixels_crop_and_modes(converted):
    root, expected, out, _, _ = converted
    stored = [item for s in _read_shards(out).values() for item in s]
    for relative, colour in expected.items():
        path = root / "train" / relative
        label = ["apple", "mango", "zebra"].index(relative.split("/")[0])
        if colour is None:
            # The photo: compare with an independent numpy crop + PIL resize.
            array = np.asarray(Image.open(path).convert("RGB"))
            height, width = array.shape[:2]
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            square = array[top:top + side, left:left + side]
            want = np.asarray(Image.fromarray(square).resize(
                (S, S), Image.Resampling.BILINEAR))
        else:
            want = np.broadcast_to(np.array(colour, np.uint8), (S, S, 3))
        matches = [p for p, lab in stored
                   if lab == label and np.array_equal(p, want)]
        assert matches, f"{relative}: no stored image equals the expected"


def test_reader_reads_converted_shards(converted):
    _, _, out, _, _ = converted
    cfg = DataConfig(data_dir=str(out), shuffle_buffer_size=4, seed=0)
    dataset = data.build_dataset(cfg, image_size=S, batch_size=10,
                                 num_classes=3, repeat=False)
    images, labels = next(iter(dataset))
    assert np.bincount(labels.numpy()).tolist() == [3, 4, 3]
    images = images.numpy()
    assert images.min() >= -1.0 and images.max() <= 1.0
    levels = (images + 1.0) * 255.0 / 2.0
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    stored = [p for s in _read_shards(out).values() for p, _ in s]
    read = np.round(levels).astype(np.uint8)
    assert sorted(p.tobytes() for p in read) == sorted(
        p.tobytes() for p in stored)


def test_resume_deterministic_and_settings_check(converted, tmp_path):
    root, _, out, _, _ = converted
    victim = out / "train-00001-of-00003.tfrecords"
    before = {p.name: p.read_bytes() for p in out.glob("*.tfrecords")}
    victim.unlink()
    (out / "incomplete-train-00001-of-00003.tfrecords.part").write_bytes(
        b"half")
    summary = converter.convert(
        str(root / "train"), str(out), image_size=S, num_shards=3, seed=5,
        stream=io.StringIO())
    assert summary.shards_resumed == 2 and summary.shards_written == 1
    after = {p.name: p.read_bytes() for p in out.glob("*.tfrecords")}
    assert after == before  # same seed: the same shard again
    assert not list(out.glob("incomplete-*"))
    with pytest.raises(ValueError, match="seed"):
        converter.convert(
            str(root / "train"), str(out), image_size=S, num_shards=3,
            seed=6, stream=io.StringIO())
    other = tmp_path / "other_seed"
    converter.convert(
        str(root / "train"), str(other), image_size=S, num_shards=3, seed=6,
        stream=io.StringIO())
    assert {p.name: p.read_bytes() for p in other.glob("*.tfrecords")} != (
        before)


def test_command_line_with_workers_matches(converted, tmp_path):
    root, _, out, _, _ = converted
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "data", "convert_imagenet.py"),
         "--input_dir", str(root / "train"), "--output_dir",
         str(tmp_path), "--image_size", str(S), "--num_shards", "3",
         "--seed", "5", "--num_workers", "2"],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1 unreadable file(s) skipped." in result.stderr
    for path in out.glob("*.tfrecords"):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_bad_input_dir(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        converter.convert(str(tmp_path / "no"), str(tmp_path / "o"),
                                image_size=S, num_shards=1)
    with pytest.raises(ValueError, match="no class folders"):
        converter.convert(str(tmp_path), str(tmp_path / "o"),
                                image_size=S, num_shards=1)


def test_odd_surplus_offset_matches_reader():
    # 13 wide, 10 high: columns 1..10 are kept by both PIL and tf.data.
    image = np.zeros((10, 13, 3), np.uint8)
    image[:, 1:11] = 255
    square = preprocessing.center_square(Image.fromarray(image))
    assert np.asarray(square).min() == 255
    tf_square = data.center_square_resize(tf.constant(image), 10)
    assert tf_square.numpy().min() == 255


_WORKER_PROBE = r"""
import multiprocessing, sys
from sagan_tf import cli
from sagan_tf.data import converter
probe = "'tensorflow' in __import__('sys').modules"
with cli.worker_processes_without_tf():
    pool = multiprocessing.get_context("spawn").Pool(1)
with pool:
    # The worker imports the converter to run its task, as in a real
    # conversion, then reports what it has loaded.
    print("DECODED", pool.map(converter._load, [(sys.argv[1], 8)])[0][2])
    print("TENSORFLOW", pool.apply(eval, (probe,)))
"""


def test_converter_workers_do_not_load_tensorflow(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(patterned(12, 10, (0, 0, 0), (255, 255, 255))).save(path)
    result = subprocess.run(
        [sys.executable, "-c", _WORKER_PROBE, str(path)], cwd=tmp_path,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DECODED None" in result.stdout, result.stdout  # no error
    # Workers started without the guard load it (0.7 GB each): the same
    # probe then prints True.
    assert "TENSORFLOW False" in result.stdout, result.stdout
