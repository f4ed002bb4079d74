"""`python demo/run_demo.py --unconditional`: the digits as unlabeled data.

The same scikit-learn digits as `make demo`, converted with
`data/convert_imagenet.py --unlabeled` (every label 0) and trained as an
unconditional SAGAN (`--number_classes 0`). A labeled copy trains the
stand-in classifier only. Reports FID / IS / KID against the real digits
and the mode coverage: how many of the 10 digits the classifier finds among
1000 samples, with their shares (<out_dir>/summary.json).
"""

import json
import os
import time

NUM_DIGITS = 10
# A digit counts as found when at least this share of the samples is
# classified as it (a few stray misclassifications do not count).
FOUND_MIN_SHARE = 0.01


def mode_coverage(classifier_dir, samples_path, image_size):
    """Shares of the samples the classifier gives each digit.

    Returns:
        ({digit: share}, digits found: those with share >= FOUND_MIN_SHARE).
    """
    import numpy as np

    from sagan_tf.evaluation import inception

    classifier = inception.load_classifier(classifier_dir, image_size)
    with np.load(samples_path) as npz:
        images = npz["images"]
    _, logits = classifier(images.astype(np.float32) / 127.5 - 1.0)
    predicted = np.argmax(logits.numpy(), axis=1)
    shares = {c: float(np.mean(predicted == c)) for c in range(NUM_DIGITS)}
    found = [c for c, share in shares.items() if share >= FOUND_MIN_SHARE]
    return shares, found


def run(fv, demo):
    """The digits without labels: convert --unlabeled, train with
    --number_classes 0, score FID / IS / KID and the mode coverage.

    Args:
        fv: run_demo.py's parsed flags.
        demo: the run_demo module (its stages and helpers).
    """
    out = os.path.abspath(fv.out_dir)
    if not fv["out_dir"].present:
        # Keep the conditional demo's output.
        out += "_unconditional"
    demo.clear_output(out)
    folders = os.path.join(out, "digits")
    labeled_dir = os.path.join(out, "data_labeled")
    data_dir = os.path.join(out, "data")
    classifier_dir = os.path.join(out, "classifier")
    checkpoint_dir = os.path.join(out, "checkpoint")
    sample_dir = os.path.join(out, "samples")
    size = fv.image_size
    start_all = time.monotonic()

    demo._stage("1/5 Writing the digits; converting them without labels")
    demo.write_digit_folders(folders)
    convert = ["data/convert_imagenet.py", f"--input_dir={folders}",
               f"--image_size={size}", "--num_shards=4",
               f"--seed={fv.seed}"]
    demo._run(convert + [f"--output_dir={data_dir}", "--unlabeled"])
    # Labeled copy for the stand-in classifier only; the GAN never sees it.
    demo._run(convert + [f"--output_dir={labeled_dir}"])

    demo._stage("2/5 Training the stand-in classifier (Inception's place)")
    from sagan_tf.evaluation import inception

    images, labels = demo.read_shards(labeled_dir, size)
    classifier, accuracy = demo.train_classifier(
        images, labels, size, fv.classifier_epochs, fv.seed)
    inception.save_classifier_as_savedmodel(classifier, classifier_dir)
    print(f"Held-out accuracy on real digits: {accuracy:.3f}", flush=True)

    demo._stage("3/5 Training an unconditional SAGAN (--number_classes 0)")
    model_flags = [
        f"--image_size={size}", f"--gf_dim={fv.gf_dim}",
        f"--attention_resolution={fv.attention_resolution}",
        f"--batch_size={fv.batch_size}", f"--data_dir={data_dir}",
    ]
    train_args = ["train_imagenet.py"] + model_flags + [
        f"--checkpoint_dir={checkpoint_dir}", "--number_classes=0",
        f"--df_dim={fv.df_dim}",
        f"--generator_learning_rate={fv.generator_learning_rate}",
        f"--discriminator_learning_rate={fv.discriminator_learning_rate}",
        f"--max_steps={fv.max_steps}",
        f"--save_checkpoint_steps={fv.max_steps}",
        "--save_summaries_steps=100", "--log_every_steps=100",
        "--shuffle_buffer_size=2000", f"--seed={fv.seed}",
    ]
    start = time.monotonic()
    demo._run(train_args)
    train_secs = time.monotonic() - start

    demo._stage("4/5 Scoring (eval_imagenet.py --num_classes 0), sampling")
    eval_flags = model_flags + [
        "--num_classes=0", f"--checkpoint_dir={checkpoint_dir}",
        f"--inception_path={classifier_dir}",
        f"--classifier_image_size={size}", f"--seed={fv.seed}",
        # A few thousand steps leave G's BN moving averages (decay 0.9999
        # in every block here) far behind: recompute them, as `make demo`
        # does.
        f"--standing_stats_batches={fv.standing_stats_batches}",
        f"--standing_stats_batch_size={fv.standing_stats_batch_size}",
    ]
    demo._run(["eval_imagenet.py"] + eval_flags + [
        "--num_evals=1", "--eval_interval_secs=1",
        f"--eval_sample_size={fv.eval_sample_size}",
        f"--kid_sample_size={fv.eval_sample_size}",
        "--shuffle_buffer_size=2000",
    ])
    demo._run(["eval_imagenet.py"] + eval_flags + [
        "--mode=sample", f"--sample_dir={sample_dir}",
        "--samples_per_class=10", "--num_npz_samples=1000",
    ])
    result = demo.read_result(os.path.join(
        checkpoint_dir, "eval", f"imagenet_{fv.batch_size}",
        "results.jsonl"), fv.standing_stats_batches)
    shares, found = mode_coverage(
        classifier_dir, os.path.join(sample_dir, "samples.npz"), size)

    demo._stage("5/5 Results")
    figures = {k: result[k] for k in ("step", "fid", "incscore", "kid")
               if k in result}
    figures.update(classifier_heldout_accuracy=accuracy,
                   digit_shares=shares, digits_found=found,
                   found_min_share=FOUND_MIN_SHARE,
                   standing_stats_batches=fv.standing_stats_batches)
    summary = {
        "figures": figures,
        "seconds": {"train": round(train_secs, 1),
                    "total": round(time.monotonic() - start_all, 1)},
        "train_command": "python " + " ".join(train_args),
        "grid": os.path.join(sample_dir, "sample_grid.png"),
    }
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"Unconditional, {fv.max_steps} steps of batch "
          f"{fv.batch_size} ({train_secs:.0f} s), standing BN statistics"
          f" ({fv.standing_stats_batches} batches): FID "
          f"{figures['fid']:.2f}, IS {figures['incscore']:.2f}; the "
          f"classifier finds {len(found)} of {NUM_DIGITS} digits among "
          f"1000 samples (share >= {FOUND_MIN_SHARE:.0%})")
    print("Shares per digit: " + "  ".join(
        f"{c}: {shares[c]:.2f}" for c in range(NUM_DIGITS)))
    print(f"Sample grid: {summary['grid']}")
    print(f"Figures: {os.path.join(out, 'summary.json')}", flush=True)
