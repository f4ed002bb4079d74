r"""Do a run's bits depend on the CPU's instruction set and core count?

    python bench/isa_bits.py

Only one CPU type is at hand here, so this emulates others: oneDNN's
`ONEDNN_MAX_CPU_ISA` caps the instruction set its kernels may use (as on
an older CPU), and `TF_NUM_INTRAOP_THREADS` / `TF_NUM_INTEROP_THREADS`
change the thread count (as on a machine with other cores). Each variant
trains the same seeded `--deterministic` run of --steps steps on the same
random records, with `TF_ENABLE_ONEDNN_OPTS` 1 (TensorFlow's default on
x86) and 0, and every tensor of its final checkpoint is compared with the
reference variant of the same `TF_ENABLE_ONEDNN_OPTS`. Eigen's own kernels
are chosen when TensorFlow is compiled, so a CPU type that this machine
cannot emulate (another vendor's FMA, AVX-512) is not covered.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import random_records  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_STEPS = flags.DEFINE_integer("steps", 4, "Training steps of each run.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Side of the images.")
_WIDTH = flags.DEFINE_integer("width", 8, "gf_dim = df_dim of the model.")
_BATCH_SIZE = 8

# (name, environment on top of the caller's). The first is the reference.
VARIANTS = (
    ("this CPU, all cores", {}),
    ("ISA capped at AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("ISA capped at AVX", {"ONEDNN_MAX_CPU_ISA": "AVX"}),
    ("ISA capped at SSE4.1", {"ONEDNN_MAX_CPU_ISA": "SSE41"}),
    ("one thread", {"TF_NUM_INTRAOP_THREADS": "1",
                    "TF_NUM_INTEROP_THREADS": "1"}),
)


def _train(data_dir, run_dir, env):
    command = [
        sys.executable, os.path.join(ROOT, "train_imagenet.py"),
        f"--data_dir={data_dir}", f"--checkpoint_dir={run_dir}",
        f"--image_size={_IMAGE_SIZE.value}", f"--gf_dim={_WIDTH.value}",
        f"--df_dim={_WIDTH.value}", "--number_classes=10",
        f"--attention_resolution={_IMAGE_SIZE.value // 2}",
        f"--batch_size={_BATCH_SIZE}", f"--max_steps={_STEPS.value}",
        "--save_checkpoint_steps=1000000", "--seed=1", "--deterministic",
        "--shuffle_buffer_size=64",
    ]
    result = subprocess.run(command, env={**os.environ, **env},
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"training failed ({env}):\n{result.stderr[-3000:]}")


def _tensors(run_dir):
    import tensorflow as tf

    # The released layout: <checkpoint_dir>/imagenet_<batch_size>.
    reader = tf.train.load_checkpoint(
        os.path.join(run_dir, f"imagenet_{_BATCH_SIZE}"))
    return {key: reader.get_tensor(key)
            for key in reader.get_variable_to_shape_map()
            if "save_counter" not in key}


def _compare(reference, other):
    """(tensors that differ, of all; largest absolute difference)."""
    differ, largest = 0, 0.0
    for key, value in reference.items():
        a = np.asarray(value)
        b = np.asarray(other[key])
        if a.dtype.kind not in "fiub":
            continue
        if not np.array_equal(a, b):
            differ += 1
            largest = max(largest, float(np.max(np.abs(
                a.astype(np.float64) - b.astype(np.float64)))))
    return differ, len(reference), largest


def main(argv):
    del argv
    work = tempfile.mkdtemp(prefix="isa_bits_")
    try:
        data_dir = os.path.join(work, "data")
        os.makedirs(data_dir)
        random_records.write(data_dir, _IMAGE_SIZE.value, 64, 10)
        rows = []
        for onednn in ("1", "0"):
            reference = None
            for name, env in VARIANTS:
                run_dir = os.path.join(work, f"run_{onednn}_{len(rows)}")
                print(f"TF_ENABLE_ONEDNN_OPTS={onednn}, {name} ...",
                      flush=True)
                _train(data_dir, run_dir,
                       {**env, "TF_ENABLE_ONEDNN_OPTS": onednn})
                tensors = _tensors(run_dir)
                if reference is None:
                    reference = tensors
                    rows.append((onednn, name, "reference"))
                    continue
                differ, total, largest = _compare(reference, tensors)
                rows.append((onednn, name, "identical" if not differ else
                             f"{differ} of {total} tensors differ "
                             f"(up to {largest:.2e})"))
        print(f"\n{_STEPS.value} steps, {_IMAGE_SIZE.value}x"
              f"{_IMAGE_SIZE.value}, gf = df = {_WIDTH.value}, "
              f"batch {_BATCH_SIZE}, "
              "--seed 1 --deterministic; final checkpoint against the "
              "reference:\n")
        print("| TF_ENABLE_ONEDNN_OPTS | variant | checkpoint |")
        print("| --- | --- | --- |")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    app.run(main)
