"""The state beside the weights that decides a run's next steps.

Checkpointed with the weights under these keys (checkpoints older than a
key restore without it):

  noise_rng      the tf.random.Generator that draws z, the fake labels and
                 the augmentations (each replica draws its own stream);
  data_position  batches each replica has taken from the input pipeline;
  input_seed     the seed whose input order `data_position` counts in
                 (-1: unknown, written before the order was defined epoch
                 by epoch).

`RunState.resume` decides, after a restore, how the run goes on: the same
run exactly (same seed, same shards), or, saying so, a new input order.
"""

import tensorflow as tf

NOISE_RNG_KEY = "noise_rng"
DATA_POSITION_KEY = "data_position"
INPUT_SEED_KEY = "input_seed"
_UNKNOWN_SEED = -1


def noise_generator(seed, step):
    """The noise RNG of a start at `step` (as before the RNG was
    checkpointed, so that straight runs keep their numbers)."""
    if seed is None:
        return tf.random.Generator.from_non_deterministic_state()
    return tf.random.Generator.from_seed(seed * 1_000_003 + int(step))


def _counter(name, initial=0):
    # One value for all replicas, written in cross-replica context.
    return tf.Variable(
        initial, dtype=tf.int64, trainable=False, name=name,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class RunState:
    """The noise RNG, the input position and the input order's seed.

    Create it inside `strategy.scope()`.

    Args:
      seed: the run's seed (None: nondeterministic noise).
    """

    def __init__(self, seed):
        self.noise_rng = noise_generator(seed, 0)
        self.data_position = _counter("data_position")
        self.input_seed = _counter("input_seed", _UNKNOWN_SEED)

    def objects(self):
        """Checkpoint key -> trackable."""
        return {
            NOISE_RNG_KEY: self.noise_rng,
            DATA_POSITION_KEY: self.data_position,
            INPUT_SEED_KEY: self.input_seed,
        }

    def seed_noise(self, seed, step):
        """Seeds the noise RNG afresh; seeded runs depend on `step`."""
        self.noise_rng.reset(noise_generator(seed, step).state)

    def _new_order(self, seed, step, reseed_noise):
        if reseed_noise:
            self.seed_noise(seed, step)
        self.data_position.assign(0)
        self.input_seed.assign(seed)

    def resume(self, seed, step, holds, log, warn):
        """How the run goes on after restoring a checkpoint (or none).

        Args:
          seed: this start's seed.
          step: the global step restored (0 without a checkpoint).
          holds: key -> whether the restored checkpoint has it; None when
            no checkpoint was restored.
          log, warn: where to say what was decided.

        Returns:
          True when the run continues its input order exactly (the
          position is then meaningful and the shards must be checked);
          False when the order starts at its first epoch.
        """
        if holds is None:
            self._new_order(seed, step, reseed_noise=True)
            return False
        if not holds(NOISE_RNG_KEY):
            log("The checkpoint holds no noise RNG or input position "
                "(written by an older version): seeding both afresh from "
                f"--seed {seed} and step {step}, so this run will differ "
                "from an uninterrupted one.")
            self._new_order(seed, step, reseed_noise=True)
            return False
        if not holds(INPUT_SEED_KEY):
            log("The checkpoint counts its input position in v0.3's single "
                "input stream: the noise RNG continues, and the input order "
                f"restarts at the first epoch of --seed {seed}'s order.")
            self._new_order(seed, step, reseed_noise=False)
            return False
        saved = int(self.input_seed.numpy())
        if saved != seed:
            warn(f"this run's input order and noise come from --seed "
                 f"{saved}; with --seed {seed} they start anew (a new "
                 f"input order from its first epoch, noise drawn from "
                 f"--seed {seed} and step {step}). The weights continue, but "
                 "the run no longer equals an uninterrupted one.")
            self._new_order(seed, step, reseed_noise=True)
            return False
        return True
