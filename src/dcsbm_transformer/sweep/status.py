"""Where each point of a sweep stands, and the sweep's status table.

The results folder is the truth about a point (``assess``): *new* (nothing yet), *partial*
(training or analysis interrupted: a rerun resumes it), *done* (training finished and, when the
gate passed, the analysis finished with the config's settings — or, in a sweep with ``"analyze":
false``, training finished, the analysis "not asked"; a run that never passed the gate is a
result too, excluded from analysis) or *failed* (training stopped without a verdict, e.g. a
NaN loss; rerunning cannot change a finished run, so it is not resubmitted).

Beside it each point has a *record* (``sweeps/<name>/points/<experiment_id>.json``) that its job
writes when it starts and ends (state, reason, wall seconds, host, job id), or the sweep writes
when a job died without ending. The status table (``status.json`` and ``status.tsv``, written
atomically) joins the plan, the records and the result files:
point, varied values, experiment_id, state (pending/running/done/failed, or cancelled: a SLURM job
scancel'ed, resumed by a rerun), gate passed, gate epoch,
epochs trained, worst rule compliance, analysis, failure reason, wall seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..analysis.files import ANALYSIS_DIR, default_name, finished_summary, read_horizon
from ..config import ExperimentConfig
from ..experiment import CHECKPOINT_DIR
from ..storage import atomic_write_bytes, atomic_write_json
from ..training.checkpoint import GATE_CHECKPOINT, newest_loadable
from ..training.results import read_result
from .plan import Point, SweepPlan, render

POINTS_DIR = "points"
STATUS_JSON = "status.json"
STATUS_TSV = "status.tsv"
TABLE_STATES = ("pending", "running", "done", "failed", "cancelled")
COLUMNS = (
    "point",
    "experiment_id",
    "state",
    "gate_passed",
    "gate_epoch",
    "epochs_trained",
    "worst_rule_compliance",
    "analysis",
    "failure_reason",
    "wall_seconds",
)


@dataclass(frozen=True)
class Assessment:
    state: str  # new | partial | done | failed
    detail: str
    result: dict[str, Any] | None  # result.json when there is a readable one


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- the results folder -----------------------------------------------------------------------


def analysis_finished(run_dir: Path, config: ExperimentConfig, precision: str) -> bool:
    """True when ``analysis/`` holds a finished analysis of the gate checkpoint made with this
    config's analysis settings (its folder's summary.json vouching for its token_metrics.npz, and a
    horizon.json computed from that npz with these settings and registration status). When in
    doubt, False: the job then runs, and ``analyze_run`` reuses whatever is already finished."""
    from ..analysis.run import analysis_settings, failed_runs_allowed
    from ..analysis.stats.horizon import horizon_is_current
    from ..registration import read_registration, registration_check

    result = read_result(run_dir)
    passed = bool(result and result["training"]["gate_passed"])
    if passed:
        checkpoint = run_dir / CHECKPOINT_DIR / GATE_CHECKPOINT
    else:  # a negative control (analysis.include_failed): the newest checkpoint, as load_run takes it
        newest = newest_loadable(run_dir / CHECKPOINT_DIR, config.config_hash)
        checkpoint = newest.path if newest is not None else run_dir / CHECKPOINT_DIR / GATE_CHECKPOINT
    if not checkpoint.is_file():
        return False
    try:
        include_failed = failed_runs_allowed(config.analysis, not passed)
        settings = analysis_settings(config.analysis, checkpoint, precision=precision, include_failed=include_failed)
        directory = run_dir / ANALYSIS_DIR / default_name(settings)
        summary = finished_summary(directory, settings)
        if summary is None:
            return False
        check = registration_check(read_registration(run_dir), config, gate_passed=passed)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return horizon_is_current(read_horizon(directory), config, summary, check)


def assess(config: ExperimentConfig, results_root: Path, precision: str = "fp32", analyze: bool = True) -> Assessment:
    """What the results folder of ``config`` says about it (see the module docstring). With
    ``analyze`` False (a sweep that stops after training) a trained run is done, analysed or not."""
    run_dir = Path(results_root) / config.experiment_id
    if not run_dir.is_dir():
        return Assessment("new", "", None)
    result = read_result(run_dir)
    max_epochs = config.training.max_epochs
    if result is None:
        return Assessment("partial", "started, no epoch finished yet", None)
    training = result["training"]
    if result["status"] != "finished":
        return Assessment("partial", f"{training['epochs_trained']}/{max_epochs} epochs trained", result)
    if training["gate_passed"]:
        if not analyze:
            return Assessment("done", f"gate passed at epoch {training['gate_epoch']} (analysis not asked)", result)
        if analysis_finished(run_dir, config, precision):
            return Assessment("done", f"gate passed at epoch {training['gate_epoch']}, analysed", result)
        return Assessment("partial", f"gate passed at epoch {training['gate_epoch']}, analysis to do", result)
    if training["epochs_trained"] >= max_epochs:
        if analyze and config.analysis.include_failed and not analysis_finished(run_dir, config, precision):
            return Assessment("partial", f"gate not passed in {max_epochs} epochs, negative-control analysis to do", result)
        control = ", analysed as a negative control" if analyze and config.analysis.include_failed else " (excluded from analysis)"
        return Assessment("done", f"gate not passed in {max_epochs} epochs{control}", result)
    return Assessment("failed", training["failure_reason"] or "training stopped without passing the gate", result)


def worst_rule_compliance(result: dict[str, Any] | None) -> float | None:
    values = [rule["compliance"] for rule in (result or {}).get("rules", []) if rule["compliance"] is not None]
    return min(values) if values else None


# ---- records ----------------------------------------------------------------------------------


def record_path(sweep_dir: Path, experiment_id: str) -> Path:
    return Path(sweep_dir) / POINTS_DIR / f"{experiment_id}.json"


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write_json(path, record)


# ---- the table --------------------------------------------------------------------------------


def table_row(point: Point, state: str, assessment: Assessment, record: dict[str, Any] | None, analyze: bool = True) -> dict[str, Any]:
    """One row of the status table: ``state`` is the sweep's (pending/running/done/failed),
    ``assessment`` the point's results folder, ``record`` what its last job wrote; ``analyze``
    False (the sweep stops after training) reports a passed run's analysis as "not asked"."""
    result, record = assessment.result, record or {}
    training = (result or {}).get("training", {})
    finished = result is not None and result["status"] == "finished"
    if state in ("failed", "cancelled"):  # a finished run that broke says why itself; otherwise the job's record does
        reason = assessment.detail if assessment.state == "failed" else record.get("reason")
    else:
        reason = training.get("failure_reason") if finished else None
    if finished and training.get("gate_passed") and not analyze:
        analysis = "not asked"
    elif finished and training.get("gate_passed"):
        analysis = "done" if assessment.state == "done" else "to do"
    elif finished and analyze and point.config.analysis.include_failed:
        analysis = "negative control: " + ("done" if assessment.state == "done" else "to do")
    elif finished:
        analysis = "excluded (gate not passed)"
    else:
        analysis = None
    ended = record.get("state") in ("done", "failed")
    return {
        "point": point.index,
        "varied": point.varied,
        "experiment_id": point.experiment_id,
        "state": state,
        "gate_passed": training.get("gate_passed") if finished else None,
        "gate_epoch": training.get("gate_epoch") if finished else None,
        "epochs_trained": training.get("epochs_trained"),
        "worst_rule_compliance": worst_rule_compliance(result),
        "analysis": analysis,
        "failure_reason": reason,
        "wall_seconds": record.get("wall_seconds") if ended else None,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    text = value if isinstance(value, str) else render(value)
    return " ".join(text.split())  # no tabs or newlines inside a cell


def write_status(sweep_dir: Path, plan: SweepPlan, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """status.json (everything) and status.tsv (one column per axis), each written atomically."""
    counts = {state: sum(row["state"] == state for row in rows) for state in TABLE_STATES}
    atomic_write_json(
        Path(sweep_dir) / STATUS_JSON,
        {"sweep": plan.name, "updated": now(), **extra, "analyze": plan.analyze, "points": len(rows), "counts": counts, "rows": rows},
    )
    columns = plan.columns  # the axes, then any key a variant sets
    header = ["point", *columns, *COLUMNS[1:]]
    lines = ["\t".join(header)]
    for row in rows:
        # as written in the sweep file; empty where a variant leaves the key at the base's value
        varied = [render(row["varied"][key]) if key in row["varied"] else "" for key in columns]
        lines.append("\t".join([str(row["point"]), *varied, *(_cell(row[c]) for c in COLUMNS[1:])]))
    atomic_write_bytes(Path(sweep_dir) / STATUS_TSV, ("\n".join(lines) + "\n").encode())


def read_status(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(sweep_dir) / STATUS_JSON).read_text())
    except (OSError, ValueError):
        return None


def plan_line(point: Point, assessment: Assessment) -> str:
    detail = f" ({assessment.detail})" if assessment.detail else ""
    return f"{point.index:>4}  {point.label}  {point.experiment_id}  {assessment.state}{detail}"
