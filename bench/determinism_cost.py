r"""Step time with and without `--deterministic`, measured in one run.

    python bench/determinism_cost.py --image_size 32 --batch_size 16 \
        --gf_dim 32 --df_dim 32 [--rounds 6 --steps 10] [--output rows.jsonl]

Two trainers run the real global step (`GANTrainer.train_step`, input
pipeline included, reading released-format records of random pixels
written to a temporary folder): one as a default run (no seed, parallel
input stages free to reorder), one as `--deterministic` would set it up
(seed, deterministic input pipeline, TensorFlow's op determinism on while
it runs). Rounds alternate between them, so load from other processes hits
both alike; the ratio is deterministic over default median step time
(> 1: determinism costs), in wall and in process-CPU seconds.

On the CPU most kernels are deterministic anyway; the figure that matters
is a GPU's (cuDNN and atomics), where the same command measures it.
"""

import dataclasses
import json
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import random_records  # noqa: E402
import tensorflow as tf  # noqa: E402

from sagan_tf import config, determinism  # noqa: E402
from sagan_tf.data import pipeline  # noqa: E402
from sagan_tf.training import updates  # noqa: E402

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Image side.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Images per update.")
_GF_DIM = flags.DEFINE_integer("gf_dim", 32, "Base width of G.")
_DF_DIM = flags.DEFINE_integer("df_dim", 32, "Base width of D.")
_NUM_CLASSES = flags.DEFINE_integer("number_classes", 10, "Classes.")
_NUM_IMAGES = flags.DEFINE_integer(
    "num_images", 2048, "Random-pixel records written for the pipeline.")
_SHUFFLE = flags.DEFINE_integer(
    "shuffle_buffer_size", 1000, "Input shuffle buffer, in records.")
_WARMUP = flags.DEFINE_integer(
    "warmup", 3, "Steps per trainer before timing (tracing).")
_ROUNDS = flags.DEFINE_integer("rounds", 6, "Alternating rounds timed.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per trainer per round.")
_OUTPUT = flags.DEFINE_string(
    "output", "", "Append the result as a JSON line to this file.")


class _Run:
    """One trainer and its input iterator, timed step by step."""

    def __init__(self, train_config):
        self.config = train_config
        strategy = tf.distribute.get_strategy()
        with determinism.op_determinism(train_config):
            self.trainer = updates.GANTrainer(train_config, strategy)
            self.trainer.seed_noise(0)
            self.iterator = iter(pipeline.distributed_dataset(
                strategy, train_config.data,
                image_size=train_config.model.image_size,
                per_replica_batch_size=train_config.batch_size,
                num_classes=train_config.model.number_classes))
        self.wall, self.cpu = [], []

    def steps(self, count, timed=True):
        with determinism.op_determinism(self.config):
            for _ in range(count):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                values, _, _ = self.trainer.train_step(self.iterator)
                values["g_loss"].numpy()
                if timed:
                    self.wall.append(time.perf_counter() - wall0)
                    self.cpu.append(time.process_time() - cpu0)


def main(argv):
    del argv
    model = config.ModelConfig(
        image_size=_IMAGE_SIZE.value, gf_dim=_GF_DIM.value,
        df_dim=_DF_DIM.value, number_classes=_NUM_CLASSES.value)
    with tempfile.TemporaryDirectory() as folder:
        random_records.write(folder, _IMAGE_SIZE.value, _NUM_IMAGES.value,
                       _NUM_CLASSES.value)
        data = config.DataConfig(data_dir=folder,
                                 shuffle_buffer_size=_SHUFFLE.value)
        default = config.TrainConfig(model=model, data=data,
                                     batch_size=_BATCH_SIZE.value)
        strict = determinism.with_seed(
            dataclasses.replace(default, deterministic=True, seed=0))
        runs = {"default": _Run(default), "deterministic": _Run(strict)}
        for run in runs.values():
            run.steps(_WARMUP.value, timed=False)
        for _ in range(_ROUNDS.value):
            for run in runs.values():
                run.steps(_STEPS.value)
    med = {name: (float(np.median(r.wall)), float(np.median(r.cpu)))
           for name, r in runs.items()}
    row = {
        "image_size": _IMAGE_SIZE.value, "batch_size": _BATCH_SIZE.value,
        "gf_dim": _GF_DIM.value, "df_dim": _DF_DIM.value,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "default_ms": 1000 * med["default"][0],
        "deterministic_ms": 1000 * med["deterministic"][0],
        "ratio_wall": med["deterministic"][0] / med["default"][0],
        "ratio_cpu_s": med["deterministic"][1] / med["default"][1],
        "steps_each": _ROUNDS.value * _STEPS.value,
    }
    print(json.dumps(row, indent=1))
    if _OUTPUT.value:
        with open(_OUTPUT.value, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    app.run(main)
