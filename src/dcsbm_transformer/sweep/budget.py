"""What a sweep will cost before it runs, and a budget that holds while it runs.

**Estimates** (``dcsbm sweep FILE --dry-run --calibration CAL [--price-per-hour USD]``). A point's
expected seconds, from a calibration of its shape (``dcsbm calibrate``, ``calibrate.py``):

    data + E · (epoch + gate · r/r_c) + A · analysis_per_event · r/r_c

E, the epochs still to train: the epoch at which the point passed the gate in the learnability
data when the point was run there (the same experiment id in a sweep's ``status.json``, e.g.
``sweeps/sweep-learnability/``; a point that did not pass there costs its epochs trained, the
max_epochs), else ``training.max_epochs`` — an *upper bound*, said so on its line — less the
epochs its results folder already holds. The gate runs after every epoch; its generation and
the analysis's continuations run r steps, so their calibrated seconds are scaled by r / r_c, the
point's largest r over the calibrated one. A = the analysis events of a run (``analysis.events``,
plus ``analysis.sensitivity_events`` when the sampled second analysis runs), counted when the
gate is expected to pass (or may: an upper bound) and the sweep analyses. Statistics, report and
mechanism are not in the calibration and not in the estimate. A calibration fits a point when
every ``COST_KEYS`` value is the same; a sweep with a point of another shape is refused.

**The budget** (``--budget-hours H`` or ``--budget-usd X --price-per-hour P``) is the sweep's total
over all its invocations, in point-seconds (each point as if on its own machine: what one rented
GPU per point costs, and an upper bound for local points that share a machine). Before a point
starts: spent (the ledger's actual seconds, ``sweeps/<name>/budget.json``) + the estimates of the
points running now (or their elapsed time, when larger) + this point's estimate must stay within
the budget; otherwise it and every point after it in the queue are held (the queue's order is
its priority: a cheaper later point does not jump ahead). A point's actual seconds are added to
the ledger when it ends (or when the sweep is interrupted). Finished points stay finished; a
rerun with a larger budget goes on from where the ledger stands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..calibrate import cost_shape, describe
from ..storage import atomic_write_json
from .plan import Point, SweepPlan
from .status import Assessment, now, read_status

BUDGET_FILE = "budget.json"
BUDGET_SCHEMA = "dcsbm-budget/1"


class BudgetError(ValueError):
    """A budget ledger that cannot be read as one: a usage error, nothing is run."""


# ---- the learnability data --------------------------------------------------------------------


@dataclass(frozen=True)
class Learned:
    """Epochs a config took in an earlier sweep: to the gate, or all of them when it never passed."""

    epochs: int
    passed: bool
    source: str


def learnability_index(paths: list[Path]) -> dict[str, Learned]:
    """experiment id → Learned, from sweep folders (their status.json) or status.json files; rows
    still running or failed say nothing and are skipped. An unreadable path is skipped too."""
    index: dict[str, Learned] = {}
    for path in paths:
        path = Path(path)
        status = read_status(path) if path.is_dir() else _read_json(path)
        if not isinstance(status, dict) or not isinstance(status.get("rows"), list):
            continue
        where = str(path if path.is_dir() else path.parent)
        for row in status["rows"]:
            if row.get("state") != "done" or row.get("epochs_trained") is None:
                continue
            passed = bool(row.get("gate_passed"))
            epochs = row["gate_epoch"] if passed and row.get("gate_epoch") else row["epochs_trained"]
            index.setdefault(row["experiment_id"], Learned(int(epochs), passed, where))
    return index


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def default_learnability_paths(sweeps_root: Path, exclude: str | None = None) -> list[Path]:
    """Every sweep folder under ``sweeps_root`` with a status table (read only), but ``exclude``."""
    root = Path(sweeps_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name != exclude and (p / "status.json").is_file())


# ---- estimates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    point: Point
    epochs: int  # epochs still to train
    note: str  # where the epochs come from
    upper_bound: bool
    data_s: float
    training_s: float  # epochs x (epoch + gate)
    analysis_s: float

    @property
    def seconds(self) -> float:
        return self.data_s + self.training_s + self.analysis_s


def shape_problems(plan: SweepPlan, calibration: dict[str, Any], source: str) -> list[str]:
    """Why ``calibration`` (read from ``source``) does not fit the plan's points: one line per
    point whose cost-setting keys differ, naming them."""
    problems = []
    wanted = calibration["cost_shape"]
    for point in plan.points:
        shape = cost_shape(point.config)
        differ = [f"{key} {shape[key]!r} (calibrated: {wanted.get(key)!r})" for key in shape if shape[key] != wanted.get(key)]
        if differ:
            problems.append(f"{point.describe()}: {', '.join(differ)}")
    if problems:
        head = f"--calibration {source} was made for another shape ({calibration.get('experiment_id')}); calibrate this sweep's base config"
        return [head, *problems[:5], *([f"... and {len(problems) - 5} more point(s)"] if len(problems) > 5 else [])]
    return []


def _analysis_events(config) -> int:
    a = config.analysis
    sampled = a.sensitivity_temperature > 0 and a.sensitivity_temperature != a.temperature
    return a.events + (a.sensitivity_events if sampled else 0)


def estimate_point(
    point: Point, calibration: dict[str, Any], learned: Learned | None, assessment: Assessment, analyze: bool
) -> Estimate:
    """The seconds ``point`` still needs (see the module docstring)."""
    config = point.config
    max_epochs = config.training.max_epochs
    if assessment.state in ("done", "failed"):
        return Estimate(point, 0, assessment.state, False, 0.0, 0.0, 0.0)
    if learned is not None:
        total = min(learned.epochs, max_epochs)
        passes = learned.passed
        note = (
            f"gate at epoch {learned.epochs}" if learned.passed else f"no gate in {learned.epochs} epochs"
        ) + f" ({learned.source})"
        bound = False
    else:
        total, passes, bound = max_epochs, True, True
        note = f"max_epochs {max_epochs}: upper bound (not in the learnability data)"
    trained = 0
    if assessment.result is not None:
        trained = int(assessment.result["training"]["epochs_trained"])
        if assessment.result["status"] == "finished":
            total, passes = trained, bool(assessment.result["training"]["gate_passed"])
            note, bound = "trained; analysis to do", False
        elif trained:
            note += f"; {trained} already trained"
    epochs = max(total - trained, 0)
    scale = max(config.jumper_r_values()) / max(calibration["r"])
    gate = calibration["gate"]["seconds"] * (scale if config.gate.prompt == "jumper_prefix" else 1.0)
    training_s = epochs * (calibration["training"]["epoch_seconds"] + gate)
    data_s = calibration["data"]["seconds"] if epochs else 0.0
    analysed = analyze and (passes or config.analysis.include_failed)
    analysis_s = _analysis_events(config) * calibration["analysis"]["seconds_per_event"] * scale if analysed else 0.0
    return Estimate(point, epochs, note, bound, data_s, training_s, analysis_s)


def estimate_plan(
    plan: SweepPlan, calibration: dict[str, Any], learned: dict[str, Learned], assessments: dict[int, Assessment]
) -> list[Estimate]:
    return [estimate_point(p, calibration, learned.get(p.experiment_id), assessments[p.index], plan.analyze) for p in plan.points]


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def print_estimates(
    estimates: list[Estimate],
    calibration: dict[str, Any],
    echo: Callable[[str], None],
    price_per_hour: float | None = None,
    budget_seconds: float | None = None,
    spent_seconds: float = 0.0,
) -> None:
    """Each point's expected time in queue order with the running total (and cost), then the total;
    with a budget, where the budget stops the queue."""
    estimate_label = "ESTIMATE from a projected calibration" if calibration["method"] == "projected" else "estimate"
    echo(f"{estimate_label}, calibration: {describe(calibration)}")
    cost = f", cost at {price_per_hour:g} USD/h" if price_per_hour is not None else ""
    echo(
        f"{'point':>5}  {'epochs':>6}  {'train h':>7}  {'anal. h':>7}  {'hours':>7}  {'running total':>13}"
        f"{'  running USD' if cost else ''}  (varied; epochs from)"
    )
    total = spent_seconds
    cut = None
    for estimate in estimates:
        total += estimate.seconds
        if budget_seconds is not None and cut is None and estimate.seconds and total > budget_seconds:
            cut = estimate.point.index
            echo(f"----- budget of {hours(budget_seconds)} reached: the points below are not started -----")
        usd = f"  {total / 3600 * price_per_hour:>11.2f}" if price_per_hour is not None else ""
        echo(
            f"{estimate.point.index:>5}  {estimate.epochs:>6}  {(estimate.data_s + estimate.training_s) / 3600:>7.2f}  "
            f"{estimate.analysis_s / 3600:>7.2f}  {estimate.seconds / 3600:>7.2f}  {total / 3600:>11.2f} h{usd}  "
            f"({estimate.point.label}; {estimate.note})"
        )
    if budget_seconds is not None and cut is None:
        echo(f"----- the whole queue fits in the budget of {hours(budget_seconds)} -----")
    todo = sum(e.seconds for e in estimates)
    bounds = sum(e.upper_bound and e.seconds > 0 for e in estimates)
    train = sum(e.data_s + e.training_s for e in estimates)
    line = f"total: {hours(todo)} for {sum(e.seconds > 0 for e in estimates)} point(s) to run ({hours(train)} data and training, {hours(todo - train)} analysis)"
    if price_per_hour is not None:
        line += f", {todo / 3600 * price_per_hour:.2f} USD at {price_per_hour:g} USD/h"
    if bounds:
        line += f"; {bounds} point(s) at max_epochs (upper bounds)"
    if spent_seconds:
        line += f"; {hours(spent_seconds)} already spent (budget.json)"
    echo(line)
    analysis = calibration["analysis"].get("method", "measured")
    echo(f"analysis per event: {analysis}; not included: statistics, report and mechanism per analysed run; one point per machine")


# ---- the budget -------------------------------------------------------------------------------


class Budget:
    """The sweep's budget and ledger (``budget.json``): admits a point only when spent + running +
    its estimate stay within the limit; records each point's actual seconds when it ends.

    ``clock`` (default ``time.monotonic``) measures the points' time; tests pass a fake one."""

    def __init__(
        self,
        limit_seconds: float,
        estimates: dict[int, float],
        ledger: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        price_per_hour: float | None = None,
    ) -> None:
        self.limit, self.estimates, self.path, self.clock = limit_seconds, estimates, Path(ledger), clock
        self.price = price_per_hour
        self.attempts: list[dict[str, Any]] = self._read()
        self.running: dict[int, tuple[float, Point]] = {}
        self.held: list[Point] = []

    def _read(self) -> list[dict[str, Any]]:
        stored = _read_json(self.path)
        if stored is None:
            return []
        if not isinstance(stored, dict) or stored.get("schema") != BUDGET_SCHEMA or not isinstance(stored.get("attempts"), list):
            raise BudgetError(f"{self.path}: not a budget ledger of schema {BUDGET_SCHEMA!r}; move it aside to start a new ledger")
        return stored["attempts"]

    @property
    def spent(self) -> float:
        return sum(a["seconds"] for a in self.attempts)

    def committed(self) -> float:
        """Spent + what the running points are expected to take (their elapsed time when larger)."""
        at = self.clock()
        return self.spent + sum(max(self.estimates[i], at - started) for i, (started, _) in self.running.items())

    def admit(self, point: Point) -> bool:
        """True when ``point`` may start now; False holds it (and, by the caller, every point after it)."""
        if self.held:
            self.held.append(point)
            return False
        if self.committed() + self.estimates[point.index] > self.limit:
            self.held.append(point)
            return False
        self.running[point.index] = (self.clock(), point)
        return True

    def ended(self, point: Point, state: str) -> float:
        """Record ``point``'s actual seconds (from its admission) in the ledger; returns them."""
        started, _ = self.running.pop(point.index)
        seconds = self.clock() - started
        self.attempts.append(
            {
                "point": point.index,
                "experiment_id": point.experiment_id,
                "state": state,
                "seconds": round(seconds, 3),
                "estimate_seconds": round(self.estimates[point.index], 3),
                "ended": now(),
            }
        )
        self.write()
        return seconds

    def interrupted(self) -> None:
        for _started, point in list(self.running.values()):
            self.ended(point, "interrupted")

    def write(self) -> None:
        atomic_write_json(
            self.path,
            {
                "schema": BUDGET_SCHEMA,
                "limit_seconds": self.limit,
                "price_per_hour": self.price,
                "spent_seconds": round(self.spent, 3),
                "attempts": self.attempts,
            },
        )

    def summary(self) -> str:
        usd = f" ({self.spent / 3600 * self.price:.2f} of {self.limit / 3600 * self.price:.2f} USD)" if self.price else ""
        held = f"; {len(self.held)} point(s) held by the budget (rerun with a larger one to go on)" if self.held else ""
        return f"budget: {hours(self.spent)} of {hours(self.limit)} spent{usd}{held}"


@dataclass(frozen=True)
class BudgetRequest:
    """``--budget-hours``/``--budget-usd`` with what the estimates need; ``open`` makes the sweep's
    Budget once the sweep folder and the points' states are known."""

    limit_seconds: float
    calibration: dict[str, Any]
    learned: dict[str, Learned]
    price_per_hour: float | None = None
    clock: Callable[[], float] = time.monotonic

    def open(self, plan: SweepPlan, sweep_dir: Path, assessments: dict[int, Assessment]) -> Budget:
        estimates = {e.point.index: e.seconds for e in estimate_plan(plan, self.calibration, self.learned, assessments)}
        return Budget(
            self.limit_seconds, estimates, Path(sweep_dir) / BUDGET_FILE, clock=self.clock, price_per_hour=self.price_per_hour
        )
