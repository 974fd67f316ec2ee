"""``dcsbm calibrate``: what one run of a config costs on this machine, measured before a sweep
spends money on it.

Four things are timed on the present device, training and analysis separately (the research
plan asks for the two to be profiled apart: they scale differently and run on different
budgets):

* **data**: building (or reading from the cache) the graph and the walks, once per run;
* **training**: optimiser steps of the real loop (``Trainer.train_step`` on the epoch's shuffled
  windows, the run's own model and optimiser). The first ``warmup_steps`` are not timed
  (allocator, kernel selection, caches); the next steps are timed one by one until
  ``target_seconds`` have passed or the epoch is done. Seconds per epoch = steps per epoch ×
  mean seconds per timed step + the epoch's window shuffle. A partial epoch is *extrapolated*,
  and the file says so (``epoch_method``) with the number of steps timed;
* **gate**: one real gate evaluation (``GateEvaluator.evaluate``: greedy generation from every
  prompt, then scoring) on the model after those steps — the cost of generation does not depend
  on what the model has learned (jumper_prefix prompts generate exactly r tokens). With
  ``gate_sequences`` below the config's ``gate.eval_sequences`` a subset is timed and scaled
  linearly, labelled;
* **analysis**: ``measure`` (continuations, SVD targets, every metric at every pass) of a small
  batch of analysis events drawn as the analysis draws them (default: one chunk of events, at
  most 512), in seconds per event. Statistics, figures, report and mechanism are per-run costs
  not included here (tens of seconds on a CPU: BENCHMARKS.md).

Peak memory of each phase: the process's resident-set high-water mark (``VmHWM``, reset between
phases through ``/proc/self/clear_refs``; where that cannot be reset the figure is the process's
peak so far, labelled) and, on CUDA, ``torch.cuda.max_memory_allocated``.

GPU-free figures for projecting to a GPU that is not here (``project``): the FLOPs of one
training step and of one gate evaluation (torch's ``FlopCounterMode``: matrix multiplies and
attention), and the host's cost of issuing one training step and one forward pass of a model
of the same depth at tiny shapes (where the arithmetic is nil: what an eager GPU step costs
when launches dominate; BENCHMARKS.md 2026-11-27, third session). A projected calibration is
labelled ``"method": "projected"`` and every line that uses it says "estimate".

The file (schema ``CALIBRATION_SCHEMA``) names the config (its experiment id and the keys that
set the cost, ``COST_KEYS``), so a sweep refuses a calibration of another shape.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

CALIBRATION_SCHEMA = "dcsbm-calibration/1"

# The config keys that set the cost of an epoch, of a gate evaluation and of an analysed event.
# Not among them: the seed and graph.jump_scales (r: the gate's and the analysis's cost scale with
# it, and the estimate scales them: sweep/budget.py), thresholds, lr and the like, max_epochs and
# analysis.events (counts the estimate multiplies by).
COST_KEYS = (
    "graph.n",
    "graph.K",
    "walks.walk_length",
    "walks.train_walks",
    "model.context_window",
    "model.d_model",
    "model.n_layers",
    "model.n_heads",
    "training.batch_size",
    "training.window_stride",
    "gate.eval_sequences",
    "gate.prompt",
    "analysis.top_k",
    "analysis.chunk_mb",
)

# Public peak figures of GPUs a sweep may be projected onto (dense, no sparsity; fp32 is the
# non-tensor-core rate, bf16 the tensor-core rate with fp32 accumulation). Source: NVIDIA's Ada
# Lovelace (RTX 4090) and Ampere GA102 (RTX 3090) architecture whitepapers.
GPUS: dict[str, dict[str, Any]] = {
    "rtx4090": {"name": "NVIDIA GeForce RTX 4090", "fp32_tflops": 82.6, "bf16_tflops": 165.2, "memory_gb": 24},
    "rtx3090": {"name": "NVIDIA GeForce RTX 3090", "fp32_tflops": 35.6, "bf16_tflops": 71.0, "memory_gb": 24},
}
# The share of the peak a projected GEMM is assumed to reach: an assumption, named in the file.
ASSUMED_UTILISATION = 0.4


class CalibrationError(ValueError):
    """A calibration file that cannot be used (missing, of another schema or config): a usage error."""


# ---- memory -----------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Reset this process's resident-set high-water mark (Linux: ``5`` into clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Phase:
    """Peak memory of one phase: RSS high-water mark and, on CUDA, the allocator's peak."""

    def __init__(self, device) -> None:
        import torch

        self.device, self.torch = device, torch
        self.reset = _reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def memory(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "peak_rss_scope": "this phase" if self.reset else "the process so far (the peak could not be reset)",
        }
        if self.device.type == "cuda":
            out["peak_device_mb"] = round(self.torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        return out


# ---- what and where ---------------------------------------------------------------------------


def cost_shape(config) -> dict[str, Any]:
    """The values of ``COST_KEYS`` in ``config`` (dotted key → value)."""
    raw = config.to_dict()
    shape = {}
    for key in COST_KEYS:
        value: Any = raw
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        shape[key] = value
    return shape


def machine(device) -> dict[str, Any]:
    """Where it was measured: device name, CPU, cores, threads, host, versions, date."""
    import numpy
    import torch

    from .devices import cpu_name

    try:
        ours = version("dcsbm-transformer")
    except PackageNotFoundError:
        ours = "unknown (not installed)"
    info: dict[str, Any] = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "cuda": torch.version.cuda,
            "dcsbm_transformer": ours,
        },
    }
    return info


# ---- measuring --------------------------------------------------------------------------------


def _flops(fn: Callable[[], Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def _host_overhead(config, device, repeat: int = 30) -> dict[str, float]:
    """Median seconds of one training step and one forward pass of a model of the config's depth
    and heads at tiny shapes (d_model 8, w 4, batch 1, vocabulary 8): the framework's own cost per
    step, which an eager GPU step cannot go below."""
    import torch

    from .config import config_from_dict
    from .devices import synchronize
    from .experiment import build_model
    from .training.trainer import build_optimizer

    raw = config.to_dict()
    raw["graph"].update(n=8, K=2, jumpers_per_block=1)
    raw["model"].update(context_window=4, d_model=8 * config.model.n_heads)
    raw["walks"].update(walk_length=16, train_walks=800, eval_walks=100)
    raw["graph"]["jump_scales"] = [0.5]
    tiny = config_from_dict(raw)
    model = build_model(tiny, device)
    optimizer = build_optimizer(model, 1e-3, 0.0)
    parameters = list(model.parameters())
    tokens = torch.zeros((1, 5), dtype=torch.long, device=device)

    def step() -> None:
        logits = model(tokens[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()

    def forward() -> None:
        with torch.no_grad():
            model(tokens[:, :-1])

    out = {}
    for name, fn in (("train_step_seconds", step), ("forward_seconds", forward)):
        times = []
        for i in range(repeat + 5):
            synchronize()
            started = time.perf_counter()
            fn()
            synchronize()
            if i >= 5:
                times.append(time.perf_counter() - started)
        out[name] = statistics.median(times)
    return out


def calibrate(
    config,
    *,
    device: str = "auto",
    precision: str = "fp32",
    cache_root: Path | None = None,
    warmup_steps: int = 3,
    target_seconds: float = 30.0,
    max_steps: int | None = None,
    gate_sequences: int | None = None,
    analysis_events: int | None = None,
    source: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure one run's costs of ``config`` on ``device`` (see the module docstring); returns the
    calibration document (not written: ``write_calibration``)."""
    import torch

    from .analysis.measure.batched import events_per_chunk, measure
    from .analysis.measure.events import draw_analysis_events
    from .config import config_from_dict
    from .data.dataset import MANIFEST, cache_directory, load_or_build_data
    from .devices import autocast_factory, resolve_device, synchronize
    from .experiment import build_model
    from .training.evaluation import GateEvaluator
    from .training.trainer import Trainer
    from .training.windows import epoch_windows, gather_windows

    torch_device = resolve_device(device)
    autocast = autocast_factory(precision, torch_device)
    where = machine(torch_device)
    echo(f"calibrating {config.experiment_id} on {where['device_name']} ({torch.get_num_threads()} thread(s), {precision})")

    # data
    phase = _Phase(torch_device)
    cached = (cache_directory(config, cache_root) / MANIFEST).exists()
    started = time.perf_counter()
    data = load_or_build_data(config, cache_root)
    data_seconds = time.perf_counter() - started
    data_memory = phase.memory()
    echo(f"data: {data_seconds:.1f} s ({'read from the cache' if cached else 'built'})")

    # training
    phase = _Phase(torch_device)
    model = build_model(config, torch_device)
    walks = torch.from_numpy(data.train.walks).to(torch_device)
    trainer = Trainer(config, model, walks, evaluator=None, checkpoint_dir=Path("/nonexistent"), autocast=autocast)
    per_epoch = trainer.steps_per_epoch
    w, batch = config.model.context_window, config.training.batch_size
    started = time.perf_counter()
    walk_index, start = epoch_windows(len(walks), walks.shape[1], w, config.seed, 1, trainer.stride)
    walk_index, start = walk_index.to(torch_device), start.to(torch_device)
    shuffle_seconds = time.perf_counter() - started
    model.train()
    warm = min(warmup_steps, per_epoch - 1)
    limit = min(per_epoch, warm + max_steps) if max_steps else per_epoch
    step_seconds: list[float] = []
    warmup_seconds = 0.0
    clock = time.perf_counter()
    for i in range(limit):
        tokens = gather_windows(walks, walk_index[i * batch : (i + 1) * batch], start[i * batch : (i + 1) * batch], w + 1)
        synchronize()
        begun = time.perf_counter()
        trainer.train_step(tokens)
        synchronize()
        elapsed = time.perf_counter() - begun
        if i < warm:
            warmup_seconds += elapsed
        else:
            step_seconds.append(elapsed)
        if i >= warm and time.perf_counter() - clock >= target_seconds and max_steps is None:
            break
    timed = len(step_seconds)
    mean_step = sum(step_seconds) / timed
    epoch_seconds = mean_step * per_epoch + shuffle_seconds
    whole = warm + timed == per_epoch
    method = "measured: a whole epoch" if whole else f"extrapolated: {timed} of {per_epoch} steps timed after {warm} warm-up steps"
    training_memory = phase.memory()
    echo(f"training: {1000 * mean_step:.1f} ms/step, {per_epoch} steps/epoch -> {epoch_seconds:.1f} s/epoch ({method})")
    step_flops = _flops(
        lambda: trainer.loss(gather_windows(walks, walk_index[:batch], start[:batch], w + 1)).backward()
    )  # forward + backward of one step (the optimiser's elementwise work is not counted)
    trainer.optimizer.zero_grad(set_to_none=True)

    # gate
    phase = _Phase(torch_device)
    full = config.gate.eval_sequences
    sequences = min(gate_sequences or full, full)
    gate_config = config
    if sequences < full:
        raw = config.to_dict()
        raw["gate"]["eval_sequences"] = sequences
        gate_config = config_from_dict(raw)
    evaluator = GateEvaluator(gate_config, data.graph, data.eval)
    evaluation = evaluator.evaluate(model, autocast())
    gate_scale = full / sequences
    gate_seconds = evaluation.seconds * gate_scale
    gate_method = (
        "measured: every gate sequence" if sequences == full else f"scaled: {sequences} of {full} sequences timed, × {gate_scale:.3g}"
    )
    small = GateEvaluator(
        config_from_dict({**config.to_dict(), "gate": {**config.to_dict()["gate"], "eval_sequences": min(full, 50)}}),
        data.graph,
        data.eval,
    )
    gate_flops = _flops(lambda: small.evaluate(model, autocast())) * full / small.sequence_count
    gate_memory = phase.memory()
    echo(f"gate: {gate_seconds:.1f} s ({gate_method})")

    # analysis
    phase = _Phase(torch_device)
    model.eval()
    chunk = events_per_chunk(model, config.analysis.chunk_mb)
    count = analysis_events or min(chunk, 512, config.analysis.events)
    events = draw_analysis_events(config, data.graph, count)
    started = time.perf_counter()
    measured = measure(model, data.graph, events, top_k=config.analysis.top_k, chunk_mb=config.analysis.chunk_mb, autocast=autocast)
    analysis_seconds = time.perf_counter() - started
    passes = int(events.r.max())
    analysis_memory = phase.memory()
    per_event = analysis_seconds / len(events)
    echo(f"analysis: {len(events)} events x {passes} passes in {analysis_seconds:.1f} s -> {1000 * per_event:.1f} ms/event")
    del measured

    host = _host_overhead(config, torch_device)
    r_values = sorted({int(r) for r in events.r})
    return {
        "schema": CALIBRATION_SCHEMA,
        "method": "measured",
        "config_source": source,
        "experiment_id": config.experiment_id,
        "cost_shape": cost_shape(config),
        "r": r_values,
        "precision": precision,
        "machine": where,
        "data": {
            "seconds": round(data_seconds, 3),
            "method": "read from the cache (a run that builds its data takes longer)" if cached else "measured: built",
            "memory": data_memory,
        },
        "training": {
            "steps_per_epoch": per_epoch,
            "warmup_steps": warm,
            "warmup_seconds": round(warmup_seconds, 4),
            "steps_timed": timed,
            "seconds_per_step": mean_step,
            "median_seconds_per_step": statistics.median(step_seconds),
            "window_shuffle_seconds": round(shuffle_seconds, 4),
            "epoch_seconds": round(epoch_seconds, 3),
            "epoch_method": method,
            "flops_per_step": step_flops,
            "memory": training_memory,
        },
        "gate": {
            "seconds": round(gate_seconds, 3),
            "method": gate_method,
            "sequences": full,
            "generated_steps": int(evaluator.steps),
            "flops": gate_flops,
            "memory": gate_memory,
        },
        "analysis": {
            "events_timed": len(events),
            "passes": passes,
            "seconds": round(analysis_seconds, 3),
            "seconds_per_event": per_event,
            "events_per_run": config.analysis.events,
            "not_included": "statistics, figures, report and mechanism (per-run costs)",
            "memory": analysis_memory,
        },
        "host_overhead": host,
    }


# ---- projection onto a GPU that is not here ---------------------------------------------------


def project(
    calibration: dict[str, Any],
    gpu: str,
    utilisation: float = ASSUMED_UTILISATION,
    *,
    host_step_seconds: float | None = None,
    analysis_seconds_per_event: float | None = None,
) -> dict[str, Any]:
    """An *estimate* of ``calibration``'s costs on ``gpu`` (a key of ``GPUS``) from the GPU-free
    figures a measured calibration holds:

    * training step = host overhead of a step + FLOPs per step / (peak × utilisation)
      (the peak of the calibration's precision: fp32 non-tensor or bf16 tensor);
    * gate = generated steps × host overhead of a forward + gate FLOPs / (peak × utilisation);
    * analysis: the measured seconds per event, unchanged (the batched SVD of many small matrices
      has no GPU-free figure; a GPU's analysis is not projected, so the CPU's is the bound used);
    * data: unchanged (built on the host's CPU either way).

    The host overheads were measured on the calibrating machine's CPU, not the rented machine's;
    ``host_step_seconds`` replaces the step's (e.g. a figure measured on an idle machine, with
    the GPU configuration's fused attention: BENCHMARKS.md), ``analysis_seconds_per_event`` the
    analysis's (e.g. an idle machine's figure). Each replacement is named in the file."""
    if calibration.get("method") != "measured":
        raise CalibrationError("only a measured calibration can be projected (this one is already a projection)")
    if gpu not in GPUS:
        raise CalibrationError(f"unknown GPU {gpu!r} (known: {', '.join(GPUS)})")
    spec = GPUS[gpu]
    peak = spec["bf16_tflops" if calibration["precision"] == "bf16" else "fp32_tflops"] * 1e12 * utilisation
    training, gate, host = calibration["training"], calibration["gate"], calibration["host_overhead"]
    host_step = host["train_step_seconds"] if host_step_seconds is None else host_step_seconds
    step = host_step + training["flops_per_step"] / peak
    gate_seconds = gate["generated_steps"] * host["forward_seconds"] + gate["flops"] / peak
    projected = json.loads(json.dumps(calibration))
    projected.update(
        method="projected",
        projected_from={
            "device_name": calibration["machine"]["device_name"],
            "date": calibration["machine"]["date"],
            "gpu": spec,
            "assumed_utilisation": utilisation,
            "host_step_seconds": host_step,
            "host_step_source": "measured by this calibration" if host_step_seconds is None else "given (--host-step-ms)",
            "analysis_source": "measured by this calibration"
            if analysis_seconds_per_event is None
            else "given (--analysis-ms-per-event)",
            "model": "step = host step overhead + FLOPs/(peak x utilisation); gate = steps x host forward overhead + "
            "FLOPs/(peak x utilisation); analysis and data as measured on the calibrating machine",
        },
    )
    projected["machine"] = {**calibration["machine"], "device": "cuda", "device_name": f"{spec['name']} (projected, not measured)"}
    projected["training"].update(
        seconds_per_step=step,
        median_seconds_per_step=step,
        epoch_seconds=round(step * training["steps_per_epoch"] + training["window_shuffle_seconds"], 3),
        epoch_method=f"projected onto {spec['name']}",
        memory=None,
    )
    projected["gate"].update(seconds=round(gate_seconds, 3), method=f"projected onto {spec['name']}", memory=None)
    projected["analysis"]["method"] = "as measured on the calibrating machine (not projected)"
    if analysis_seconds_per_event is not None:
        projected["analysis"].update(
            seconds_per_event=analysis_seconds_per_event, method="given (--analysis-ms-per-event), not projected"
        )
    return projected


# ---- the file ---------------------------------------------------------------------------------


def write_calibration(document: dict[str, Any], path: Path) -> None:
    from .storage import atomic_write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, document)


REQUIRED = {
    "training": ("steps_per_epoch", "epoch_seconds", "epoch_method"),
    "gate": ("seconds", "method"),
    "analysis": ("seconds_per_event", "passes"),
    "data": ("seconds",),
}


def read_calibration(path: str | Path) -> dict[str, Any]:
    """A calibration file, checked: its schema and the sections an estimate needs. Raises
    CalibrationError naming the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"--calibration {path}: no such file (write one with `dcsbm calibrate CONFIG --out {path}`)")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CalibrationError(f"--calibration {path}: not a JSON file ({error})") from None
    if not isinstance(document, dict) or document.get("schema") != CALIBRATION_SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise CalibrationError(
            f"--calibration {path}: schema {found!r}, expected {CALIBRATION_SCHEMA!r} (rewrite it with `dcsbm calibrate`)"
        )
    missing = [
        f"{section}.{key}"
        for section, keys in REQUIRED.items()
        for key in keys
        if not isinstance(document.get(section), dict) or key not in document[section]
    ]
    if missing or not isinstance(document.get("cost_shape"), dict) or document.get("method") not in ("measured", "projected"):
        raise CalibrationError(f"--calibration {path}: incomplete calibration (missing {', '.join(missing) or 'cost_shape/method'})")
    return document


def describe(document: dict[str, Any]) -> str:
    """One line naming a calibration: device, method, date."""
    where = document["machine"]
    label = "ESTIMATE (projected, not measured)" if document["method"] == "projected" else "measured"
    return f"{where['device_name']}, {where.get('torch_threads', '?')} thread(s), {document['precision']}, {label}, {where['date']}"


def _summary(document: dict[str, Any]) -> str:
    t, g, a = document["training"], document["gate"], document["analysis"]
    return (
        f"epoch {t['epoch_seconds']:.1f} s ({t['epoch_method']}); gate {g['seconds']:.1f} s; "
        f"analysis {1000 * a['seconds_per_event']:.1f} ms/event at {a['passes']} passes"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `dcsbm calibrate`")
