"""``dcsbm analyze RESULTS_DIR`` / ``analyze_run(path)``: a trained run's analysis, end to end:
measure (token_metrics.npz, summary.json) → statistics (horizon.json) → figures and report.html.

Only runs whose gate passed are analysed (the spec excludes failed configs from SVD analysis);
``include_failed`` analyses one anyway and labels every output exploratory. Settings come from
the run's config (its ``analysis`` block) and the call; an analysis already finished with the
same settings is reused, one with other settings is redone. Files are written atomically, the
summary last, so an interrupted analysis leaves nothing that claims to be finished.
"""

from __future__ import annotations

import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..api import ExcludedRunWarning, Run, load_run
from ..devices import autocast_factory, resolve_device
from ..experiment import git_commit
from ..storage import remove_stale_temporaries, sha256_file, write_npz
from ..training.lock import RunLock
from .continuations import RULE_VIOLATED, TARGETS
from .events import draw_analysis_events
from .horizon import horizon_for_run
from .report import write_report
from .files import ANALYSIS_DIR, CONTEXT_PREFIX, TOKEN_METRICS_FILE, finished_summary, write_summary
from .measure import Measurements, measure
from .metrics import METRICS, compute_metrics, spectrum


class AnalysisRefused(RuntimeError):
    """The run may not be analysed as asked (its gate did not pass)."""


def analyze_run(
    path: str | Path,
    *,
    events: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    include_failed: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Analyse the run in ``path`` (results/<experiment_id>); returns the parsed summary.json."""
    started = time.perf_counter()
    with warnings.catch_warnings():  # an excluded run is refused or labelled exploratory below
        warnings.simplefilter("ignore", ExcludedRunWarning)
        run = load_run(path)
    training = run.result["training"]
    exploratory = not training["gate_passed"]
    if exploratory and not include_failed:
        raise AnalysisRefused(
            f"{run.directory}: its gate did not pass, so it is excluded from analysis ({training['failure_reason']}); "
            "--include-failed analyses it anyway, labelled exploratory"
        )
    config = run.config
    settings = {
        "events": events if events is not None else config.analysis.events,
        "stream": config.analysis.stream,
        "top_k": config.analysis.top_k,
        "temperature": config.analysis.temperature,
        "precision": precision,
        "checkpoint": run.checkpoint.name,
        "checkpoint_sha256": sha256_file(run.checkpoint),
        "include_failed": include_failed,
    }
    out_dir = run.directory / ANALYSIS_DIR
    if (summary := finished_summary(out_dir, settings)) is not None:
        echo(f"{out_dir}: already measured with these settings, reusing {TOKEN_METRICS_FILE}")
    else:
        summary = _measure_run(run, settings, exploratory, out_dir, device, precision, started, echo)
    with RunLock(run.directory):
        horizon_for_run(out_dir, config, summary, echo=echo)
        report = write_report(run.directory)
    echo(f"report: {report}")
    return summary


def _measure_run(run: Run, settings: dict[str, Any], exploratory: bool, out_dir: Path, device: str, precision: str,
                 started: float, echo: Callable[[str], None]) -> dict[str, Any]:
    """Draw the events, continue and measure them, write token_metrics.npz and summary.json."""
    config = run.config
    with RunLock(run.directory):
        out_dir.mkdir(exist_ok=True)
        remove_stale_temporaries(out_dir)
        torch_device = resolve_device(device)
        events_started = time.perf_counter()
        drawn = draw_analysis_events(config, run.graph, settings["events"])
        events_seconds = time.perf_counter() - events_started
        model = run.model.to(torch_device).eval()
        echo(
            f"analysing {run.directory.name}: {len(drawn)} events ({len(drawn) // run.graph.n_jumpers} per rule), "
            f"{int(drawn.r.max())} passes each, on {torch_device}" + (" — EXPLORATORY: the gate did not pass" if exploratory else "")
        )
        measured = measure(
            model, run.graph, drawn, top_k=settings["top_k"], chunk_mb=config.analysis.chunk_mb,
            temperature=settings["temperature"], seed=config.seed, stream=config.analysis.stream,
            autocast=autocast_factory(precision, torch_device),
        )
        write_started = time.perf_counter()
        npz = write_npz(out_dir / TOKEN_METRICS_FILE, token_metric_arrays(drawn, measured))
        summary = summary_payload(run, drawn, measured, settings, exploratory, sha256_file(npz))
        summary["timings"] = {
            "events_seconds": round(events_seconds, 3),
            "measure_seconds": round(measured.seconds["measure_seconds"], 3),
            "write_seconds": round(time.perf_counter() - write_started, 3),
            "total_seconds": round(time.perf_counter() - started, 3),
        }
        write_summary(out_dir, summary)
    counts = summary["counts"]
    echo(
        f"{out_dir}: {counts['events']} events, {counts['violated']} violated, {counts['followed']} followed "
        f"({counts['edge_clean']} with every generated edge valid); {summary['arrays']} metric arrays "
        f"in {summary['timings']['total_seconds']:.1f}s"
    )
    return summary


def token_metric_arrays(events, measured: Measurements) -> dict[str, np.ndarray]:
    labels = measured.labels
    return {
        "event_r": events.r,
        "event_step": events.step,
        "event_vertex": events.vertex,
        "event_target_block": events.target_block,
        "event_jumper": events.jumper,
        "violated": labels.violated,
        "first_bad_edge_pass": labels.first_bad_edge_pass,
        "edge_valid": labels.edge_valid,
        "rule_outcome": labels.rule_outcome,
        "target_block_probability": measured.target_probability,
        "tokens": labels.tokens,
        "context_tokens": events.before.astype(np.int32),
        **measured.metrics,
        **{f"{CONTEXT_PREFIX}{key}": values for key, values in measured.context.items()},
    }


def _counts(violated: np.ndarray, edge_clean: np.ndarray) -> dict[str, int]:
    return {
        "events": int(len(violated)),
        "violated": int(violated.sum()),
        "followed": int((~violated).sum()),
        "edge_clean": int(edge_clean.sum()),
        "edge_clean_violated": int((edge_clean & violated).sum()),
    }


def constant_metrics(metrics: dict[str, np.ndarray]) -> list[str]:
    """Arrays that hold one value, or none, over every event and pass (NaN aside)."""
    constant = []
    for key, values in metrics.items():
        finite = values[np.isfinite(values)]
        if finite.size == 0 or finite.min() == finite.max():
            constant.append(key)
    return constant


def ov_circuit_spectra(model) -> dict[str, dict[str, float | None]]:
    """Spectral metrics of W_v·W_o of every layer and head (a static reference, not a predictor)."""
    circuits = model.ov_circuits().float()  # [L, H, d_model, d_model]
    values = compute_metrics(spectrum(circuits, top_k=1), None, shifted=False)
    spectral = [name for name, metric in METRICS.items() if metric.kind == "spectral"]
    table = {}
    for layer in range(circuits.shape[0]):
        for head in range(circuits.shape[1]):
            row = {}
            for name in spectral:
                value = float(values[name][0][layer, head])
                row[name] = value if np.isfinite(value) else None
            table[f"layer_{layer}.head_{head}"] = row
    return table


def summary_payload(run: Run, events, measured: Measurements, settings, exploratory: bool, npz_sha256: str) -> dict[str, Any]:
    labels, graph = measured.labels, run.graph
    edge_clean = labels.first_bad_edge_pass == 0
    by_r = {str(r): _counts(labels.violated[events.r == r], edge_clean[events.r == r]) for r in np.unique(events.r).tolist()}
    by_rule = []
    for j in range(graph.n_jumpers):
        mine = events.jumper == j
        by_rule.append({
            "rule": j, "vertex": int(graph.jumper_vertex[j]), "target_block": int(graph.jumper_target_block[j]),
            "r": int(graph.jumper_r[j]), **_counts(labels.violated[mine], edge_clean[mine]),
        })
    assert (labels.rule_outcome[np.arange(len(events)), events.r - 1] == RULE_VIOLATED)[labels.violated].all()
    return {
        "experiment_id": run.config.experiment_id,
        "exploratory": exploratory,
        "exploratory_reason": run.result["training"]["failure_reason"] if exploratory else None,
        "continuations": "greedy (argmax)" if settings["temperature"] == 0 else f"sampled at temperature {settings['temperature']}",
        "settings": settings,
        "counts": _counts(labels.violated, edge_clean),
        "counts_by_r": by_r,
        "counts_by_rule": by_rule,
        "walks_drawn": events.walks_drawn,
        "targets": list(TARGETS),
        "metrics": list(METRICS),
        "layers": run.model.n_layers,
        "heads": run.model.n_heads,
        "passes": int(events.r.max()),
        "arrays": len(measured.metrics),
        "guard_hits": measured.guard_hits,
        "constant_metrics": constant_metrics(measured.metrics),
        "ov_circuits": ov_circuit_spectra(run.model),
        "token_metrics_sha256": npz_sha256,
        "timings": {},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "git_commit": git_commit()},
    }
