"""Smoke tests of the benchmarks (bench/) at tiny configurations."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "throughput.py")


def _reference_forward_flops():
    """Hand count of G and D (image 32, gf = df = 8, z 128, attention 16).

    Multiply-adds per image, written out layer by layer from the released
    architecture, times 2.
    """

    def conv(res, k, c_in, c_out):
        return res * res * k * k * c_in * c_out

    def attention(res, c):
        n = res * res
        return (2 * conv(res, 1, c, c // 8) + 2 * conv(res, 1, c, c // 2)
                + n * (n // 4) * (c // 8) + n * (n // 4) * (c // 2))

    g = 128 * 4 * 4 * 32  # z -> 4x4x(4 gf)
    g += conv(8, 3, 32, 32) + conv(8, 3, 32, 32) + conv(8, 1, 32, 32)
    g += conv(16, 3, 32, 16) + conv(16, 3, 16, 16) + conv(16, 1, 32, 16)
    g += attention(16, 16)
    g += conv(32, 3, 16, 8) + conv(32, 3, 8, 8) + conv(32, 1, 16, 8)
    g += conv(32, 3, 8, 3)
    d = conv(32, 3, 3, 8) + conv(32, 3, 8, 8) + conv(16, 1, 3, 8)
    d += attention(16, 8)
    d += conv(16, 3, 8, 16) + conv(16, 3, 16, 16) + conv(16, 1, 8, 16)
    d += conv(8, 3, 16, 32) + conv(8, 3, 32, 32) + conv(8, 1, 16, 32)
    d += conv(4, 3, 32, 32) + conv(4, 3, 32, 32)  # identity shortcut
    d += 32  # linear to one logit
    return 2 * g, 2 * d


def test_tiny_run_writes_a_consistent_row(tmp_path):
    output = tmp_path / "rows.jsonl"
    subprocess.run(
        [
            sys.executable, SCRIPT, "--image_size", "32", "--batch_size",
            "2", "--gf_dim", "8", "--df_dim", "8", "--number_classes", "4",
            "--steps", "2", "--warmup", "1", "--rounds", "1",
            "--matmul_size", "128", "--matmul_reps", "2",
            "--attention_sizes", "16", "--attention_steps", "1",
            "--vs_d_two_pass", "--output", str(output),
        ],
        check=True,
        cwd=ROOT,
        timeout=240,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    g_ref, d_ref = _reference_forward_flops()
    assert row["g_forward_gflop_per_image"] * 1e9 == g_ref
    assert row["d_forward_gflop_per_image"] * 1e9 == d_ref
    # The analytic count (with the per-batch SN iterations) matches the
    # profiler's Conv/MatMul count of the traced forward passes exactly.
    g_analytic, g_profiled, d_analytic, d_profiled = row[
        "forward_analytic_vs_profiler"]
    assert g_analytic == g_profiled
    assert d_analytic == d_profiled
    # The step does one G update (3 G passes, 2 D passes) and one D update
    # (1 G, 6 D passes): close to 4 g + 8 d, a little under, because the
    # gradients w.r.t. z and the real images are never computed.
    ratio = (row["gflop_per_image_step"]
             / row["gflop_per_image_step_analytic_4g8d"])
    assert 0.9 < ratio < 1.02, ratio
    assert row["gflop_per_image_step_profiler_graph"] > (
        row["gflop_per_image_step"])
    assert row["steps"] == 2 and row["images_per_s"] > 0
    assert row["matmul_gflops"] > 0 and 0 < row["utilization"] < 2
    assert row["peak_memory_mib"] > 0
    assert row["attention_ms"]["16"] > 0
    assert row["attention_ms_32"] is None and row["attention_ms_64"] is None
    assert row["command"].startswith("python bench/throughput.py")
    # --vs_d_two_pass timed the two-call D update in the same rounds.
    assert row["d_two_pass_step_ms_median"] > 0
    assert row["d_concat_speedup"] == pytest.approx(
        row["d_two_pass_step_ms_median"] / row["step_ms_median"])


SUITE = os.path.join(ROOT, "bench", "suite.py")


def test_suite_prints_every_row_and_writes_json_lines(tmp_path):
    output = tmp_path / "suite.jsonl"
    result = subprocess.run(
        [
            sys.executable, SUITE, "--quick", "--only", "fp32,input",
            "--budget_s", "120", "--output", str(output),
        ],
        check=True,
        cwd=ROOT,
        timeout=240,
        capture_output=True,
        text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    names = [
        "input", "fp32", "fp32+xla", "bf16", "bf16+xla", "fp16", "fp16+xla",
        "all GPUs fp32", "fp32 deterministic",
    ]
    assert [r["setting"] for r in rows] == names
    status = {r["setting"]: r["status"] for r in rows}
    assert status["fp32"] == "measured" and status["input"] == "measured"
    assert {status[n] for n in names[2:]} == {"skipped"}
    fp32 = rows[1]
    assert fp32["images_per_s"] > 0 and 0 < fp32["utilization"] < 2
    assert fp32["peak_memory"] is None  # n/a on CPU
    assert fp32["projected_hours"] == pytest.approx(
        1e6 * 256 / fp32["images_per_s"] / 3600)
    for r in rows:
        assert r["tf_version"] and r["date"] and r["device"]
    # The final table: a header, a rule and one line per setting.
    table = result.stdout[result.stdout.index("| setting |"):].splitlines()
    assert len(table) == 2 + len(names)
    for name, line in zip(names, table[2:]):
        assert line.startswith(f"| {name} |"), line


def test_restore_startup_times_both_starts_to_the_first_step():
    # Each "before" run must say it read the checkpoint back, and both must
    # restore and step, or the script exits with the run's output.
    result = subprocess.run(
        [
            sys.executable, os.path.join(ROOT, "bench", "restore_startup.py"),
            "--image_size=32", "--gf_dim=8", "--df_dim=8", "--repeats=1",
            "--to_first_step",
        ],
        cwd=ROOT, timeout=300, capture_output=True, text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    for name in ("before", "after"):
        match = re.search(
            rf"^{name}: to the first step ([\d.]+) s \(median ([\d.]+) s\); "
            r"to the restore ([\d.]+) s$", result.stdout, re.M)
        assert match, result.stdout
        first, median, restored = map(float, match.groups())
        assert 0 < restored < first == median
