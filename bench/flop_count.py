"""FLOP counting and op timing for bench/throughput.py.

Two independent counts of the SAGAN training step:
- analytic: walks the built G and D (their blocks' channels and
  resolutions) and adds up the multiply-adds of the convolutions, the
  linear layers, the attention products and the SN power iterations;
- the TF profiler's FLOP registry over the traced graph, restricted to the
  ops that run (gradients nobody consumes are traced but pruned).

Plus a parser of tf.profiler traces that sums kernel time per op type.
"""

import glob
import os

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops
from tensorflow.tsl.profiler.protobuf import xplane_pb2

# Ops whose FLOPs count as model FLOPs (the matrix products).
MATMUL_OPS = (
    "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter", "MatMul",
    "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3",
)

# ------------------------------------------------------------ analytic count


def _sn_flops(model):
    """FLOPs of one SN power iteration of every SN layer of `model`.

    Each layer computes u W^T, v W, and v W again for sigma = (v W) u'^T,
    with W [K, C_out]: 6 K C_out + 2 C_out FLOPs. An SN layer is known by
    its `u` variable, next to its `kernel` or `embeddings`.
    """
    weights = {w.path: w for w in model.weights}
    total = 0
    for path, u in weights.items():
        if not path.endswith("/u"):
            continue
        prefix = path[: -len("u")]
        matrix = weights.get(prefix + "kernel", weights.get(
            prefix + "embeddings"))
        total += 6 * int(np.prod(matrix.shape)) + 2 * int(u.shape[-1])
    return total


def _attention_macs(res, channels):
    """MACs per image of `layers.SelfAttention` on [res, res, channels]."""
    n, c = res * res, channels
    convs = n * c * (c // 8) * 2 + n * c * (c // 2) * 2  # theta, phi, g, o
    products = n * (n // 4) * (c // 8) + n * (n // 4) * (c // 2)
    return convs + products


def analytic_forward_flops(generator, discriminator):
    """Counts one training-mode forward pass of G and of D.

    Walks the built models' blocks: 3x3 and 1x1 convolutions, the linear
    layers, the attention products (2 FLOPs per multiply-add), plus the SN
    power iterations, which run once per batch, not per image.

    Returns:
        dict of g_per_image, g_sn_per_batch, d_per_image, d_sn_per_batch.
    """
    g = generator.z_dim * generator.g_snh0.units
    res = 4
    for block in generator.blocks:
        c_in, c_out = block.cbn_0.gamma.shape[-1], block.out_channels
        res *= 2  # each up-block doubles the resolution
        g += res * res * (9 * c_in * c_out + 9 * c_out * c_out
                          + c_in * c_out)
        if generator.g_non_local is not None and (
                res == generator.attention_resolution):
            g += _attention_macs(res, c_out)
    g += res * res * 9 * c_out * 3  # g_snconv_last

    d = 0
    res = discriminator.image_size
    attended = False
    for block in discriminator.blocks:
        c_in, c_out = block.in_channels, block.out_channels
        d += res * res * (9 * c_in * c_out + 9 * c_out * c_out)
        if block.optimized:
            d += (res // 2) ** 2 * c_in * c_out  # pool, then 1x1 conv
        elif block.sn_conv3 is not None:
            d += res * res * c_in * c_out  # 1x1 conv, then pool
        if block.downsample:
            res //= 2
        # Attention follows the first block with that output resolution.
        if discriminator.d_non_local is not None and not attended and (
                res == discriminator.attention_resolution):
            d += _attention_macs(res, c_out)
            attended = True
    d += c_out  # d_sn_linear

    return dict(
        g_per_image=2 * g,
        g_sn_per_batch=_sn_flops(generator),
        d_per_image=2 * d,
        d_sn_per_batch=_sn_flops(discriminator),
    )


# ------------------------------------------------------- profiler count


def _profiler_total(graph):
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return tf.compat.v1.profiler.profile(
        graph, cmd="scope", options=options).total_float_ops


def _live_ops(graph):
    """Ops that feed an output or a side effect (the rest is pruned)."""
    stack = [t.op for t in graph.outputs] + list(graph.control_outputs)
    live = set()
    while stack:
        op = stack.pop()
        if op.name in live:
            continue
        live.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return live


def graph_flops(graph):
    """FLOPs of a FuncGraph with fully defined shapes.

    Returns:
        dict: profiler_total (every op the profiler counts, as traced),
        live_total and live_model (Conv/MatMul family only) over the ops
        that run, and live_by_type.
    """
    # TF's FLOP registry (the only one it ships) calls deprecated TF1
    # helpers, and no public API silences their warnings.
    from tensorflow.python.util import deprecation

    live = _live_ops(graph)
    by_type = {}
    with deprecation.silence():
        for op in graph.get_operations():
            if op.name not in live:
                continue
            try:
                stats = tf_ops.get_stats_for_node_def(
                    graph, op.node_def, "flops"
                )
            except ValueError:  # no registered count, or a partial shape
                continue
            if stats.value:
                by_type[op.type] = by_type.get(op.type, 0) + int(stats.value)
        profiler_total = _profiler_total(graph)
    return dict(
        profiler_total=profiler_total,
        live_total=sum(by_type.values()),
        live_model=sum(v for k, v in by_type.items() if k in MATMUL_OPS),
        live_by_type=dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
    )


def _python_function(fn):
    """The undecorated function of a tf.function (XLA) or `fn` itself."""
    return getattr(fn, "python_function", fn)


def count_flops(trainer, batch, image_size, z_dim):
    """Profiles the forward passes and the (uncompiled) global step."""
    z = tf.TensorSpec([batch, z_dim], tf.float32)
    labels = tf.TensorSpec([batch], tf.int32)
    images = tf.TensorSpec([batch, image_size, image_size, 3], tf.float32)
    g, d = trainer.generator, trainer.discriminator
    g_fwd = tf.function(lambda z, y: g(z, y, training=True))
    d_fwd = tf.function(lambda x, y: d(x, y, training=True))
    g_update = _python_function(trainer.g_update)
    d_update = _python_function(trainer.d_update)

    def step(z1, y1, x, y, z2, y2):
        return g_update(z1, y1), d_update(x, y, z2, y2)

    step_graph = tf.function(step).get_concrete_function(
        z, labels, images, labels, z, labels).graph
    return dict(
        g_forward=graph_flops(
            g_fwd.get_concrete_function(z, labels).graph),
        d_forward=graph_flops(
            d_fwd.get_concrete_function(images, labels).graph),
        step=graph_flops(step_graph),
    )


def _sync(value):
    return tf.nest.map_structure(lambda t: t.numpy(), value)


def trace_op_seconds(step_fn, steps, logdir):
    """Traces `steps` calls; returns {op type: seconds per step}.

    Sums the durations of the op-kernel events ("name:Type") of the host
    threads. Ops that run concurrently are all counted, so the total can
    exceed the step time.
    """
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        _sync(step_fn())
    tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"),
                      recursive=True)
    space = xplane_pb2.XSpace()
    with open(max(paths, key=os.path.getmtime), "rb") as f:
        space.ParseFromString(f.read())
    seconds = {}
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or name.startswith(
                        ("ThreadpoolListener", "ExecutorState")):
                    continue
                op_type = name.rsplit(":", 1)[1]
                seconds[op_type] = (seconds.get(op_type, 0.0)
                                    + event.duration_ps * 1e-12 / steps)
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


def canonical_op_type(runtime_type):
    """Maps a runtime kernel name to the graph op type it implements.

    oneDNN (Mkl) rewrites and fusions rename ops at run time, e.g.
    `_MklNativeConv2DWithBias` is a Conv2D with its BiasAdd folded in.
    """
    name = runtime_type.strip()
    for prefix in ("_MklNative", "_Mkl", "_Fused", "Fused"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    for suffix in ("WithBias", "AndRelu"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _skip_event(op_type):
    # Function calls wrap the kernels that run inside them.
    op_type = op_type.strip()
    return op_type.startswith("__") or op_type in (
        "Run", "PartitionedCall", "StatefulPartitionedCall")


def print_op_table(seconds, flops_by_type, step_s, top=20):
    """Prints kernel time per op type, its share and its FLOP/s."""
    merged = {}
    for op_type, sec in seconds.items():
        if not _skip_event(op_type):
            key = canonical_op_type(op_type)
            merged[key] = merged.get(key, 0.0) + sec
    merged = dict(sorted(merged.items(), key=lambda kv: -kv[1]))
    total = sum(merged.values())
    model = sum(v for k, v in merged.items() if k in MATMUL_OPS)
    print(f"Kernel time per step, traced: {total:.2f} s of kernels in a "
          f"{step_s:.2f} s step (ops overlap); Conv/MatMul kernels "
          f"{100 * model / total:.1f}% of it.")
    print(f"  {'op type':28s} {'s/step':>7s} {'share':>6s} {'GFLOP':>8s}")
    for op_type, sec in list(merged.items())[:top]:
        flops = flops_by_type.get(op_type, 0) / 1e9
        print(f"  {op_type:28s} {sec:7.3f} {100 * sec / total:5.1f}% "
              f"{flops:8.2f}")
    return merged
