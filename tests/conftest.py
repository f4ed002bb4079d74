"""Test set-up shared by every test module.

The CPU is split into two logical devices before TensorFlow initializes, so
that MirroredStrategy tests can run two replicas without GPUs. Everything else
keeps using the first device and the default strategy.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration()] * 2,
)
