r"""Training throughput, FLOPs and utilization of the SAGAN training step.

    python bench/throughput.py --image_size 128 --batch_size 64 \
        [--xla] [--mixed_precision bf16] [--gf_dim 64 --df_dim 64] \
        [--steps 20 --warmup 3] [--output results.jsonl|results.md]

A global step is one G update then one D update (the released order), run
with the real `GANTrainer.g_update` / `d_update` on one device. The real
batch is a random tensor held on the device, so the input pipeline is not
measured (see bench/read_throughput.py for that).

Reported, for one configuration:
- images/s from the median step time after warm-up;
- FLOPs per image per step. The TF profiler counts the step's graph
  (`tf.compat.v1.profiler.profile` with `float_operation()`). "Model"
  FLOPs are those of the convolutions and matrix products (Conv2D,
  Conv2DBackpropInput/Filter, MatMul, BatchMatMul) in the ops that actually
  run: gradients nobody uses (D's kernel gradients during G's update, the
  gradient w.r.t. the real images) are in the graph but pruned at run time,
  so they are left out. An analytic count of one forward pass of G and D
  (convolutions, linear layers, attention, SN power iterations) is checked
  against the profiler exactly, and 4g + 8d approximates the step;
- achieved FLOP/s, the FLOP/s of a large matmul measured in the same run
  (interleaved with the steps, so load from other processes hits both), and
  their ratio: utilization;
- peak memory (max RSS on CPU, the allocator's peak on GPU);
- the step time of the self-attention block alone (forward + backward).
"""

import dataclasses
import json
import os
import platform
import resource
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# bench/ (this file's folder) is on sys.path when it runs as a script.
import flop_count  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from sagan_tf import config, layers  # noqa: E402
from sagan_tf.training import updates  # noqa: E402

_M = config.ModelConfig()

def define_flags():
    """Defines the command-line flags (when run as a script only: the
    suite imports this module next to others with flags of the same names).
    """
    global _IMAGE_SIZE, _BATCH_SIZE, _GF_DIM, _DF_DIM, _Z_DIM, _NUM_CLASSES, \
        _ATTENTION, _XLA, _MIXED, _STEPS, _WARMUP, _ROUNDS, _MATMUL_SIZE, \
        _MATMUL_REPS, _ATTENTION_SIZES, _ATTENTION_STEPS, _OUTPUT, \
        _TRACE_STEPS, _TRACE_DIR, _LABEL, _VS_TWO_PASS
    _IMAGE_SIZE = flags.DEFINE_integer(
        "image_size", _M.image_size, "Image side: 32, 64, 128 or 256.")
    _BATCH_SIZE = flags.DEFINE_integer(
        "batch_size", 64, "Images per G and per D update (one device).")
    _GF_DIM = flags.DEFINE_integer("gf_dim", _M.gf_dim, "Base width of G.")
    _DF_DIM = flags.DEFINE_integer("df_dim", _M.df_dim, "Base width of D.")
    _Z_DIM = flags.DEFINE_integer("z_dim", _M.z_dim, "Noise size.")
    _NUM_CLASSES = flags.DEFINE_integer(
        "number_classes", _M.number_classes,
        "Classes of the conditional model.")
    _ATTENTION = flags.DEFINE_integer(
        "attention_resolution", 0,
        "Resolution of the attention block in G and D; 0 = the trainer's "
        "'auto' (32, or 16 when --image_size is 32: D has no 32x32 block).")
    _XLA = flags.DEFINE_bool(
        "xla", False, "Compile each update with XLA (the trainer's --xla).")
    _MIXED = flags.DEFINE_enum(
        "mixed_precision", "none", sorted(updates.POLICIES),
        "Compute precision (the trainer's --mixed_precision).")
    _STEPS = flags.DEFINE_integer("steps", 20, "Global steps timed.")
    _WARMUP = flags.DEFINE_integer(
        "warmup", 3, "Global steps run before timing (tracing, compilation).")
    _ROUNDS = flags.DEFINE_integer(
        "rounds", 10,
        "The timed steps are split into this many rounds, with a matmul "
        "measurement before the first and after each; utilization is the "
        "median over rounds of (step FLOP/s) / (the mean of the matmul FLOP/s "
        "just before and just after).")
    _MATMUL_SIZE = flags.DEFINE_integer(
        "matmul_size", 0,
        "Side n of the n x n x n reference matmul; 0 = 2048 on CPU, 8192 on "
        "GPU.")
    _MATMUL_REPS = flags.DEFINE_integer(
        "matmul_reps", 5, "Reference matmuls timed per measurement.")
    _ATTENTION_SIZES = flags.DEFINE_list(
        "attention_sizes", ["32", "64"],
        "Resolutions at which the attention block alone is timed; empty = "
        "skip.")
    _ATTENTION_STEPS = flags.DEFINE_integer(
        "attention_steps", 10, "Timed forward+backward passes per resolution.")
    _OUTPUT = flags.DEFINE_string(
        "output", "",
        "Append the result row here: a .md file gets a Markdown table row "
        "(header first if the file is new), anything else a JSON line.")
    _TRACE_STEPS = flags.DEFINE_integer(
        "trace_steps", 0,
        "After timing, trace this many steps with tf.profiler and print the op "
        "types that take the most time, with their FLOP/s (CPU; on GPU open "
        "the trace in TensorBoard's profile tab); 0 = off.")
    _TRACE_DIR = flags.DEFINE_string(
        "trace_dir", "",
        "Where --trace_steps writes the trace; empty = a temporary folder.")
    _LABEL = flags.DEFINE_string("label", "", "Free text stored in the row.")
    _VS_TWO_PASS = flags.DEFINE_bool(
        "vs_d_two_pass", False,
        "Also time a second trainer whose D update calls D twice (generated "
        "images, then real ones: the path before one call on concat(real, "
        "fake)). Each round times both, so load from other processes hits both "
        "alike; the row gets both medians and their ratio.")


# ---------------------------------------------------------------- timing


def _sync(value):
    """Waits for the device by copying one scalar to the host."""
    return tf.nest.map_structure(lambda t: t.numpy(), value)


def _time_calls(fn, count):
    """Calls fn `count` times; returns (wall seconds, process CPU seconds).

    CPU seconds (all threads of this process) hardly change when other
    processes compete for the cores; wall seconds do.
    """
    wall, cpu = [], []
    for _ in range(count):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        _sync(fn())
        wall.append(time.perf_counter() - wall0)
        cpu.append(time.process_time() - cpu0)
    return wall, cpu


class MatmulProbe:
    """FLOP/s of an n^3 matmul in `dtype` on the default device."""

    def __init__(self, n, dtype, reps):
        self.flops, self.reps = 2.0 * n**3, reps
        # Stateless draws: op determinism (--deterministic) refuses
        # unseeded random ops.
        self.a = tf.Variable(tf.random.stateless_normal([n, n], [1, 0]),
                             trainable=False)
        self.b = tf.Variable(tf.random.stateless_normal([n, n], [2, 0]),
                             trainable=False)

        @tf.function(autograph=False)
        def product():
            # The n^2 casts are negligible next to the n^3 product.
            a, b = tf.cast(self.a, dtype), tf.cast(self.b, dtype)
            return tf.reduce_sum(tf.matmul(a, b)[:1, :1])

        self._product = product
        _time_calls(product, 2)  # tracing, first-call allocation
        self.wall, self.cpu = [], []

    def measure(self):
        """Times `reps` products; returns this measurement's wall FLOP/s."""
        wall, cpu = _time_calls(self._product, self.reps)
        self.wall += [self.flops / t for t in wall]
        self.cpu += [self.flops / t for t in cpu]
        return float(np.median([self.flops / t for t in wall]))


def attention_step_ms(res, channels, batch, xla, steps):
    """Median ms of one forward + backward of a fresh SelfAttention."""
    layer = layers.SelfAttention(name=f"bench_attention_{res}")
    layer.build((batch, res, res, channels))
    x = tf.Variable(tf.random.stateless_normal(
        [batch, res, res, channels], [3, 0]))

    @tf.function(jit_compile=xla, autograph=False)
    def run():
        with tf.GradientTape() as tape:
            inputs = tf.cast(x, layer.compute_dtype)
            y = layer(inputs, training=True)
            loss = tf.reduce_mean(tf.square(tf.cast(y, tf.float32)))
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32))
                         for g in grads])

    _time_calls(run, 2)  # tracing / compilation
    return 1000.0 * float(np.median(_time_calls(run, steps)[0]))


def peak_memory_mib(on_gpu):
    if on_gpu:
        info = tf.config.experimental.get_memory_info("GPU:0")
        return info["peak"] / 2**20
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device_name(on_gpu):
    if on_gpu:
        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{details.get('device_name', 'GPU')} x1"
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


# ---------------------------------------------------------------- output

_MD_COLUMNS = (
    ("device", "device"), ("size", "image_size"), ("batch", "batch_size"),
    ("gf/df", "widths"), ("precision", "mixed_precision"), ("XLA", "xla"),
    ("step ms (median)", "step_ms_median"), ("images/s", "images_per_s"),
    ("GFLOP/image/step", "gflop_per_image_step"),
    ("achieved GFLOP/s", "achieved_gflops"),
    ("matmul GFLOP/s", "matmul_gflops"), ("utilization", "utilization"),
    ("util. per CPU s", "utilization_cpu_time"),
    ("util. best", "utilization_best"),
    ("peak MiB", "peak_memory_mib"),
    ("1M steps (h)", "projected_hours_1m_steps"),
    ("attn 32 ms", "attention_ms_32"),
    ("attn 64 ms", "attention_ms_64"),
)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)


def write_row(path, row):
    if path.endswith(".md"):
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        with open(path, "a") as f:
            if new:
                f.write("| " + " | ".join(c for c, _ in _MD_COLUMNS) + " |\n")
                f.write("|" + "---|" * len(_MD_COLUMNS) + "\n")
            f.write("| " + " | ".join(
                _fmt(row.get(k)) for _, k in _MD_COLUMNS) + " |\n")
    else:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


# ------------------------------------------------------------------ main


@dataclasses.dataclass
class Options:
    """One measurement's settings: the flags above, for `measure`."""

    image_size: int = _M.image_size
    batch_size: int = 64
    gf_dim: int = _M.gf_dim
    df_dim: int = _M.df_dim
    z_dim: int = _M.z_dim
    number_classes: int = _M.number_classes
    attention_resolution: int = 0
    xla: bool = False
    mixed_precision: str = "none"
    steps: int = 20
    warmup: int = 3
    rounds: int = 10
    matmul_size: int = 0
    matmul_reps: int = 5
    attention_sizes: tuple = (32, 64)
    attention_steps: int = 10
    trace_steps: int = 0
    trace_dir: str = ""
    label: str = ""
    vs_d_two_pass: bool = False
    # Extra TrainConfig fields (e.g. {"deterministic": True}).
    train_overrides: dict = dataclasses.field(default_factory=dict)


def _options_from_flags():
    return Options(
        image_size=_IMAGE_SIZE.value, batch_size=_BATCH_SIZE.value,
        gf_dim=_GF_DIM.value, df_dim=_DF_DIM.value, z_dim=_Z_DIM.value,
        number_classes=_NUM_CLASSES.value,
        attention_resolution=_ATTENTION.value, xla=_XLA.value,
        mixed_precision=_MIXED.value, steps=_STEPS.value,
        warmup=_WARMUP.value, rounds=_ROUNDS.value,
        matmul_size=_MATMUL_SIZE.value, matmul_reps=_MATMUL_REPS.value,
        attention_sizes=tuple(int(s) for s in _ATTENTION_SIZES.value),
        attention_steps=_ATTENTION_STEPS.value,
        trace_steps=_TRACE_STEPS.value, trace_dir=_TRACE_DIR.value,
        label=_LABEL.value, vs_d_two_pass=_VS_TWO_PASS.value)


def model_config(o):
    """The ModelConfig of Options `o`."""
    attention = o.attention_resolution or config.auto_attention_resolution(
        o.image_size)
    return config.ModelConfig(
        image_size=o.image_size, z_dim=o.z_dim, gf_dim=o.gf_dim,
        df_dim=o.df_dim, number_classes=o.number_classes,
        attention_resolution=attention)


def count_step_flops(o):
    """Profiled FLOPs of one training step (see flop_count), float32."""
    train_config = config.TrainConfig(
        model=model_config(o), batch_size=o.batch_size, seed=0)
    trainer = updates.GANTrainer(train_config, tf.distribute.get_strategy())
    return flop_count.count_flops(
        trainer, o.batch_size, o.image_size, o.z_dim)


def _validate():
    for name, flag in (("batch_size", _BATCH_SIZE), ("steps", _STEPS),
                       ("rounds", _ROUNDS), ("matmul_reps", _MATMUL_REPS),
                       ("attention_steps", _ATTENTION_STEPS)):
        if flag.value < 1:
            raise ValueError(f"--{name}={flag.value}: must be >= 1")
    if _WARMUP.value < 1:
        raise ValueError(
            f"--warmup={_WARMUP.value}: must be >= 1 (the first step "
            "traces and compiles)")
    if _MATMUL_SIZE.value < 0:
        raise ValueError(f"--matmul_size={_MATMUL_SIZE.value}: must be >= 0")


def main(argv):
    del argv
    _validate()
    command = "python bench/throughput.py " + " ".join(sys.argv[1:])
    print(f"Configuration: {command}", flush=True)
    row = measure(_options_from_flags())
    row["command"] = command
    if _OUTPUT.value:
        write_row(_OUTPUT.value, row)
        print(f"Appended the row to {_OUTPUT.value}")


def measure(o, strategy=None, counted=None, deadline=None):
    """Times the training step of Options `o`; returns the result row.

    Args:
      o: `Options`.
      strategy: None = one device (the default strategy); else every
        replica of `strategy` runs a G and a D update of batch
        `o.batch_size` per step (images/s counts all replicas).
      counted: FLOPs from `count_step_flops` for the same model and batch;
        None = count them here.
      deadline: time.perf_counter() value after which no more timed steps
        start (at least one round of one step is timed).
    """
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    model_cfg = model_config(o)
    batch = o.batch_size
    train_config = config.TrainConfig(
        model=model_cfg, batch_size=batch, xla=o.xla,
        mixed_precision=o.mixed_precision, seed=0, **o.train_overrides)
    updates.validate_config(train_config)
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(
        updates.POLICIES[o.mixed_precision])
    try:
        return _measure(o, strategy, counted, deadline, on_gpu, model_cfg,
                        train_config, replicas)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _measure(o, strategy, counted, deadline, on_gpu, model_config,
             train_config, replicas):
    batch = o.batch_size
    trainer = updates.GANTrainer(train_config, strategy)
    size, z_dim = model_config.image_size, model_config.z_dim
    analytic = flop_count.analytic_forward_flops(
        trainer.generator, trainer.discriminator)
    if counted is None:
        print("Counting FLOPs with the TF profiler...", flush=True)
        counted = flop_count.count_flops(trainer, batch, size, z_dim)
    g_fwd = counted["g_forward"]["live_model"]
    d_fwd = counted["d_forward"]["live_model"]
    g_ana = analytic["g_per_image"] * batch + analytic["g_sn_per_batch"]
    d_ana = analytic["d_per_image"] * batch + analytic["d_sn_per_batch"]
    step_model = counted["step"]["live_model"] / batch
    step_ana = 4 * analytic["g_per_image"] + 8 * analytic["d_per_image"]

    rng = tf.random.Generator.from_seed(0)
    images = tf.Variable(
        rng.uniform([batch, size, size, 3], -1.0, 1.0), trainable=False)
    labels = tf.Variable(
        rng.uniform([batch], 0, model_config.number_classes, tf.int32),
        trainable=False)

    def noise():
        z = rng.normal([batch, z_dim])
        y = rng.uniform([batch], 0, model_config.number_classes, tf.int32)
        return z, y

    @tf.function
    def global_step():
        g_loss = trainer.g_update(*noise())
        metrics, _ = trainer.d_update(images, labels, *noise())
        return g_loss + metrics[0]

    if replicas > 1:
        with strategy.scope():
            images = tf.Variable(images, trainable=False)
            labels = tf.Variable(labels, trainable=False)
            # Created in the scope: each replica draws its own stream.
            replica_rng = tf.random.Generator.from_seed(1)
        classes = model_config.number_classes

        def replica_step():
            def noise():
                return (replica_rng.normal([batch, z_dim]),
                        replica_rng.uniform([batch], 0, classes, tf.int32))

            g_loss = trainer.g_update(*noise())
            metrics, _ = trainer.d_update(images, labels, *noise())
            return g_loss + metrics[0]

        @tf.function
        def global_step():
            return strategy.reduce(tf.distribute.ReduceOp.SUM,
                                   strategy.run(replica_step), axis=None)

    print(f"Warm-up: {o.warmup} steps (tracing"
          f"{' and XLA compilation' if o.xla else ''})...", flush=True)
    warmup_s, _ = _time_calls(global_step, o.warmup)
    print(f"  first step {warmup_s[0]:.1f} s, last {warmup_s[-1]:.2f} s",
          flush=True)
    two_pass_step = None
    if o.vs_d_two_pass:
        other = updates.GANTrainer(
            dataclasses.replace(train_config, d_two_pass=True),
            tf.distribute.get_strategy())

        @tf.function
        def two_pass_step():
            g_loss = other.g_update(*noise())
            metrics, _ = other.d_update(images, labels, *noise())
            return g_loss + metrics[0]

        print("Warm-up of the two-pass D update...", flush=True)
        _time_calls(two_pass_step, o.warmup)
    if on_gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")

    matmul_n = o.matmul_size or (8192 if on_gpu else 2048)
    matmul_dtype = {"none": tf.float32, "bf16": tf.bfloat16,
                    "fp16": tf.float16}[o.mixed_precision]
    probe = MatmulProbe(matmul_n, matmul_dtype, o.matmul_reps)
    # Per replica: utilization is that of one device.
    flops_per_step = step_model * batch
    steps = o.steps
    if deadline is not None:
        # The last warm-up step estimates a step (doubled: the matmuls).
        left = deadline - time.perf_counter()
        steps = max(1, min(steps, int(left / (2 * warmup_s[-1] + 1e-9))))
    rounds = min(o.rounds, steps)
    step_s, step_cpu_s, round_ratios = [], [], []
    two_pass_s, two_pass_cpu_s = [], []
    before = probe.measure()
    for r in range(rounds):
        if step_s and deadline is not None and time.perf_counter() > deadline:
            print("  deadline reached; stopping the timing", flush=True)
            break
        count = steps * (r + 1) // rounds - len(step_s)
        wall, cpu = _time_calls(global_step, count)
        step_s += wall
        step_cpu_s += cpu
        if two_pass_step is not None:
            wall_2, cpu_2 = _time_calls(two_pass_step, count)
            two_pass_s += wall_2
            two_pass_cpu_s += cpu_2
        after = probe.measure()
        # Utilization of this round against the matmuls right around it.
        round_ratios.append(
            flops_per_step / np.median(wall) / ((before + after) / 2))
        before = after
        print(f"  round {r + 1}/{rounds}: {len(step_s)} steps, median "
              f"{np.median(step_s):.3f} s/step, matmul {after / 1e9:.1f} "
              f"GFLOP/s, utilization {100 * round_ratios[-1]:.1f}%",
              flush=True)
    peak_mib = peak_memory_mib(on_gpu)
    if two_pass_s:
        ratio = float(np.median(two_pass_s) / np.median(step_s))
        ratio_cpu = float(np.median(two_pass_cpu_s) / np.median(step_cpu_s))
        print(f"  D as two calls: median {np.median(two_pass_s):.3f} s/step; "
              f"one call on concat(real, fake) is {ratio:.3f}x as fast "
              f"({ratio_cpu:.3f}x per CPU second)", flush=True)

    attention_ms = {}
    for res in o.attention_sizes:
        blocks = [b.out_channels for b in trainer.generator.blocks]
        resolutions = [8 * 2**i for i in range(len(blocks))]
        if res not in resolutions:
            print(f"  attention at {res}: no generator block has that "
                  "output resolution; skipped")
            continue
        channels = blocks[resolutions.index(res)]
        attention_ms[res] = attention_step_ms(
            res, channels, batch, o.xla, o.attention_steps)
        print(f"  attention {res}x{res}x{channels}, batch {batch}: "
              f"{attention_ms[res]:.1f} ms forward+backward", flush=True)

    median_s = float(np.median(step_s))
    op_seconds = {}
    if o.trace_steps:
        logdir = o.trace_dir or tempfile.mkdtemp(prefix="sagan_trace_")
        print(f"Tracing {o.trace_steps} steps into {logdir}...",
              flush=True)
        op_seconds = flop_count.trace_op_seconds(
            global_step, o.trace_steps, logdir)
        op_seconds = flop_count.print_op_table(
            op_seconds, counted["step"]["live_by_type"], median_s)
    images_per_s = batch * replicas / median_s
    achieved = step_model * images_per_s
    matmul = float(np.median(probe.wall))
    utilization = float(np.median(round_ratios))
    cpu_utilization = (flops_per_step / float(np.median(step_cpu_s))
                       / float(np.median(probe.cpu)))
    # The least disturbed step against the least disturbed matmul.
    best_utilization = flops_per_step / min(step_s) / max(probe.wall)
    row = dict(
        device=_device_name(on_gpu), image_size=size, batch_size=batch,
        widths=f"{model_config.gf_dim}/{model_config.df_dim}",
        attention_resolution=model_config.attention_resolution,
        number_classes=model_config.number_classes,
        mixed_precision=o.mixed_precision, xla=o.xla,
        steps=len(step_s), warmup=o.warmup,
        first_step_s=warmup_s[0],
        step_ms_median=1000 * median_s,
        step_ms_min=1000 * min(step_s), step_ms_max=1000 * max(step_s),
        images_per_s=images_per_s,
        gflop_per_image_step=step_model / 1e9,
        gflop_per_image_step_analytic_4g8d=step_ana / 1e9,
        gflop_per_image_step_all_ops=counted["step"]["live_total"] / batch
        / 1e9,
        gflop_per_image_step_profiler_graph=(
            counted["step"]["profiler_total"] / batch / 1e9),
        g_forward_gflop_per_image=analytic["g_per_image"] / 1e9,
        d_forward_gflop_per_image=analytic["d_per_image"] / 1e9,
        forward_analytic_vs_profiler=[g_ana, g_fwd, d_ana, d_fwd],
        step_flops_by_op=counted["step"]["live_by_type"],
        achieved_gflops=achieved / 1e9,
        matmul_size=matmul_n, matmul_dtype=matmul_dtype.name,
        matmul_gflops=matmul / 1e9,
        utilization=utilization,
        utilization_of_medians=achieved / matmul,
        utilization_cpu_time=cpu_utilization,
        utilization_best=best_utilization,
        step_cpu_s_median=float(np.median(step_cpu_s)),
        peak_memory_mib=peak_mib,
        # Replicas of this device at this per-replica batch, scaling
        # linearly: 4 x 64 gives the global batch 256 of the released run.
        projected_hours_1m_steps=1e6 * median_s / 3600,
        attention_ms={str(k): v for k, v in attention_ms.items()},
        attention_ms_32=attention_ms.get(32),
        attention_ms_64=attention_ms.get(64),
        op_seconds_per_step=op_seconds,
        label=o.label, replicas=replicas,
    )
    if two_pass_s:
        row.update(
            d_two_pass_step_ms_median=1000 * float(np.median(two_pass_s)),
            d_two_pass_step_cpu_s_median=float(np.median(two_pass_cpu_s)),
            d_concat_speedup=ratio, d_concat_speedup_cpu_time=ratio_cpu,
        )
    print(f"G forward: {analytic['g_per_image'] / 1e9:.3f} GFLOP/image "
          f"(profiler, batch {batch}: {g_fwd} vs analytic {g_ana}); "
          f"D forward: {analytic['d_per_image'] / 1e9:.3f} GFLOP/image "
          f"({d_fwd} vs {d_ana})")
    print(f"Step: {step_model / 1e9:.2f} GFLOP/image run (profiler, "
          f"Conv/MatMul ops), 4g+8d = {step_ana / 1e9:.2f}, graph as traced "
          f"{row['gflop_per_image_step_profiler_graph']:.2f}")
    print(f"{images_per_s:.3f} images/s ({1000 * median_s:.1f} ms/step), "
          f"{achieved / 1e9:.1f} GFLOP/s achieved vs "
          f"{matmul / 1e9:.1f} GFLOP/s {matmul_n}^3 {matmul_dtype.name} "
          f"matmul: utilization {100 * utilization:.1f}% (median of the "
          f"rounds; per CPU second {100 * cpu_utilization:.1f}%; best step vs "
          f"best matmul {100 * best_utilization:.1f}%); peak "
          f"memory {peak_mib:.0f} MiB")
    return row


if __name__ == "__main__":
    define_flags()
    app.run(main)
