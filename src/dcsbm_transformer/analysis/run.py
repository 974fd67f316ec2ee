"""``dcsbm analyze RESULTS_DIR`` / ``analyze_run(path)``: a trained run's analysis, end to end:
measure (token_metrics.npz, summary.json) → statistics (horizon.json) → figures and report.html,
in ``results/<id>/analysis/<name>/``.

Only runs whose gate passed are analysed (the spec excludes failed configs from SVD analysis);
``include_failed`` analyses one anyway and labels every output exploratory. The analysis block
comes from the run folder's config.json unless another is given (``dcsbm run --config FILE`` gives
FILE's; ``--set analysis.key=value`` changes keys). Each set of settings has its own folder
(``files.default_name``, or the ``name`` given): an analysis already finished with the same
settings is reused, one with other settings goes beside it — nothing is overwritten. Whether the
analysis is the run's registered one (``preregistration.json``) decides whether it may make a
confirmatory claim. Files are written atomically, the summary last, so an interrupted analysis
leaves nothing that claims to be finished.
"""

from __future__ import annotations

import platform
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..api import ExcludedRunWarning, Run, load_run
from ..config import AnalysisConfig, ExperimentConfig
from ..devices import autocast_factory, resolve_device
from ..experiment import git_commit
from ..registration import read_registration, registration_check
from ..storage import remove_stale_temporaries, sha256_file, write_npz
from ..training.lock import RunLock
from .files import (
    CONTEXT_PREFIX,
    TOKEN_METRICS_FILE,
    analysis_root,
    default_name,
    finished_summary,
    read_index,
    record_analysis,
    settings_digest,
    write_spectra,
    write_summary,
)
from .measure.batched import Measurements, measure
from .measure.continuations import RULE_VIOLATED, TARGETS
from .measure.events import draw_analysis_events
from .measure.metrics import METRICS, compute_metrics, spectrum
from .measure.null import measure_null, null_expected, read_null
from .report.page import write_report
from .stats.horizon import horizon_for_run
from .stats.random_matrix import random_matrix_for_run
from .stats.statistics import constant_arrays, lookback_view

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AnalysisRefused(RuntimeError):
    """The run may not be analysed as asked (its gate did not pass)."""


class AnalysisNameError(ValueError):
    """A bad ``--name``: malformed, or taken by an analysis with other settings (a usage error)."""


def metric_versions() -> dict[str, int]:
    """The metric set: every registered metric's name and version (a change re-measures)."""
    return {name: int(getattr(metric, "version", 1)) for name, metric in METRICS.items()}


def analysis_settings(
    analysis: AnalysisConfig, checkpoint: Path, *, precision: str, include_failed: bool, checkpoint_sha256: str | None = None
) -> dict[str, Any]:
    """Everything that changes what an analysis computes: its identity and folder name."""
    block = analysis.model_dump(mode="json")
    block.pop("chunk_mb")  # memory per chunk: changes no value
    return {
        "events": analysis.events,
        "stream": analysis.stream,
        "top_k": analysis.top_k,
        "temperature": analysis.temperature,
        "precision": precision,
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": checkpoint_sha256 or sha256_file(checkpoint),
        "include_failed": include_failed,
        "metrics": metric_versions(),
        "analysis": block,
    }


def analysis_folder_for(run_dir: Path, settings: dict[str, Any], name: str | None) -> tuple[Path, str | None]:
    """The folder an analysis with ``settings`` goes to, and the label to record (or None).

    Without a name: the folder named by the settings. With a name: that folder when it is new or
    holds these settings; an existing analysis with the same settings under another name is reused
    (the name becomes its label). A name that holds other settings is refused: never overwritten."""
    root = analysis_root(run_dir)
    if name is None:
        return root / default_name(settings), None
    if not NAME_PATTERN.match(name) or name == "index.json":
        raise AnalysisNameError(f"--name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    digest = settings_digest(settings)
    for entry in read_index(run_dir):
        if name == entry["name"] or name in entry["labels"]:
            if entry["settings_sha256"] != digest:
                raise AnalysisNameError(
                    f"--name {name!r}: {root / entry['name']} holds an analysis with other settings; it is never "
                    "overwritten: choose another name (or drop --name to get one from the settings)"
                )
            return root / entry["name"], name
    for entry in read_index(run_dir):
        if entry["settings_sha256"] == digest:
            return root / entry["name"], name
    if (root / name).exists():
        raise AnalysisNameError(
            f"--name {name!r}: {root / name} exists and is not a finished analysis of this run; choose another name"
        )
    return root / name, name


def failed_runs_allowed(block: AnalysisConfig, flag: bool = False) -> bool:
    """Whether an analysis with this block (and ``--include-failed`` ``flag``) may analyse a gate-failed
    run: recorded as ``include_failed`` in its settings, so everything that looks an analysis up by its
    settings (the sweep's status, ``dcsbm analyze``) must decide it here, the same way."""
    return flag or block.include_failed


def analyze_run(
    path: str | Path,
    *,
    events: int | None = None,
    analysis: AnalysisConfig | None = None,
    name: str | None = None,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    include_failed: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Analyse the run in ``path`` (results/<experiment_id>); returns the parsed summary.json.

    ``analysis``: the analysis block to use (default: the run folder's own); ``events`` overrides
    its number of events; ``name`` labels the analysis folder; ``overrides`` are the dotted keys the
    caller set, recorded in the index."""
    started = time.perf_counter()
    with warnings.catch_warnings():  # an excluded run is refused or labelled exploratory below
        warnings.simplefilter("ignore", ExcludedRunWarning)
        run = load_run(path)
    training = run.result["training"]
    gate_failed = not training["gate_passed"]
    block = analysis if analysis is not None else run.config.analysis
    include_failed = failed_runs_allowed(block, include_failed)
    if gate_failed and not include_failed:
        raise AnalysisRefused(
            f"{run.directory}: its gate did not pass, so it is excluded from analysis ({training['failure_reason']}); "
            "--include-failed analyses it anyway, labelled exploratory"
        )
    if events is not None:
        block = block.model_copy(update={"events": events})
    config = run.config.model_copy(update={"analysis": block})
    from_run_config = block == run.config.analysis
    settings = analysis_settings(block, run.checkpoint, precision=precision, include_failed=include_failed)
    out_dir, label = analysis_folder_for(run.directory, settings, name)
    if (summary := finished_summary(out_dir, settings)) is not None and _null_present(out_dir, config, summary):
        echo(f"{out_dir}: already measured with these settings, reusing {TOKEN_METRICS_FILE}")
    else:
        summary = _measure_run(run, config, settings, gate_failed, out_dir, device, precision, started, echo)
    check = registration_check(read_registration(run.directory), config, gate_passed=not gate_failed)
    with RunLock(run.directory):
        horizon_for_run(out_dir, config, summary, check=check, echo=echo)
        random_matrix_for_run(out_dir, run.model, seed=config.seed, echo=echo)
        report = write_report(out_dir)
        record_analysis(
            run.directory,
            out_dir.name,
            settings,
            label=label,
            from_run_config=from_run_config,
            overrides=dict(overrides or {}) | ({"analysis.events": events} if events is not None else {}),
        )
    echo(f"report: {report}")
    return summary


def _measure_run(
    run: Run,
    config: ExperimentConfig,
    settings: dict[str, Any],
    exploratory: bool,
    out_dir: Path,
    device: str,
    precision: str,
    started: float,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """Draw the events, continue and measure them, write token_metrics.npz and summary.json."""
    with RunLock(run.directory):
        out_dir.mkdir(parents=True, exist_ok=True)
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
            model,
            run.graph,
            drawn,
            top_k=settings["top_k"],
            chunk_mb=config.analysis.chunk_mb,
            temperature=settings["temperature"],
            seed=config.seed,
            stream=config.analysis.stream,
            autocast=autocast_factory(precision, torch_device),
        )
        null_started = time.perf_counter()
        if null_expected(config, measured.labels.violated):  # the jumper-free null, by the same measurement
            measure_null(
                out_dir,
                config,
                run.graph,
                drawn,
                measured.labels.violated,
                lambda events: measure(
                    model,
                    run.graph,
                    events,
                    top_k=settings["top_k"],
                    chunk_mb=config.analysis.chunk_mb,
                    temperature=settings["temperature"],
                    seed=config.seed,
                    stream=f"{config.analysis.stream}-null",
                    autocast=autocast_factory(precision, torch_device),
                ),
                echo,
            )
        null_seconds = time.perf_counter() - null_started
        write_started = time.perf_counter()
        npz = write_npz(out_dir / TOKEN_METRICS_FILE, token_metric_arrays(drawn, measured))
        write_spectra(out_dir, drawn.r, measured.spectra, measured.context_spectra)
        summary = summary_payload(run, drawn, measured, settings, exploratory, sha256_file(npz))
        summary["analysis_name"] = out_dir.name
        summary["timings"] = {
            "events_seconds": round(events_seconds, 3),
            "measure_seconds": round(measured.seconds["measure_seconds"], 3),
            "null_seconds": round(null_seconds, 3),
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


def _null_present(out_dir: Path, config: ExperimentConfig, summary: dict[str, Any]) -> bool:
    """Whether a finished analysis has the jumper-free null its settings call for (written before
    its summary; a folder without it is measured again)."""
    if config.analysis.null_multiple == 0 or config.analysis.null_max_events == 0 or summary["counts"]["violated"] == 0:
        return True
    return read_null(out_dir, config) is not None


def token_metric_arrays(events, measured: Measurements) -> dict[str, np.ndarray]:
    """The arrays of token_metrics.npz, every per-pass array in lookback order (column j = lookback j)."""
    labels, r = measured.labels, events.r

    def by_lookback(values: np.ndarray, fill) -> np.ndarray:
        return lookback_view(values, r, fill=fill)

    return {
        "event_r": events.r,
        "event_step": events.step,
        "event_vertex": events.vertex,
        "event_target_block": events.target_block,
        "event_jumper": events.jumper,
        "violated": labels.violated,
        "first_bad_edge_pass": labels.first_bad_edge_pass,
        "edge_valid": by_lookback(labels.edge_valid, -1),
        "rule_outcome": by_lookback(labels.rule_outcome, 0),
        "target_block_probability": by_lookback(measured.target_probability, np.nan),
        "tokens": labels.tokens,
        "context_tokens": events.before.astype(np.int32),
        **{key: by_lookback(values, np.nan) for key, values in measured.metrics.items()},
        **{name: by_lookback(values, np.nan) for name, values in measured.behaviour.items()},
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
    """Arrays constant up to rounding over every event and pass (NaN aside): ``statistics.constant_arrays``."""
    return constant_arrays(metrics)


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
        by_rule.append(
            {
                "rule": j,
                "vertex": int(graph.jumper_vertex[j]),
                "target_block": int(graph.jumper_target_block[j]),
                "r": int(graph.jumper_r[j]),
                **_counts(labels.violated[mine], edge_clean[mine]),
            }
        )
    assert (labels.rule_outcome[np.arange(len(events)), events.r - 1] == RULE_VIOLATED)[labels.violated].all()  # pass order here
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
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "git_commit": git_commit(),
        },
    }
