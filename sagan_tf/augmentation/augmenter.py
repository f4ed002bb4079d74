"""What the trainer augments: every image D sees, by --diffaugment or
--ada_target (neither, as released, by default).

Both updates augment D's inputs, real and generated alike: G's update the
generated images it scores, D's update the real and the generated halves
of its one call (each image with its own parameters). G's own output is
never augmented, so G learns the clean distribution and its samples,
evaluation and TensorBoard grids show clean images. The parameters are
drawn from the run's noise RNG (checkpointed), so a resumed run augments
as the uninterrupted one does.

ADA's probability p is one value for the whole run: every ADA_INTERVAL D
updates, rt = E[sign(D(real))] over them (the reduced mean over all
replicas and workers) moves p by `ada.adjust_p`. p, rt and the running
sums are checkpointed (`AdaState`) and written to TensorBoard as `ada/p`
and `ada/rt`.
"""

import tensorflow as tf

from sagan_tf.augmentation import ada, diffaugment

ADA_KEY = "ada"


def validate(config):
    """Raises ValueError naming the flag for bad augmentation settings.

    Args:
      config: TrainConfig.
    """
    policy = diffaugment.parse_policy(config.diffaugment)
    if not 0.0 <= config.ada_target < 1.0:
        raise ValueError(
            f"--ada_target={config.ada_target!r}: must be in (0, 1), e.g. "
            "0.6 (stylegan2-ada's), or 0 for no adaptive augmentation")
    if config.ada_speed_images <= 0:
        raise ValueError(
            f"--ada_speed_images={config.ada_speed_images!r}: must be > 0")
    if policy and config.ada_target:
        raise ValueError(
            f"--diffaugment={config.diffaugment!r} and --ada_target="
            f"{config.ada_target!r}: choose one of the two augmentations")


def _variable(value, name, dtype=tf.float32):
    # One value for all replicas, written in cross-replica context.
    return tf.Variable(
        value, dtype=dtype, trainable=False, name=name,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class AdaState(tf.Module):
    """ADA's checkpointed state: p, the last rt, and the sums of the
    interval under way (so a resume mid-interval adjusts as the
    uninterrupted run does)."""

    def __init__(self):
        super().__init__(name=ADA_KEY)
        self.p = _variable(0.0, "p")
        self.rt = _variable(0.0, "rt")
        # Sum over this interval's D updates of the batch mean of
        # sign(D(real)), and their count.
        self.sign_sum = _variable(0.0, "sign_sum")
        self.batches = _variable(0, "batches", tf.int64)


class Augmenter:
    """The augmentation of D's inputs that a TrainConfig asks for.

    Create it inside `strategy.scope()`.

    Args:
      config: TrainConfig.
    """

    def __init__(self, config):
        validate(config)
        self.policy = diffaugment.parse_policy(config.diffaugment)
        self.image_size = config.model.image_size
        self.target = config.ada_target
        self.speed_images = config.ada_speed_images
        self.ada = AdaState() if self.target else None

    @property
    def enabled(self):
        return bool(self.policy) or self.ada is not None

    def sample(self, rng, batch_size):
        """Per-image parameters for `batch_size` images ({} when off)."""
        if self.policy:
            return diffaugment.sample_params(
                rng, batch_size, self.image_size, self.policy)
        if self.ada is not None:
            return ada.sample_params(
                rng, batch_size, self.image_size, self.ada.p)
        return {}

    def apply(self, images, params):
        """`images` [B, S, S, 3] augmented with `params` (as they are when
        off)."""
        if self.policy:
            return diffaugment.apply(images, params, self.policy)
        if self.ada is not None:
            return ada.apply(images, params)
        return images

    def observe(self, sign_sum, batches, global_batch):
        """Adds D updates' sign(D(real)) means; adjusts p when an interval
        is full. Cross-replica context (the values are reduced already).

        Args:
          sign_sum: float32 scalar, sum over `batches` D updates of the
            global batch mean of sign(D(augmented real)).
          batches: D updates it covers (a Python int).
          global_batch: real images per D update, over all replicas.
        """
        if self.ada is None:
            return
        state = self.ada
        total = state.sign_sum + sign_sum
        count = state.batches + batches
        due = count >= ada.ADA_INTERVAL
        rt = total / tf.cast(count, tf.float32)
        p = ada.adjust_p(state.p, rt, self.target,
                         count * global_batch, self.speed_images)
        state.p.assign(tf.where(due, p, state.p))
        state.rt.assign(tf.where(due, rt, state.rt))
        state.sign_sum.assign(tf.where(due, 0.0, total))
        state.batches.assign(tf.where(due, tf.zeros_like(count), count))

    def checkpoint_objects(self):
        """Checkpoint key -> trackable ({} without ADA)."""
        return {ADA_KEY: self.ada} if self.ada is not None else {}

    def scalars(self):
        """TensorBoard tag -> float ({} without ADA)."""
        if self.ada is None:
            return {}
        return {"ada/p": float(self.ada.p.numpy()),
                "ada/rt": float(self.ada.rt.numpy())}
