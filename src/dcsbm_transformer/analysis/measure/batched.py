"""Every metric at every pass: the events' continuations, their labels and the metric arrays.

Events are processed in chunks whose SVD targets (one pass's) take about ``analysis.chunk_mb``
(memory is bounded by the chunk, not the event count, and small models get big batches, where
the per-call overhead of the batched SVD and metrics is amortised). Within a chunk, each pass
runs the model once on all its events; metrics workers (one per core on a CPU, each on its share
of the events) compute the spectra of every layer's and head's targets in one batched call per
target, then every registered metric in one call, while the model runs the next pass; values
stay on the device until the chunk ends, so there is no host synchronisation per pass.

Before the first pass, the two windows that end just before the jumper (at s − 2 and s − 1,
walk tokens only) are measured too: the *context-only baseline* (every metric at the window
ending at s − 1, its temporal metrics against s − 2: how much of a metric's "signal" is in the
input before the rule was triggered), and the reference that pass 1's temporal metrics
(Grassmannian distance, velocities) compare against, so they are defined at every pass.
``subspace_drift`` is measured from pass 1 (0 there, NaN without a guard hit at the context window).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from ...data.graph import Graph
from ...model import TransformerLM
from ...reproducibility import torch_generator
from .behaviour import PassBehaviour
from .continuations import TARGETS, Labels, PassTargets, continue_with_targets, forward_targets, label_continuations
from .events import AnalysisEvents
from .metrics import METRICS, TRAJECTORY_K, TRAJECTORY_WINDOW, MetricContext, Spectrum, compute_metrics, spectrum

# Which singular vectors the temporal metrics compare, and whether that side slides with the
# window: QKᵀ's rows are query positions (shared positions are compared), AVWₒ's right side is
# the d_model space, which does not move.
TARGET_SIDE = {"qkt": ("left", True), "avwo": ("right", False)}
# Which sides index the window's positions (they slide one position per pass; the embedding metrics map
# them into embedding space through the window's token embeddings): QKᵀ queries and keys, AVWₒ's rows.
TARGET_POSITIONS = {"qkt": {"left": True, "right": True}, "avwo": {"left": True, "right": False}}
CONTEXT_WINDOWS = 2  # windows measured before the jumper entered (ending at s - 2 and s - 1)
MAX_PENDING_PASSES = 2  # passes whose targets wait for the metrics workers (each holds a chunk's targets)
SPECTRA_K = 8  # singular values kept per window for spectra.npz (all of them when a matrix has fewer)


def metric_key(target: str, layer: int, head: int, metric: str) -> str:
    """The token_metrics.npz name of one metric array: ``qkt.layer_0.head_0.stable_rank``."""
    return f"{target}.layer_{layer}.head_{head}.{metric}"


def spectrum_key(target: str, layer: int, head: int) -> str:
    """The spectra.npz name of one layer's and head's singular values: ``qkt.layer_0.head_0``."""
    return f"{target}.layer_{layer}.head_{head}"


@dataclass
class Measurements:
    """Everything the analysis measured: labels, behavioural predictor and metric arrays."""

    labels: Labels
    target_probability: np.ndarray  # float32 [E, max r]
    metrics: dict[str, np.ndarray]  # metric_key -> float32 [E, max r], NaN where undefined or no pass
    context: dict[str, np.ndarray]  # metric_key -> float32 [E]: the window ending at s - 1 (before the jumper)
    # metric name -> guard hits among the values kept in ``metrics``: every target, layer, head, event and
    # pass k <= the event's r (passes beyond it are computed with the batch, then dropped: not counted)
    guard_hits: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    # metric name -> guard hits among the values kept in ``context`` (the window ending at s - 1)
    context_guard_hits: dict[str, int] = field(default_factory=dict)
    # the other baselines (analysis.measure.behaviour): name -> float32 [E, max r], NaN where undefined or no pass
    behaviour: dict[str, np.ndarray] = field(default_factory=dict)
    # spectrum trajectories: spectrum_key -> float32 [E, max r, K], the top K = min(SPECTRA_K, m) singular values
    # of every pass (pass order, NaN where no pass), and [E, CONTEXT_WINDOWS, K] those of the context windows
    spectra: dict[str, np.ndarray] = field(default_factory=dict)
    context_spectra: dict[str, np.ndarray] = field(default_factory=dict)


def events_per_chunk(model: TransformerLM, chunk_mb: float) -> int:
    """How many events fit in ``chunk_mb``: one pass's targets (QKᵀ and AVWₒ of every layer and head, float32)."""
    w, d = model.context_window, model.d_model
    per_event = 4 * model.n_layers * model.n_heads * (w * w + w * d)
    return max(1, int(chunk_mb * 2**20 // per_event))


def metric_workers(device: torch.device, events: int, cores: int) -> int:
    """How many metrics workers measure a chunk: one per core on a CPU (each on its share of the events, with
    one intra-op thread), one on an accelerator (its kernels are already parallel).

    Why not one worker with more threads: the batched ``eigh`` of the spectra (most of the metrics' cost)
    decomposes one small matrix after another inside one call, so a second intra-op thread gained only
    1.1-1.25x, while two workers on disjoint halves of the events keep both cores busy (the main thread's
    forward passes fit in between). A matrix's values do not depend on the batch it is decomposed in."""
    return max(1, min(cores, events)) if device.type == "cpu" else 1


def _window_context(embeddings: torch.Tensor, window: torch.Tensor, predicted: torch.Tensor) -> dict:
    """The token-embedding fields of a MetricContext for windows [E, w] and predicted tokens [E], shaped
    [E, 1, 1, ...] to broadcast over layers and heads."""
    return {
        "embeddings": embeddings,
        "window_embeddings": embeddings[window][:, None, None],
        "next_embedding": embeddings[predicted][:, None, None],
    }


def measure(
    model: TransformerLM,
    graph: Graph,
    events: AnalysisEvents,
    *,
    top_k: int,
    chunk_mb: float,
    temperature: float = 0.0,
    seed: int = 0,
    stream: str = "analysis",
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    progress: Callable[[int, int], None] | None = None,
) -> Measurements:
    """Continue every event, label it and compute every metric at every pass."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    passes, layers, heads = int(events.r.max()), model.n_layers, model.n_heads
    metrics = {
        metric_key(t, l, h, m): np.full((len(events), passes), np.nan, dtype=np.float32)
        for t in TARGETS
        for l in range(layers)
        for h in range(heads)
        for m in METRICS
    }
    guards = {name: torch.zeros((), dtype=torch.long, device=device) for name in METRICS}
    context_guards = {name: torch.zeros((), dtype=torch.long, device=device) for name in METRICS}
    context = {key: np.full(len(events), np.nan, dtype=np.float32) for key in metrics}
    generated = np.empty((len(events), passes), dtype=np.int64)
    target_probability = np.empty((len(events), passes), dtype=np.float32)
    behaviour: dict[str, np.ndarray] = {}
    spectra: dict[str, np.ndarray] = {}
    context_spectra: dict[str, np.ndarray] = {}
    members = torch.from_numpy(graph.block[None, :] == np.arange(graph.K)[:, None]).to(device)  # [K, n]
    generator = torch_generator(seed, stream, "sampling", device=device) if temperature > 0 else None
    chunk_events = events_per_chunk(model, chunk_mb)

    threads = torch.get_num_threads()
    if device.type == "cpu":
        # The metrics workers run beside the forward passes: leave them a core. On the 2-core CPU an
        # anchor-shaped analysis ran 2.1x faster with one intra-op thread than with two (the two
        # threads' ops otherwise fight over both cores); the numbers do not change.
        torch.set_num_threads(max(1, threads - 1))
    try:
        for begin in range(0, len(events), chunk_events):
            end = min(begin + chunk_events, len(events))
            prompts = torch.from_numpy(events.prompts[begin:end]).to(device)
            before = torch.from_numpy(events.before[begin:end]).to(device)
            target_members = members[torch.from_numpy(events.target_block[begin:end]).to(device)]
            r = torch.from_numpy(np.asarray(events.r[begin:end], dtype=np.int64)).to(device)
            recorder = PassBehaviour(
                graph,
                torch.cat([before, prompts[:, -1:]], dim=1),
                torch.from_numpy(events.target_block[begin:end]).to(device),
                r,
                passes,
                layers,
                heads,
            )
            tokens, probability, values, context_values, chunk_spectra = _measure_chunk(
                model,
                prompts,
                before,
                target_members,
                passes,
                top_k,
                guards,
                temperature=temperature,
                generator=generator,
                autocast=autocast,
                r=r,
                context_guards=context_guards,
                behaviour=recorder,
                workers=metric_workers(device, end - begin, threads),
            )
            generated[begin:end], target_probability[begin:end] = tokens, probability
            for name, array in recorder.finish(tokens).items():
                behaviour.setdefault(name, np.full((len(events), passes), np.nan, dtype=np.float32))[begin:end] = array
            for (target, name), array in values.items():  # [events, passes, layers, heads] -> one array per layer, head
                for layer in range(layers):
                    for head in range(heads):
                        key = metric_key(target, layer, head, name)
                        metrics[key][begin:end] = array[:, :, layer, head]
                        context[key][begin:end] = context_values[target, name][:, layer, head]
            for target, array in chunk_spectra.items():  # [events, windows, layers, heads, K]
                for layer in range(layers):
                    for head in range(heads):
                        key = spectrum_key(target, layer, head)
                        if key not in spectra:
                            spectra[key] = np.full((len(events), passes, array.shape[-1]), np.nan, dtype=np.float32)
                            context_spectra[key] = np.full((len(events), CONTEXT_WINDOWS, array.shape[-1]), np.nan, dtype=np.float32)
                        context_spectra[key][begin:end] = array[:, :CONTEXT_WINDOWS, layer, head]
                        spectra[key][begin:end] = array[:, CONTEXT_WINDOWS:, layer, head]
            if progress is not None:
                progress(end, len(events))
    finally:
        torch.set_num_threads(threads)

    labels = label_continuations(events.prompts, generated, events.r, events.target_block, graph)
    beyond = np.arange(passes)[None, :] >= events.r[:, None]  # passes an event with a shorter r never made
    for values in metrics.values():
        values[beyond] = np.nan
    target_probability[beyond] = np.nan
    for values in behaviour.values():
        values[beyond] = np.nan
    for values in spectra.values():
        values[beyond] = np.nan
    seconds = {"measure_seconds": time.perf_counter() - started}
    return Measurements(
        labels,
        target_probability,
        metrics,
        context,
        {name: int(hits) for name, hits in guards.items()},
        seconds,
        {name: int(hits) for name, hits in context_guards.items()},
        behaviour,
        spectra,
        context_spectra,
    )


@dataclass
class _Shard:
    """One metrics worker's share of a chunk: its events (``rows``), the spectra its temporal metrics chain
    (the previous pass's, pass 1's) and its own guard counters (summed by the main thread at the end)."""

    rows: slice
    guards: dict[str, torch.Tensor]
    context_guards: dict[str, torch.Tensor]
    previous: dict[str, Spectrum | None] = field(default_factory=lambda: dict.fromkeys(TARGETS))
    first: dict[str, Spectrum | None] = field(default_factory=lambda: dict.fromkeys(TARGETS))
    # the top TRAJECTORY_K singular values of the last TRAJECTORY_WINDOW windows (the σ-trajectory's points)
    history: dict[str, deque] = field(default_factory=lambda: {t: deque(maxlen=TRAJECTORY_WINDOW) for t in TARGETS})

    def seen(self, target: str, index: int, current: Spectrum, stored: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Record window ``index``'s singular values (spectra.npz, the trajectory); the σ-trajectory ending at it
        [E, L, H, TRAJECTORY_WINDOW, K], or None while fewer windows exist."""
        kept = stored[target].shape[-1]
        stored[target][self.rows, index] = current.values[..., :kept].float()
        history = self.history[target]
        history.append(current.values[..., :TRAJECTORY_K].double())
        return torch.stack(list(history), dim=-2) if len(history) == TRAJECTORY_WINDOW else None


def _measure_chunk(
    model,
    prompts,
    before,
    target_members,
    passes: int,
    top_k: int,
    guards: dict,
    *,
    r: torch.Tensor,
    context_guards: dict,
    workers: int = 1,
    **generation,
):
    """One chunk of events: (tokens [E, passes], target probability [E, passes], (target, metric) ->
    values [E, passes, layers, heads], (target, metric) -> context values [E, layers, heads]) as
    numpy; guard hits of the values that are kept are added to ``guards`` (pass k of the events
    with r [E] >= k: later passes are computed with the batch and dropped by ``measure``) and
    those of the context window to ``context_guards``.

    The main thread runs the model (the two context windows, then the passes); ``workers`` metrics
    workers, each on a contiguous share of the events, compute the spectra and every metric of a
    window while the model runs the next. Each worker is one thread that takes its jobs in order,
    as the temporal metrics chain the passes; at most MAX_PENDING_PASSES passes wait for them, so
    memory stays bounded. Every metric of a pass is computed in one ``compute_metrics`` call with its
    whole ``MetricContext``: the sides that are positions (``TARGET_POSITIONS``), pass 1's spectrum
    (``subspace_drift``; none at the context windows, where drift is not measured) and the token
    embeddings (``model.tok_emb``) of the pass's input window and of the token it generated
    (``PassTargets.window``/``token``; at a context window, walk tokens and the logits' argmax); the
    σ-trajectory of the last TRAJECTORY_WINDOW windows (the trajectory metrics), from pass 3 on, the two
    context windows counted. Returns, beside the metrics, target -> the top min(SPECTRA_K, m) singular
    values of every window [E, CONTEXT_WINDOWS + passes, layers, heads, K] (the context windows first)."""
    device = prompts.device
    events, w = prompts.shape
    shape = (events, passes, model.n_layers, model.n_heads)
    values = {(t, m): torch.full(shape, float("nan"), device=device) for t in TARGETS for m in METRICS}
    context = {(t, m): torch.full(shape[:1] + shape[2:], float("nan"), device=device) for t in TARGETS for m in METRICS}
    embeddings = model.tok_emb.weight.detach().float()  # [vocab, d_model]
    smaller = {"qkt": w, "avwo": min(w, model.d_model)}  # m = min(rows, cols) of each target
    stored = {
        t: torch.full((events, CONTEXT_WINDOWS + passes, *shape[2:], min(SPECTRA_K, smaller[t])), float("nan"), device=device)
        for t in TARGETS
    }
    bounds = np.linspace(0, events, workers + 1).round().astype(int)
    shards = [
        _Shard(
            slice(int(a), int(b)),
            {name: torch.zeros((), dtype=torch.long, device=device) for name in METRICS},
            {name: torch.zeros((), dtype=torch.long, device=device) for name in METRICS},
        )
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]

    def context_window(shard: _Shard, c: int, targets: PassTargets, window: torch.Tensor, predicted: torch.Tensor) -> None:
        rows = shard.rows
        for target in TARGETS:
            side, shifted = TARGET_SIDE[target]
            current = spectrum(targets[target][rows], top_k=top_k, side=side)
            trajectory = shard.seen(target, c, current, stored)
            if c == CONTEXT_WINDOWS - 1:  # the window ending at s - 1: the context-only baseline
                about = MetricContext(
                    positions=TARGET_POSITIONS[target],
                    trajectory=trajectory,
                    **_window_context(embeddings, window[rows], predicted[rows]),
                )
                for name, (metric_values, hits) in compute_metrics(
                    current, shard.previous[target], shifted=shifted, context=about
                ).items():
                    shard.context_guards[name] += hits.sum()
                    context[target, name][rows] = metric_values
            shard.previous[target] = current  # the window ending at s - 1 is pass 1's reference

    def generated_pass(shard: _Shard, k: int, targets: PassTargets) -> None:
        rows = shard.rows
        exists = (r[rows] >= k).view(-1, 1, 1)  # [E, 1, 1]: the events that have a pass k
        window, token = targets.window, targets.token
        assert window is not None and token is not None, "continue_with_targets sets them before on_pass"
        fields = _window_context(embeddings, window[rows], token[rows])
        for target in TARGETS:
            side, shifted = TARGET_SIDE[target]
            current = spectrum(targets[target][rows], top_k=top_k, side=side)  # all its events, layers, heads at once
            if k == 1:
                shard.first[target] = current
            trajectory = shard.seen(target, CONTEXT_WINDOWS + k - 1, current, stored)
            about = MetricContext(
                positions=TARGET_POSITIONS[target], first=shard.first[target], since_first=k - 1, trajectory=trajectory, **fields
            )
            for name, (metric_values, hits) in compute_metrics(
                current, shard.previous[target], shifted=shifted, context=about
            ).items():
                shard.guards[name] += (hits & exists).sum()
                values[target, name][rows, k - 1] = metric_values
            shard.previous[target] = current

    def new_pool() -> ThreadPoolExecutor:  # on a CPU each shard's thread runs torch on one thread
        if device.type == "cpu":
            return ThreadPoolExecutor(max_workers=1, initializer=torch.set_num_threads, initargs=(1,))
        return ThreadPoolExecutor(max_workers=1)

    pools = [new_pool() for _ in shards]
    try:
        pending: deque = deque()

        def submit(job: Callable, *arguments) -> None:
            if len(pending) >= MAX_PENDING_PASSES:
                for future in pending.popleft():
                    future.result()
            pending.append([pool.submit(job, shard, *arguments) for pool, shard in zip(pools, shards, strict=True)])

        for c in range(CONTEXT_WINDOWS):  # windows ending at s - 2, then s - 1: walk tokens only, the jumper not yet seen
            window = before[:, c : c + w]
            logits, targets = forward_targets(model, window, autocast=generation["autocast"])
            submit(context_window, c, targets, window, logits.argmax(-1))
        tokens, probability = continue_with_targets(
            model, prompts, target_members, passes, lambda k, targets: submit(generated_pass, k, targets), **generation
        )
        while pending:
            for future in pending.popleft():
                future.result()  # re-raises a failure of a worker
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)
    for shard in shards:
        for name in METRICS:
            guards[name] += shard.guards[name]
            context_guards[name] += shard.context_guards[name]
    return (
        tokens.cpu().numpy(),
        probability.cpu().numpy(),
        {key: array.cpu().numpy() for key, array in values.items()},
        {key: array.float().cpu().numpy() for key, array in context.items()},
        {target: array.cpu().numpy() for target, array in stored.items()},
    )
