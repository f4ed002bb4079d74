"""`sagan-train` / `train_imagenet.py`: trains the Self-Attention GAN
(the released `train_imagenet.py`).

    CUDA_VISIBLE_DEVICES=0,1,2,3 sagan-train \\
        --generator_type test --discriminator_type test --data_dir ./data

(`python train_imagenet.py` with the same flags, from a clone.)

Uses every visible GPU (MirroredStrategy; `--batch_size` is per replica),
or all machines of a TF_CONFIG cluster (MultiWorkerMirroredStrategy, one
process per machine). Checkpoints and TensorBoard summaries go to
`<checkpoint_dir>/imagenet_<batch_size>`; a restart in the same directory
resumes. SIGTERM / Ctrl-C saves a checkpoint and exits with status 0.

Errors end the process with status 1 and one paragraph naming the flag,
file or value at fault; --debug shows the Python traceback instead.

Flag defaults live in sagan_tf/config.py.
"""

from absl import flags

from sagan_tf import cli
from sagan_tf import config as config_lib

PROGRAM = "sagan-train"

_M = config_lib.ModelConfig()
_D = config_lib.DataConfig()
_T = config_lib.TrainConfig()

def define_flags(fv=flags.FLAGS):
    """Defines every flag on `fv`; defaults come from sagan_tf/config.py."""
    # Released flags: names, defaults and meanings as released.
    flags.DEFINE_string(
        "data_dir", _D.data_dir,
        "Directory with the training TFRecords (released format: "
        "<data_dir>/*.tfrecords with image_raw + label).",
        flag_values=fv)
    flags.DEFINE_string(
        "checkpoint_dir", _T.checkpoint_dir,
        "Checkpoints, config.json and TensorBoard events go to "
        "<checkpoint_dir>/imagenet_<batch_size>.",
        flag_values=fv)
    flags.DEFINE_integer(
        "batch_size", _T.batch_size,
        "Images per replica (GPU) per update; the global batch is "
        "batch_size x replicas.",
        flag_values=fv)
    flags.DEFINE_enum(
        "generator_type", _M.generator_type, ["test", "baseline"],
        "test = SAGAN generator with self-attention, baseline = without.",
        flag_values=fv)
    flags.DEFINE_enum(
        "discriminator_type", _M.discriminator_type, ["test", "baseline"],
        "test = SAGAN discriminator with self-attention, baseline = without.",
        flag_values=fv)
    flags.DEFINE_enum(
        "loss_type", _T.loss_type, ["hinge_loss", "kl_loss"],
        "GAN loss: hinge_loss, or kl_loss (softplus losses for D).",
        flag_values=fv)
    flags.DEFINE_float(
        "discriminator_learning_rate", _T.discriminator_learning_rate,
        "Adam learning rate of D.",
        flag_values=fv)
    flags.DEFINE_float(
        "generator_learning_rate", _T.generator_learning_rate,
        "Adam learning rate of G.",
        flag_values=fv)
    flags.DEFINE_float("beta1", _T.beta1, "Adam beta_1 (momentum) of both.",
        flag_values=fv)
    flags.DEFINE_integer(
        "image_size", _M.image_size,
        "Side of the square training images: 32, 64, 128 (released) or 256.",
        flag_values=fv)
    flags.DEFINE_integer("z_dim", _M.z_dim, "Size of the noise vector z.",
        flag_values=fv)
    flags.DEFINE_integer("gf_dim", _M.gf_dim, "Base channel width of G.",
        flag_values=fv)
    flags.DEFINE_integer("df_dim", _M.df_dim, "Base channel width of D.",
        flag_values=fv)
    flags.DEFINE_integer(
        "number_classes", _M.number_classes,
        "Number of classes (labels lie in [0, number_classes)); 0 trains "
        "an unconditional SAGAN (plain BN in G, no projection in D) and "
        "ignores the labels in the data.",
        flag_values=fv)
    flags.DEFINE_integer(
        "d_step", _T.d_step, "Discriminator updates per global step.",
        flag_values=fv)
    flags.DEFINE_integer(
        "g_step", _T.g_step,
        "Generator updates per global step (they run before the D updates).",
        flag_values=fv)
    flags.DEFINE_integer(
        "save_summaries_steps", _T.save_summaries_steps,
        "Write TensorBoard summaries every this many global steps.",
        flag_values=fv)
    flags.DEFINE_integer(
        "save_checkpoint_secs", _T.save_checkpoint_secs,
        "Save a checkpoint every this many seconds (unless "
        "--save_checkpoint_steps is set).",
        flag_values=fv)
    flags.DEFINE_integer(
        "shuffle_buffer_size", _D.shuffle_buffer_size,
        "Records in the input shuffle buffer.",
        flag_values=fv)

    # Additions.
    flags.DEFINE_integer(
        "max_steps", _T.max_steps, "Stop at this global step.",
        flag_values=fv)
    flags.DEFINE_integer(
        "save_checkpoint_steps", _T.save_checkpoint_steps,
        "If > 0, save every this many global steps instead of on the "
        "--save_checkpoint_secs schedule.",
        flag_values=fv)
    flags.DEFINE_integer(
        "keep_checkpoints", _T.keep_checkpoints,
        "Number of most recent checkpoints kept.",
        flag_values=fv)
    flags.DEFINE_float(
        "adam_beta2", _T.adam_beta2,
        "Adam beta_2 of both optimizers (released: TF1's 0.999; the paper's "
        "text says 0.9).",
        flag_values=fv)
    flags.DEFINE_float(
        "adam_epsilon", _T.adam_epsilon,
        "Adam epsilon of both optimizers (released: TF1's 1e-8).",
        flag_values=fv)
    flags.DEFINE_string(
        "attention_resolution", config_lib.ATTENTION_AUTO,
        "Resolution at which the self-attention blocks run: 'auto' = 32 as "
        "released where G and D both have a 32x32 block, else the largest "
        "resolution they share (16 at --image_size 32); 64 = the released "
        "*_64 variants.",
        flag_values=fv)
    flags.DEFINE_float(
        "ema_decay", _T.ema_decay,
        "If > 0, keep an exponential moving average of G's weights (incl. BN "
        "statistics) with this decay, e.g. 0.9999; 0 = off, as released.",
        flag_values=fv)
    flags.DEFINE_enum(
        "mixed_precision", _T.mixed_precision, ["none", "bf16", "fp16"],
        "Keras mixed precision; SN, softmax and losses stay float32. fp16 adds "
        "dynamic loss scaling to both optimizers.",
        flag_values=fv)
    flags.DEFINE_boolean(
        "xla", _T.xla, "Compile the update steps with XLA (jit_compile).",
        flag_values=fv)
    flags.DEFINE_boolean(
        "sync_batch_norm", _M.sync_batch_norm,
        "Synchronize G's batch-norm statistics across replicas (released: "
        "per replica).",
        flag_values=fv)
    flags.DEFINE_boolean(
        "sn_stop_gradient_uv", _M.sn_stop_gradient_uv,
        "Stop spectral-norm gradients at u and v, as Miyato's and TF-GAN's "
        "SN do (released: gradients flow through sigma, u and v).",
        flag_values=fv)
    flags.DEFINE_integer(
        "seed", _T.seed,
        "Seed of the weights, the noise, the augmentations and the input "
        "order. Unset: one is picked, printed and recorded in config.json; "
        "a resume takes the run's. Another value on a resumed run starts "
        "a new input order and noise (the weights continue).",
        flag_values=fv)
    flags.DEFINE_integer(
        "num_cpu_devices", _T.num_cpu_devices,
        "If > 1 and no GPU is visible, split the CPU into this many logical "
        "devices and mirror over them (tries the distributed path on a CPU).",
        flag_values=fv)
    flags.DEFINE_integer(
        "log_every_steps", _T.log_every_steps,
        "Print a progress line every this many global steps.",
        flag_values=fv)
    flags.DEFINE_enum(
        "data_format", _D.data_format, ["records", "jpeg", "tfds"],
        "records = released raw-uint8 shards, jpeg = common sharded ImageNet "
        "TFRecords (image/encoded), tfds = tensorflow-datasets imagenet2012.",
        flag_values=fv)
    flags.DEFINE_integer(
        "label_offset", _D.label_offset,
        "Added to every label read; use -1 for the JPEG shards' 1..1000.",
        flag_values=fv)
    flags.DEFINE_string(
        "tfds_manual_dir", _D.tfds_manual_dir,
        "--data_format tfds: directory holding the ImageNet tar files.",
        flag_values=fv)
    flags.DEFINE_string(
        "tfds_data_dir", _D.tfds_data_dir,
        "--data_format tfds: where TFDS keeps the prepared dataset "
        "(default: TFDS's own).",
        flag_values=fv)
    flags.DEFINE_boolean(
        "random_flip", _D.random_flip,
        "Mirror each real image left-right with probability 1/2 (generated "
        "images never); off as released. Usual for faces, scenes and small "
        "datasets.",
        flag_values=fv)
    flags.DEFINE_integer(
        "inject_nan_at_step", _T.inject_nan_at_step,
        "Testing aid: make G's weights NaN at this global step to exercise the "
        "non-finite-loss guard; 0 = off.",
        flag_values=fv)
    flags.DEFINE_boolean(
        "start_over", _T.start_over,
        "Move every file of the run directory (checkpoints, config.json, "
        "events) into a new set_aside_<time>/ folder inside it, deleting "
        "nothing, and train from step 0. Without it, training never starts "
        "from step 0 beside existing checkpoints.",
        flag_values=fv)
    flags.DEFINE_boolean(
        "deterministic", _T.deterministic,
        "Repeatable runs on GPUs too: TensorFlow's op determinism (slower) "
        "and a deterministic input pipeline (seeded shuffles, one element "
        "order). Needs --seed; without one, a seed is picked and printed. "
        "An op with no deterministic kernel on the device stops the run, "
        "named.",
        flag_values=fv)
    flags.DEFINE_float(
        "storage_retry_secs", _T.storage_retry_secs,
        "Seconds a transient storage error (Unavailable, DeadlineExceeded, "
        "Aborted, Internal; e.g. on gs://) is retried, with backoff, while "
        "checkpoints are read; then the run stops, moving nothing. Only "
        "damage (checksum, truncated or missing file) sets a checkpoint "
        "aside.",
        flag_values=fv)
    flags.DEFINE_string(
        "diffaugment", _T.diffaugment,
        "DiffAugment (Zhao et al. 2020) of every image D sees, real and "
        "generated, in both updates: a comma-separated subset of color, "
        "translation, cutout (e.g. color,translation,cutout); empty = off, "
        "as released. For small datasets.",
        flag_values=fv)
    flags.DEFINE_float(
        "ada_target", _T.ada_target,
        "Adaptive augmentation (ADA, Karras et al. 2020) of every image D "
        "sees: its probability p rises while E[sign(D(real))] is above this "
        "target and falls below it (stylegan2-ada: 0.6); 0 = off, as "
        "released. Not with --diffaugment.",
        flag_values=fv)
    flags.DEFINE_integer(
        "ada_speed_images", _T.ada_speed_images,
        "--ada_target: real images over which p can move from 0 to 1 "
        "(stylegan2-ada's ada_kimg 500 = 500000); lower for short runs.",
        flag_values=fv)
    cli.define_debug_flag(fv)


FLAGS = flags.FLAGS


def train_config_from_flags(f=FLAGS):
    """Builds the TrainConfig (with its Model/DataConfig) from parsed flags."""
    return config_lib.from_flags(
        config_lib.TrainConfig,
        f,
        model=config_lib.from_flags(config_lib.ModelConfig, f),
        data=config_lib.from_flags(config_lib.DataConfig, f),
    )


def report_attention(f, model_config):
    """Says what --attention_resolution auto resolved to."""
    if f.attention_resolution == config_lib.ATTENTION_AUTO:
        print(f"--attention_resolution auto: "
              f"{model_config.attention_resolution} at --image_size "
              f"{model_config.image_size}.", flush=True)


def _train(f):
    config = train_config_from_flags(f)
    report_attention(f, config.model)
    # Imported here: the flags are checked before the heavier modules load.
    from sagan_tf.training import loop

    loop.run(config)


main = cli.command_main(_train, PROGRAM)


def run():
    """The console entry point."""
    cli.run_command(define_flags, main, __name__)


if __name__ == "__main__":
    run()
