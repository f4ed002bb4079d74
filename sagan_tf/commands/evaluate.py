"""`sagan-eval` / `eval_imagenet.py`: evaluates, samples from or exports a
SAGAN generator (the released `eval_imagenet.py` and its flags).

--mode eval (default), as released: watches
<checkpoint_dir>/imagenet_<batch_size>, computes IS / FID (and KID,
intra-class FID, precision / recall / density / coverage) of the newest
checkpoint not yet scored (every unscored one, oldest first, with
--eval_all_checkpoints) and writes TensorBoard summaries and results.jsonl
to <checkpoint_dir>/eval/imagenet_<batch_size>:

    sagan-eval --generator_type test --data_dir ./data

--mode sample: class grid, .npz of samples, interpolation strip and
attention maps of the latest (or --checkpoint_path) checkpoint into
--sample_dir.

--mode export: the generator as a SavedModel with the signature
generate(z, labels) -> images into --export_dir.

--num_classes 0 takes an unconditional G (trained with --number_classes
0): a sample grid without class rows, no intra-class FID, and an export
whose signature is generate(z) -> images.

--standing_stats_batches N (all modes, off by default) recomputes G's BN
moving averages from N batches of G in training mode after restoring it.

A checkpoint that cannot be read is skipped with a warning (the newest
readable one is used). Errors end the process with status 1 and one
paragraph naming the flag, file or value at fault; --debug shows the
Python traceback instead. No lock is taken: evaluation only reads the run.
"""

import os

from absl import flags

from sagan_tf import cli
from sagan_tf import config as config_lib

PROGRAM = "sagan-eval"

_EVAL = config_lib.EvalConfig()
_MODEL = _EVAL.model
_DATA = _EVAL.data


def define_flags(fv=flags.FLAGS):
    """Defines every flag on `fv`; defaults come from sagan_tf/config.py."""
    # Released flags (names and defaults as in the released eval_imagenet.py).
    flags.DEFINE_string(
        "data_dir",
        _DATA.data_dir,
        "Directory of the TRAINING records the real images come from.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "z_dim", _MODEL.z_dim, "Dimension of z.", flag_values=fv
    )
    flags.DEFINE_integer(
        "gf_dim", _MODEL.gf_dim, "Base width of G.", flag_values=fv
    )
    flags.DEFINE_string("master", "local", "Released; unused.", flag_values=fv)
    flags.DEFINE_string(
        "checkpoint_dir",
        _EVAL.checkpoint_dir,
        "Root of the checkpoints; they are read from "
        "<checkpoint_dir>/imagenet_<batch_size>.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "sample_dir",
        _EVAL.sample_dir,
        "Where --mode sample writes its files.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "eval_dir",
        "checkpoint/eval",
        "Released; ignored: results always go to "
        "<checkpoint_dir>/eval/imagenet_<batch_size>.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "batch_size",
        _EVAL.batch_size,
        "Training batch size; names the run directory imagenet_<batch_size>.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "shuffle_buffer_size",
        _DATA.shuffle_buffer_size,
        "Shuffle buffer of the real images.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "dcgan_generator_batch_size",
        _EVAL.dcgan_generator_batch_size,
        "Batch fed to G and to the classifier.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "eval_sample_size",
        _EVAL.eval_sample_size,
        "Generated and real images per evaluation.",
        flag_values=fv,
    )
    flags.DEFINE_boolean("is_train", False, "Released; unused.", flag_values=fv)
    flags.DEFINE_integer("task", 0, "Released; unused.", flag_values=fv)
    flags.DEFINE_integer("ps_tasks", 0, "Released; unused.", flag_values=fv)
    flags.DEFINE_integer(
        "num_workers", 1, "Released; must be 1.", flag_values=fv
    )
    flags.DEFINE_integer(
        "replicas_to_aggregate", 1, "Released; unused.", flag_values=fv
    )
    flags.DEFINE_integer(
        "num_towers", 1, "Released; must be 1 (one device).", flag_values=fv
    )
    flags.DEFINE_integer(
        "eval_interval_secs",
        int(_EVAL.eval_interval_secs),
        "Seconds between looks for a new checkpoint.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_classes",
        _MODEL.number_classes,
        "Number of classes of G; 0 = an unconditional G (trained with "
        "--number_classes 0).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "generator_type",
        _MODEL.generator_type,
        ["test", "baseline"],
        "test: G with self-attention; baseline: without.",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "sn_update_at_inference",
        _MODEL.sn_update_at_inference,
        "Let G write its spectral-norm vectors u on every batch it generates, "
        "as the released evaluator does (in memory only; checkpoints are never "
        "written). --nosn_update_at_inference freezes u at the checkpoint's "
        "values, so the same z and labels always give the same images. "
        "--mode export always freezes u.",
        flag_values=fv,
    )

    # Added flags.
    flags.DEFINE_enum(
        "mode",
        "eval",
        ["eval", "sample", "export"],
        "eval: watch and evaluate checkpoints; sample: write "
        "sample images; export: write a SavedModel of G.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "inception_path",
        _EVAL.inception_path,
        "Inception classifier: a TF-Hub handle, a local module "
        "directory, or a frozen GraphDef .pb (input Mul:0, "
        "outputs pool_3:0 and logits:0).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_evals",
        _EVAL.num_evals,
        "Stop after this many evaluations; 0 = run forever.",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "use_ema",
        _EVAL.use_ema,
        "Use the EMA of G's weights (training --ema_decay > 0).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "standing_stats_batches",
        _EVAL.standing_stats_batches,
        "Standing BN statistics (BigGAN; not in the release): "
        "after restoring G, set its BN moving averages to the "
        "mean batch moments of this many batches of G in "
        "training mode (uniform classes, normal z), for every "
        "mode; the checkpoint is not changed. Helps short "
        "runs, whose averages (decay 0.999 / 0.9999) are "
        "still near their initial values. 0 = off "
        "(released).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "standing_stats_batch_size",
        _EVAL.standing_stats_batch_size,
        "Samples per standing-statistics batch; 0 = "
        "--dcgan_generator_batch_size.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "image_size", _MODEL.image_size, "Side of G's images.", flag_values=fv
    )
    flags.DEFINE_string(
        "attention_resolution",
        config_lib.ATTENTION_AUTO,
        "Resolution of G's attention block; 'auto' = as "
        "training's default (32, or 16 at --image_size 32).",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "data_format",
        _DATA.data_format,
        ["records", "jpeg", "tfds"],
        "records: released raw shards; jpeg: sharded ImageNet "
        "TFRecords; tfds: tensorflow-datasets imagenet2012.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "label_offset",
        _DATA.label_offset,
        "Added to every label read (-1 for 1-based labels).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "tfds_data_dir",
        _DATA.tfds_data_dir,
        "tensorflow-datasets data directory (data_format tfds).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "classifier_image_size",
        _EVAL.classifier_image_size,
        "Side images are resized to for the classifier.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "kid_sample_size",
        _EVAL.kid_sample_size,
        "KID over this many real and generated images; 0 = off.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "prdc_sample_size",
        _EVAL.prdc_sample_size,
        "Precision and recall (Kynkaanniemi et al. 2019) and density and "
        "coverage (Naeem et al. 2020) of the k-NN manifolds of the pool_3 "
        "features, over the first this many real and generated images (all "
        "of them where there are fewer); 0 = off. At least --prdc_k + 1.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "prdc_k",
        _EVAL.prdc_k,
        "The k of --prdc_sample_size's metrics: each point's ball reaches "
        "its k-th nearest neighbour in its own set (>= 1).",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "intra_fid_classes",
        [],
        "Classes with an intra-class FID (comma separated); empty = none.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "intra_fid_sample_size",
        _EVAL.intra_fid_sample_size,
        "Generated and real images per intra-FID class.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_vis_images",
        _EVAL.num_vis_images,
        "Images in the TensorBoard grids.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "stats_cache_dir",
        _EVAL.stats_cache_dir,
        "Cache of real-image statistics; empty = the eval directory.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "checkpoint_path",
        _EVAL.checkpoint_path,
        "Checkpoint for sample/export; empty = the latest.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "sample_classes",
        [str(c) for c in _EVAL.sample_classes],
        "Classes of the sample grid rows and attention figure (unconditional"
        " G: only their count, the attention figure's rows).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "samples_per_class",
        _EVAL.samples_per_class,
        "Columns of the sample grid (unconditional G: rows and columns of"
        " sample_grid.png).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_npz_samples",
        _EVAL.num_npz_samples,
        "Samples in samples.npz.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "interpolation_steps",
        _EVAL.interpolation_steps,
        "Images in the latent interpolation strip.",
        flag_values=fv,
    )
    flags.DEFINE_list(
        "attention_queries",
        [],
        "Attention query pixels as row:col (image coordinates); "
        "empty = the quarter points of the image.",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "export_dir",
        _EVAL.export_dir,
        "SavedModel directory; empty = "
        "<checkpoint_dir>/export/imagenet_<batch_size>.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "seed", None, "Random seed (default: random).", flag_values=fv
    )
    flags.DEFINE_boolean(
        "deterministic",
        _EVAL.deterministic,
        "Repeatable scores on GPUs too: TensorFlow's op determinism "
        "(slower) and a deterministic real-image pipeline. Needs --seed; "
        "without one, a seed is picked and printed.",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "storage_retry_secs",
        _EVAL.storage_retry_secs,
        "Seconds a transient storage error (Unavailable, DeadlineExceeded, "
        "Aborted, Internal; e.g. on gs://) is retried, with backoff, while "
        "a checkpoint is read; then the command stops.",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "eval_all_checkpoints",
        _EVAL.eval_all_checkpoints,
        "--mode eval: score every checkpoint not yet in results.jsonl, "
        "oldest first (a full curve). Off: each poll scores the newest "
        "checkpoint once, as the released evaluator, and waits for a newer "
        "one when it is scored already.",
        flag_values=fv,
    )
    cli.define_debug_flag(fv)


FLAGS = flags.FLAGS


def _ints(values, flag):
    try:
        return tuple(int(v) for v in values)
    except ValueError as err:
        raise ValueError(f"--{flag} takes integers: {values}") from err


def _queries(values):
    queries = []
    for value in values:
        parts = value.split(":")
        if len(parts) != 2:
            raise ValueError(
                f"--attention_queries entries are row:col, got {value!r}"
            )
        queries.append(_ints(parts, "attention_queries"))
    return tuple(queries)


def config_from_flags(fv=FLAGS):
    """The EvalConfig the flags describe."""
    if fv.num_towers != 1 or fv.num_workers != 1:
        raise ValueError(
            "--num_towers and --num_workers must be 1: evaluation runs on "
            "one device, as released."
        )
    # The released eval flag is --num_classes; the model field is
    # number_classes, as in training.
    model = config_lib.from_flags(
        config_lib.ModelConfig, fv, number_classes=fv.num_classes
    )
    return config_lib.from_flags(
        config_lib.EvalConfig,
        fv,
        model=model,
        data=config_lib.from_flags(config_lib.DataConfig, fv),
        intra_fid_classes=_ints(fv.intra_fid_classes, "intra_fid_classes"),
        sample_classes=_ints(fv.sample_classes, "sample_classes"),
        attention_queries=_queries(fv.attention_queries),
    )


def _main(fv):
    config = config_from_flags(fv)
    if fv.attention_resolution == config_lib.ATTENTION_AUTO:
        print(
            f"--attention_resolution auto: "
            f"{config.model.attention_resolution} at --image_size "
            f"{config.model.image_size}.",
            flush=True,
        )
    # Imported here: the flags are checked before the heavier modules load.
    from sagan_tf import determinism

    config = determinism.with_seed(config)
    with determinism.op_determinism(config), (
        determinism.explained_errors(config)
    ):
        _run_mode(fv, config)


def _run_mode(fv, config):
    from sagan_tf.evaluation import evaluator, export, restore, sampling
    from sagan_tf.models import checks

    checks.check_model_config(
        config.model,
        discriminator=False,
        flags={"number_classes": "num_classes"},
    )
    if fv.mode == "eval":
        evaluator.Evaluator(config).run()
        return
    restore.check_run_config(config.model, restore.run_dir(config))
    restorer = restore.GeneratorRestorer.from_config(config)
    path, step = restore.restore_newest(restorer, config)
    print(f"Restored {restorer.name} from {path} (step {step})", flush=True)
    if fv.mode == "sample":
        sampling.write_samples(
            restorer.generator,
            config,
            config.sample_dir,
            step,
            config.model.generator_attention(),
        )
    else:
        export_dir = config.export_dir or os.path.join(
            config.checkpoint_dir, "export", config.model_dir_name()
        )
        export.export_generator(restorer.generator, export_dir)


main = cli.command_main(_main, PROGRAM)


def run():
    """The console entry point."""
    cli.run_command(define_flags, main, __name__)


if __name__ == "__main__":
    run()
