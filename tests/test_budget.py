"""Sweep estimates and the budget (sweep/budget.py, issue 28): per-point estimates from a
calibration and the learnability data, the dry run's queue with running totals and cost, the
usage errors (exit 2, nothing written), and a budget that stops launching — run with a fake
calibration, a fake clock and fake jobs (no training), so every number is exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dcsbm_transformer.sweep.execute as execute
from dcsbm_transformer.calibrate import CALIBRATION_SCHEMA, cost_shape
from dcsbm_transformer.cli import main
from dcsbm_transformer.sweep import PointJob, SweepSettings, run_sweep, sweep_from_dict
from dcsbm_transformer.sweep.budget import Budget, BudgetRequest, Learned, estimate_plan, learnability_index
from dcsbm_transformer.sweep.status import Assessment, write_record

TINY = {
    "seed": 3,
    "graph": {"n": 32, "K": 2, "p_in": 0.9, "p_out": 0.2, "jumpers_per_block": 1, "jump_scales": [0.75]},
    "walks": {"walk_length": 24, "train_walks": 3200, "eval_walks": 200},
    "model": {"context_window": 8, "d_model": 16, "n_layers": 1, "n_heads": 1},
    "training": {"batch_size": 64, "max_epochs": 10, "lr": 3e-3},
    "gate": {"eval_sequences": 64},
    "analysis": {"events": 100, "sensitivity_temperature": 0.0},
}
FOUR = {"name": "four", "base": TINY, "axes": {"seed": [1, 2, 3, 4]}}  # r = round(0.75 * 8) = 6 for every point


def fake_calibration(plan, epoch=9.0, gate=1.0, per_event=0.01, data=2.0, method="measured") -> dict:
    """A calibration of the plan's shape with round numbers (r calibrated at 6)."""
    return {
        "schema": CALIBRATION_SCHEMA,
        "method": method,
        "experiment_id": plan.points[0].experiment_id,
        "cost_shape": cost_shape(plan.points[0].config),
        "r": [6],
        "precision": "fp32",
        "machine": {"device_name": "a test CPU", "torch_threads": 1, "date": "2026-12-07T00:00:00+00:00"},
        "data": {"seconds": data},
        "training": {"steps_per_epoch": 100, "epoch_seconds": epoch, "epoch_method": "measured: a whole epoch"},
        "gate": {"seconds": gate, "method": "measured"},
        "analysis": {"seconds_per_event": per_event, "passes": 6},
    }


NEW = Assessment("new", "", None)


def test_estimates_use_the_learnability_epochs_else_max_epochs_as_an_upper_bound():
    plan = sweep_from_dict({**FOUR, "axes": {"seed": [1, 2]}, "set": {"graph.jump_scales": [1.5]}})  # r = 12: twice the calibrated 6
    calibration = fake_calibration(plan)
    learned = {plan.points[0].experiment_id: Learned(4, True, "sweeps/learn")}
    first, second = estimate_plan(plan, calibration, learned, {1: NEW, 2: NEW})
    # covered: 4 epochs x (9 + 1 x 12/6) + data 2 + 100 events x 0.01 x 12/6
    assert (first.epochs, first.upper_bound) == (4, False) and first.seconds == pytest.approx(4 * 11 + 2 + 2)
    assert "gate at epoch 4 (sweeps/learn)" in first.note
    # not covered: max_epochs 10, an upper bound, analysed (it may pass)
    assert (second.epochs, second.upper_bound) == (10, True) and second.seconds == pytest.approx(10 * 11 + 2 + 2)
    assert "upper bound" in second.note
    # a point that never passed in the learnability data: its epochs, no analysis
    never = estimate_plan(plan, calibration, {plan.points[1].experiment_id: Learned(10, False, "x")}, {1: NEW, 2: NEW})[1]
    assert never.analysis_s == 0 and never.seconds == pytest.approx(10 * 11 + 2)
    # done points cost nothing; a partial one pays for the epochs left
    partial = Assessment("partial", "", {"status": "running", "training": {"epochs_trained": 3, "gate_passed": False}})
    done, left = estimate_plan(plan, calibration, learned, {1: Assessment("done", "", None), 2: partial})
    assert done.seconds == 0 and left.epochs == 7 and "3 already trained" in left.note


def test_the_learnability_index_reads_finished_rows_of_a_status_table(tmp_path):
    folder = tmp_path / "learn"
    folder.mkdir()
    rows = [
        {"experiment_id": "a", "state": "done", "gate_passed": True, "gate_epoch": 23, "epochs_trained": 23},
        {"experiment_id": "b", "state": "done", "gate_passed": False, "gate_epoch": None, "epochs_trained": 50},
        {"experiment_id": "c", "state": "running", "gate_passed": None, "gate_epoch": None, "epochs_trained": 13},
    ]
    (folder / "status.json").write_text(json.dumps({"rows": rows}))
    index = learnability_index([folder])
    assert index == {"a": Learned(23, True, str(folder)), "b": Learned(50, False, str(folder))}


def _write(tmp_path: Path, calibration: dict, content: dict = FOUR) -> tuple[Path, Path]:
    sweep = tmp_path / "four.json"
    sweep.write_text(json.dumps(content))
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(calibration))
    return sweep, cal


def _args(tmp_path: Path, sweep: Path, *extra: str) -> list[str]:
    return ["sweep", str(sweep), "--results-dir", str(tmp_path / "results"), "--sweeps-dir", str(tmp_path / "sweeps"), *extra]


def test_the_dry_run_prints_each_point_in_queue_order_with_running_totals_and_cost(tmp_path, capsys):
    plan = sweep_from_dict(FOUR)
    sweep, cal = _write(tmp_path, fake_calibration(plan, epoch=350.0, gate=10.0, per_event=0.5, data=10.0))
    # each point: 10 x 360 + 10 + 100 x 0.5 = 3,660 s = 1.0167 h
    assert (
        main(_args(tmp_path, sweep, "--dry-run", "--calibration", str(cal), "--price-per-hour", "0.5", "--budget-hours", "2.5")) == 0
    )
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()[:1].isdigit() and "upper bound" in line]
    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4"]
    assert [line.split()[2:5] for line in lines][0] == ["1.00", "0.01", "1.02"]  # training (with data), analysis, both
    assert [line.split()[5] for line in lines] == ["1.02", "2.03", "3.05", "4.07"]  # running total, hours
    assert [line.split()[7] for line in lines] == ["0.51", "1.02", "1.52", "2.03"]  # running USD
    assert "budget of 2.50 h reached" in out and out.index("budget of 2.50 h") < out.index(lines[2])
    assert (
        "total: 4.07 h for 4 point(s) to run (4.01 h data and training, 0.06 h analysis), 2.03 USD at 0.5 USD/h; 4 point(s) at max_epochs (upper bounds)"
        in out
    )
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget-usd", "10"], "--budget-usd needs --price-per-hour"),
        (["--budget-hours", "1", "--budget-usd", "10", "--price-per-hour", "1"], "not both"),
        (["--budget-hours", "-1"], "--budget-hours must be positive"),
        (["--calibration", "{other}", "--dry-run"], "made for another shape"),
        (["--calibration", "{schema}", "--budget-hours", "1"], "expected 'dcsbm-calibration/1'"),
        (["--calibration", "{missing}", "--dry-run"], "no such file"),
        (["--budget-hours", "1", "--calibration", "{ok}", "--learnability", "{missing}"], "no such sweep folder"),
        (["--calibration", "{ok}"], "is used by --dry-run"),
    ],
)
def test_bad_budget_flags_and_calibrations_are_usage_errors_and_write_nothing(tmp_path, capsys, extra, message):
    plan = sweep_from_dict(FOUR)
    sweep, cal = _write(tmp_path, fake_calibration(plan))
    other = fake_calibration(sweep_from_dict({**FOUR, "set": {"model.d_model": 32}}))
    paths = {"ok": cal, "other": tmp_path / "other.json", "schema": tmp_path / "schema.json", "missing": tmp_path / "nothing"}
    paths["other"].write_text(json.dumps(other))
    paths["schema"].write_text(json.dumps({**fake_calibration(plan), "schema": "dcsbm-calibration/0"}))
    if "--budget-hours" in extra or "--budget-usd" in extra:
        extra = extra if "--calibration" in extra else [*extra, "--calibration", "{ok}"]
    args = [a.format(**{k: str(v) for k, v in paths.items()}) for a in extra]
    assert main(_args(tmp_path, sweep, *args)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "results").exists()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_budget_holds_and_a_rerun_with_a_larger_one_goes_on(tmp_path, monkeypatch):
    """Estimates 100 s a point (10 epochs x 9 s + data 2 + 100 events x 0.08 s); each fake point
    takes 120 s of the fake clock. Budget 250 s: points 1 and 2 run (0 + 100, then 120 + 100 fit),
    point 3 would reach 240 + 100 > 250: it and point 4 are held. Rerun at 600 s: 3 and 4 run."""
    plan = sweep_from_dict(FOUR)
    calibration = fake_calibration(plan, epoch=8.0, gate=1.0, per_event=0.08, data=2.0)
    clock, finished, ran = FakeClock(), set(), []

    class FakeJob(PointJob):
        def __call__(self):
            clock.t += 120.0
            ran.append(self.point)
            record = {"experiment_id": Path(self.record).stem, "point": self.point, "varied": self.varied, "state": "done"}
            record.update(reason=None, wall_seconds=120.0)
            finished.add(record["experiment_id"])
            write_record(Path(self.record), record)
            return record

    def fake_assess(config, results_root, precision="fp32", analyze=True):
        return Assessment("done", "fake", None) if config.experiment_id in finished else NEW

    original = execute.point_job
    monkeypatch.setattr(execute, "point_job", lambda point, s, d: FakeJob(**vars(original(point, s, d))))
    monkeypatch.setattr(execute, "assess", fake_assess)
    settings = SweepSettings(executor="debug", results_root=tmp_path / "results", sweeps_root=tmp_path / "sweeps")
    lines: list[str] = []

    outcome = run_sweep(plan, settings, echo=lines.append, budget=BudgetRequest(250.0, calibration, {}, clock=clock))
    assert ran == [1, 2]
    assert [row["state"] for row in outcome.rows] == ["done", "done", "pending", "pending"]
    ledger = json.loads((tmp_path / "sweeps" / "four" / "budget.json").read_text())
    assert [(a["point"], a["seconds"], a["estimate_seconds"]) for a in ledger["attempts"]] == [(1, 120.0, 100.0), (2, 120.0, 100.0)]
    assert any("point 3 (seed=3) not started: its estimate would pass the budget" in line for line in lines)
    assert lines[-1] == "budget: 0.07 h of 0.07 h spent; 2 point(s) held by the budget (rerun with a larger one to go on)"

    # the same budget again: nothing fits, nothing runs, nothing finished is redone
    run_sweep(plan, settings, echo=lines.append, budget=BudgetRequest(250.0, calibration, {}, clock=clock))
    assert ran == [1, 2]
    # a larger budget goes on from the ledger (240 s spent): 3 fits (340), 4 fits (460 + 100 <= 600)
    outcome = run_sweep(plan, settings, echo=lines.append, budget=BudgetRequest(600.0, calibration, {}, clock=clock))
    assert ran == [1, 2, 3, 4] and [row["state"] for row in outcome.rows] == ["done"] * 4
    ledger = json.loads((tmp_path / "sweeps" / "four" / "budget.json").read_text())
    assert ledger["spent_seconds"] == 480.0 and [a["point"] for a in ledger["attempts"]] == [1, 2, 3, 4]


def test_running_points_count_with_their_estimate_or_their_time_so_far(tmp_path):
    plan = sweep_from_dict(FOUR)
    clock = FakeClock()
    budget = Budget(350.0, {1: 100.0, 2: 100.0, 3: 100.0, 4: 10.0}, tmp_path / "budget.json", clock=clock)
    assert budget.admit(plan.points[0])
    clock.t += 100.0
    assert budget.admit(plan.points[1]) and budget.admit(plan.points[2])
    assert budget.committed() == 300.0
    clock.t += 60.0  # point 1 overruns its estimate: it counts with its 160 s; 2 and 3 with their 100
    assert budget.committed() == 360.0
    assert not budget.admit(plan.points[3])  # 360 + 10 > 350
    budget.ended(plan.points[0], "done")
    assert budget.spent == 160.0 and budget.held == [plan.points[3]]
    assert not budget.admit(plan.points[3])  # held stays held, in queue order


def test_the_command_starts_nothing_that_would_pass_the_budget(tmp_path, capsys):
    """Through `dcsbm sweep`: a budget below the first point's estimate starts nothing (no
    training: cheap), says why, and leaves every point pending for a rerun with a larger one."""
    plan = sweep_from_dict(FOUR)
    sweep, cal = _write(tmp_path, fake_calibration(plan))  # 10 x 10 + 2 + 1 = 103 s a point
    args = _args(tmp_path, sweep, "--calibration", str(cal), "--budget-usd", "0.01", "--price-per-hour", "0.5", "--executor", "debug")
    assert main(args) == 0  # 0.01 USD at 0.5 USD/h = 72 s
    out = capsys.readouterr().out
    assert "point 1 (seed=1) not started: its estimate would pass the budget" in out
    assert "budget: 0.00 h of 0.02 h spent (0.00 of 0.01 USD); 4 point(s) held by the budget" in out
    rows = json.loads((tmp_path / "sweeps" / "four" / "status.json").read_text())["rows"]
    assert [row["state"] for row in rows] == ["pending"] * 4 and not (tmp_path / "results").exists()
