"""The main job, ``dcsbm run``: train → gate → analyze → report, each stage resumed or skipped
when it is already done; after the analysis, the interventions (``mechanism_run``: mechanism.json
and the report's mechanism section) unless ``mechanism=False`` (``dcsbm run --no-mechanism``).

Training resumes from its checkpoints and a finished run is not retrained; the analysis uses the
given config's ``analysis`` block, reusing the analysis folder made with the same settings and
making a new one beside it otherwise (``analyze_run``). A run whose gate did not
pass stops after training: the spec excludes it from the SVD analysis (``dcsbm analyze
--include-failed`` analyses one anyway, labelled exploratory).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analysis.run import analyze_run
from .mechanism.run import mechanism_run
from .config import ExperimentConfig
from .experiment import RunOptions, run_directory, run_experiment
from .training.trainer import TrainingHooks


@dataclass(frozen=True)
class PipelineOutcome:
    """What the main job did: the run folder, its result.json, and the analysis summary (None
    when the analysis did not run: ``analyze=False``, or the gate did not pass)."""

    run_dir: Path
    result: dict[str, Any]
    analysis: dict[str, Any] | None
    analysis_skipped: str | None  # why the analysis did not run, in words
    mechanism: dict[str, Any] | None = None  # mechanism.json (None: not asked, or no analysis)


def run_pipeline(
    config: ExperimentConfig,
    options: RunOptions = RunOptions(),
    *,
    analyze: bool = True,
    mechanism: bool = True,
    hooks: TrainingHooks | None = None,
    echo: Callable[[str], None] = print,
) -> PipelineOutcome:
    """Train ``config`` to the gate, then (``analyze``) analyse the run and write its report."""
    result = run_experiment(config, options, hooks=hooks, echo=echo)
    run_dir = run_directory(config, options.results_root)
    if not analyze:
        return PipelineOutcome(run_dir, result, None, "not asked (--no-analyze)")
    training = result["training"]
    if not training["gate_passed"]:
        reason = f"the gate did not pass ({training['failure_reason']}): excluded from analysis"
        echo(f"{run_dir}: {reason}; `dcsbm analyze --include-failed {run_dir}` analyses it anyway, labelled exploratory")
        return PipelineOutcome(run_dir, result, None, reason)
    # The analysis block of the config given (not the run folder's copy): a changed block is a new analysis beside the old.
    summary = analyze_run(run_dir, analysis=config.analysis, device=options.device, precision=options.precision, echo=echo)
    measured = mechanism_run(run_dir, analysis=summary["analysis_name"], device=options.device, echo=echo) if mechanism else None
    return PipelineOutcome(run_dir, result, summary, None, measured)
