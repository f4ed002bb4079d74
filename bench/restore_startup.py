r"""Times the checkpoint part of a trainer's start: check, then restore.

    python bench/restore_startup.py --image_size 128 --gf_dim 64 --df_dim 64

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
"""

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def main(argv):
    del argv
    model = config.ModelConfig(
        image_size=_IMAGE_SIZE.value, gf_dim=_GF_DIM.value,
        df_dim=_DF_DIM.value,
    )
    train = config.TrainConfig(model=model, ema_decay=0.999)
    gan = updates.GANTrainer(train, tf.distribute.get_strategy())
    with tempfile.TemporaryDirectory() as directory:
        keeper = checkpoints.CheckpointKeeper(
            directory, gan.step, gan.checkpoint_objects(), max_to_keep=1
        )
        gan.step.assign(10)
        prefix = keeper.save()
        size = sum(os.path.getsize(os.path.join(directory, n))
                   for n in os.listdir(directory) if n.startswith("ckpt-"))
        print(f"checkpoint {size / 2**30:.2f} GiB at {_IMAGE_SIZE.value}x"
              f"{_IMAGE_SIZE.value}, gf={_GF_DIM.value}, df={_DF_DIM.value},"
              " EMA on")
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
