"""Analysis speed: the whole measurement (continuations + SVD targets + every metric at every
pass) against the raw batched-SVD rate of the same matrices and against a plain implementation.

Two workloads:
- ``quick``: the quick preset trained to its gate (in a temp folder), then ``analyze_run`` with
  the config's event count — the figure a user of ``make run`` meets;
- ``anchor``: an anchor-shaped model (w = 64, d = 128, 4 layers; untrained — the cost does not
  depend on the weights) on the anchor graph, 2,000 events of r = 58, through ``measure``.

Matrices counted are QKᵀ and AVWₒ of every layer and head at every generated pass and at the two
context windows before the jumper (the context-only baseline). ``analysis_s`` is the whole
``analyze_run`` (measure, statistics with 10,000 permutations, figures, report).
Beside each, in the same process: ``raw_svd``, the rate of the batched ``spectrum`` and
``compute_metrics`` calls alone on one pass's QKᵀ and AVWₒ matrices of one chunk of events (the
batch the pipeline feeds them; the ceiling it can approach), and
``plain``: on a subset of events, one full forward per event per pass and an SVD plus metrics
per matrix (a loop over matrices, as a straightforward implementation would do).
``vs_raw`` = pipeline matrices/s ÷ raw matrices/s; ``vs_plain`` = plain ms per matrix ÷ ours.
The anchor workload also reports the process's peak RSS (run it alone: ``--part anchor``).

Run: python -m bench.analysis [--part quick|anchor|all] [--config configs/quick.json]
     [--anchor-config configs/anchor.json] [--anchor-events 2000] [--plain-events 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import print_table, record
from dcsbm_transformer.analysis.files import read_horizon
from dcsbm_transformer.analysis.measure.batched import CONTEXT_WINDOWS, TARGET_POSITIONS, TARGET_SIDE, events_per_chunk, measure
from dcsbm_transformer.analysis.measure.events import draw_analysis_events
from dcsbm_transformer.analysis.measure.metrics import TRAJECTORY_K, TRAJECTORY_WINDOW, MetricContext, compute_metrics, spectrum
from dcsbm_transformer.analysis.run import analyze_run
from dcsbm_transformer.api import load_run
from dcsbm_transformer.config import load_config
from dcsbm_transformer.data.dcsbm import generate_graph
from dcsbm_transformer.devices import resolve_device, synchronize
from dcsbm_transformer.experiment import RunOptions, build_model, run_directory, run_experiment
from dcsbm_transformer.model import ExtractionMode

ROOT = Path(__file__).resolve().parent.parent


def one_pass_targets(model, prompts: torch.Tensor) -> dict[str, torch.Tensor]:
    """The targets of every event's first pass: the matrices the raw SVD rate is measured on."""
    with torch.no_grad():
        out = model(prompts, mode=ExtractionMode.SVD_TARGETS, check_ids=False)
        w_o, _ = model.attention_output_weights()
        return {"qkt": out.qkt.float(), "avwo": out.attention.float() @ out.values.float() @ w_o}


def raw_svd_rate(targets: dict[str, torch.Tensor], top_k: int, model, prompts: torch.Tensor, repeat: int = 3) -> float:
    """Matrices per second of the batched ``spectrum`` + ``compute_metrics`` calls alone, with every
    metric computed — the context metrics given what the pipeline gives them (pass 1's spectrum, the
    window's and the predicted token's embeddings, a σ-trajectory of TRAJECTORY_WINDOW points: here the
    pass's own values repeated, the same arithmetic) — so the ratio compares the same work."""
    matrices = sum(t[..., 0, 0].numel() for t in targets.values())
    embeddings = model.tok_emb.weight.detach().float()
    fields = {
        "embeddings": embeddings,
        "window_embeddings": embeddings[prompts][:, None, None],
        "next_embedding": embeddings[prompts[:, -1]][:, None, None],
    }
    best = float("inf")
    for _ in range(repeat):
        synchronize()
        started = time.perf_counter()
        for name, matrices_of in targets.items():
            side, shifted = TARGET_SIDE[name]
            current = spectrum(matrices_of, top_k=top_k, side=side)
            trajectory = current.values[..., None, :TRAJECTORY_K].expand(*current.values.shape[:-1], TRAJECTORY_WINDOW, -1)
            context = MetricContext(positions=TARGET_POSITIONS[name], first=current, since_first=1, trajectory=trajectory, **fields)
            compute_metrics(current, current, shifted=shifted, context=context)
        synchronize()
        best = min(best, time.perf_counter() - started)
    return matrices / best


def plain_ms_per_matrix(model, prompts: torch.Tensor, passes: int, top_k: int) -> float:
    """One full forward per event per pass, then an SVD and the metrics per matrix."""
    window = prompts.clone()
    matrices, started = 0, time.perf_counter()
    previous: dict = {}
    with torch.no_grad():
        for _ in range(passes):
            tokens = []
            for row in range(len(window)):
                out = model(window[row : row + 1], mode=ExtractionMode.SVD_TARGETS, check_ids=False)
                tokens.append(out.logits[0, -1].argmax())
                w_o, _ = model.attention_output_weights()
                targets = {"qkt": out.qkt[0], "avwo": out.attention[0] @ out.values[0] @ w_o}
                for name, per_layer in targets.items():
                    side, shifted = TARGET_SIDE[name]
                    for layer in range(per_layer.shape[0]):
                        for head in range(per_layer.shape[1]):
                            current = spectrum(per_layer[layer, head], top_k=top_k, side=side)
                            compute_metrics(current, previous.get((row, name, layer, head)), shifted=shifted)
                            previous[row, name, layer, head] = current
                            matrices += 1
            window = torch.cat([window[:, 1:], torch.stack(tokens)[:, None]], dim=1)
    return 1000 * (time.perf_counter() - started) / matrices


def rates(seconds: float, events: int, passes: int, layers: int, heads: int) -> tuple[int, float]:
    """Matrices measured (QKᵀ and AVWₒ of every generated pass and of the context windows) and their rate."""
    matrices = events * (passes + CONTEXT_WINDOWS) * layers * heads * 2
    return matrices, matrices / seconds


def bench_quick(config_path: str, device: str, plain_events: int) -> dict:
    config = load_config(config_path)
    with tempfile.TemporaryDirectory() as scratch:
        options = RunOptions(results_root=Path(scratch, "results"), cache_root=Path(scratch, "cache"), device=device)
        run_experiment(config, options, echo=lambda _: None)
        folder = run_directory(config, options.results_root)
        started = time.perf_counter()
        # speed does not depend on the gate's verdict: a config that fails it is timed all the same
        summary = analyze_run(folder, device=device, include_failed=True, echo=lambda _: None)
        total = time.perf_counter() - started
        statistics_s = read_horizon(folder / "analysis" / summary["analysis_name"])["timings"]["total_seconds"]
        run = load_run(folder)
    model = run.model.to(resolve_device(device))
    events = draw_analysis_events(config, run.graph, summary["settings"]["events"])
    prompts = torch.from_numpy(events.prompts).to(next(model.parameters()).device)
    matrices, rate = rates(summary["timings"]["measure_seconds"], len(events), summary["passes"], model.n_layers, model.n_heads)
    # the batch the pipeline itself measures at a time (its chunk counts the vectors it keeps per pass)
    chunk = prompts[: events_per_chunk(model, config.analysis.chunk_mb)]
    raw = raw_svd_rate(one_pass_targets(model, chunk), config.analysis.top_k, model, chunk)
    ours_ms = 1000 / rate
    plain = plain_ms_per_matrix(model, prompts[:plain_events], summary["passes"], config.analysis.top_k)
    return {
        "workload": "quick (trained to the gate)",
        "events": len(events),
        "passes": summary["passes"],
        "matrices": matrices,
        "analysis_s": round(total, 2),
        "measure_s": summary["timings"]["measure_seconds"],
        "statistics_s": statistics_s,
        "ours_matrices_per_s": rate,
        "raw_svd_matrices_per_s": raw,
        "vs_raw": rate / raw,
        "ours_ms_per_matrix": ours_ms,
        "plain_ms_per_matrix": plain,
        "vs_plain": plain / ours_ms,
        "violated": summary["counts"]["violated"],
        "followed": summary["counts"]["followed"],
    }


def bench_anchor(config_path: str, device: str, count: int, plain_events: int) -> dict:
    config = load_config(config_path)
    torch_device = resolve_device(device)
    graph = generate_graph(config)
    events = draw_analysis_events(config, graph, count)
    model = build_model(config, torch_device).eval()
    passes = int(events.r.max())
    measured = measure(model, graph, events, top_k=config.analysis.top_k, chunk_mb=config.analysis.chunk_mb)
    seconds = measured.seconds["measure_seconds"]
    matrices, rate = rates(seconds, len(events), passes, model.n_layers, model.n_heads)
    prompts = torch.from_numpy(events.prompts).to(torch_device)
    chunk = prompts[: events_per_chunk(model, config.analysis.chunk_mb)]
    raw = raw_svd_rate(one_pass_targets(model, chunk), config.analysis.top_k, model, chunk)
    ours_ms = 1000 / rate
    plain = plain_ms_per_matrix(model, prompts[:plain_events], 4, config.analysis.top_k)
    return {
        "workload": "anchor-shaped (untrained)",
        "events": len(events),
        "passes": passes,
        "matrices": matrices,
        "analysis_s": round(seconds, 2),
        "measure_s": round(seconds, 2),
        "ours_matrices_per_s": rate,
        "raw_svd_matrices_per_s": raw,
        "vs_raw": rate / raw,
        "ours_ms_per_matrix": ours_ms,
        "plain_ms_per_matrix": plain,
        "vs_plain": plain / ours_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "guard_hits": int(sum(measured.guard_hits.values())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["quick", "anchor", "all"], default="all")
    parser.add_argument("--config", default=str(ROOT / "configs" / "quick.json"))
    parser.add_argument("--anchor-config", default=str(ROOT / "configs" / "anchor.json"))
    parser.add_argument("--anchor-events", type=int, default=2000)
    parser.add_argument("--plain-events", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    if args.part in ("quick", "all"):
        rows.append(bench_quick(args.config, args.device, args.plain_events))
        record("analysis_quick", rows[-1], args.device)
    if args.part in ("anchor", "all"):
        rows.append(bench_anchor(args.anchor_config, args.device, args.anchor_events, args.plain_events))
        record("analysis_anchor", rows[-1], args.device)
    print_table("analysis: continuations + SVD targets + every metric at every pass", rows)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
