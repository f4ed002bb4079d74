"""Choosing the tf.distribute strategy the training loop runs under.

The released code built one tower per GPU by hand (`--num_towers 4`) and
averaged the tower gradients. Here that is `MirroredStrategy` over the visible
GPUs, `MultiWorkerMirroredStrategy` when `TF_CONFIG` describes a cluster (one
process per machine), and the default strategy otherwise. Splitting the CPU
into logical devices lets the mirrored path run on a machine without GPUs.
"""

import json
import os

import tensorflow as tf


def configure_cpu_devices(num_cpu_devices):
    """Splits the first physical CPU into `num_cpu_devices` logical devices.

    Must run before TensorFlow initializes its devices (before the first op).
    Does nothing for `num_cpu_devices` <= 1 or when the split already exists.

    Raises:
      ValueError: naming `--num_cpu_devices` when the devices are already
        initialized with a different layout.
    """
    if num_cpu_devices <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    existing = tf.config.get_logical_device_configuration(cpus[0])
    if existing is not None and len(existing) == num_cpu_devices:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0],
            [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices,
        )
    except RuntimeError as e:
        raise ValueError(
            f"--num_cpu_devices={num_cpu_devices}: TensorFlow's devices are "
            f"already initialized ({e}); split the CPU before any TF op runs."
        ) from e


def tf_config_cluster():
    """Returns the cluster dict of the TF_CONFIG environment variable, or None.

    Raises:
      ValueError: naming TF_CONFIG when it is set but not valid JSON.
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    try:
        cluster = json.loads(raw).get("cluster")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"TF_CONFIG is not a valid JSON object: {e}") from e
    return cluster or None


def select_strategy(num_cpu_devices=0):
    """Returns the strategy for this process.

    Order: TF_CONFIG with a cluster → MultiWorkerMirroredStrategy; two or
    more visible GPUs → MirroredStrategy over all of them; `num_cpu_devices`
    > 1 (and no GPU) → MirroredStrategy over that many logical CPU devices;
    else the default strategy (one replica, on GPU:0 when there is one).
    """
    if tf_config_cluster() is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if gpus:
        # One replica either way; the default strategy (which places ops on
        # GPU:0) lets --xla compile whole updates.
        return tf.distribute.get_strategy()
    if num_cpu_devices > 1:
        configure_cpu_devices(num_cpu_devices)
        devices = [f"/cpu:{i}" for i in range(num_cpu_devices)]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def is_multi_worker(strategy):
    """True when the strategy spans more than one worker process."""
    return strategy.extended._in_multi_worker_mode()  # noqa: SLF001


def worker_info(strategy):
    """Returns (is_chief, task_id) for this process.

    Single-process strategies are always the chief. In a cluster the chief is
    the task of type "chief", or worker 0 when the cluster names no chief.
    """
    if not is_multi_worker(strategy):
        return True, 0
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    if task_type == "chief":
        return True, task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return (task_type == "worker" and task_id == 0 and not has_chief), task_id


def is_default_strategy(strategy):
    """True for TF's default (no-op, single replica) strategy."""
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


def chief_value(strategy, value, is_chief):
    """Every worker gets the chief's integer `value` (a collective).

    Each replica adds (value, 1) on the chief and (0, 0) elsewhere, so the
    quotient of the two sums is the chief's value whatever the number of
    replicas per worker. float64 holds any step exactly.
    """
    mine = tf.constant(
        [float(value), 1.0] if is_chief else [0.0, 0.0], tf.float64
    )

    @tf.function
    def reduce():
        per_replica = strategy.run(lambda: tf.identity(mine))
        return strategy.reduce(
            tf.distribute.ReduceOp.SUM, per_replica, axis=None
        )

    total, count = reduce().numpy()
    return int(round(total / count))


def any_worker(strategy, flag):
    """True when `flag` is True on any worker (a collective)."""
    mine = tf.constant([float(bool(flag))], tf.float64)

    @tf.function
    def reduce():
        per_replica = strategy.run(lambda: tf.identity(mine))
        return strategy.reduce(
            tf.distribute.ReduceOp.SUM, per_replica, axis=None
        )

    return bool(reduce().numpy()[0] > 0)
