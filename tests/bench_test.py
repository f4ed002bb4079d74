"""Smoke tests of the benchmarks (bench/) at tiny configurations."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _reference_forward_flops(z_dim):
    """Hand count of G and D (image 32, gf = df = 8, attention 16).

    Multiply-adds per image, written out layer by layer from the released
    architecture, times 2.
    """

    def conv(res, k, c_in, c_out):
        return res * res * k * k * c_in * c_out

    def attention(res, c):
        n = res * res
        return (2 * conv(res, 1, c, c // 8) + 2 * conv(res, 1, c, c // 2)
                + n * (n // 4) * (c // 8) + n * (n // 4) * (c // 2))

    g = z_dim * 4 * 4 * 32  # z -> 4x4x(4 gf)
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


SUITE = os.path.join(ROOT, "bench", "suite.py")
NAMES = [
    "input", "fp32", "fp32+xla", "bf16", "bf16+xla", "fp16", "fp16+xla",
    "all GPUs fp32", "fp32 deterministic",
]


def test_quick_suite_measures_every_row(tmp_path):
    # Every row of the one GPU run must come back: here each one runs
    # (two logical CPUs stand in for "all GPUs") and none may fail.
    output = tmp_path / "suite.jsonl"
    result = subprocess.run(
        # The budget this test's own timeout allows: with --quick's 240 s
        # a slow day on a shared 2-core machine skipped the last rows.
        [sys.executable, SUITE, "--quick", "--budget_s", "540",
         "--output", str(output)],
        cwd=ROOT, timeout=600, capture_output=True, text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["setting"] for r in rows] == NAMES
    assert {r["setting"]: r["status"] for r in rows} == dict.fromkeys(
        NAMES, "measured"), [r.get("reason") for r in rows]
    for r in rows:
        assert r["tf_version"] and r["date"] and r["device"]
        assert r["images_per_s"] > 0
    fp32 = rows[1]
    assert 0 < fp32["utilization"] < 2 and fp32["matmul_gflops"] > 0
    assert fp32["peak_memory"] is None  # n/a on CPU
    assert fp32["projected_hours"] == pytest.approx(
        1e6 * 256 / fp32["images_per_s"] / 3600)
    assert rows[7]["replicas"] == 2 and rows[7]["scaling_efficiency"] > 0
    # The FLOP counts: the hand count, the analytic count (with the
    # per-batch SN iterations) and the profiler's Conv/MatMul count agree.
    g_ref, d_ref = _reference_forward_flops(z_dim=16)
    assert fp32["g_forward_gflop_per_image"] * 1e9 == g_ref
    assert fp32["d_forward_gflop_per_image"] * 1e9 == d_ref
    g_analytic, g_profiled, d_analytic, d_profiled = fp32[
        "forward_analytic_vs_profiler"]
    assert g_analytic == g_profiled and d_analytic == d_profiled
    # One G update (3 G passes, 2 D passes) and one D update (1 G, 6 D):
    # a little under 4 g + 8 d (no gradients w.r.t. z or real images).
    ratio = (fp32["gflop_per_image_step"]
             / fp32["gflop_per_image_step_analytic_4g8d"])
    assert 0.9 < ratio < 1.02, ratio
    assert fp32["gflop_per_image_step_profiler_graph"] > (
        fp32["gflop_per_image_step"])
    assert fp32["attention_ms"]["16"] > 0
    # The two-call D update, timed in the same rounds.
    assert fp32["d_concat_speedup"] == pytest.approx(
        fp32["d_two_pass_step_ms_median"] / fp32["step_ms_median"])
    # The final table: a header, a rule and one line per setting.
    table = result.stdout[result.stdout.index("| setting |"):].splitlines()
    assert len(table) == 2 + len(NAMES)
    for name, line in zip(NAMES, table[2:]):
        assert line.startswith(f"| {name} |"), line
