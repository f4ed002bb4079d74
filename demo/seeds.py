"""`python demo/run_demo.py --seeds 0,1,2 [--compare_baseline | --study]`:
the whole demo once per seed and setting, and a table of every run's FID,
IS, KID, recall, coverage and class accuracy with each setting's mean and
spread (<out_dir>/seeds.json, seeds.md).
"""

import json
import os
import time

# Figures of the table: (summary key, column title), from the standing-
# statistics evaluation (the demo's headline figures).
TABLE_FIGURES = (("fid", "FID"), ("incscore", "IS"), ("kid", "KID"),
                 ("recall", "recall"), ("coverage", "coverage"),
                 ("generated_accuracy", "class accuracy"))

# The augmentation study's settings (--study): name and train flags.
STUDY = (
    ("none", []),
    ("diffaugment", ["--diffaugment=color,translation,cutout"]),
    ("ada", ["--ada_target=0.6"]),
)


def settings(compare_baseline, study):
    """The settings each seed runs: [(name, extra run_demo.py flags)]."""
    if study:
        # An explicit "off" for each, whatever the command line gave.
        off = ["--diffaugment=", "--ada_target=0"]
        return [(name, off + extra) for name, extra in STUDY]
    runs = [("sagan", [])]
    if compare_baseline:
        runs.append(("baseline", ["--baseline"]))
    return runs


def machine():
    """The CPU model, core count and TensorFlow version of this machine:
    the bits of a run, and so its figures, depend on all three. Named as
    the benchmark rows name it (bench/throughput.py)."""
    import sys

    import tensorflow as tf

    bench = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import throughput

    return f"{throughput._device_name(False)}, TensorFlow {tf.__version__}"


def seed_table(rows):
    """Mean and spread of each network's figures over seeds.

    Args:
        rows: list of {"network", "seed", "fid", "incscore",
            "generated_accuracy", ...}.

    Returns:
        {network: {figure: {"mean", "std" (sample, n - 1; 0 for one seed),
        "min", "max"}}}.
    """
    import numpy as np

    stats = {}
    for network in dict.fromkeys(r["network"] for r in rows):
        mine = [r for r in rows if r["network"] == network]
        stats[network] = {}
        for key, _ in TABLE_FIGURES:
            values = np.array([r[key] for r in mine], np.float64)
            stats[network][key] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "min": float(values.min()),
                "max": float(values.max()),
            }
    return stats


def table_markdown(rows, stats):
    """The table of `run_seeds` as Markdown: one row per run, then mean ±
    sample standard deviation [min, max] per setting."""
    head = "| setting | seed | " + " | ".join(t for _, t in TABLE_FIGURES)
    lines = [head + " |", "|" + " --- |" * (2 + len(TABLE_FIGURES))]

    def fmt(key, value):
        if key == "generated_accuracy":
            return f"{100 * value:.1f} %"
        return f"{value:.3f}" if key in ("kid", "recall", "coverage") else (
            f"{value:.2f}")

    for r in rows:
        lines.append(f"| {r['network']} | {r['seed']} | " + " | ".join(
            fmt(k, r[k]) for k, _ in TABLE_FIGURES) + " |")
    for network, figures in stats.items():
        cells = []
        for key, _ in TABLE_FIGURES:
            s = figures[key]
            cells.append(f"{fmt(key, s['mean'])} ± {fmt(key, s['std'])} "
                         f"[{fmt(key, s['min'])}, {fmt(key, s['max'])}]")
        lines.append(f"| **{network}** | mean ± sd [min, max] | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _forwarded_flags(flag_values):
    """The settings every run of `run_seeds` shares, as flags."""
    return [f"--{name}={flag_values[name].value}" for name in (
        "image_size", "max_steps", "batch_size", "gf_dim", "df_dim",
        "attention_resolution", "generator_learning_rate",
        "discriminator_learning_rate", "eval_sample_size",
        "standing_stats_batches", "standing_stats_batch_size",
        "classifier_epochs", "data_seed", "subset", "diffaugment",
        "ada_target")]


def run_seeds(seeds, runs, out, flag_values, demo):
    """The whole demo once per seed and setting, each in its own folder
    and process; writes <out>/seeds.json and <out>/seeds.md.

    Args:
        seeds: the seeds, as strings; runs: the settings, from `settings`;
            out: the output folder; flag_values: the demo's parsed flags;
            demo: the run_demo module (its `_run` and `_stage`).

    Returns:
        The Markdown table.
    """
    os.makedirs(out, exist_ok=True)
    rows, start = [], time.monotonic()
    for seed in seeds:
        for network, extra in runs:
            folder = os.path.join(out, f"seed_{seed}_{network}")
            demo._stage(f"seed {seed}, {network}")
            # The setting's flags last: absl keeps the last value.
            demo._run(["demo/run_demo.py", f"--out_dir={folder}",
                       f"--seed={seed}"]
                      + _forwarded_flags(flag_values) + extra)
            with open(os.path.join(folder, "summary.json")) as f:
                summary = json.load(f)
            standing = summary["figures"]["standing_stats"]
            rows.append({
                "network": network, "seed": int(seed),
                **{k: standing[k] for k, _ in TABLE_FIGURES},
                "per_class_accuracy": standing[
                    "generated_accuracy_per_class"],
                "train_seconds": summary["seconds"]["train"],
                "total_seconds": summary["seconds"]["total"],
            })
    stats = seed_table(rows)
    table = table_markdown(rows, stats)
    wall = round(time.monotonic() - start, 1)
    command = "python demo/run_demo.py " + " ".join(
        [f"--seeds={','.join(seeds)}"]
        + (["--compare_baseline"] if flag_values.compare_baseline else [])
        + (["--study"] if flag_values.study else [])
        + _forwarded_flags(flag_values))
    where = machine()
    with open(os.path.join(out, "seeds.json"), "w") as f:
        json.dump({"rows": rows, "stats": stats, "wall_seconds": wall,
                   "command": command, "machine": where,
                   "date": time.strftime("%Y-%m-%d", time.gmtime())},
                  f, indent=2)
    with open(os.path.join(out, "seeds.md"), "w") as f:
        f.write(f"Standing BN statistics; FID and IS over "
                f"{flag_values.eval_sample_size} images, class accuracy "
                f"over the {demo.NPZ_SAMPLES} samples of --mode sample; "
                f"`{command}`; "
                f"{wall / 60:.0f} min in all on {where}.\n\n"
                f"{table}")
    print("\n" + table + f"\n{len(rows)} runs in {wall / 60:.1f} min; "
          f"{os.path.join(out, 'seeds.md')}", flush=True)
    return table
