"""A whole train / resume / evaluate cycle on TF's in-memory filesystem.

`ram://` stands in for `gs://`: paths that are not local files, so the
code takes its non-local branches (no flock, moves and the checkpoint
state file through `tf.io.gfile`, results written through gfile, never
appended to). The filesystem lives in this process, so every command's
`main` runs here, as `train_recovery_test.run_main` does.
"""

import json
import os
import re

import eval_fixtures as fx
import tensorflow as tf
from train_recovery_test import BATCH, CLASSES, SIZE, flags_for, run_main

from sagan_tf.commands import evaluate as evaluate_command
from sagan_tf.evaluation import inception


def _copy_to_ram(local_dir, ram_dir):
    tf.io.gfile.makedirs(ram_dir)
    for name in os.listdir(local_dir):
        tf.io.gfile.copy(os.path.join(local_dir, name), f"{ram_dir}/{name}")


def test_train_resume_and_evaluate_on_ram_filesystem(tmp_path, capsys):
    root = f"ram://cycle_{os.getpid()}"
    local_records = str(tmp_path / "records")
    fx.write_records(local_records, 32, SIZE, CLASSES)
    records = f"{root}/data"
    _copy_to_ram(local_records, records)
    checkpoint_dir = f"{root}/ck"
    run_dir = f"{checkpoint_dir}/imagenet_{BATCH}"

    # Train two steps from nothing, then resume to step 4.
    code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                            "--max_steps=2"))
    assert code == 0, out
    assert "starting at step 0" in out and re.search(r"^step 2/2 ", out,
                                                     re.M), out
    code, out = run_main(capsys, *flags_for(records, checkpoint_dir,
                                            "--max_steps=4"))
    assert code == 0, out
    assert "resuming at global step 2" in out, out
    assert re.search(r"^step 4/4 ", out, re.M) and "Traceback" not in out
    assert tf.train.latest_checkpoint(run_dir) == f"{run_dir}/ckpt-4"
    names = tf.io.gfile.listdir(run_dir)
    assert "config.json" in names and "checkpoint" in names, names
    assert not any(n.startswith(".trainer.lock") or ".tmp-" in n
                   for n in names), names
    assert any(n.startswith("events.out.tfevents") for n in names), names

    # Evaluate the newest checkpoint; the classifier is a local file.
    graph = str(tmp_path / "standin.pb")
    inception.save_classifier_as_graphdef(fx.StandinClassifier(), graph)
    code, out = run_main(
        capsys, f"--checkpoint_dir={checkpoint_dir}",
        f"--batch_size={BATCH}", f"--data_dir={records}",
        f"--inception_path={graph}", f"--image_size={SIZE}", "--z_dim=16",
        "--gf_dim=8", f"--num_classes={CLASSES}",
        "--attention_resolution=16", "--dcgan_generator_batch_size=10",
        "--seed=0", "--num_evals=1", "--eval_interval_secs=1",
        "--eval_sample_size=20", "--kid_sample_size=20",
        "--intra_fid_classes=0", "--shuffle_buffer_size=64",
        command=evaluate_command, program="eval_imagenet.py",
    )
    assert code == 0, out
    assert "Traceback" not in out, out
    eval_dir = f"{checkpoint_dir}/eval/imagenet_{BATCH}"
    with tf.io.gfile.GFile(f"{eval_dir}/results.jsonl") as f:
        (result,) = [json.loads(line) for line in f.read().splitlines()]
    assert result["step"] == 4 and result["checkpoint"] == "ckpt-4", result
    assert result["fid"] >= 0 and result["incscore"] >= 1, result
