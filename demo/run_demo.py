"""`make demo`: the whole SAGAN pipeline on real images, on a CPU.

Uses scikit-learn's bundled handwritten digits (1,797 images, 8x8, 10
classes) as a tiny stand-in for ImageNet and runs the real tools on them:

1. writes the digits as a class-folder tree of PNG files
   (<out_dir>/digits/0 .. 9, so sorted folder order = digit order);
2. converts that tree with `data/convert_imagenet.py` into training shards;
3. trains a small CNN classifier on the same shards and saves it as a module
   `eval_imagenet.py --inception_path` accepts (no Inception network can be
   downloaded here, so IS and FID are measured against this classifier);
4. trains a small class-conditional SAGAN with `train_imagenet.py`;
5. scores the final checkpoint with `eval_imagenet.py` (FID, IS, KID) and
   writes a class-conditional sample grid with `eval_imagenet.py --mode
   sample`, then classifies the generated samples per conditioned class;
   all of it twice: as trained (released) and with
   `--standing_stats_batches` (G's batch-norm averages recomputed, see
   demo/README.md);
6. prints where everything is, the TensorBoard command and the figures
   (also written to <out_dir>/summary.json).

    python demo/run_demo.py               # what `make demo` runs
    python demo/run_demo.py --max_steps 200 --eval_sample_size 500  # quicker

Everything goes under --out_dir (default demo_out/), which is cleared first.
"""

import json
import os
import shutil
import subprocess
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# demo/digits_classifier.py and seeds.py, beside this file (sys.path[0]
# when run).
import seeds  # noqa: E402
from digits_classifier import (  # noqa: E402, F401
    NUM_CLASSES,
    build_classifier,
    class_accuracy,
    read_shards,
    train_classifier,
)

# Imports TensorFlow with its start-up lines filtered; the commands this
# runs as subprocesses inherit the log level and filter the same lines.
from sagan_tf import cli  # noqa: E402

# Samples --mode sample writes to samples.npz; the class accuracy is
# measured on them.
NPZ_SAMPLES = 1000
# The digits' pixel values run from 0 to 16.
DIGITS_MAX_VALUE = 16

flags.DEFINE_string("out_dir", os.path.join(ROOT, "demo_out"),
                    "Everything the demo writes goes here; cleared first.")
flags.DEFINE_integer("image_size", 32,
                     "Side of the converted images and of G's output.")
# 3,500 steps and D's learning rate halved: at 1,500 steps with the released
# rates, class conditioning was not settled on every seed (the stand-in's
# class accuracy 77 % with --seed 1); demo/README.md lists the runs tried.
flags.DEFINE_integer("max_steps", 3500, "Global training steps of the GAN.")
flags.DEFINE_integer("batch_size", 64, "GAN training batch size.")
flags.DEFINE_integer("gf_dim", 16, "Base channel width of G.")
flags.DEFINE_integer("df_dim", 16, "Base channel width of D.")
flags.DEFINE_integer("attention_resolution", 16,
                     "Resolution of the attention blocks (must be a D block "
                     "resolution: 16 at image size 32).")
flags.DEFINE_float("generator_learning_rate", 1e-4,
                   "Adam learning rate of G (released: 1e-4).")
flags.DEFINE_float("discriminator_learning_rate", 2e-4,
                   "Adam learning rate of D (released: 4e-4).")
flags.DEFINE_integer("eval_sample_size", 1700,
                     "Generated and real images for FID / IS (the real "
                     "images are read in batches of 100: 1,700 of the "
                     "1,797).")
flags.DEFINE_integer("standing_stats_batches", 10,
                     "Batches of G in training mode for the second "
                     "evaluation's standing BN statistics "
                     "(eval_imagenet.py --standing_stats_batches).",
                     lower_bound=1)
flags.DEFINE_integer("standing_stats_batch_size", 200,
                     "Samples per standing-statistics batch.",
                     lower_bound=1)
flags.DEFINE_integer("classifier_epochs", 15,
                     "Epochs of the stand-in classifier.")
flags.DEFINE_integer("seed", 0, "Seed of the GAN's training and scoring.")
flags.DEFINE_integer("data_seed", 0,
                     "Seed of the conversion (shard assignment) and of the "
                     "stand-in classifier: the data and the measuring "
                     "instrument stay the same whatever --seed is.")
flags.DEFINE_boolean("baseline", False,
                     "Train and score the no-attention baseline "
                     "(--generator_type baseline --discriminator_type "
                     "baseline) instead of SAGAN.")
flags.DEFINE_list("seeds", [],
                  "Run the whole demo once per seed (e.g. 0,1,2), each in "
                  "<out_dir>/seed_<s>_<network>, and write a table of every "
                  "seed's FID, IS and class accuracy with their mean and "
                  "spread (seeds.json, seeds.md). Not part of `make demo`.")
flags.DEFINE_boolean("compare_baseline", False,
                     "With --seeds: also run the no-attention baseline on "
                     "each seed.")
flags.DEFINE_integer("subset", 0,
                     "Train on this many digits per class (drawn with "
                     "--data_seed), 0 = all 1,797 (about 180 per class). "
                     "The classifier and the evaluation's real images stay "
                     "all the digits, so memorizing the subset scores as "
                     "poorly as it generalizes.", lower_bound=0)
flags.DEFINE_string("diffaugment", "",
                    "Passed to train_imagenet.py --diffaugment (e.g. "
                    "color,translation,cutout); empty = off.")
flags.DEFINE_float("ada_target", 0.0,
                   "Passed to train_imagenet.py --ada_target (e.g. 0.6); "
                   "0 = off.")
flags.DEFINE_boolean("study", False,
                     "With --seeds: run each seed three times, without "
                     "augmentation, with --diffaugment color,translation,"
                     "cutout and with --ada_target 0.6, and tabulate them "
                     "(the augmentation study of demo/README.md).")
flags.DEFINE_boolean("unconditional", False,
                     "Instead: the same digits, unlabeled (converted with "
                     "--unlabeled), trained as an unconditional SAGAN "
                     "(--number_classes 0); reports FID and the mode "
                     "coverage (which digits the stand-in classifier finds "
                     "among the samples). Not part of `make demo`.")

FLAGS = flags.FLAGS


def _stage(title):
    print(f"\n=== {title} ===", flush=True)


def _run(args):
    """Runs a CLI of this repository, streaming its output; fails loudly."""
    command = [sys.executable] + args
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise SystemExit(
            f"run_demo.py: {args[0]} failed with exit status "
            f"{result.returncode}; see its output above."
        )


def clear_output(out):
    """Removes a previous run's output folder `out`, saying so."""
    if os.path.exists(out):
        print(f"Removing the previous demo output {out}", flush=True)
        shutil.rmtree(out)


# 1. Images ---------------------------------------------------------------


def write_digit_folders(folder, subset=0, seed=0):
    """Writes the digits as <folder>/<digit>/<index>.png (8x8 grayscale).

    Args:
        folder: where the class folders go.
        subset: if > 0, only this many digits per class, drawn without
            replacement by a generator seeded with `seed`.
        seed: see `subset`.

    Returns:
        Number of images written.
    """
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.round(
        digits.images * (255.0 / DIGITS_MAX_VALUE)
    ).astype(np.uint8)
    keep = np.arange(len(pixels))
    if subset:
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([
            rng.permutation(np.flatnonzero(digits.target == c))[:subset]
            for c in range(NUM_CLASSES)
        ]))
    for index in keep:
        image, label = pixels[index], digits.target[index]
        class_dir = os.path.join(folder, str(int(label)))
        os.makedirs(class_dir, exist_ok=True)
        Image.fromarray(image, mode="L").save(
            os.path.join(class_dir, f"{index:04d}.png")
        )
    return len(keep)


def read_result(results_path, standing_stats_batches):
    """The last results.jsonl entry with this `standing_stats_batches`.

    Both evaluations of the demo append to the same results.jsonl; entries
    without the field come from evaluations without standing statistics.
    """
    with open(results_path) as f:
        entries = [json.loads(line) for line in f if line.strip()]
    matching = [e for e in entries
                if e.get("standing_stats_batches", 0)
                == standing_stats_batches]
    if not matching:
        raise SystemExit(
            f"run_demo.py: {results_path} has no result with "
            f"standing_stats_batches={standing_stats_batches}"
        )
    return matching[-1]


def _evaluate(name, eval_flags, root, sample_dir, classifier_dir,
              standing_stats_batches=0):
    """eval_imagenet.py (FID, IS, KID) then --mode sample, on one run.

    Both run with `--standing_stats_batches=standing_stats_batches` (0 =
    the released moving averages).

    Returns:
        Figures: step, fid, incscore, kid, generated_accuracy and
        generated_accuracy_per_class.
    """
    flags_here = eval_flags + [
        f"--checkpoint_dir={root}",
        f"--standing_stats_batches={standing_stats_batches}",
        f"--standing_stats_batch_size={FLAGS.standing_stats_batch_size}",
    ]
    _run(["eval_imagenet.py"] + flags_here + [
        "--num_evals=1", "--eval_interval_secs=1",
        f"--eval_sample_size={FLAGS.eval_sample_size}",
        f"--kid_sample_size={FLAGS.eval_sample_size}",
        f"--prdc_sample_size={FLAGS.eval_sample_size}",
        "--shuffle_buffer_size=2000",
    ])
    _run(["eval_imagenet.py"] + flags_here + [
        "--mode=sample", f"--sample_dir={sample_dir}",
        "--sample_classes=" + ",".join(str(c) for c in range(NUM_CLASSES)),
        "--samples_per_class=10", f"--num_npz_samples={NPZ_SAMPLES}",
    ])
    results = os.path.join(
        root, "eval", f"imagenet_{FLAGS.batch_size}", "results.jsonl"
    )
    result = read_result(results, standing_stats_batches)
    figures = {k: result[k] for k in ("step", "fid", "incscore", "kid",
                                      "precision", "recall", "density",
                                      "coverage")
               if k in result}
    per_class, overall, counts = class_accuracy(
        classifier_dir, os.path.join(sample_dir, "samples.npz"),
        FLAGS.image_size,
    )
    figures["generated_accuracy"] = overall
    figures["generated_accuracy_per_class"] = per_class
    figures["samples_per_class"] = counts
    print(f"{name}: FID {figures['fid']:.2f}, IS {figures['incscore']:.2f}, "
          f"KID {figures['kid']:.3f}, recall {figures['recall']:.3f}, "
          f"coverage {figures['coverage']:.3f}, "
          f"accuracy on generated digits {overall:.3f}", flush=True)
    return figures


def main(argv):
    del argv
    from absl import logging

    # TensorFlow's INFO lines (saver, SavedModel builder) drown the demo's.
    logging.set_verbosity(logging.WARNING)
    if FLAGS.seeds:
        if not all(s.strip().lstrip("-").isdigit() for s in FLAGS.seeds):
            raise SystemExit(f"run_demo.py: --seeds={','.join(FLAGS.seeds)}"
                             ": give integers, e.g. --seeds 0,1,2")
        seeds.run_seeds([s.strip() for s in FLAGS.seeds],
                        seeds.settings(FLAGS.compare_baseline, FLAGS.study),
                        os.path.abspath(FLAGS.out_dir), FLAGS,
                        sys.modules[__name__])
        return
    if FLAGS.unconditional:
        import unconditional  # demo/unconditional.py, beside this file

        return unconditional.run(FLAGS, sys.modules[__name__])
    out = os.path.abspath(FLAGS.out_dir)
    clear_output(out)
    folders = os.path.join(out, "digits")
    data_dir = os.path.join(out, "data")
    classifier_dir = os.path.join(out, "classifier")
    checkpoint_dir = os.path.join(out, "checkpoint")
    size = FLAGS.image_size
    times, figures = {}, {}
    start_all = time.monotonic()

    def timed(name, fn):
        start = time.monotonic()
        value = fn()
        times[name] = round(time.monotonic() - start, 1)
        print(f"[{name}: {times[name]:.1f} s]", flush=True)
        return value

    # The classifier and the evaluation always see all the digits.
    all_data_dir = data_dir
    _stage("1/6 Writing scikit-learn's digits as class folders of PNGs")
    count = timed("write_images", lambda: write_digit_folders(folders))
    print(f"Wrote {count} images to {folders}/0 .. 9", flush=True)
    if FLAGS.subset:
        subset_folders = os.path.join(out, "digits_subset")
        count = write_digit_folders(subset_folders, FLAGS.subset,
                                    FLAGS.data_seed)
        print(f"Training subset: {count} images ({FLAGS.subset} per "
              f"class) in {subset_folders}", flush=True)
    figures["training_images"] = count

    _stage("2/6 Converting them with data/convert_imagenet.py")

    def convert(input_dir, output_dir):
        _run(["data/convert_imagenet.py", f"--input_dir={input_dir}",
              f"--output_dir={output_dir}", f"--image_size={size}",
              "--num_shards=4", f"--seed={FLAGS.data_seed}"])

    timed("convert", lambda: convert(folders, all_data_dir))
    if FLAGS.subset:
        data_dir = os.path.join(out, "data_subset")
        convert(subset_folders, data_dir)

    _stage("3/6 Training the stand-in classifier (Inception's place)")

    def classifier_stage():
        from sagan_tf.evaluation import inception

        images, labels = read_shards(all_data_dir, size)
        classifier, accuracy = train_classifier(
            images, labels, size, FLAGS.classifier_epochs, FLAGS.data_seed
        )
        inception.save_classifier_as_savedmodel(classifier, classifier_dir)
        return accuracy

    figures["classifier_heldout_accuracy"] = timed(
        "classifier", classifier_stage
    )
    print(f"Held-out accuracy on real digits: "
          f"{figures['classifier_heldout_accuracy']:.3f}; saved to "
          f"{classifier_dir}", flush=True)

    _stage("4/6 Training the SAGAN with train_imagenet.py")
    network = "baseline" if FLAGS.baseline else "test"
    model_flags = [
        f"--generator_type={network}",
        f"--image_size={size}", f"--gf_dim={FLAGS.gf_dim}",
        f"--attention_resolution={FLAGS.attention_resolution}",
        f"--batch_size={FLAGS.batch_size}",
    ]
    augment_flags = []
    if FLAGS.diffaugment:
        augment_flags.append(f"--diffaugment={FLAGS.diffaugment}")
    if FLAGS.ada_target:
        augment_flags.append(f"--ada_target={FLAGS.ada_target}")
    train_args = ["train_imagenet.py"] + model_flags + augment_flags + [
        f"--data_dir={data_dir}", f"--checkpoint_dir={checkpoint_dir}",
        f"--number_classes={NUM_CLASSES}", f"--df_dim={FLAGS.df_dim}",
        f"--discriminator_type={network}",
        f"--generator_learning_rate={FLAGS.generator_learning_rate}",
        f"--discriminator_learning_rate={FLAGS.discriminator_learning_rate}",
        f"--max_steps={FLAGS.max_steps}",
        # One checkpoint, at the end: the one the evaluation scores.
        f"--save_checkpoint_steps={FLAGS.max_steps}",
        "--save_summaries_steps=100", "--log_every_steps=100",
        "--shuffle_buffer_size=2000", f"--seed={FLAGS.seed}",
    ]
    timed("train", lambda: _run(train_args))
    figures["steps"] = FLAGS.max_steps

    _stage("5/6 Scoring with eval_imagenet.py and sampling")
    eval_flags = model_flags + [
        f"--data_dir={all_data_dir}", f"--num_classes={NUM_CLASSES}",
        f"--inception_path={classifier_dir}",
        f"--classifier_image_size={size}", f"--seed={FLAGS.seed}",
    ]
    figures["as_trained"] = timed("eval_as_trained", lambda: _evaluate(
        "As trained (released BN moving averages)", eval_flags,
        checkpoint_dir, os.path.join(out, "samples_as_trained"),
        classifier_dir,
    ))
    sample_dir = os.path.join(out, "samples")
    figures["standing_stats"] = timed("eval_standing", lambda: _evaluate(
        f"Standing BN statistics ({FLAGS.standing_stats_batches} batches "
        f"of {FLAGS.standing_stats_batch_size})", eval_flags,
        checkpoint_dir, sample_dir, classifier_dir,
        standing_stats_batches=FLAGS.standing_stats_batches,
    ))
    figures["standing_stats"]["batches"] = FLAGS.standing_stats_batches
    figures["standing_stats"]["batch_size"] = (
        FLAGS.standing_stats_batch_size
    )

    _stage("6/6 Results")
    times["total"] = round(time.monotonic() - start_all, 1)
    grid = os.path.join(sample_dir, "class_grid.png")
    summary = {
        "figures": figures,
        "seconds": times,
        "train_command": "python " + " ".join(train_args),
        "grid": grid,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "machine": seeds.machine(),
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"Machine: {summary['machine']}")
    print(f"Training: {FLAGS.max_steps} steps of batch {FLAGS.batch_size} "
          f"in {times['train']:.0f} s (incl. start-up); load average "
          f"{summary['load_average_1min_at_end']} on {os.cpu_count()} CPUs")
    print(f"Scores against the stand-in digit classifier "
          f"({FLAGS.eval_sample_size} images):")
    for key, name in (("as_trained", "as trained"),
                      ("standing_stats", "standing BN statistics")):
        f = figures[key]
        print(f"  {name:24s} FID {f['fid']:7.2f}  IS {f['incscore']:5.2f}  "
              f"KID {f['kid']:.3f}  recall {f['recall']:.3f}  coverage "
              f"{f['coverage']:.3f}  accuracy on generated digits "
              f"{f['generated_accuracy']:.3f}")
    standing = figures["standing_stats"]
    print("Accuracy per conditioned class (standing BN statistics):")
    print("  " + "  ".join(
        f"{c}: {standing['generated_accuracy_per_class'][c]:.2f}"
        for c in range(NUM_CLASSES)))
    print("Seconds per stage: " + ", ".join(
        f"{k} {v:.0f}" for k, v in times.items()))
    print(f"\nClass grid (row = digit 0..9): {grid}")
    print(f"Figures: {os.path.join(out, 'summary.json')}")
    print(f"TensorBoard: tensorboard --logdir {out}", flush=True)


if __name__ == "__main__":
    cli.quiet_tensorflow_startup()
    app.run(main)
