"""Explicit per-replica inputs for the MirroredStrategy tests."""

import tensorflow as tf


def split(strategy, array):
    """Gives replica r rows [r*B, (r+1)*B) of a global batch."""
    per = array.shape[0] // strategy.num_replicas_in_sync

    def value_fn(ctx):
        start = ctx.replica_id_in_sync_group * per
        return tf.constant(array[start : start + per])

    return strategy.experimental_distribute_values_from_function(value_fn)
