"""The analysis events: fresh, independent rule events with a full window of context.

Events come from an *analysis corpus*: walks drawn on the run's graph from their own random
stream (seed, ``analysis.stream``), never seen by training or by the gate (the gate chose the
checkpoint on its own events). Each walk gives at most one event, so events are independent
samples; only events with a full window *and two full windows before it* (jumper step s ≥ w + 1)
are taken, so every pass sees exactly w tokens and every event has the context-only baseline
(the passes whose windows end at s − 2 and s − 1, before the jumper entered the window); and
every jumper gets the same number. Walks are drawn in rounds until every
jumper has its share (or MAX_ROUNDS, then a clear error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...config import ExperimentConfig
from ...data.graph import Graph
from ...data.walks import generate_corpus
from ...reproducibility import numpy_rng

MAX_ROUNDS = 20


class AnalysisEventsError(RuntimeError):
    """The analysis corpus does not hold enough full-window events for some jumper."""


@dataclass(frozen=True)
class AnalysisEvents:
    """E events, each with the w tokens up to and including its jumper visit (all arrays [E] but prompts)."""

    prompts: np.ndarray  # int64 [E, w]: walk tokens s-w+1 .. s (the last one is the jumper)
    before: np.ndarray  # int64 [E, w + 1]: walk tokens s-w-1 .. s-1, the two windows before the jumper entered
    walk_continuation: np.ndarray  # int64 [E, max r]: the corpus walk's own next tokens (-1 past its r), for checks
    jumper: np.ndarray  # int64 [E] rule index
    vertex: np.ndarray  # int64 [E]
    target_block: np.ndarray  # int64 [E]
    r: np.ndarray  # int64 [E]
    step: np.ndarray  # int64 [E] the jumper's step s in its walk
    walk: np.ndarray  # int64 [E] which analysis walk (round · walks per round + row): one event per walk
    walks_drawn: int

    def __len__(self) -> int:
        return len(self.jumper)


def draw_analysis_events(config: ExperimentConfig, graph: Graph, count: int | None = None) -> AnalysisEvents:
    """``count`` (default ``analysis.events``) events, rounded up to a multiple of the jumpers."""
    count = config.analysis.events if count is None else count
    w, length = config.model.context_window, config.walks.walk_length
    quota = -(-count // graph.n_jumpers)
    # full-window events per walk are few (s ≥ w + 1 and s + r < L): draw generously per round
    per_round = max(2 * quota * graph.n_jumpers, 1000)
    taken: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(graph.n_jumpers)]
    have = np.zeros(graph.n_jumpers, dtype=np.int64)
    walks_drawn = 0
    for round_ in range(MAX_ROUNDS):
        corpus = generate_corpus(
            graph, per_round, length, config.walks.jumper_start_fraction, config.seed, f"{config.analysis.stream}-{round_}"
        )
        walks_drawn += per_round
        rng = numpy_rng(config.seed, config.analysis.stream, "events", round_)
        events = corpus.events
        usable = np.flatnonzero(events.step >= w + 1)
        usable = usable[rng.permutation(len(usable))]
        _, first = np.unique(events.row[usable], return_index=True)  # one random event per walk
        usable = usable[np.sort(first)]
        jumper = graph.jumper_index[events.vertex[usable]]
        for j in range(graph.n_jumpers):  # a loop over rules, not events
            mine = usable[jumper == j][: quota - have[j]]
            taken[j].append(
                (corpus.walks[events.row[mine]].astype(np.int64), events.step[mine], round_ * per_round + events.row[mine])
            )
            have[j] += len(mine)
        if (have >= quota).all():
            break
    else:
        short = [graph.rule_labels[j] for j in np.flatnonzero(have < quota)]
        raise AnalysisEventsError(
            f"after {walks_drawn} analysis walks, {', '.join(short)} still lack full-window events "
            f"(s >= w + 1 = {w + 1} with the deadline inside the walk): lower analysis.events or lengthen walks"
        )
    return _assemble(graph, taken, w, walks_drawn)


def _assemble(graph: Graph, taken, w: int, walks_drawn: int) -> AnalysisEvents:
    walks = np.concatenate([part[0] for rule in taken for part in rule])
    step = np.concatenate([part[1] for rule in taken for part in rule]).astype(np.int64)
    walk = np.concatenate([part[2] for rule in taken for part in rule]).astype(np.int64)
    jumper = np.concatenate([np.full(len(part[1]), j) for j, rule in enumerate(taken) for part in rule]).astype(np.int64)
    rows = np.arange(len(step))
    prompts = walks[rows[:, None], step[:, None] - w + 1 + np.arange(w)[None, :]]
    before = walks[rows[:, None], step[:, None] - w - 1 + np.arange(w + 1)[None, :]]
    r = graph.jumper_r[jumper].astype(np.int64)
    max_r = int(graph.jumper_r.max())
    ahead = step[:, None] + 1 + np.arange(max_r)[None, :]
    continuation = walks[rows[:, None], np.minimum(ahead, walks.shape[1] - 1)]
    continuation = np.where(np.arange(max_r)[None, :] < r[:, None], continuation, -1)
    return AnalysisEvents(
        prompts=prompts,
        before=before,
        walk_continuation=continuation,
        jumper=jumper,
        vertex=graph.jumper_vertex[jumper].astype(np.int64),
        target_block=graph.jumper_target_block[jumper].astype(np.int64),
        r=r,
        step=step,
        walk=walk,
        walks_drawn=walks_drawn,
    )
