"""The benchmark entry points run end to end and record what BENCHMARKS.md reports.

A GPU session has minutes, not hours, to run ``bench/gpu.sh``: a benchmark broken by a change
elsewhere must show up here, not there. Each runs as ``python -m bench.<name>`` on a tiny config
(figures land in a temp results folder, data in a temp cache); the timings themselves are not
judged, only that every figure is there and consistent with the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, tiny_config


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    config = root / "tiny.json"
    config.write_text(tiny_config(training={"max_epochs": 2}, analysis={"events": 400, "permutations": 200}).to_json())
    env = {**os.environ, "DCSBM_CACHE_DIR": str(root / "cache"), "DCSBM_BENCH_RESULTS": str(root / "results")}
    return config, root / "results", env


def run_bench(bench_env, *args) -> dict:
    """Run one benchmark; return the results file's entries (without their machine info)."""
    _, results, env = bench_env
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = results.glob("*.json")
    return json.loads(path.read_text())


def test_epoch_benchmark_times_steps_and_extrapolates(bench_env):
    config, _, _ = bench_env
    entry = run_bench(bench_env, "bench.epoch", "--config", str(config), "--steps", "3")["epoch_tiny_fp32"]
    assert entry["steps_timed"] == 3 and entry["steps_per_epoch"] == 100 and not entry["epoch_measured"]
    assert entry["epoch_s"] == pytest.approx(entry["ms_per_step"] / 1000 * entry["steps_per_epoch"])
    assert entry["warmup_s"] > 0 and entry["gate_eval_s"] > 0 and entry["compile"] is False and entry["compile_s"] is None
    assert entry["machine"]["torch"].startswith("2.")


def test_epoch_benchmark_compiles_in_the_mode_asked_and_records_it_apart(bench_env):
    config, _, env = bench_env
    args = ["bench.epoch", "--config", str(config), "--steps", "2", "--compile", "--compile-mode", "reduce-overhead"]
    entries = run_bench(bench_env, *args)
    entry = entries["epoch_tiny_fp32_compiled_reduce_overhead"]
    assert entry["compile"] is True and entry["compile_mode"] == "reduce-overhead" and entry["steps_timed"] == 2
    assert entry["compile_s"] > 0 and entry["warmup_s"] > 0
    refused = subprocess.run(
        [sys.executable, "-m", *args[:5], "--compile-mode", "reduce-overhead"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--compile-mode needs --compile" in refused.stderr


def test_gate_eval_benchmark_compares_both_generators_on_both_prompt_modes(bench_env):
    config, _, _ = bench_env
    rows = run_bench(bench_env, "bench.gate_eval", "--config", str(config), "--train-steps", "2")["gate_eval"]["rows"]
    assert [row["prompt"] for row in rows] == ["jumper_prefix", "first_token"]
    for row in rows:  # the script itself fails when the two generators' tokens differ
        assert row["sequences"] == 64 and row["speedup"] == pytest.approx(row["plain_s"] / row["ours_s"])
        assert row["ours_TFLOP"] > 0 and row["vs_floor"] == pytest.approx(row["gemm_floor_s"] / row["ours_s"])


def test_data_generation_benchmark_counts_every_walk(bench_env):
    config, _, _ = bench_env
    entry = run_bench(bench_env, "bench.data_generation", "--config", str(config))["data_generation"]
    assert entry["walks"] == 3200 + 200 and entry["peak_mb"] > 0
    assert entry["rule_overhead"] == pytest.approx(entry["ours_s"] / entry["plain_no_rules_s"])


def test_time_to_gate_benchmark_runs_the_cli_from_empty_folders(bench_env):
    config, _, _ = bench_env
    entry = run_bench(bench_env, "bench.time_to_gate", "--config", str(config), "--device", "cpu")["time_to_gate_tiny"]
    assert entry["device"] == "cpu" and entry["seconds"] > 0
    assert entry["gate_passed"] == (entry["gate_epoch"] is not None)


def test_gemm_and_training_step_benchmarks_report_utilisation_against_the_same_run_ceiling(bench_env):
    run_bench(bench_env, "bench.gemm", "--repeat", "1")
    results = run_bench(bench_env, "bench.training_step", "--rounds", "1", "--repeat", "1")
    assert set(results["gemm"]["ceiling_GFLOPs"]) >= {"float32"}
    rows = results["training_step"]["rows"]
    assert {row["model"] for row in rows} == {"anchor", "mid", "quick"}
    for row in rows:
        assert row["MFU"] == pytest.approx(row["model_GFLOPs"] / row["gemm_ceiling_GFLOPs"])
    # The host-overhead floor: the same variants at tiny shapes, scaled to an anchor epoch
    # (200,000 walks × 3 windows / batch 64 = 9,375 steps).
    overhead = results["training_step"]["overhead_rows"]
    assert [row["variant"] for row in overhead] == [row["variant"] for row in rows if row["model"] == "anchor"]
    for row in overhead:
        assert row["anchor_steps_per_epoch"] == 9375
        assert row["epoch_floor_s"] == pytest.approx(row["ms_best"] / 1000 * 9375)


def test_analysis_benchmark_compares_the_pipeline_with_raw_svd_and_plain(bench_env):
    config, _, _ = bench_env
    figures = run_bench(
        bench_env,
        "bench.analysis",
        "--config",
        str(config),
        "--anchor-config",
        str(config),
        "--anchor-events",
        "8",
        "--plain-events",
        "2",
    )
    for name in ("analysis_quick", "analysis_anchor"):
        row = figures[name]
        # one layer, one head, two targets, at every generated pass and the 2 context windows
        assert row["matrices"] == row["events"] * (row["passes"] + 2) * 2
        assert row["vs_raw"] == pytest.approx(row["ours_matrices_per_s"] / row["raw_svd_matrices_per_s"])
        assert row["vs_plain"] == pytest.approx(row["plain_ms_per_matrix"] / row["ours_ms_per_matrix"])
    assert figures["analysis_anchor"]["peak_rss_mb"] > 0


def test_statistics_benchmark_agrees_with_the_plain_statistic_and_records_the_ratio(bench_env):
    entry = run_bench(
        bench_env,
        "bench.statistics",
        "--events",
        "160",
        "--permutations",
        "20",
        "--layers",
        "1",
        "--plain-arrays",
        "1",
        "--plain-permutations",
        "2",
    )["statistics_anchor"]
    from dcsbm_transformer.analysis.measure.metrics import METRICS
    from dcsbm_transformer.analysis.stats.statistics import permutations_needed

    arrays = len(METRICS) * 2 * 1  # every metric on QKᵀ and AVWₒ of the layer, plus the behavioural row
    assert entry["arrays"] == arrays + 1 and entry["lookbacks"] == 58 and entry["permutations_requested"] == 20
    assert entry["permutations"] == permutations_needed(arrays, 0.05, 20)  # Holm's floor raised it
    assert entry["speedup"] == pytest.approx(entry["plain_us_per_array_perm"] / entry["ours_us_per_array_perm"], rel=0.02)
