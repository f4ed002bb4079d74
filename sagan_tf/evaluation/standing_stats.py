"""Standing batch-norm statistics of a restored generator (opt-in).

G's BN layers keep moving averages with the released decays (0.999 in the
conditional BN of the blocks, 0.9999 in the head `g_bn`). Those need far
more updates than a short run gives, and G in inference mode then uses
averages still close to their initial values. BigGAN's "standing
statistics" replace each moving average with the mean of the layer's batch
moments over a number of batches of G in training mode. This module does
that in memory, after a checkpoint is restored; the released evaluator
does not, so it is off unless `--standing_stats_batches` is set.

Each layer gets what its training-mode update would feed its average: the
biased batch variance in `ConditionalBatchNorm`, the Bessel-corrected one in
`BatchNorm` (the head, and the blocks of an unconditional G). Nothing else
changes: the spectral-norm vectors `u` that a training-mode pass writes are
put back, and so are the layers' momentum attributes.
"""

import numpy as np
import tensorflow as tf


def batch_norm_layers(generator):
    """G's BN layers, input to output: cbn_0, cbn_1 (bn_0, bn_1 when
    unconditional) of each block, g_bn."""
    layers = []
    for block in generator.blocks:
        layers += list(block.batch_norms)
    return layers + [generator.g_bn]


def recompute_moving_statistics(generator, batches, bn_layers=None):
    """Sets BN moving averages to the mean batch moments over `batches`.

    G runs in training mode on every (z, labels) batch. Each BN layer's
    moving mean and variance become the average over the batches of what
    its training update would mix into them. Every other non-trainable
    variable of G (the spectral-norm `u` vectors) keeps its value, and the
    layers keep their momentum. If the loop fails, everything is put back.

    Args:
        generator: a built `models.Generator` (or any built Keras layer
            called as `generator(z, labels, training=True)` that holds
            `bn_layers`).
        batches: iterable of (z float [B, z_dim], labels int [B]).
        bn_layers: the layers to update; default `batch_norm_layers(G)`.

    Returns:
        Number of batches used; 0 leaves G untouched.
    """
    if bn_layers is None:
        bn_layers = batch_norm_layers(generator)
    stats = [v for layer in bn_layers
             for v in (layer.moving_mean, layer.moving_variance)]
    stat_ids = {id(v) for v in stats}
    kept = [v for v in generator.non_trainable_variables
            if id(v) not in stat_ids]
    saved = [(v, v.numpy()) for v in kept + stats]
    momenta = [layer.momentum for layer in bn_layers]
    dtypes = [value.dtype for _, value in saved[len(kept):]]
    sums = [np.zeros(v.shape, np.float64) for v in stats]
    count = 0
    completed = False
    try:
        # Momentum 0 makes each training pass write the batch moments
        # themselves into the moving averages, where they are read back.
        for layer in bn_layers:
            layer.momentum = 0.0
        for z, labels in batches:
            generator(tf.convert_to_tensor(z, tf.float32),
                      tf.convert_to_tensor(labels, tf.int32), training=True)
            for total, v in zip(sums, stats):
                total += v.numpy()
            count += 1
        completed = True
    finally:
        for layer, momentum in zip(bn_layers, momenta):
            layer.momentum = momentum
        for v, value in saved:
            if completed and count and id(v) in stat_ids:
                continue
            v.assign(value)
    if count:
        for total, v, dtype in zip(sums, stats, dtypes):
            v.assign((total / count).astype(dtype))
    return count


def apply_standing_stats(generator, num_batches, batch_size, seed=None):
    """Standing statistics from G's own samples (uniform classes, N(0, 1) z).

    Args:
        generator: a built, restored `models.Generator`.
        num_batches: batches of G in training mode (`--standing_stats_
            batches`); 0 does nothing.
        batch_size: samples per batch (`--standing_stats_batch_size`).
        seed: numpy seed of z and the labels; None = random.

    Returns:
        num_batches.

    Raises:
        ValueError: a negative count or a batch size below 1.
    """
    if num_batches < 0:
        raise ValueError(
            f"--standing_stats_batches must be >= 0, got {num_batches}"
        )
    if num_batches == 0:
        return 0
    if batch_size < 1:
        raise ValueError(
            f"--standing_stats_batch_size must be >= 1, got {batch_size}"
        )
    rng = np.random.default_rng(seed)

    def batches():
        for _ in range(num_batches):
            z = rng.standard_normal((batch_size, generator.z_dim))
            # Unconditional G (0 classes) ignores them: all zeros.
            labels = rng.integers(0, max(generator.num_classes, 1),
                                  batch_size)
            yield z.astype(np.float32), labels.astype(np.int32)

    return recompute_moving_statistics(generator, batches())
