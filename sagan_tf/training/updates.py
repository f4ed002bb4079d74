"""The released SAGAN updates as tf.functions under a tf.distribute strategy.

One global step = `g_step` generator updates, then `d_step` discriminator
updates (TF-GAN's sequential train hooks run the generator op first). Every
update draws its own z (standard normal), uniform fake labels and, for D, its
own real batch. Per-example losses are averaged over the GLOBAL batch with
`tf.nn.compute_average_loss`, and the Keras optimizers sum the replicas'
gradients, so N replicas of batch B update exactly like one replica of N*B
(up to per-replica BN statistics, as released; `sync_batch_norm` removes that
difference).

SN power-iteration vectors, as in the released graph: in a D update both of
D's passes normalize with sigma from the stored u, and u is written once (in
the released graph the fake pass reads u before the real pass writes it). D
has no batch-coupled layer, so that is exactly one D call on
concat(real, fake) with u written, which is what runs. In G's update D's u
is not written. G runs in training mode in both updates, so its u and its BN
moving averages advance on every G and every D update.

Sparse gradients: the CBN gamma/beta tables and D's class embedding are read
with `tf.gather`, so their gradients are IndexedSlices with one slice per
example. TF1's Adam summed repeated indices before updating; Keras 3's Adam
squares the slices first (v gets sum g^2 instead of (sum g)^2). Every update
therefore hands the optimizer dense, duplicate-summed gradients
(`apply_gradients` below). TF1's sparse Adam also decayed m and v on every
row, so this is its update exactly.

`loop.run(train_config)` drives these steps (checkpoints, summaries,
signals).
"""

import keras
import tensorflow as tf

from sagan_tf import models
from sagan_tf.augmentation import augmenter as augmenter_lib
from sagan_tf.training import (
    checkpoints,
    distribute,
    losses,
    run_state,
    summaries,
)
from sagan_tf.training.config_checks import POLICIES, validate_config

__all__ = ["POLICIES", "GANTrainer", "apply_gradients", "validate_config"]

class GANTrainer:
    """G, D, their optimizers, the optional EMA of G, and the step functions.

    Everything stateful is created inside `strategy.scope()`, and both Adam
    optimizers are built on their variables before the first step.

    Args:
      config: `TrainConfig`.
      strategy: the tf.distribute strategy.
    """

    def __init__(self, config, strategy):
        self.config = config
        self.strategy = strategy
        self.num_replicas = strategy.num_replicas_in_sync
        self.global_batch_size = config.batch_size * self.num_replicas
        self.loss_fns = losses.get_losses(config.loss_type)
        with strategy.scope():
            self.generator, self.discriminator = models.build_models(
                config.model
            )
            self.ema_generator = None
            if config.ema_decay > 0:
                self.ema_generator = _clone_generator(self.generator)
            self.g_optimizer = self._make_optimizer(
                config.generator_learning_rate
            )
            self.d_optimizer = self._make_optimizer(
                config.discriminator_learning_rate
            )
            self.g_optimizer.build(self.generator.trainable_variables)
            self.d_optimizer.build(self.discriminator.trainable_variables)
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            # -1 while every loss so far was finite; else the first bad step.
            self.first_non_finite_step = tf.Variable(
                -1,
                dtype=tf.int64,
                trainable=False,
                name="first_non_finite_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            # The run state beside the weights (see `run_state_objects`).
            # Created in the scope: each replica draws its own stream.
            self.run_state = run_state.RunState(config.seed)
            self.augmenter = augmenter_lib.Augmenter(config)
        self.g_update = self._g_update_fn
        self.d_update = self._d_update_fn
        if config.xla and distribute.is_default_strategy(strategy):
            # One replica: each update (forward, backward, Adam) is one XLA
            # cluster.
            self.g_update = tf.function(
                self._g_update_fn, jit_compile=True, autograph=False)
            self.d_update = tf.function(
                self._d_update_fn, jit_compile=True, autograph=False)
        elif config.xla:
            # Several replicas: a per-replica compiled update called through
            # strategy.run could run on GPUs, but Keras' optimizer updates
            # `iterations` (an ONLY_FIRST_REPLICA variable) with a
            # merge_call, which cannot be compiled; on the CPU collectives
            # cannot be compiled at all. So XLA clusters what it can.
            tf.config.optimizer.set_jit("autoclustering")
        # No tensor-dependent Python control flow anywhere in the step, so
        # no AutoGraph: tracing (each start's first step) takes 20-30 %
        # less time.
        self.train_step = tf.function(self._train_step_fn, autograph=False)
        self._agree = tf.function(self._agree_fn)

    # ----------------------------------------------------------- building

    def _make_optimizer(self, learning_rate):
        c = self.config
        optimizer = keras.optimizers.Adam(
            learning_rate=float(learning_rate),
            beta_1=c.beta1,
            beta_2=c.adam_beta2,
            epsilon=c.adam_epsilon,
        )
        if c.mixed_precision == "fp16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    @property
    def noise_rng(self):
        """The z / fake-label tf.random.Generator (in the checkpoint)."""
        return self.run_state.noise_rng

    def seed_noise(self, step):
        """Seeds the noise RNG afresh; seeded runs depend on `step`."""
        self.run_state.seed_noise(self.config.seed, step)

    def copy_generator_to_ema(self):
        """Sets every EMA weight (incl. u and BN statistics) to G's."""
        for w, e in _weight_pairs(self.generator, self.ema_generator):
            e.assign(w)

    def poison_generator_learning_rate(self):
        """Testing aid: a NaN learning rate turns G's weights into NaN."""
        self.g_optimizer.learning_rate = float("nan")

    # ----------------------------------------------------- replica updates

    def _g_grads_fn(self, z, fake_labels, augment):
        with tf.GradientTape() as tape:
            fake = self.generator(z, fake_labels, training=True)
            # Released "NO_OPS" pass: D's u is not written.
            fake_logits = self.discriminator(
                self.augmenter.apply(fake, augment), fake_labels,
                training=True, update_sn=False,
            )
            g_loss = tf.nn.compute_average_loss(
                self.loss_fns.generator(fake_logits),
                global_batch_size=self.global_batch_size,
            )
            scaled = self.g_optimizer.scale_loss(g_loss)
        variables = self.generator.trainable_variables
        return g_loss, tape.gradient(scaled, variables)

    def _g_update_fn(self, z, fake_labels, augment=None):
        """One G update on this replica's inputs; returns its g_loss share.

        Args:
          z: float32 [B, z_dim]; fake_labels: int32 [B].
          augment: the augmentation parameters of the B generated images D
            scores (`Augmenter.sample`); None or {} = none.
        """
        g_loss, grads = self._g_grads_fn(z, fake_labels, augment or {})
        apply_gradients(
            self.g_optimizer, grads, self.generator.trainable_variables
        )
        return g_loss

    def _d_logits(self, images, labels, fake, fake_labels, augment):
        """D's logits on real and generated images, as the released D update.

        Both passes use sigma from the stored u and u is written once.
        `augment`: parameters for the 2B images, real then generated.
        Returns (real_logits [B], fake_logits [B]).
        """
        d = self.discriminator
        if self.augmenter.enabled:
            both = self.augmenter.apply(
                tf.concat([images, tf.cast(fake, images.dtype)], axis=0),
                augment,
            )  # [2B]: real, then generated
            images, fake = tf.split(both, 2, axis=0)
        if self.config.d_two_pass:
            # Fake pass first: it must read u before the real pass writes
            # it (automatic control dependencies keep this program order).
            fake_logits = d(fake, fake_labels, training=True, update_sn=False)
            real_logits = d(images, labels, training=True, update_sn=True)
            return real_logits, fake_logits
        logits = d(
            tf.concat([images, tf.cast(fake, images.dtype)], axis=0),
            tf.concat([labels, fake_labels], axis=0),
            training=True,
            update_sn=True,
        )  # [2B]: real, then generated
        real_logits, fake_logits = tf.split(logits, 2, axis=0)
        return real_logits, fake_logits

    def _d_grads_fn(self, images, labels, z, fake_labels, augment=None):
        # G in training mode (batch moments, moving averages and u advance)
        # but outside the tape: D's update does not differentiate G.
        fake = self.generator(z, fake_labels, training=True)
        with tf.GradientTape() as tape:
            real_logits, fake_logits = self._d_logits(
                images, labels, fake, fake_labels, augment
            )
            loss_real, loss_fake = self.loss_fns.discriminator(
                real_logits, fake_logits
            )
            gb = self.global_batch_size
            d_loss_real = tf.nn.compute_average_loss(
                loss_real, global_batch_size=gb
            )
            d_loss_fake = tf.nn.compute_average_loss(
                loss_fake, global_batch_size=gb
            )
            d_loss = d_loss_real + d_loss_fake
            scaled = self.d_optimizer.scale_loss(d_loss)
        grads = tape.gradient(scaled, self.discriminator.trainable_variables)
        # Shares of global means: summing over replicas gives the mean.
        shares = [
            d_loss,
            d_loss_real,
            d_loss_fake,
            tf.reduce_sum(real_logits) / gb,
            tf.reduce_sum(fake_logits) / gb,
        ]
        if self.augmenter.ada is not None:
            # ADA's overfitting heuristic: E[sign(D(augmented real))].
            shares.append(tf.reduce_sum(
                tf.sign(tf.cast(real_logits, tf.float32))) / gb)
        return tf.stack(shares), grads, fake

    def _d_update_fn(self, images, labels, z, fake_labels, augment=None):
        """One D update on this replica's inputs.

        Args:
          images: float32 [B, S, S, 3] in [-1, 1]; labels: int [B];
          z: float32 [B, z_dim]; fake_labels: int32 [B].
          augment: augmentation parameters of the 2B images D sees, real
            then generated (`Augmenter.sample`); None or {} = none.

        Returns:
          (metrics float32 [5]: this replica's shares of d_loss, d_loss_real,
          d_loss_fake, logit_real, logit_fake, and with ADA a sixth, of
          mean sign(D(real)); the generated images [B, S, S, 3], not
          augmented).
        """
        labels = tf.cast(labels, tf.int32)
        metrics, grads, fake = self._d_grads_fn(
            images, labels, z, fake_labels, augment or {}
        )
        apply_gradients(
            self.d_optimizer, grads, self.discriminator.trainable_variables
        )
        return metrics, fake

    def _noise(self, batch_size):
        z = self.noise_rng.normal([batch_size, self.config.model.z_dim])
        fake_labels = self.noise_rng.uniform(
            [batch_size],
            minval=0,
            # Unconditional (0 classes): all zeros, ignored by G and D.
            maxval=max(self.config.model.number_classes, 1),
            dtype=tf.int32,
        )
        return z, fake_labels

    def _g_update_random(self):
        batch = self.config.batch_size
        z, fake_labels = self._noise(batch)
        # Drawn here, outside a compiled update, from the checkpointed RNG.
        augment = self.augmenter.sample(self.noise_rng, batch)
        return self.g_update(z, fake_labels, augment)

    def _d_update_random(self, images, labels):
        batch = self.config.batch_size
        z, fake_labels = self._noise(batch)
        augment = self.augmenter.sample(self.noise_rng, 2 * batch)
        metrics, fake = self.d_update(images, labels, z, fake_labels,
                                      augment)
        return metrics, images, fake

    # ------------------------------------------------------ global step

    def update_ema(self):
        """EMA ← decay·EMA + (1 − decay)·G for every weight (cross-replica)."""
        decay = self.config.ema_decay
        for w, e in _weight_pairs(self.generator, self.ema_generator):
            e.assign(decay * e + (1.0 - decay) * w)

    def _train_step_fn(self, iterator):
        """One global step; runs in cross-replica context.

        Returns:
          (metrics dict of scalars, real images, generated images) — the
          images are the first replica's batch of the last D update.
        """
        s = self.strategy
        g_loss = None
        for _ in range(self.config.g_step):
            g_loss = s.run(self._g_update_random)
            if self.ema_generator is not None:
                self.update_ema()
        signs = 0.0
        ada = self.augmenter.ada is not None
        for i in range(self.config.d_step):
            images, labels = next(iterator)
            metrics, real, fake = s.run(
                self._d_update_random, args=(images, labels)
            )
            # Only the last D update's metrics are logged; ADA needs every
            # update's sign share.
            if ada or i == self.config.d_step - 1:
                metrics = s.reduce(
                    tf.distribute.ReduceOp.SUM, metrics, axis=None)
            if ada:
                signs += metrics[-1]
        self.augmenter.observe(signs, self.config.d_step,
                               self.global_batch_size)
        total = tf.concat(
            [
                tf.reshape(
                    s.reduce(tf.distribute.ReduceOp.SUM, g_loss, axis=None),
                    [1],
                ),
                metrics,
            ],
            axis=0,
        )
        self.run_state.data_position.assign_add(self.config.d_step)
        step = self.step.assign_add(1)
        finite = tf.reduce_all(tf.math.is_finite(total))
        first = self.first_non_finite_step
        first.assign(
            tf.where(tf.logical_and(first < 0, tf.logical_not(finite)),
                     step, first)
        )
        names = ("g_loss",) + _D_METRICS
        values = {name: total[i] for i, name in enumerate(names)}
        local = s.experimental_local_results
        real = local(real)[0][: summaries.MAX_GRID_IMAGES]
        fake = local(fake)[0][: summaries.MAX_GRID_IMAGES]
        return values, real, fake

    def _agree_fn(self, flags):
        per_replica = self.strategy.run(lambda: tf.identity(flags))
        return self.strategy.reduce(
            tf.distribute.ReduceOp.SUM, per_replica, axis=None
        )

    def agree(self, *flags):
        """Across workers: each flag is True if any worker's flag is True."""
        values = tf.constant([float(bool(f)) for f in flags], tf.float32)
        totals = self._agree(values).numpy()
        return tuple(bool(t > 0) for t in totals)

    # ------------------------------------------------------------ queries

    def check_finite(self):
        """Raises NonFiniteError naming the first step with a bad loss."""
        bad = int(self.first_non_finite_step.numpy())
        if bad >= 0:
            raise checkpoints.NonFiniteError(
                f"Non-finite loss at global step {bad}; stopping. No "
                "checkpoint with non-finite weights was written; the last "
                "good one is still in the run directory."
            )

    def scalar_summaries(self):
        """Learning rates and attention gains, tag → float."""
        values = {
            "d_learning_rate": _to_float(self.d_optimizer.learning_rate),
            "g_learning_rate": _to_float(self.g_optimizer.learning_rate),
            **self.augmenter.scalars(),
        }
        for model in (self.generator, self.discriminator):
            for layer in model.attention_layers:
                values[summaries.gamma_tag(layer)] = _to_float(layer.gamma)
        return values

    def checkpoint_objects(self):
        """The objects of the checkpoint contract (see checkpoints.py)."""
        objects = dict(
            generator=self.generator,
            discriminator=self.discriminator,
            g_optimizer=self.g_optimizer,
            d_optimizer=self.d_optimizer,
        )
        if self.ema_generator is not None:
            objects["ema_generator"] = self.ema_generator
        return objects

    def run_state_objects(self):
        """What decides the next steps besides the weights (`run_state.py`):
        checkpointed beside `checkpoint_objects()`; checkpoints older than
        these objects restore without them."""
        return {**self.run_state.objects(),
                **self.augmenter.checkpoint_objects()}


def apply_gradients(optimizer, grads, variables):
    """optimizer.apply_gradients with IndexedSlices made dense first.

    Densifying sums the slices of a repeated index (unsorted_segment_sum)
    before the optimizer sees them, as TF1's optimizers did; with several
    replicas the dense gradients are then all-reduced like the others.
    """
    dense = [
        tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
        for g in grads
    ]
    optimizer.apply_gradients(zip(dense, variables))


_D_METRICS = ("d_loss", "d_loss_real", "d_loss_fake", "logit_real",
              "logit_fake")


def _to_float(value):
    return float(keras.ops.convert_to_numpy(value))


def _clone_generator(generator):
    config = dict(generator.get_config(), name="ema_generator")
    ema = models.Generator(**config)
    ema.build((None, generator.z_dim), (None,))
    for w, e in _weight_pairs(generator, ema):
        e.assign(w)
    return ema


def _weight_pairs(generator, ema):
    """Pairs G's weights with the EMA's (same architecture, same order)."""
    pairs = list(zip(generator.weights, ema.weights))
    if len(generator.weights) != len(ema.weights) or any(
        w.shape != e.shape for w, e in pairs
    ):
        raise ValueError("EMA generator does not match the generator.")
    return pairs
