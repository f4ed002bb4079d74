"""Quick checks of the pieces of demo/run_demo.py (the demo itself is slow)."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "demo")
)

import run_demo  # noqa: E402
import seeds  # noqa: E402


def test_digit_folders_hold_every_digit_scaled_to_255(tmp_path):
    count = run_demo.write_digit_folders(str(tmp_path))
    digits = load_digits()
    assert count == len(digits.images) == 1797
    assert sorted(os.listdir(tmp_path)) == [str(d) for d in range(10)]
    for d in range(10):
        names = os.listdir(tmp_path / str(d))
        assert len(names) == int(np.sum(digits.target == d))
    # Index 0 is a zero; its pixels 0..16 become 0..255.
    image = np.asarray(Image.open(tmp_path / "0" / "0000.png"))
    assert image.shape == (8, 8)
    np.testing.assert_array_equal(
        image, np.round(digits.images[0] * 255 / 16).astype(np.uint8)
    )
    assert image.max() > 200


def test_classifier_gives_pool_and_logits_for_any_input_size():
    classifier = run_demo.build_classifier(16)
    for size in (16, 32):
        pool, logits = classifier(tf.zeros([3, size, size, 3]))
        assert pool.shape == (3, 128)
        assert logits.shape == (3, run_demo.NUM_CLASSES)


def test_read_shards_returns_the_records_in_unit_range(tmp_path):
    pixels = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    with tf.io.TFRecordWriter(str(tmp_path / "a.tfrecords")) as writer:
        for label, image in enumerate(pixels):
            example = tf.train.Example(features=tf.train.Features(feature={
                "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[image.tobytes()])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[label + 3])),
            }))
            writer.write(example.SerializeToString())
    images, labels = run_demo.read_shards(str(tmp_path), 4)
    np.testing.assert_allclose(images, pixels / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(labels, [3, 4])


def test_read_result_picks_the_matching_evaluation(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [{"checkpoint": "ckpt-9", "fid": 5.0},
             {"checkpoint": "ckpt-9", "fid": 3.0,
              "standing_stats_batches": 10},
             {"checkpoint": "ckpt-9", "fid": 4.0,
              "standing_stats_batches": 0}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert run_demo.read_result(str(path), 10)["fid"] == 3.0
    assert run_demo.read_result(str(path), 0)["fid"] == 4.0
    with pytest.raises(SystemExit, match="standing_stats_batches=2"):
        run_demo.read_result(str(path), 2)


def test_digit_subset_takes_n_per_class_the_same_for_a_seed(tmp_path):
    digits = load_digits()
    counts = {}
    for seed, name in ((3, "a"), (3, "b"), (4, "c")):
        folder = tmp_path / name
        assert run_demo.write_digit_folders(str(folder), 5, seed) == 50
        counts[name] = {d: sorted(os.listdir(folder / str(d)))
                        for d in range(10)}
    assert counts["a"] == counts["b"] != counts["c"]
    for d, names in counts["a"].items():
        assert len(names) == 5
        # Each file is named by its index in the digits, of class d.
        assert all(digits.target[int(n[:4])] == d for n in names)


def test_settings_of_the_seed_runs():
    assert seeds.settings(False, False) == [("sagan", [])]
    assert [n for n, _ in seeds.settings(True, False)] == [
        "sagan", "baseline"]
    study = dict(seeds.settings(False, True))
    assert list(study) == ["none", "diffaugment", "ada"]
    # Each study setting switches off what the command line may have set,
    # then turns on its own (absl keeps a flag's last value).
    assert study["ada"] == ["--diffaugment=", "--ada_target=0",
                            "--ada_target=0.6"]
    assert study["none"] == ["--diffaugment=", "--ada_target=0"]


def test_seed_table_gives_every_run_and_each_networks_mean_and_spread():
    import statistics

    rows = [
        {"network": n, "seed": s, "fid": f, "incscore": i,
         "generated_accuracy": a, "kid": f / 100, "recall": a / 2,
         "coverage": a / 5}
        for n, s, f, i, a in (
            ("sagan", 0, 4.0, 7.5, 0.96), ("sagan", 1, 6.0, 7.0, 0.77),
            ("sagan", 2, 5.0, 7.2, 0.99), ("baseline", 0, 9.0, 6.0, 0.81),
        )
    ]
    stats = seeds.seed_table(rows)
    sagan = stats["sagan"]["generated_accuracy"]
    assert sagan["mean"] == pytest.approx(statistics.mean([.96, .77, .99]))
    assert sagan["std"] == pytest.approx(statistics.stdev([.96, .77, .99]))
    assert (sagan["min"], sagan["max"]) == (0.77, 0.99)
    assert stats["baseline"]["fid"] == {
        "mean": 9.0, "std": 0.0, "min": 9.0, "max": 9.0}
    table = seeds.table_markdown(rows, stats)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 4 + 2
    assert lines[0] == ("| setting | seed | FID | IS | KID | recall | "
                        "coverage | class accuracy |")
    assert lines[3] == ("| sagan | 1 | 6.00 | 7.00 | 0.060 | 0.385 | "
                        "0.154 | 77.0 % |")
    assert lines[6].startswith("| **sagan** | mean ± sd [min, max] | 5.00 ± "
                               "1.00 [4.00, 6.00] |")
