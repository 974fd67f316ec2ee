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

from .analysis.files import ANALYSIS_DIR
from .analysis.report.page import write_report
from .analysis.run import analyze_run
from .config import ExperimentConfig
from .experiment import RunOptions, run_directory, run_experiment
from .mechanism.run import mechanism_run
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
    sensitivity: dict[str, Any] | None = None  # the sampled analysis's summary (None: not made)


def run_pipeline(
    config: ExperimentConfig,
    options: RunOptions = RunOptions(),  # noqa: B008 (a frozen dataclass: one shared default is safe)
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
        if config.analysis.include_failed:  # a negative control: analysed, exploratory everywhere, no mechanism
            echo(
                f"{run_dir}: the gate did not pass ({training['failure_reason']}); analysed anyway as a negative control "
                "(analysis.include_failed), labelled exploratory"
            )
            summary = analyze_run(
                run_dir, analysis=config.analysis, include_failed=True, device=options.device, precision=options.precision, echo=echo
            )
            return PipelineOutcome(run_dir, result, summary, None)
        reason = f"the gate did not pass ({training['failure_reason']}): excluded from analysis"
        echo(f"{run_dir}: {reason}; `dcsbm analyze --include-failed {run_dir}` analyses it anyway, labelled exploratory")
        return PipelineOutcome(run_dir, result, None, reason)
    # The analysis block of the config given (not the run folder's copy): a changed block is a new analysis beside the old.
    summary = analyze_run(run_dir, analysis=config.analysis, device=options.device, precision=options.precision, echo=echo)
    sampled = _sampled_sensitivity(run_dir, config, options, echo)
    measured = mechanism_run(run_dir, analysis=summary["analysis_name"], device=options.device, echo=echo) if mechanism else None
    if sampled is not None and not mechanism:  # the main report compares with the sampled analysis: draw it again
        write_report(run_dir / ANALYSIS_DIR / summary["analysis_name"])
    return PipelineOutcome(run_dir, result, summary, None, measured, sampled)


def _sampled_sensitivity(run_dir: Path, config: ExperimentConfig, options: RunOptions, echo) -> dict[str, Any] | None:
    """The same analysis with continuations sampled at ``analysis.sensitivity_temperature`` (a second
    estimate on the same model, exploratory; its own folder), when that differs from the main one's."""
    a = config.analysis
    if a.sensitivity_temperature <= 0 or a.sensitivity_temperature == a.temperature:
        return None
    block = a.model_copy(update={"temperature": a.sensitivity_temperature, "events": a.sensitivity_events})
    echo(f"sensitivity: {a.sensitivity_events} events with continuations sampled at temperature {a.sensitivity_temperature:g}")
    return analyze_run(run_dir, analysis=block, device=options.device, precision=options.precision, echo=echo)
