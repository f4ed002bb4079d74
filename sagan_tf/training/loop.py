"""The training loop behind `sagan-train` / `train_imagenet.py`:
`run(train_config)`.

It checks the flags (models included) before anything is written, picks
the strategy (see `distribute.py`), locks the run directory
`<checkpoint_dir>/imagenet_<batch_size>` (`run_lock.py`), builds the models
and optimizers (`updates.GANTrainer`), resumes from the newest checkpoint
that reads completely (`checkpoints.CheckpointKeeper`), builds the input
pipeline, and only then writes `config.json`, so that a start that fails
leaves nothing that binds the next one. It then runs global steps until
`max_steps`, with

- TensorBoard summaries every `save_summaries_steps`;
- a console progress line every `log_every_steps`;
- checkpoints every `save_checkpoint_secs` (or `save_checkpoint_steps`) and
  at exit;
- SIGTERM / SIGINT: save and return normally (exit status 0), so a
  preempted job loses nothing; a second SIGINT interrupts at once;
- a non-finite loss: `NonFiniteError` naming the step, with no checkpoint
  of the bad weights.
"""

import contextlib
import signal
import time

import keras
import tensorflow as tf

from sagan_tf import cli, determinism, paths
from sagan_tf.data import errors, pipeline
from sagan_tf.evaluation import attention_maps
from sagan_tf.models import checks
from sagan_tf.training import (
    checkpoint_files,
    checkpoints,
    distribute,
    input_order,
    run_lock,
    run_state,
    summaries,
)
from sagan_tf.training import updates as updates_lib

# What the chief broadcasts instead of a step: no checkpoint, or it failed
# to choose (its own error says why).
_NONE, _FAILED = -1, -2


class _StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        return False

    @property
    def requested(self):
        return self.signal_name is not None


@contextlib.contextmanager
def _precision_policy(mixed_precision):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(
        updates_lib.POLICIES[mixed_precision]
    )
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def run(config, strategy=None, log=print):
    """Trains G and D as configured; returns the global step reached.

    Args:
      config: `TrainConfig`.
      strategy: optional tf.distribute strategy; by default chosen by
        `distribute.select_strategy(config.num_cpu_devices)`.
      log: where progress lines go.

    Raises:
      ValueError: bad configuration (names the flag) or data (`DataError`).
      checkpoints.NonFiniteError: a loss or weight became NaN / infinite.
      checkpoints.CheckpointError: checkpoints exist, none readable.
      checkpoints.DiskFullError: a save failed for lack of space.
      run_lock.RunLockedError: another trainer uses the run directory.
    """
    updates_lib.validate_config(config)
    checks.check_model_config(config.model)
    paths.check_folder(config.checkpoint_dir, "--checkpoint_dir")
    paths.check_folder(checkpoints.run_dir(config), "--checkpoint_dir")
    if strategy is None:
        strategy = distribute.select_strategy(config.num_cpu_devices)
    saved = _saved_run_config(config)
    if config.deterministic and config.seed is None and (
        distribute.is_multi_worker(strategy)
    ):
        raise ValueError(
            "--deterministic with several workers needs --seed: every "
            "worker must use the same one.")
    seed_given = config.seed is not None
    # Every run is seeded, so that every resume continues it exactly.
    config = determinism.with_seed(
        config, saved_seed=(saved or {}).get("seed"), log=log, needed=True)
    if not seed_given and distribute.is_multi_worker(strategy):
        # Each worker picked its own: all take the chief's.
        config = determinism.replace_seed(config, distribute.chief_value(
            strategy, config.seed, distribute.worker_info(strategy)[0]))
    determinism.warn_if_changed(saved, config, cli.warn)
    keras.utils.set_random_seed(config.seed)
    with _precision_policy(config.mixed_precision), (
        determinism.op_determinism(config)
    ), determinism.explained_errors(config):
        return _Loop(config, strategy, log, seed_given=seed_given).run()


def _saved_run_config(config):
    """The run's config.json when this start resumes it, else None."""
    directory = checkpoints.run_dir(config)
    if config.start_over or not checkpoint_files.find(directory):
        return None
    try:
        return checkpoints.read_config(directory)
    except ValueError:
        return None  # named by the architecture check in _Loop


class _Loop:
    """State of one `run` call."""

    def __init__(self, config, strategy, log, seed_given=True):
        self.config = config
        self.seed_given = seed_given
        self._restored_keys = None
        self.strategy = strategy
        self.log = log
        self.is_chief, task_id = distribute.worker_info(strategy)
        self.multi_worker = distribute.is_multi_worker(strategy)
        self.directory = checkpoints.run_dir(config)
        self._chosen_path = None

        log(f"Strategy: {type(strategy).__name__} with "
            f"{strategy.num_replicas_in_sync} replica(s); global batch "
            f"{config.batch_size * strategy.num_replicas_in_sync}.")
        log("Resolved configuration:\n" + checkpoints.config_to_json(config))
        self.lock = None
        if self.is_chief:
            # Other workers of a cluster share the directory by design.
            paths.make_folder(self.directory, "--checkpoint_dir")
            self.lock = run_lock.lock_run_dir(self.directory)
        self.writer = None
        try:
            if not config.start_over:
                checkpoints.check_model_config(config.model, self.directory)
            self.trainer = updates_lib.GANTrainer(config, strategy)
            self.keeper = checkpoints.CheckpointKeeper(
                self.directory,
                self.trainer.step,
                {**self.trainer.checkpoint_objects(),
                 **self.trainer.run_state_objects()},
                max_to_keep=config.keep_checkpoints,
                is_chief=self.is_chief,
                task_id=task_id,
                warn=cli.warn,
                retry_secs=config.storage_retry_secs,
            )
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.writer is not None:
            self.writer.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _restore(self):
        """The chief decides; every worker restores the same checkpoint.

        Only the chief inspects, moves aside or sets aside files. Its choice
        (a step, none, or a failure) reaches every worker through a
        collective before anyone restores, and a second one makes all stop
        together when any worker cannot restore it.
        """
        chosen, failure = _NONE, None
        if self.is_chief:
            try:
                chosen = self._choose()
            except Exception as error:
                if not self.multi_worker:
                    raise
                chosen, failure = _FAILED, error
        if self.multi_worker:
            chosen = self._collective(
                distribute.chief_value, chosen, self.is_chief
            )
        if failure is not None:
            raise failure
        if chosen == _FAILED:
            raise checkpoints.CheckpointError(
                f"the chief worker could not choose a checkpoint in "
                f"{self.directory} to resume from; its output says why. "
                "No worker restored anything."
            )
        path = None
        if chosen != _NONE:
            path = self._chosen_path or self.keeper.path_of(chosen)
            try:
                if not self.is_chief:  # the chief restored as it chose
                    self.keeper.restore(path)
            except Exception as error:
                if not self.multi_worker:
                    raise
                failure = error
        if self.multi_worker and self._collective(
            distribute.any_worker, failure is not None
        ):
            why = (f"this worker could not read it ({failure})"
                   if failure is not None else
                   "another worker could not read it; its output says why")
            raise checkpoints.CheckpointError(
                f"the chief chose {path} to resume from, but {why}. All "
                "workers stop here rather than train from different "
                "weights; nothing was moved. Check that every worker "
                "reads the run directory, then run the same command again."
            )
        step = int(self.trainer.step.numpy())
        if path is None:
            self.log(f"No checkpoint in {self.directory}; starting at step 0.")
            return step
        self.log(f"Restored {path}; resuming at global step {step}.")
        self._restored_keys = self.keeper.object_names(path)
        ema = self.trainer.ema_generator
        if ema is not None and "ema_generator" not in self._restored_keys:
            self.log("The checkpoint has no EMA generator; starting the "
                     "EMA from the restored generator.")
            self.trainer.copy_generator_to_ema()
        return step

    def _resume_run_state(self, start):
        """Continues the noise RNG and the input order of the checkpoint.

        Same seed and same shards: the restored RNG and input position make
        the resumed run equal the uninterrupted one. Otherwise a new input
        order starts at its first epoch, said (`run_state.RunState.resume`).

        Returns:
          (distributed-iterator steps the input pipeline must skip, its
          `records_per_epoch` function or None).
        """
        state = self.trainer.run_state
        holds = None
        if self._restored_keys is not None:
            holds = self._restored_keys.__contains__
            self._adopt_checkpoint_seed(holds)
        seed = self.config.seed
        order = input_order.InputOrder(
            self.config.data, self.directory, self.is_chief, self.log)
        if not state.resume(seed, start, holds, self.log, cli.warn):
            order.record()
            return 0, None
        order.check_unchanged(seed)
        position = int(state.data_position.numpy())
        self.log(f"Continuing the checkpoint's noise RNG and input order "
                 f"(--seed {seed}) at batch {position} per replica.")
        return position, order.records_per_epoch_fn()

    def _adopt_checkpoint_seed(self, holds):
        """Without --seed and config.json, the checkpoint's seed is the
        run's: a start that lost config.json still continues the run."""
        if self.seed_given or not holds(run_state.INPUT_SEED_KEY):
            return
        saved = int(self.trainer.run_state.input_seed.numpy())
        if saved < 0 or saved == self.config.seed:
            return
        self.log(f"Using the checkpoint's --seed {saved} (its input "
                 f"order's) instead of {self.config.seed}.")
        self.config = determinism.replace_seed(self.config, saved)
        self.trainer.config = self.config

    def _collective(self, fn, *args):
        # MultiWorkerMirroredStrategy's health check aborts a collective
        # whose peer died; say so in one paragraph instead of TF's text.
        try:
            return fn(self.strategy, *args)
        except tf.errors.OpError as error:
            raise checkpoints.CheckpointError(
                "lost the other workers while agreeing on the checkpoint to "
                f"resume from in {self.directory} ({type(error).__name__}: "
                f"{_op_error_cause(error)}); a worker stopped or the "
                "network failed. This worker stops too; start all workers "
                "again."
            ) from None

    def _choose(self):
        """The chief's choice: a step, or _NONE (moves files as needed)."""
        if self.config.start_over:
            folder = self.keeper.start_over()
            if folder:
                self.log(f"--start_over: moved the files of {self.directory} "
                         f"to {folder}; starting at step 0.")
        chosen = self.keeper.choose()
        if chosen is None:
            return _NONE
        self._chosen_path = chosen.prefix
        return chosen.step

    def run(self):
        try:
            return self._run()
        finally:
            self.close()

    def _run(self):
        c = self.config
        start = self._restore()
        if start >= c.max_steps:
            self.log(f"Global step {start} >= --max_steps {c.max_steps}; "
                     "nothing to do.")
            return start
        skip_steps, records_per_epoch = self._resume_run_state(start)
        c = self.config  # the checkpoint's seed may have been adopted
        # tf.data's shuffles combine the global seed with their own.
        tf.random.set_seed(c.seed)
        dataset = pipeline.distributed_dataset(
            self.strategy,
            c.data,
            image_size=c.model.image_size,
            per_replica_batch_size=c.batch_size,
            num_classes=c.model.number_classes,
            skip_steps=skip_steps,
            records_per_epoch=records_per_epoch,
            log=self.log,
        )
        iterator = iter(dataset)
        # The run is known to start: the flags, the checkpoint and the data
        # agree.
        if self.is_chief:
            path = checkpoints.write_config(self.directory, c)
            self.log(f"Wrote {path}")
        self.writer = summaries.SummaryWriter(
            self.directory, enabled=self.is_chief
        )
        self.writer.text(start, {"config": summaries.config_markdown(
            checkpoints.config_to_json(c))})
        self.attention = attention_maps.AttentionSummary(
            self.trainer.generator, self.trainer.discriminator
        )
        with _StopRequest() as stop:
            return self._train(iterator, start, stop)

    def _train(self, iterator, start, stop):
        c, trainer = self.config, self.trainer
        global_batch = trainer.global_batch_size
        progress = summaries.Throughput(global_batch, start)
        summary_rate = summaries.Throughput(global_batch, start)
        last_save_time = time.monotonic()
        saved_step = start
        step = start
        first_call_start = time.perf_counter()
        steady_start = None
        while step < c.max_steps:
            if c.inject_nan_at_step and step + 1 == c.inject_nan_at_step:
                trainer.poison_generator_learning_rate()
            with pipeline.clear_errors(c.data):
                values, real, fake = trainer.train_step(iterator)
            step += 1
            if steady_start is None:
                # The first call traces and compiles; time the rest apart.
                values["g_loss"].numpy()
                self.log(f"First step (tracing and compiling) took "
                         f"{time.perf_counter() - first_call_start:.1f}s.")
                steady_start = (time.perf_counter(), step)
                progress.reset(step)
                summary_rate.reset(step)

            if c.save_checkpoint_steps:
                save_due = step % c.save_checkpoint_steps == 0
            else:
                elapsed = time.monotonic() - last_save_time
                save_due = elapsed >= c.save_checkpoint_secs
            stop_now = stop.requested
            if self.multi_worker:
                # Every worker must take the same branch (saves and the
                # next step are collective).
                stop_now, save_due = trainer.agree(stop_now, save_due)
            summary_due = step % c.save_summaries_steps == 0
            log_due = step % c.log_every_steps == 0 or step == c.max_steps
            if summary_due or log_due or save_due or stop_now:
                self._check_finite()
            if summary_due:
                self._write_summaries(step, values, real, fake, summary_rate)
            if log_due:
                steps_per_sec, images_per_sec = progress.rates(step)
                line = summaries.progress_line(
                    step, c.max_steps, _floats(values), images_per_sec,
                    steps_per_sec)
                ada = trainer.augmenter.scalars()
                if ada:
                    line += f"  ada p {ada['ada/p']:.3f} rt {ada['ada/rt']:.2f}"
                self.log(line)
            if save_due:
                self._save(step)
                saved_step, last_save_time = step, time.monotonic()
            if stop_now:
                self.log(f"Received {stop.signal_name or 'a stop request'} "
                         f"at global step {step}; saving and exiting.")
                break

        end_time = time.perf_counter()
        self._check_finite()
        if saved_step != step:
            self._save(step)
        if steady_start is not None and step > steady_start[1]:
            seconds = end_time - steady_start[0]
            steps = step - steady_start[1]
            self.log(f"Trained {steps} steps after the first in "
                     f"{seconds:.1f}s: {1000 * seconds / steps:.1f} ms/step, "
                     f"{steps * global_batch / seconds:.1f} images/sec.")
        return step

    def _check_finite(self):
        # Losses first (names the first bad step); a NaN can also hide from
        # the losses (relu maps it to 0 on some CPUs), so check the weights.
        self.trainer.check_finite()
        self.keeper.check_weights()

    def _save(self, step):
        path = self.keeper.save()
        if path:
            self.log(f"Saved checkpoint {path} at global step {step}.")

    def _write_summaries(self, step, values, real, fake, rate):
        steps_per_sec, images_per_sec = rate.rates(step)
        scalars = _floats(values)
        scalars.update(self.trainer.scalar_summaries())
        if steps_per_sec is not None:
            scalars["global_step/sec"] = steps_per_sec
            scalars["images/sec"] = images_per_sec
        self.writer.scalars(step, scalars)
        self.writer.images(step, {
            "input_image_grid": summaries.image_grid(real.numpy()),
            "generator_grid": summaries.image_grid(fake.numpy()),
        })
        if self.is_chief:  # inference mode, update_sn=False: no state moves
            self.writer.images(step, self.attention.images())
        self.writer.flush()


def _floats(values):
    return {name: float(value.numpy()) for name, value in values.items()}


def _op_error_cause(error, limit=200):
    """The cause in a failed collective's OpError message: its first line
    after TF's graph preamble (e.g. "Connection reset by peer", or the
    tasks that stopped sending heartbeats), without gRPC's details."""
    lines = [line.strip() for line in
             errors.without_trace(error.message).splitlines()]
    causes = [line for line in lines
              if not line.startswith(("[[", "Additional GRPC"))]
    if not causes:
        return error.message.strip()[:limit]
    cause = causes[0]
    if cause.endswith(":") and len(causes) > 1:  # e.g. the tasks lost
        cause += " " + causes[1]
    return cause[:limit]
