"""``dcsbm mechanism RESULTS_DIR`` / ``mechanism_run(path)``: the interventions on one analysis's events,
written to ``results/<id>/analysis/<name>/mechanism.json`` and the analysis's report.

The events are the analysis's own (the prompts in its ``token_metrics.npz``: ``tokens[:, :w]``,
with ``event_jumper`` and ``event_r``), all of them or ``events`` of them (the first of each rule, in
file order, the same number per rule). Only a run whose gate passed is measured, unless
``include_failed`` (then every output says exploratory). The same settings (checkpoint, analysis,
events, layers) reuse a finished mechanism.json. After writing it the report is rewritten
(``analysis.report.write_report``), which then carries the mechanism section.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.files import (
    HORIZON_FILE,
    SUMMARY_FILE,
    TOKEN_METRICS_FILE,
    analysis_root,
    find_analysis,
    read_horizon,
    settings_digest,
)
from ..analysis.report.page import write_report
from ..api import ExcludedRunWarning, load_run
from ..devices import resolve_device
from ..experiment import git_commit
from ..storage import remove_stale_temporaries, sha256_file
from ..training.lock import RunLock
from .files import read_mechanism, write_mechanism
from .measure import MechanismEvents, measure_mechanism
from .perturbation import MAX_WINDOWS, measure_perturbation
from .report import findings

CONTINUATIONS = "greedy (argmax), as the gate; the window slides one token per pass"
MEAN_REFERENCE = "each head's mean value vector over every position of the measured events' prompt windows (intact model)"
PATCH_RULE = (
    "the prompt's last token (the jumper) replaced by a jumper with another target block: of the same block "
    "where the graph has one, else of another block; candidates taken in turn (event i: candidate i mod count)"
)
DESCRIPTIONS = {
    "intact": "the model as trained",
    "knockout": "attention from every position after the jumper to the jumper set to 0 (score -inf before the softmax, renormalised)",
    "mean_ablation": "what positions after the jumper read from it replaced by the head's mean value (attention weights unchanged)",
    "patch": "the jumper token in the prompt replaced by another jumper with another target (intact model)",
}


class MechanismRequestError(ValueError):
    """A request that cannot be measured as asked (no analysis, a layer that does not exist, a run
    whose gate did not pass without include_failed, too many events): a usage error, nothing written."""


def _analysis_folder(run_dir: Path, name: str | None) -> Path:
    try:
        folder = analysis_root(run_dir) / find_analysis(run_dir, name)
    except FileNotFoundError as error:
        raise MechanismRequestError(
            f"{error}; the mechanism measures an analysis's events: run `dcsbm analyze {run_dir}` first"
        ) from None
    if not (folder / SUMMARY_FILE).is_file() or not (folder / TOKEN_METRICS_FILE).is_file() or read_horizon(folder) is None:
        # the report the mechanism section goes into needs all three: checked before anything is measured or written
        raise MechanismRequestError(
            f"{folder}: not a finished analysis (no {SUMMARY_FILE}, {TOKEN_METRICS_FILE} or valid "
            f"{HORIZON_FILE}); run `dcsbm analyze {run_dir}` again"
        )
    return folder


def _events(folder: Path, count: int | None, n_jumpers: int, w: int) -> MechanismEvents:
    """The analysis's events (all, or the first ``count`` split evenly over the rules)."""
    with np.load(folder / TOKEN_METRICS_FILE, allow_pickle=False) as arrays:
        tokens, jumper, r = arrays["tokens"], arrays["event_jumper"].astype(np.int64), arrays["event_r"].astype(np.int64)
    if count is not None:
        if count > len(jumper):
            raise MechanismRequestError(
                f"--events {count}: the analysis {folder.name} has only {len(jumper)} events; "
                f"pass at most {len(jumper)} (or analyse with more: dcsbm analyze --events {count})"
            )
        quota = -(-count // n_jumpers)
        rank = np.empty(len(jumper), dtype=np.int64)  # each event's index among its rule's events, in file order
        order = np.argsort(jumper, kind="stable")
        starts = np.searchsorted(jumper[order], np.arange(n_jumpers))
        rank[order] = np.arange(len(jumper)) - starts[jumper[order]]
        keep = rank < quota
        tokens, jumper, r = tokens[keep], jumper[keep], r[keep]
    return MechanismEvents(prompts=tokens[:, :w].astype(np.int64), jumper=jumper, r=r)


def mechanism_run(
    path: str | Path,
    *,
    events: int | None = None,
    layers: list[int] | None = None,
    include_failed: bool = False,
    analysis: str | None = None,
    device: str = "auto",
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure the interventions on the analysis ``analysis`` (default: the run's default analysis)
    of the run in ``path``; returns the parsed mechanism.json. Raises MechanismRequestError for a
    request that cannot be measured (nothing is written then)."""
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExcludedRunWarning)
        run = load_run(path)
    training = run.result["training"]
    if not training["gate_passed"] and not include_failed:
        raise MechanismRequestError(
            f"{run.directory}: its gate did not pass ({training['failure_reason']}), so its model does not provably know the "
            "rules; --include-failed measures it anyway, labelled exploratory"
        )
    n_layers = run.model.n_layers
    layers = list(range(n_layers)) if not layers else sorted(set(layers))
    if bad := [layer for layer in layers if not 0 <= layer < n_layers]:
        raise MechanismRequestError(f"--layers {' '.join(map(str, bad))}: the model has {n_layers} layer(s), 0..{n_layers - 1}")
    if events is not None and events < run.graph.n_jumpers:
        raise MechanismRequestError(f"--events must be at least the number of rules ({run.graph.n_jumpers}), got {events}")
    folder = _analysis_folder(run.directory, analysis)
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    checkpoint_sha = sha256_file(run.checkpoint)
    if summary["settings"]["checkpoint_sha256"] != checkpoint_sha:
        raise MechanismRequestError(
            f"{folder}: analysed from another checkpoint than the run's {run.checkpoint.name}; "
            f"run `dcsbm analyze {run.directory}` again first"
        )
    measured_events = _events(folder, events, run.graph.n_jumpers, run.config.model.context_window)
    settings = {
        "events": len(measured_events),
        "layers": layers,
        "include_failed": include_failed,
        "checkpoint": run.checkpoint.name,
        "checkpoint_sha256": checkpoint_sha,
        "analysis_name": folder.name,
        "analysis_settings_sha256": settings_digest(summary["settings"]),
        "continuations": CONTINUATIONS,
        "mean_reference": MEAN_REFERENCE,
        "patch_rule": PATCH_RULE,
        "perturbation_windows": len(_perturbation_windows(len(measured_events))),
    }
    existing = read_mechanism(folder)
    if existing is not None and existing["settings"] == settings:
        echo(f"{folder}/mechanism.json: already measured with these settings, reusing it")
        return existing
    torch_device = resolve_device(device)
    echo(f"mechanism of {run.directory.name} ({folder.name}): {len(measured_events)} events, layers {layers}, on {torch_device}")
    payload = _measure(run, measured_events, layers, settings, torch_device, echo)
    with RunLock(run.directory):
        remove_stale_temporaries(folder)
        write_mechanism(folder, payload)
        report_started = time.perf_counter()
        report = write_report(folder)
    payload["timings"]["report_seconds"] = round(time.perf_counter() - report_started, 3)
    payload["timings"]["total_seconds"] = round(time.perf_counter() - started, 3)
    with RunLock(run.directory):
        write_mechanism(folder, payload)  # the same numbers, with the report's time
    for line in payload["findings"]:
        echo(f"  {line}")
    echo(f"mechanism: {folder / 'mechanism.json'}; report: {report}")
    written = read_mechanism(folder)
    assert written is not None, "write_mechanism has just written it"
    return written


def _perturbation_windows(count: int) -> np.ndarray:
    """Which of the measured events' prompt windows the perturbation-bound test uses: at most
    ``MAX_WINDOWS``, evenly spaced in file order."""
    return np.unique(np.linspace(0, count - 1, min(count, MAX_WINDOWS)).round().astype(np.int64))


def _rules(run, events: MechanismEvents) -> list[dict[str, Any]]:
    graph, by_rule = run.graph, {rule["rule"]: rule for rule in run.result.get("rules", [])}
    counts = np.bincount(events.jumper, minlength=graph.n_jumpers)
    return [
        {
            "rule": j,
            "vertex": int(graph.jumper_vertex[j]),
            "block": int(graph.block[graph.jumper_vertex[j]]),
            "target_block": int(graph.jumper_target_block[j]),
            "r": int(graph.jumper_r[j]),
            "events": int(counts[j]),
            "chance_sampling": by_rule.get(j, {}).get("chance_bigram_sampling"),
            "chance_argmax": by_rule.get(j, {}).get("chance_bigram_argmax"),
        }
        for j in range(graph.n_jumpers)
    ]


def _measure(
    run, events: MechanismEvents, layers: list[int], settings: dict[str, Any], device: torch.device, echo: Callable[[str], None]
) -> dict[str, Any]:
    rules = _rules(run, events)
    measured = measure_mechanism(
        run.model,
        run.graph,
        events,
        layers,
        chance_sampling=[rule["chance_sampling"] for rule in rules],
        min_events=run.config.analysis.min_events,
        device=device,
        echo=echo,
    )
    for row in measured.conditions:
        row["description"] = DESCRIPTIONS[row["kind"]]
    started = time.perf_counter()
    windows = torch.as_tensor(events.prompts[_perturbation_windows(len(events))], device=device)
    perturbation = measure_perturbation(run.model.to(device), windows, layers, seed=run.config.seed)
    measured.seconds["perturbation_seconds"] = round(time.perf_counter() - started, 3)
    exploratory = not run.result["training"]["gate_passed"]
    payload = {
        "experiment_id": run.config.experiment_id,
        "analysis_name": settings["analysis_name"],
        "exploratory": exploratory,
        "exploratory_reason": run.result["training"]["failure_reason"] if exploratory else None,
        "settings": settings,
        "rules": rules,
        "conditions": measured.conditions,
        "patch": measured.patch,
        "attention": measured.attention,
        "perturbation": perturbation,
        "timings": {f"{k}_seconds" if not k.endswith("seconds") else k: v for k, v in measured.seconds.items()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "git_commit": git_commit(),
        },
    }
    payload["findings"] = findings(payload)
    return payload
