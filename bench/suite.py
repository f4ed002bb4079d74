r"""Every figure of docs/PERFORMANCE.md's GPU rows, in one command.

    python bench/suite.py --output gpu.jsonl            # on a GPU, ~8 min
    python bench/suite.py --quick                        # CPU smoke run

Sweeps the training step (bench/throughput.py's `measure`: the real
`GANTrainer` updates, FLOPs counted by the TF profiler) over precision
fp32 / bf16 / fp16, each with XLA off and on, at 128x128, batch 64 per
replica, full width; with more than one GPU visible, once more on all GPUs
(MirroredStrategy, fp32) with the scaling efficiency against one; a
`deterministic` training row when TrainConfig has that field; and the
input pipeline's images/s from released records (bench/read_throughput.py).
With --quick on a machine without GPUs, "all GPUs" mirrors over two logical
CPU devices, so that every row runs and can be checked on any machine, and
XLA compiles without LLVM's optimizations (unless XLA_FLAGS is set): a
smoke run's figures say that a row runs, not how fast.

`--budget_s` is split across the settings still to run; a setting that
would overrun is reported as skipped with the reason, and a setting that
fails is reported as a row too. Each row is printed as it completes, the
whole table at the end, and (with --output) appended as a JSON line with
the device, TF version and date.
"""

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import read_throughput  # noqa: E402
import tensorflow as tf  # noqa: E402
import throughput  # noqa: E402

from sagan_tf import config  # noqa: E402
from sagan_tf.training import distribute  # noqa: E402

_BUDGET = flags.DEFINE_float(
    "budget_s", 480.0,
    "Wall-clock budget of the whole suite in seconds, split across the "
    "settings still to run; a setting that would overrun is skipped. "
    "With --quick and no --budget_s: 240.")
_QUICK_BUDGET_S = 240.0
_QUICK = flags.DEFINE_bool(
    "quick", False,
    "Same sweep at a tiny size (32x32, batch 4, widths 8), XLA at "
    "--xla_backend_optimization_level=0, for CPU-only CI.")
_OUTPUT = flags.DEFINE_string(
    "output", "", "Append every row here as a JSON line; empty = none.")
# Internal: the suite runs each setting in a fresh process (settings leave
# global state behind: the precision policy, XLA auto-clustering, op
# determinism, the allocator's peak) through these.
_CHILD = flags.DEFINE_string("child_setting", "", "Internal.")
_CHILD_SECONDS = flags.DEFINE_float("child_seconds", 0.0, "Internal.")
_CHILD_FILES = flags.DEFINE_string(
    "child_files", "", "Internal: FLOP-count file, result file.")
_ONLY = flags.DEFINE_list(
    "only", [],
    "Run only these settings (names as in the table's first column, e.g. "
    "fp32,bf16+xla,input); the others are reported as skipped. Empty = all.")

# One global step at a global batch of 256 (64 per replica on 4 GPUs, the
# released run's configuration).
PROJECTION_STEPS = 1_000_000
PROJECTION_BATCH = 256

# Before a setting of its kind has run, its cost is guessed (seconds:
# building, tracing, compiling and a few steps).
_PRIOR_S = {"full": 45.0, "quick": 15.0}
_XLA_FACTOR = 3.0


@dataclasses.dataclass
class Setting:
    name: str
    precision: str = "none"
    xla: bool = False
    all_gpus: bool = False
    deterministic: bool = False
    input_only: bool = False


SETTINGS = [
    Setting("input", input_only=True),
    Setting("fp32"), Setting("fp32+xla", xla=True),
    Setting("bf16", "bf16"), Setting("bf16+xla", "bf16", xla=True),
    Setting("fp16", "fp16"), Setting("fp16+xla", "fp16", xla=True),
    Setting("all GPUs fp32", all_gpus=True),
    # Last: op determinism, once enabled, stays on in the process.
    Setting("fp32 deterministic", deterministic=True),
]

_PRECISION = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
# "all GPUs" of a --quick run on a machine without GPUs.
_LOGICAL_CPUS = ["/cpu:0", "/cpu:1"]


def _options(quick):
    if quick:
        return throughput.Options(
            image_size=32, batch_size=4, gf_dim=8, df_dim=8, z_dim=16,
            number_classes=4, steps=3, warmup=2, rounds=1, matmul_size=256,
            matmul_reps=2, attention_sizes=())
    return throughput.Options(
        image_size=128, batch_size=64, steps=20, warmup=3, rounds=5,
        attention_sizes=())


def _input_kwargs(quick):
    if quick:
        return dict(image_size=32, batch_size=4, num_images=64, num_shards=2,
                    shuffle_buffer_size=64, warmup_batches=5, batches=20)
    return dict(image_size=128, batch_size=64, num_images=4096,
                num_shards=16, warmup_batches=50, batches=300)


def _device(gpus):
    name = throughput._device_name(bool(gpus))  # noqa: SLF001
    if len(gpus) > 1:
        name = name.replace(" x1", f" x{len(gpus)}")
    return name


def _reason_not_available(s, gpus):
    # --quick without GPUs mirrors over two logical CPUs instead.
    if s.all_gpus and len(gpus) < 2 and (gpus or not _QUICK.value):
        return f"needs more than one GPU ({len(gpus)} visible)"
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    if s.deterministic and "deterministic" not in fields:
        return "TrainConfig has no 'deterministic' field in this version"
    return None


def _run_setting(s, options, counted, deadline):
    if s.input_only:
        rate = read_throughput.measure(**_input_kwargs(_QUICK.value))
        return dict(images_per_s=rate)
    o = dataclasses.replace(options, mixed_precision=s.precision, xla=s.xla)
    if _QUICK.value and s.name == "fp32":
        # The smoke run also exercises throughput.py's comparisons.
        o = dataclasses.replace(o, vs_d_two_pass=True, attention_sizes=(16,))
    strategy = None
    if s.all_gpus:
        strategy = tf.distribute.MirroredStrategy(
            None if tf.config.list_physical_devices("GPU")
            else _LOGICAL_CPUS)
    if s.deterministic:
        tf.config.experimental.enable_op_determinism()
        o = dataclasses.replace(o, train_overrides={"deterministic": True})
    return throughput.measure(o, strategy=strategy, counted=counted,
                              deadline=deadline)


# Separates the names of the settings one child runs (--quick).
_NAMES_SEPARATOR = "|"


def _child():
    """Runs the settings named in --child_setting in this process, in turn;
    after each, writes every result so far (or its error) as a JSON dict
    name -> result."""
    counted_path, result_path = _CHILD_FILES.value.split(",")
    names = _CHILD.value.split(_NAMES_SEPARATOR)
    settings = [t for t in SETTINGS if t.name in names]
    if any(s.all_gpus for s in settings) and not (
        tf.config.list_physical_devices("GPU")
    ):
        # Before any op initializes the devices.
        distribute.configure_cpu_devices(len(_LOGICAL_CPUS))
    options = _options(_QUICK.value)
    end = time.perf_counter() + _CHILD_SECONDS.value
    results = {}
    for i, s in enumerate(settings):
        share = (end - time.perf_counter()) / (len(settings) - i)
        deadline = time.perf_counter() + max(share, 1.0)
        if len(settings) > 1:
            print(f"\n== {s.name} ==", flush=True)
        try:
            counted = None
            if not s.input_only:
                if os.path.exists(counted_path):
                    with open(counted_path) as f:
                        counted = json.load(f)
                else:
                    print("Counting the step's FLOPs (profiler)...",
                          flush=True)
                    counted = throughput.count_step_flops(options)
                    with open(counted_path, "w") as f:
                        json.dump(counted, f)
            result = dict(status="measured", **_run_setting(
                s, options, counted, deadline))
        except Exception as e:  # noqa: BLE001 - reported as a row
            traceback.print_exc()
            first = (str(e).strip().splitlines() or [""])[0][:200]
            result = dict(status="failed",
                          reason=f"{type(e).__name__}: {first}")
        results[s.name] = result
        with open(result_path, "w") as f:
            json.dump(results, f, default=str)


def _spawn(settings, seconds, timeout, counted_path):
    """Runs `settings` in one child process, in turn; returns a dict
    name -> result (a setting the process did not finish is reported as
    skipped or failed)."""
    with tempfile.TemporaryDirectory() as temp:
        result_path = os.path.join(temp, "result.json")
        command = [
            sys.executable, os.path.abspath(__file__),
            "--child_setting=" + _NAMES_SEPARATOR.join(
                s.name for s in settings),
            f"--child_seconds={seconds}",
            f"--child_files={counted_path},{result_path}",
            f"--quick={_QUICK.value}"]
        missing = None
        try:
            env = None
            if _QUICK.value and "XLA_FLAGS" not in os.environ:
                # A smoke run checks that each row runs, not its speed:
                # XLA without LLVM's optimizations compiles in half the
                # time on a CPU.
                env = dict(os.environ,
                           XLA_FLAGS="--xla_backend_optimization_level=0")
            code = subprocess.run(command, timeout=timeout,
                                  env=env).returncode
            missing = dict(status="failed", reason=(
                f"its process exited with code {code} (see its output "
                "above)"))
        except subprocess.TimeoutExpired:
            missing = dict(status="skipped", reason=(
                f"ran past the remaining budget ({timeout:.0f} s); stopped"))
        results = {}
        if os.path.exists(result_path):
            with open(result_path) as f:
                results = json.load(f)
        return {s.name: results.get(s.name, missing) for s in settings}


def _fmt(value, digits=3):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


_HEADER = ("| setting | precision | XLA | images/s | step ms | % of matmul "
           "peak | matmul peak TFLOP/s | peak memory MiB | 1M steps @256 "
           "(h) | notes |")


def _table_row(r):
    if r["status"] != "measured":
        return (f"| {r['setting']} | {r.get('precision', '')} | "
                f"{r.get('xla', '')} | | | | | | | {r['status']}: "
                f"{r['reason']} |")
    if r["setting"] == "input":
        return (f"| input | | | {_fmt(r['images_per_s'])} | | | | | | "
                f"{r['note']} |")
    note = r.get("note", "")
    eff = r.get("scaling_efficiency")
    if eff is not None:
        device = "GPU" if r.get("gpus") else "device (2 logical CPUs)"
        note = f"scaling efficiency {100 * eff:.0f}% vs one {device}"
    return (
        f"| {r['setting']} | {r['precision']} | {r['xla']} | "
        f"{_fmt(r['images_per_s'])} | {_fmt(r['step_ms_median'])} | "
        f"{_fmt(100 * r['utilization'], 2)} | "
        f"{_fmt(r['matmul_gflops'] / 1e3)} | {_fmt(r['peak_memory'])} | "
        f"{_fmt(r['projected_hours'])} | {note} |")


def _complete(row, results, gpus):
    """Adds the suite's columns to a measured training row."""
    row["peak_memory"] = row["peak_memory_mib"] if gpus else None
    row["projected_hours"] = (
        PROJECTION_STEPS * PROJECTION_BATCH / row["images_per_s"] / 3600)
    row["note"] = (
        f"{row['image_size']}x{row['image_size']}, batch "
        f"{row['batch_size']}/replica, {row['steps']} steps")
    single = results.get("fp32", {}).get("images_per_s")
    if row["setting"].startswith("all GPUs"):
        n = row.get("replicas", 1)
        row["scaling_efficiency"] = (
            row["images_per_s"] / (n * single) if single else None)


def main(argv):
    del argv
    if _CHILD.value:
        _child()
        return
    start = time.perf_counter()
    quick = _QUICK.value
    budget = _BUDGET.value
    if quick and not flags.FLAGS["budget_s"].present:
        budget = _QUICK_BUDGET_S
    gpus = tf.config.list_physical_devices("GPU")
    common = dict(
        device=_device(gpus), gpus=len(gpus), tf_version=tf.__version__,
        date=datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"),
        quick=quick, budget_s=budget,
        command="python bench/suite.py " + " ".join(sys.argv[1:]))
    print(f"{common['device']}; TensorFlow {common['tf_version']}; "
          f"{common['date']}; budget {budget:.0f} s", flush=True)
    results, rows = {}, []
    counted_path = os.path.join(tempfile.mkdtemp(prefix="sagan_suite_"),
                                "flops.json")
    warmups = {}  # xla -> seconds the last setting of that kind took
    prior = _PRIOR_S["quick" if quick else "full"]
    prerun = None
    if quick:
        # One process for every setting: the smoke run checks each row,
        # not timings, and each process start costs more than a setting.
        runnable = [t for t in SETTINGS
                    if _reason_not_available(t, gpus) is None
                    and (not _ONLY.value or t.name in _ONLY.value)]
        print(f"\n== {len(runnable)} settings in one process ==",
              flush=True)
        prerun = _spawn(runnable, budget, budget, counted_path)
    try:
        for i, s in enumerate(SETTINGS):
            row = dict(common, setting=s.name,
                       precision=_PRECISION[s.precision],
                       xla="on" if s.xla else "off")
            if s.input_only:
                row.update(precision="", xla="")
            left = budget - (time.perf_counter() - start)
            estimate = warmups.get(s.xla, prior * (_XLA_FACTOR if s.xla
                                                   else 1.0))
            reason = _reason_not_available(s, gpus)
            if _ONLY.value and s.name not in _ONLY.value:
                reason = "not in --only"
            elif (reason is None and not s.input_only and prerun is None
                  and estimate > left):
                reason = (f"would overrun --budget_s: {left:.0f} s left, "
                          f"the setting needs about {estimate:.0f} s")
            t0 = time.perf_counter()
            if reason is not None:
                row.update(status="skipped", reason=reason)
            elif prerun is not None:
                result = prerun[s.name]
            else:
                print(f"\n== {s.name} ==", flush=True)
                runnable = [
                    t for t in SETTINGS[i:]
                    if _reason_not_available(t, gpus) is None
                    and (not _ONLY.value or t.name in _ONLY.value)]
                share = left / max(len(runnable), 1)
                t0 = time.perf_counter()
                result = _spawn([s], share, left, counted_path)[s.name]
            if reason is None:
                measured = result.get("status") == "measured"
                # The setting's fields first: the result has its own
                # (boolean) `xla`.
                row = dict(result, **row, status=result["status"],
                           reason=result.get("reason", ""))
                if measured:
                    results[s.name] = result
                    if s.input_only:
                        kw = _input_kwargs(quick)
                        row["note"] = (
                            f"released records {kw['image_size']}x"
                            f"{kw['image_size']}, batch {kw['batch_size']}")
                    else:
                        _complete(row, results, gpus)
                        warmups[s.xla] = time.perf_counter() - t0
            rows.append(row)
            print(_table_row(row), flush=True)
            if _OUTPUT.value:
                with open(_OUTPUT.value, "a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
    finally:
        print(f"\nResults ({common['device']}, TensorFlow "
              f"{common['tf_version']}, {common['date']}, "
              f"{time.perf_counter() - start:.0f} s):\n")
        print(_HEADER)
        print("|" + "---|" * _HEADER.count(" |"))
        for row in rows:
            print(_table_row(row))
        sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
