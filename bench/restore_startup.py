r"""Times a trainer's start from a checkpoint: check, then restore.

    python bench/restore_startup.py --image_size 128 --gf_dim 64 --df_dim 64
    python bench/restore_startup.py --image_size 128 --gf_dim 64 \
        --df_dim 64 --to_first_step

Saves one checkpoint of the full training state (G, D, both Adams and the
EMA generator, --ema_decay 0.999) to a temporary folder, then restores it
--repeats times each way, alternating, in this one process:

* before: every tensor read back against its checksum
  (`checkpoint_files.problem`), then restored: two reads;
* after: `CheckpointKeeper.restore_latest`, which restores directly (the
  restore checks each checksum) and reads back only after a failure.

The files stay in the page cache, so the gap shown is the CPU cost of the
second read; on a network filesystem (gs://) the second read is also a
second transfer of the whole checkpoint.

With --to_first_step, the checkpoint is written as a run directory
(config.json included) beside records of random pixels, and
`train_imagenet.py` resumes from it --repeats times each way, alternating:
each run is timed from its start to its "Restored" line and to its first
step's line, then killed (SIGKILL, so it saves nothing and every run starts
from the same files). "before" is the same command with the restore
preceded by the full read-back of the checkpoint, as the trainer did
before it restored directly.
"""

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import random_records  # noqa: E402
import tensorflow as tf  # noqa: E402

from sagan_tf import config  # noqa: E402
from sagan_tf.training import (  # noqa: E402
    checkpoint_files,
    checkpoints,
    updates,
)

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Image side.")
_GF_DIM = flags.DEFINE_integer("gf_dim", 64, "Base width of G.")
_DF_DIM = flags.DEFINE_integer("df_dim", 64, "Base width of D.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Restores timed each way.")
_TO_FIRST_STEP = flags.DEFINE_boolean(
    "to_first_step", False,
    "Time whole train_imagenet.py starts, to the first step, instead of "
    "the restore alone.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 2, "--to_first_step: the runs' batch size.")
_TIMEOUT = flags.DEFINE_integer(
    "timeout", 900, "--to_first_step: seconds one run may take.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# train_imagenet.py as it started before the change: every checkpoint it
# restores is first read back in full against its checksums.
_READ_BACK_FIRST = """
import sys
from sagan_tf.training import checkpoint_files, checkpoints

_restore = checkpoints.CheckpointKeeper.restore


def restore(self, prefix):
    if checkpoint_files.problem(checkpoint_files.at(prefix)) is not None:
        raise SystemExit("restore_startup.py: the checkpoint is damaged")
    print("restore_startup.py: read back " + prefix, flush=True)
    return _restore(self, prefix)


checkpoints.CheckpointKeeper.restore = restore
sys.argv[0] = "train_imagenet.py"
from sagan_tf.commands import train
train.run()
"""


def _time_start(program, args, read_back):
    """Seconds from the start of a train_imagenet.py run to its "Restored"
    line and to its first step's line; the run is then killed.

    `read_back`: whether the run must say it read the checkpoint back.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *program, *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    restored = None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            now = time.perf_counter() - start
            if line.startswith("Restored "):
                restored = now
            if re.match(r"step \d+/\d+ ", line):
                said = any("read back" in seen for seen in lines)
                if restored is None or said != read_back:
                    break
                return restored, now
            if now > _TIMEOUT.value:
                break
    finally:
        proc.kill()
        proc.wait()
    raise SystemExit("restore_startup.py: a run did not restore and "
                     "step:\n" + "".join(lines[-30:]))


def _to_first_step(gan, train):
    """Both ways of starting, alternating; prints the times."""
    with tempfile.TemporaryDirectory() as folder:
        data_dir = os.path.join(folder, "data")
        os.makedirs(data_dir)
        random_records.write(data_dir, train.model.image_size, 64,
                             train.model.number_classes)
        train = dataclasses.replace(
            train, checkpoint_dir=os.path.join(folder, "ck"),
            data=config.DataConfig(data_dir=data_dir))
        run_dir = checkpoints.run_dir(train)
        keeper = checkpoints.CheckpointKeeper(
            run_dir, gan.step, gan.checkpoint_objects(), max_to_keep=1)
        gan.step.assign(10)
        keeper.save()
        checkpoints.write_config(run_dir, train)
        _print_size(run_dir)
        m = train.model
        args = [
            f"--data_dir={data_dir}", f"--checkpoint_dir={folder}/ck",
            f"--image_size={m.image_size}", f"--gf_dim={m.gf_dim}",
            f"--df_dim={m.df_dim}", f"--batch_size={train.batch_size}",
            f"--ema_decay={train.ema_decay}", "--max_steps=100000",
            "--log_every_steps=1", "--save_checkpoint_steps=100000",
            "--shuffle_buffer_size=64",
        ]
        programs = {
            "before": ["-c", _READ_BACK_FIRST],
            "after": [os.path.join(ROOT, "train_imagenet.py")],
        }
        times = {name: [] for name in programs}
        for _ in range(_REPEATS.value):
            for name, program in programs.items():
                times[name].append(
                    _time_start(program, args, name == "before"))
                print(f"{name}: restored at {times[name][-1][0]:.1f} s, "
                      f"first step at {times[name][-1][1]:.1f} s",
                      flush=True)
    for name, values in times.items():
        firsts = sorted(v[1] for v in values)
        print(f"{name}: to the first step " + ", ".join(
            f"{v[1]:.1f}" for v in values) + f" s (median "
            f"{firsts[len(firsts) // 2]:.1f} s); to the restore " +
            ", ".join(f"{v[0]:.1f}" for v in values) + " s")


def _print_size(directory):
    size = sum(os.path.getsize(os.path.join(directory, n))
               for n in os.listdir(directory) if n.startswith("ckpt-"))
    print(f"checkpoint {size / 2**30:.2f} GiB at {_IMAGE_SIZE.value}x"
          f"{_IMAGE_SIZE.value}, gf={_GF_DIM.value}, df={_DF_DIM.value},"
          " EMA on", flush=True)


def main(argv):
    del argv
    model = config.ModelConfig(
        image_size=_IMAGE_SIZE.value, gf_dim=_GF_DIM.value,
        df_dim=_DF_DIM.value,
    )
    train = config.TrainConfig(model=model, ema_decay=0.999,
                               batch_size=_BATCH_SIZE.value)
    gan = updates.GANTrainer(train, tf.distribute.get_strategy())
    if _TO_FIRST_STEP.value:
        return _to_first_step(gan, train)
    with tempfile.TemporaryDirectory() as directory:
        keeper = checkpoints.CheckpointKeeper(
            directory, gan.step, gan.checkpoint_objects(), max_to_keep=1
        )
        gan.step.assign(10)
        prefix = keeper.save()
        _print_size(directory)
        times = {"before": [], "after": []}
        for _ in range(_REPEATS.value):
            start = time.perf_counter()
            assert checkpoint_files.problem(
                checkpoint_files.at(prefix)) is None
            keeper.checkpoint.restore(prefix).expect_partial()
            times["before"].append(time.perf_counter() - start)
            start = time.perf_counter()
            keeper.restore_latest()
            times["after"].append(time.perf_counter() - start)
        for name, values in times.items():
            print(f"{name}: " + ", ".join(f"{t:.2f}" for t in values)
                  + f" s (best {min(values):.2f} s)")


if __name__ == "__main__":
    app.run(main)
