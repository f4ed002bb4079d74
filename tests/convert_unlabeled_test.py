"""The converter on unlabeled folders: a flat folder and --unlabeled."""

import io
import json
import os

import pytest
import tensorflow as tf
from absl import flags
from image_fixtures import write_pngs

from sagan_tf.commands import convert as convert_command
from sagan_tf.data import converter


def _labels(folder):
    labels = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".tfrecords"):
            for record in tf.data.TFRecordDataset(os.path.join(folder, name)):
                example = tf.train.Example.FromString(record.numpy())
                labels.append(
                    example.features.feature["label"].int64_list.value[0])
    return labels


def test_flat_folder_converts_as_unlabeled_and_resumes(tmp_path):
    write_pngs(tmp_path / "flat", 5)
    (tmp_path / "flat" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    stream = io.StringIO()
    summary = converter.convert(
        str(tmp_path / "flat"), str(out), image_size=8, num_shards=2,
        stream=stream)
    assert summary.unlabeled and summary.images_written == 5
    assert len(summary.skipped) == 1  # the broken file, as for classes
    assert _labels(out) == [0] * 5
    assert (out / "labels.txt").read_text() == converter.UNLABELED_LINE
    manifest = json.loads((out / "conversion.json").read_text())
    assert manifest["unlabeled"] is True and manifest["num_classes"] == 0
    log = stream.getvalue()
    (line,) = [x for x in log.splitlines() if "--number_classes 0" in x]
    assert line.startswith("Unlabeled data")
    again = converter.convert(
        str(tmp_path / "flat"), str(out), image_size=8, num_shards=2,
        stream=io.StringIO())
    assert again.shards_resumed == 2 and again.shards_written == 0


def test_unlabeled_flag_takes_every_image_of_a_tree(tmp_path):
    tree = tmp_path / "lsun"
    write_pngs(tree / "a", 2, seed=1)
    write_pngs(tree / "b" / "deep", 3, seed=2)
    fv = flags.FlagValues()
    convert_command.define_flags(fv)
    out = tmp_path / "out"
    fv(["sagan-convert", f"--input_dir={tree}", f"--output_dir={out}",
        "--image_size=8", "--num_shards=1", "--num_workers=1",
        "--unlabeled"])
    assert convert_command._convert(fv) == 0
    assert _labels(out) == [0] * 5
    assert json.loads((out / "conversion.json").read_text())["unlabeled"]
    # Without the flag the same tree is two classes (the b images at any
    # depth), and the output folder refuses the other settings.
    with pytest.raises(ValueError, match="unlabeled"):
        converter.convert(str(tree), str(out), image_size=8, num_shards=1,
                          stream=io.StringIO())
    labeled = converter.convert(str(tree), str(tmp_path / "labeled"),
                                image_size=8, num_shards=1,
                                stream=io.StringIO())
    assert not labeled.unlabeled
    assert sorted(_labels(tmp_path / "labeled")) == [0, 0, 1, 1, 1]
