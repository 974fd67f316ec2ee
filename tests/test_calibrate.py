"""``dcsbm calibrate`` (calibrate.py, issue 28): one run's costs timed on this machine — a
steady-state epoch (extrapolated from a partial one, and labelled so), the gate (scaled from a
subset, labelled), the analysis per event, peak memory per phase — written as a calibration file
that a sweep's dry run reads; the projection onto a GPU that is not here, labelled as an
estimate; and the usage errors (exit 2, nothing written). Tiny configs: seconds in all.
"""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config

from dcsbm_transformer.calibrate import (
    ASSUMED_UTILISATION,
    CALIBRATION_SCHEMA,
    GPUS,
    CalibrationError,
    calibrate,
    project,
    read_calibration,
)
from dcsbm_transformer.cli import main


@pytest.fixture(scope="module")
def measured():
    """A partial epoch (10 of 100 steps after 2 warm-up steps), the whole gate, 8 analysis events."""
    return calibrate(tiny_config(), device="cpu", warmup_steps=2, max_steps=10, analysis_events=8, echo=lambda _: None)


def test_a_partial_epoch_is_extrapolated_and_labelled(measured):
    training = measured["training"]
    assert measured["schema"] == CALIBRATION_SCHEMA and measured["method"] == "measured"
    assert training["steps_per_epoch"] == 100 and training["warmup_steps"] == 2 and training["steps_timed"] == 10
    assert training["epoch_method"] == "extrapolated: 10 of 100 steps timed after 2 warm-up steps"
    expected = training["seconds_per_step"] * 100 + training["window_shuffle_seconds"]
    assert training["epoch_seconds"] == pytest.approx(expected, abs=2e-3)
    assert training["flops_per_step"] > 0 and measured["gate"]["flops"] > 0
    assert measured["gate"]["method"] == "measured: every gate sequence" and measured["gate"]["sequences"] == 64
    assert measured["gate"]["generated_steps"] == 6  # jumper_prefix prompts generate r = 6 tokens
    analysis = measured["analysis"]
    assert analysis["events_timed"] >= 8 and analysis["passes"] == 6 and analysis["seconds_per_event"] > 0
    for phase in ("data", "training", "gate", "analysis"):
        assert measured[phase]["memory"]["peak_rss_mb"] > 0
    machine = measured["machine"]
    assert machine["device"] == "cpu" and machine["versions"]["torch"] and machine["device_name"]
    assert measured["cost_shape"]["model.d_model"] == 16 and measured["r"] == [6]


def test_a_whole_epoch_is_measured_and_a_gate_subset_scaled():
    document = calibrate(tiny_config(), device="cpu", target_seconds=1e9, gate_sequences=16, analysis_events=4, echo=lambda _: None)
    assert document["training"]["epoch_method"] == "measured: a whole epoch" and document["training"]["steps_timed"] == 97
    assert document["gate"]["method"] == "scaled: 16 of 64 sequences timed, × 4"


def test_a_projection_is_an_estimate_from_the_gpu_free_figures(measured):
    projected = project(measured, "rtx4090")
    peak = GPUS["rtx4090"]["fp32_tflops"] * 1e12 * ASSUMED_UTILISATION
    step = measured["host_overhead"]["train_step_seconds"] + measured["training"]["flops_per_step"] / peak
    assert projected["method"] == "projected" and "projected, not measured" in projected["machine"]["device_name"]
    assert projected["training"]["epoch_seconds"] == pytest.approx(
        100 * step + measured["training"]["window_shuffle_seconds"], abs=2e-3
    )
    gate = 6 * measured["host_overhead"]["forward_seconds"] + measured["gate"]["flops"] / peak
    assert projected["gate"]["seconds"] == pytest.approx(gate, abs=2e-3)
    assert projected["analysis"]["seconds_per_event"] == measured["analysis"]["seconds_per_event"]
    assert measured["method"] == "measured"  # the measured document is left as it was
    with pytest.raises(CalibrationError, match="already a projection"):
        project(projected, "rtx4090")
    given = project(measured, "rtx3090", host_step_seconds=0.00274, analysis_seconds_per_event=0.25)
    peak = GPUS["rtx3090"]["fp32_tflops"] * 1e12 * ASSUMED_UTILISATION
    step = 0.00274 + measured["training"]["flops_per_step"] / peak
    assert given["training"]["epoch_seconds"] == pytest.approx(100 * step + measured["training"]["window_shuffle_seconds"], abs=2e-3)
    assert given["analysis"]["seconds_per_event"] == 0.25 and "given" in given["projected_from"]["host_step_source"]


def test_the_command_writes_a_calibration_that_a_sweep_dry_run_reads(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json())
    out = tmp_path / "cal" / "tiny-cpu.json"
    common = ["--device", "cpu", "--threads", "1", "--max-steps", "5", "--analysis-events", "4", "--gate-sequences", "8"]
    assert main(["calibrate", str(config), "--out", str(out), *common]) == 0
    document = read_calibration(out)
    assert document["experiment_id"] == tiny_config().experiment_id and document["training"]["steps_timed"] == 5
    projected = tmp_path / "cal" / "tiny-4090.json"
    assert main(["calibrate", str(config), "--project", "rtx4090", "--from", str(out), "--out", str(projected)]) == 0
    assert read_calibration(projected)["method"] == "projected"

    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({"name": "s", "base": "tiny.json", "axes": {"seed": [1, 2]}}))
    capsys.readouterr()
    args = ["sweep", str(sweep), "--sweeps-dir", str(tmp_path / "sweeps"), "--results-dir", str(tmp_path / "results")]
    assert main([*args, "--dry-run", "--calibration", str(projected), "--price-per-hour", "0.4"]) == 0
    printed = capsys.readouterr().out
    assert "ESTIMATE from a projected calibration" in printed and "max_epochs 3: upper bound" in printed and "USD" in printed
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--project", "rtx4090"], "needs --from"),
        (["--from", "{cal}"], "--from only goes with --project"),
        (["--project", "h100", "--from", "{cal}"], "unknown GPU"),
        (["--project", "rtx4090", "--from", "{other}"], "calibrates dcsbm-"),
        (["--max-steps", "0"], "--max-steps must be positive"),
    ],
)
def test_bad_calibrate_requests_are_usage_errors_and_write_nothing(tmp_path, capsys, measured, extra, message):
    config = tmp_path / "tiny.json"
    config.write_text(tiny_config().to_json())
    (tmp_path / "cal.json").write_text(json.dumps(measured))
    other = {**measured, "experiment_id": "dcsbm-somebody-else"}
    (tmp_path / "other.json").write_text(json.dumps(other))
    out = tmp_path / "out.json"
    args = [a.format(cal=tmp_path / "cal.json", other=tmp_path / "other.json") for a in extra]
    assert main(["calibrate", str(config), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
