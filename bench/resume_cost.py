r"""Times train_imagenet.py's start-up to the first step after resuming at
later and later input positions.

    python bench/resume_cost.py                    # 0, 1, 10, 100 epochs
    python bench/resume_cost.py --vs_source /path/to/v0.3-checkout

Writes --records random-pixel records (released format, --image_size) and,
for each position of --epochs (plus half an epoch, so that every resume
also skips records inside its epoch), a run directory whose checkpoint
says the run has served that many batches: written through the trainer's
own start (`loop._Loop`: restore or start, then the step and the position
are set and saved), so the checkpoint, config.json and the run's other
files are what a run at that position holds. Each run directory is then
resumed by `train_imagenet.py` --repeats times (positions in turn) and
timed from its launch to its first step's progress line, then killed.

The median time per position and its ratio to the 1-epoch position are
printed as a table. With --vs_source, the same is done with another
checkout's train_imagenet.py (e.g. v0.3, which re-read every record served
before its first step), in the same run, alternating with this one.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import random_records  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_EPOCHS = flags.DEFINE_list(
    "epochs", ["0", "1", "10", "100"],
    "Resume positions, in epochs of --records (each plus half an epoch).")
_RECORDS = flags.DEFINE_integer(
    "records", 2000, "Records in the data set (one epoch).")
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", 128, "Side of the records' images and of the model.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 8, "Batch size of the runs; must divide --records.")
_WIDTH = flags.DEFINE_integer(
    "width", 4, "gf_dim = df_dim of the (tiny) model: the start-up, not "
    "the step, is timed.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Starts timed per position.")
_VS_SOURCE = flags.DEFINE_string(
    "vs_source", "",
    "A checkout of another version to time the same way in the same run "
    "(its train_imagenet.py and sagan_tf); empty = this one only.")
_TIMEOUT = flags.DEFINE_integer(
    "timeout", 1800, "Seconds one start may take before it counts as failed.")

# Run in the checkout being timed: makes one run directory per position
# through that version's own trainer start, then sets and saves the
# position. argv: a JSON list of [run directory's parent, steps], then the
# training flags.
_MAKE_POSITIONS = r"""
import json
import sys

import tensorflow as tf
from absl import flags

from sagan_tf.commands import train as train_command
from sagan_tf.training import loop

jobs = json.loads(sys.argv[1])
fv = flags.FlagValues()
train_command.define_flags(fv)
for parent, steps in jobs:
    fv.unparse_flags()
    fv(["train_imagenet.py", *sys.argv[2:], "--checkpoint_dir=" + parent])
    config = train_command.train_config_from_flags(fv)
    run = loop._Loop(config, tf.distribute.get_strategy(), lambda *a: None)
    try:
        run._resume_run_state(run._restore())
        trainer = run.trainer
        state = getattr(trainer, "run_state", trainer)
        trainer.step.assign(steps)
        state.data_position.assign(steps)
        run.keeper.save()
        from sagan_tf.training import checkpoints
        checkpoints.write_config(run.directory, config)
    finally:
        run.close()
    print("made", parent, steps, flush=True)
"""


def _flags(data_dir):
    size, width = _IMAGE_SIZE.value, _WIDTH.value
    return [
        f"--data_dir={data_dir}", f"--image_size={size}",
        f"--gf_dim={width}", f"--df_dim={width}", "--z_dim=16",
        "--number_classes=10", f"--batch_size={_BATCH_SIZE.value}",
        "--shuffle_buffer_size=500", "--seed=1",
        "--save_checkpoint_steps=100000000", "--log_every_steps=1",
    ]


def _env(source):
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=source,
                TF_CPP_MIN_LOG_LEVEL="2")


def _make_positions(source, folder, positions, data_dir):
    """{epochs: run directory's parent} for `source`'s trainer."""
    steps_per_epoch = _RECORDS.value // _BATCH_SIZE.value
    jobs, parents = [], {}
    for epochs in positions:
        parent = os.path.join(folder, f"epochs_{epochs}")
        steps = int(epochs) * steps_per_epoch + steps_per_epoch // 2
        jobs.append([parent, steps])
        parents[epochs] = (parent, steps)
    subprocess.run(
        [sys.executable, "-c", _MAKE_POSITIONS, json.dumps(jobs),
         *_flags(data_dir)],
        cwd=source, env=_env(source), check=True, timeout=_TIMEOUT.value)
    return parents


def _time_to_first_step(source, parent, steps, data_dir):
    """Seconds from launch to the first step's progress line."""
    command = [sys.executable, os.path.join(source, "train_imagenet.py"),
               *_flags(data_dir), f"--checkpoint_dir={parent}",
               f"--max_steps={steps + 100}"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=source, env=_env(source),
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if re.match(rf"step {steps + 1}/", line):
                return time.perf_counter() - start
            if time.perf_counter() - start > _TIMEOUT.value:
                break
    finally:
        proc.kill()
        proc.wait()
    raise SystemExit(f"resume_cost.py: a run in {parent} did not resume "
                     f"and step:\n{''.join(lines[-30:])}")


def main(argv):
    del argv
    records, batch = _RECORDS.value, _BATCH_SIZE.value
    if records % batch:
        raise SystemExit("resume_cost.py: --batch_size must divide --records")
    positions = [p.strip() for p in _EPOCHS.value]
    sources = {"this": ROOT}
    if _VS_SOURCE.value:
        sources["vs"] = os.path.abspath(_VS_SOURCE.value)
    with tempfile.TemporaryDirectory() as folder:
        data_dir = os.path.join(folder, "data")
        os.makedirs(data_dir)
        print(f"Writing {records} random {_IMAGE_SIZE.value}x"
              f"{_IMAGE_SIZE.value} records ...", flush=True)
        random_records.write(data_dir, _IMAGE_SIZE.value, records, 10,
                             shards=8)
        runs = {}
        for name, source in sources.items():
            print(f"Making the run directories for {source} ...", flush=True)
            runs[name] = _make_positions(
                source, os.path.join(folder, name), positions, data_dir)
        times = {(n, p): [] for n in sources for p in positions}
        for _ in range(_REPEATS.value):
            for p in positions:
                for name, source in sources.items():
                    parent, steps = runs[name][p]
                    # Every start resumes from the same files.
                    copy = parent + "_copy"
                    shutil.rmtree(copy, ignore_errors=True)
                    shutil.copytree(parent, copy)
                    seconds = _time_to_first_step(source, copy, steps,
                                                  data_dir)
                    times[name, p].append(seconds)
                    print(f"{name} ({source}): {p} epochs (+0.5, step "
                          f"{steps}): first step at {seconds:.1f} s",
                          flush=True)
    print(f"\n{records} records of {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}, "
          f"batch {batch}, gf = df = {_WIDTH.value}; median of "
          f"{_REPEATS.value} start(s) to the first step:\n")
    print("| version | position (epochs) | records served | to the first "
          "step (s) | ratio to 1 epoch |")
    print("| --- | --- | --- | --- | --- |")
    for name, source in sources.items():
        base = times.get((name, "1"))
        for p in positions:
            median = statistics.median(times[name, p])
            ratio = (f"{median / statistics.median(base):.2f}"
                     if base else "")
            served = runs[name][p][1] * batch
            print(f"| {name} ({os.path.basename(source)}) | {p} + 0.5 | "
                  f"{served:,} | {median:.1f} | {ratio} |")
    if "100" in positions and "1" in positions:
        ratio = (statistics.median(times["this", "100"])
                 / statistics.median(times["this", "1"]))
        print(f"\nratio 100 epochs : 1 epoch (this version): {ratio:.2f}")


if __name__ == "__main__":
    app.run(main)
