"""Configuration objects: the one place where every default lives.

The command lines (`sagan_tf/commands/`) define their flags with these
defaults, build one config object from the parsed flags and pass it down.
Library code receives config objects and never reads flags.

Defaults follow the released code (github.com/brain-research/
self-attention-gan); where the paper says otherwise, the field's comment says
so and the flag offers the paper's choice.
"""

import dataclasses


def from_flags(cls, flag_values, **overrides):
    """Builds the dataclass `cls` from the same-named parsed flags.

    Entry points call this with their absl FlagValues: every field that has a
    flag of its name takes the flag's value, the others keep the defaults
    below, and `overrides` supply nested configs and renamed flags.
    """
    values = {
        field.name: getattr(flag_values, field.name)
        for field in dataclasses.fields(cls)
        if field.name in flag_values
    }
    values.update(overrides)
    return cls(**values)


# Released flag values.
RELEASED_IMAGE_SIZE = 128
RELEASED_NUM_CLASSES = 1000
RELEASED_ATTENTION_RESOLUTION = 32
ATTENTION_AUTO = "auto"


def generator_resolutions(image_size):
    """Output sides of G's blocks: 8, 16, ..., image_size (from 4x4)."""
    sides, side = [], 8
    while side <= image_size:
        sides.append(side)
        side *= 2
    return sides


def discriminator_resolutions(image_size):
    """Output sides of D's blocks: image_size / 2, ..., 4."""
    sides, side = [], image_size // 2
    while side >= 4:
        sides.append(side)
        side //= 2
    return sides


def auto_attention_resolution(image_size):
    """The released 32 where G and D both have a 32x32 block, else the
    largest side they share (16 at image_size 32, where D has no 32x32)."""
    shared = set(generator_resolutions(image_size)) & set(
        discriminator_resolutions(image_size)
    )
    if RELEASED_ATTENTION_RESOLUTION in shared or not shared:
        return RELEASED_ATTENTION_RESOLUTION
    return max(shared)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the generator and the discriminator."""

    image_size: int = RELEASED_IMAGE_SIZE
    z_dim: int = 128
    gf_dim: int = 64
    df_dim: int = 64
    number_classes: int = RELEASED_NUM_CLASSES
    # "test" has self-attention, "baseline" has none (released names).
    generator_type: str = "test"
    discriminator_type: str = "test"
    # Resolution the attention block runs at; the released `*_64` variants
    # use 64. "auto" (or the string a flag gives) is resolved on creation
    # by `auto_attention_resolution`.
    attention_resolution: int | str = ATTENTION_AUTO
    # Miyato's / TF-GAN's SN stops gradients at u and v; the released code
    # does not.
    sn_stop_gradient_uv: bool = False
    # Released BN statistics are per replica; True synchronizes them.
    sync_batch_norm: bool = False
    # The released G writes its SN vectors u on every forward pass, also in
    # inference mode (evaluation, sampling); False freezes u there. Not an
    # architecture setting: checkpoints are the same either way.
    sn_update_at_inference: bool = True

    def __post_init__(self):
        value = self.attention_resolution
        if value == ATTENTION_AUTO:
            value = auto_attention_resolution(self.image_size)
        elif isinstance(value, str):
            if not value.strip().isdigit():
                raise ValueError(
                    f"--attention_resolution={value!r}: must be "
                    f"{ATTENTION_AUTO!r} or a resolution such as 16 or 32"
                )
            value = int(value)
        # Frozen: the resolved value replaces the requested one.
        object.__setattr__(self, "attention_resolution", value)

    def generator_attention(self):
        """Attention resolution of G, or None for the baseline network."""
        if self.generator_type == "baseline":
            return None
        return self.attention_resolution

    def discriminator_attention(self):
        """Attention resolution of D, or None for the baseline network."""
        if self.discriminator_type == "baseline":
            return None
        return self.attention_resolution


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the training images come from and how they are read."""

    data_dir: str = "./data"
    # "records" = released raw-uint8 shards, "jpeg" = the common sharded
    # ImageNet TFRecords, "tfds" = tensorflow-datasets imagenet2012.
    data_format: str = "records"
    shuffle_buffer_size: int = 100000
    # Added to every label read; -1 maps the JPEG shards' 1..1000 to 0..999.
    label_offset: int = 0
    # TFDS manual-download directory (the ImageNet tar files).
    tfds_manual_dir: str = ""
    tfds_data_dir: str = ""
    seed: int | None = None
    # One element order, whatever the parallelism (tf.data's deterministic
    # option); set by --deterministic.
    deterministic: bool = False
    # Mirror each real image left-right with probability 1/2 (off as
    # released); usual for faces and scenes, small datasets.
    random_flip: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training loop settings (released flag names and defaults)."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    checkpoint_dir: str = "checkpoint"
    # Per replica; the global batch is batch_size x replicas.
    batch_size: int = 64
    loss_type: str = "hinge_loss"
    discriminator_learning_rate: float = 0.0004
    generator_learning_rate: float = 0.0001
    beta1: float = 0.0
    # TF1 Adam defaults, as released. The paper's text says beta2 = 0.9;
    # Keras' default epsilon is 1e-7.
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    d_step: int = 1
    g_step: int = 1
    max_steps: int = 2000000
    save_summaries_steps: int = 200
    save_checkpoint_secs: int = 1200
    # 0 = off: save on the seconds schedule only.
    save_checkpoint_steps: int = 0
    keep_checkpoints: int = 5
    # 0 = off, the released behaviour.
    ema_decay: float = 0.0
    # "none", "bf16" or "fp16".
    mixed_precision: str = "none"
    # D update as two D calls (generated images first, then real ones)
    # instead of one call on concat(real, fake). Same result; kept for the
    # benchmark's before/after comparison.
    d_two_pass: bool = False
    xla: bool = False
    seed: int | None = None
    # Console progress line every this many steps.
    log_every_steps: int = 50
    # > 1 splits the CPU into this many logical devices and mirrors over them
    # (tries the distributed path without GPUs); ignored when GPUs are
    # visible or TF_CONFIG is set.
    num_cpu_devices: int = 0
    # Testing aid: sets G's learning rate to NaN just before this global step
    # (1-based; 0 = off) so the non-finite-loss guard can be exercised.
    inject_nan_at_step: int = 0
    # Move every file of the run directory aside (never deleting one) and
    # start at step 0.
    start_over: bool = False
    # TF op determinism plus a deterministic input pipeline (needs a seed;
    # one is picked when unset). Slower on GPUs; see determinism.py.
    deterministic: bool = False
    # Seconds a transient storage error (Unavailable, DeadlineExceeded,
    # Aborted, Internal) is retried, with backoff, before the run stops.
    storage_retry_secs: float = 300.0
    # Augmentation of every image D sees (off, as released). DiffAugment
    # (Zhao et al. 2020): a comma-separated subset of color, translation,
    # cutout; "" = off.
    diffaugment: str = ""
    # ADA (Karras et al. 2020): the target of E[sign(D(real))] that the
    # augmentation probability p is adjusted towards (stylegan2-ada: 0.6);
    # 0 = off.
    ada_target: float = 0.0
    # Real images over which ADA's p can move by 1 (stylegan2-ada's
    # ada_kimg = 500).
    ada_speed_images: int = 500_000


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """The converter's settings (`sagan-convert`)."""

    # Folder of class folders of images, or of images (unlabeled).
    input_dir: str | None = None
    # Where the shards go: training's --data_dir.
    output_dir: str = "./data"
    image_size: int = RELEASED_IMAGE_SIZE
    num_shards: int = 1024
    # Image-decoding processes; 0 = one per CPU core.
    num_workers: int = 0
    # Seed of the shuffle that assigns images to shards.
    seed: int = 0
    # Every image under input_dir, recursively, as unlabeled data (label 0,
    # for --number_classes 0); a folder without class folders is taken
    # that way anyway.
    unlabeled: bool = False


# TF-GAN's Inception module (the 2015-12-05 graph) on TF-Hub.
INCEPTION_TFHUB = "https://tfhub.dev/tensorflow/tfgan/eval/inception/1"


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation, sampling and export settings (released eval flags)."""

    # Only the generator settings matter here; `number_classes` is the
    # released eval flag `--num_classes`.
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # The released evaluator shuffles the real images with a 5000 buffer.
    data: DataConfig = dataclasses.field(
        default_factory=lambda: DataConfig(shuffle_buffer_size=5000)
    )
    checkpoint_dir: str = "checkpoint"
    # Names the directory `imagenet_<batch_size>`, as in training.
    batch_size: int = 64
    eval_sample_size: int = 50000
    # Batch fed to G and to Inception.
    dcgan_generator_batch_size: int = 100
    # Seconds between looks for a new checkpoint.
    eval_interval_secs: float = 300
    # Stop after this many evaluations; 0 = forever, as released.
    num_evals: int = 0
    use_ema: bool = False
    # Standing BN statistics (BigGAN): after restoring G, set its BN moving
    # averages to the mean batch moments of this many batches of G in
    # training mode. 0 = off, the released behaviour (the moving averages
    # as trained). Batch size 0 = dcgan_generator_batch_size.
    standing_stats_batches: int = 0
    standing_stats_batch_size: int = 0
    # TF-Hub handle, local module directory or frozen GraphDef `.pb`.
    inception_path: str = INCEPTION_TFHUB
    # Side the images are resized to before the classifier.
    classifier_image_size: int = 299
    # KID over the first this many real and generated pool_3 vectors; 0 = off.
    kid_sample_size: int = 10000
    kid_block_size: int = 1024
    # Precision and recall (Kynkaanniemi et al. 2019), density and coverage
    # (Naeem et al. 2020) over the first this many real and generated pool_3
    # vectors (all, where there are fewer); 0 = off.
    prdc_sample_size: int = 10000
    # The k-th nearest neighbour sets each k-NN ball's radius: 3 as in
    # Kynkaanniemi et al. (Naeem et al.'s example code takes 5).
    prdc_k: int = 3
    # Rows of the distance blocks held at once ([block, samples] float64).
    prdc_block_size: int = 1024
    # Intra-class FID for these classes (empty = off), per-class sample size.
    intra_fid_classes: tuple[int, ...] = ()
    intra_fid_sample_size: int = 500
    # Generated and real images in the TensorBoard grids (released: 16).
    num_vis_images: int = 16
    # Real-image statistics cache; "" = the eval log directory.
    stats_cache_dir: str = ""
    # A specific checkpoint for sample/export; "" = the latest.
    checkpoint_path: str = ""
    # Sampling (`--mode sample`).
    sample_dir: str = "sample"
    sample_classes: tuple[int, ...] = (0, 1, 2, 3)
    samples_per_class: int = 8
    num_npz_samples: int = 1000
    interpolation_steps: int = 8
    # Query pixels (row, column) in image coordinates for attention maps;
    # empty = the four points at a quarter and three quarters of each side.
    attention_queries: tuple[tuple[int, int], ...] = ()
    # Export (`--mode export`); "" = <checkpoint_dir>/export/imagenet_<bs>.
    export_dir: str = ""
    seed: int | None = None
    # As TrainConfig.deterministic.
    deterministic: bool = False
    # See TrainConfig.storage_retry_secs.
    storage_retry_secs: float = 300.0
    # Score every unscored checkpoint, oldest first, instead of the newest.
    eval_all_checkpoints: bool = False

    def model_dir_name(self):
        """Released run directory name, `imagenet_<batch_size>`."""
        return f"imagenet_{self.batch_size}"
