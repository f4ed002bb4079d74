"""Test set-up shared by every test module.

The CPU is split into two logical devices before TensorFlow initializes, so
that MirroredStrategy tests can run two replicas without GPUs. Everything else
keeps using the first device and the default strategy.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# XLA without LLVM's optimizations (inherited by the commands the tests
# start): the tests check what XLA computes, not how fast, and on a 2-core
# CPU the optimizations took more than half of each compilation (fp16 step:
# 48 s -> 27 s).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One MirroredStrategy over the two logical CPUs for every test.

    Two strategies over the same devices in one process number their
    collective ops from the same start, and TF's collective runtime keeps
    what it learned about an instance key: a second strategy's different
    op under that key then fails with "Shape mismatch in the collective
    instance". Sharing one strategy keeps the keys distinct.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
