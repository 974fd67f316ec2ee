"""Rule-true random walks, generated in batches with a Python loop over *steps* only.

A walk starts at a given vertex and moves to a uniformly chosen out-neighbour, except that a
step is allowed only if it keeps every pending rule satisfiable. A walk's pending rules are a
row ``required[w, t]`` = the block the walk must be in at step t (-1: free). Visiting jumper v
at step s writes its target block at s + r_v (rules whose deadline falls past the walk's end
are not enforced). Nested rules are therefore just more entries in the same row.

Which steps are allowed. Candidate y at step s+1 must satisfy, using exact-length reachability
tables of the graph (``Graph.block_reach``):
1. for each pending requirement (t, block b) within the *horizon* H: y reaches b in exactly
   t - (s+1) steps (beyond H every vertex reaches every block, so nothing to check);
2. if y is a jumper: its deadline is not already claimed by another block, and its target
   block is compatible, at block level, with the requirements around that deadline.
These are necessary conditions. When a walk still reaches a state with no allowed step (two
close deadlines whose exact chaining fails, or every way on passes through a jumper whose own
rule conflicts), it is *restarted*: generated again from the same start vertex with fresh
randomness. So every emitted walk obeys every in-walk rule by construction, and the walk
distribution is the uniform rule-respecting walk conditioned on not dead-ending (restart counts
are recorded; see README "Walk distribution").

Sampling is exact-uniform among allowed neighbours: propose a uniform neighbour and accept it if
allowed; otherwise choose uniformly among the allowed neighbours computed in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..reproducibility import numpy_rng
from .compliance import RuleEvents, find_rule_events
from .graph import Graph

CHUNK_WALKS = 8192  # fixed, so results never depend on the machine
MAX_RESTART_ROUNDS = 100


class WalkGenerationError(RuntimeError):
    """Walks kept dead-ending: the rules conflict too often on this graph."""


@dataclass(frozen=True, eq=False)
class Corpus:
    """A walk corpus: ``walks`` int32 [W, L] and its in-walk rule events (``events.row`` = walk)."""

    walks: np.ndarray
    events: RuleEvents
    restarted_walks: int

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "walks": self.walks,
            "event_walk": self.events.row,
            "event_step": self.events.step,
            "event_vertex": self.events.vertex,
            "event_target_block": self.events.target_block,
            "event_deadline": self.events.deadline,
            "restarted_walks": np.asarray(self.restarted_walks, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Corpus":
        events = RuleEvents(
            *(arrays[f"event_{key}"].astype(np.int64) for key in ("walk", "step", "vertex", "target_block", "deadline"))
        )
        return cls(arrays["walks"], events, int(arrays["restarted_walks"]))


def _trailing_all_true(table: np.ndarray) -> int:
    """Smallest k0 such that table[k] is all True for every k ≥ k0 (len(table) if none)."""
    flat = table.reshape(len(table), -1).all(axis=1)
    not_all = np.flatnonzero(~flat)
    return int(not_all[-1]) + 1 if len(not_all) else 0


class RuleAwareWalker:
    """Precomputed tables for one graph and walk length; ``walk(starts, rng)`` does the work."""

    def __init__(self, graph: Graph, walk_length: int):
        self.graph = graph
        self.length = walk_length
        reach = graph.block_reach(walk_length - 1)  # [L, n, K]
        self.horizon = max(1, _trailing_all_true(reach))
        self.near_reach = np.ascontiguousarray(reach[: self.horizon])
        self.near_chain = self._chain_table(graph, reach, self.horizon)

        # pair[g, a, b]: some vertex of block a reaches block b in exactly g steps
        members = [graph.block == b for b in range(graph.K)]
        pair = np.stack([reach[:, m, :].any(axis=1) for m in members], axis=1)  # [L, K, K]
        self.pair_horizon = max(1, _trailing_all_true(pair))
        self.pair_reach = np.ascontiguousarray(pair[: self.pair_horizon])

        degree = graph.out_degree
        self.indptr, self.indices, self.degree = graph.indptr, graph.indices.astype(np.int64), degree
        self.neighbours = np.full((graph.n, int(degree.max())), -1, dtype=np.int64)
        column = np.arange(len(graph.indices)) - np.repeat(graph.indptr[:-1], degree)
        self.neighbours[np.repeat(np.arange(graph.n), degree), column] = graph.indices
        self.rule_r, self.rule_target = graph.vertex_rule_r, graph.vertex_rule_target

    @staticmethod
    def _chain_table(graph: Graph, reach: np.ndarray, horizon: int) -> np.ndarray:
        """bool [H, H, n, K, K]: ``[k, g, y, a, b]`` is True iff y reaches, in exactly k steps, a
        vertex of block a that reaches block b in exactly g more steps (two close deadlines)."""
        n, K = graph.n, graph.K
        adjacency = graph.adjacency.astype(np.int32)
        table = np.zeros((horizon, horizon, n, K, K), dtype=bool)
        in_block = graph.block[:, None] == np.arange(K)[None, :]
        for gap in range(1, horizon):
            sets = in_block[:, :, None] & reach[gap][:, None, :]  # [n, K(a), K(b)]
            for k in range(horizon):
                table[k, gap] = sets
                sets = ((adjacency @ sets.reshape(n, K * K).astype(np.int32)) > 0).reshape(n, K, K)
        return table

    # ---- rule bookkeeping -------------------------------------------------------------

    def add_rules(self, required: np.ndarray, vertex: np.ndarray, step: int) -> None:
        """Record in ``required`` [R, length] the target block and deadline of every rule ``vertex`` [R] triggers at ``step``."""
        deadline = step + self.rule_r[vertex]
        new = (self.rule_r[vertex] > 0) & (deadline < self.length)
        rows = np.flatnonzero(new)
        required[rows, deadline[rows]] = self.rule_target[vertex[rows]]

    def _allowed(self, required: np.ndarray, rows: np.ndarray, y: np.ndarray, step: int) -> np.ndarray:
        """bool, shape of y: may walk ``rows`` (broadcast to y) move to y at ``step``?"""
        rows = np.broadcast_to(rows, y.shape)
        ok = np.ones(y.shape, dtype=bool)
        window = [required[rows, t] for t in range(step, min(step + 2 * self.horizon, self.length))]
        for k, block in enumerate(window[: self.horizon]):
            pending = block >= 0
            if not pending.any():
                continue
            ok &= ~pending | self.near_reach[k, y, np.maximum(block, 0)]
            for gap, later in enumerate(window[k + 1 : k + self.horizon], start=1):
                both = pending & (later >= 0)
                if both.any():
                    ok &= ~both | self.near_chain[k, gap, y, np.maximum(block, 0), np.maximum(later, 0)]

        deadline = step + self.rule_r[y]
        jumps = np.nonzero((self.rule_r[y] > 0) & (deadline < self.length) & ok)
        if len(jumps[0]):
            row, when, target = rows[jumps], deadline[jumps], self.rule_target[y[jumps]]
            claimed = required[row, when]
            good = (claimed < 0) | (claimed == target)
            for gap in range(1, self.pair_horizon):
                before = np.where(when - gap > step, required[row, np.maximum(when - gap, 0)], -1)
                good &= (before < 0) | self.pair_reach[gap, np.maximum(before, 0), target]
                later = when + gap < self.length
                after = np.where(later, required[row, np.minimum(when + gap, self.length - 1)], -1)
                good &= (after < 0) | self.pair_reach[gap, target, np.maximum(after, 0)]
            ok[jumps] = good
        return ok

    def _choose_allowed(self, required, rows, current, step, rng) -> tuple[np.ndarray, np.ndarray]:
        """Uniform choice among the allowed neighbours of ``current``; also returns the stuck mask."""
        candidates = self.neighbours[current]  # [R, max_degree], -1 = padding
        real = candidates >= 0
        allowed = real & self._allowed(required, rows[:, None], np.maximum(candidates, 0), step)
        count = allowed.sum(axis=1)
        pick = (rng.random(len(rows)) * count).astype(np.int64)  # rank among the allowed
        column = (np.cumsum(allowed, axis=1) <= pick[:, None]).sum(axis=1)
        column = np.minimum(column, candidates.shape[1] - 1)
        chosen = np.maximum(candidates[np.arange(len(rows)), column], 0)
        return chosen, count == 0

    # ---- the true next-step distribution (an oracle for analysis) ---------------------

    def pending_rules(self, history: np.ndarray) -> np.ndarray:
        """int16 [R, length]: the target block each step of ``history`` [R, steps] walks must be
        in (−1: none), from the rules its jumpers triggered (deadlines within ``length``)."""
        required = np.full((history.shape[0], self.length), -1, dtype=np.int16)
        for step in range(history.shape[1]):  # a loop over steps, batched across walks
            self.add_rules(required, history[:, step].astype(np.int64), step)
        return required

    def allowed_successors(self, required: np.ndarray, current: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(candidates int64 [R, max_degree] (−1 padding), allowed bool [R, max_degree]): the
        out-neighbours of ``current`` [R] and whether each keeps every pending rule of
        ``required`` satisfiable when taken at ``step`` — exactly the moves the walk generator
        chooses among, uniformly."""
        candidates = self.neighbours[current]
        rows = np.arange(len(current))[:, None]
        allowed = (candidates >= 0) & self._allowed(required, rows, np.maximum(candidates, 0), step)
        return candidates, allowed

    # ---- generation -------------------------------------------------------------------

    def _walk_once(self, starts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        count, length = len(starts), self.length
        walks = np.empty((count, length), dtype=np.int32)
        walks[:, 0] = starts
        required = np.full((count, length), -1, dtype=np.int16)
        self.add_rules(required, starts.astype(np.int64), 0)
        stuck = np.zeros(count, dtype=bool)
        every = np.arange(count)
        for step in range(1, length):
            current = walks[:, step - 1].astype(np.int64)
            offset = (rng.random(count) * self.degree[current]).astype(np.int64)
            proposal = self.indices[self.indptr[current] + offset]
            rejected = np.flatnonzero(~self._allowed(required, every, proposal, step))
            if len(rejected):
                chosen, dead = self._choose_allowed(required, rejected, current[rejected], step, rng)
                proposal[rejected] = chosen
                stuck[rejected[dead]] = True
            walks[:, step] = proposal
            self.add_rules(required, proposal, step)
        return walks, stuck

    def walk(self, starts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Rule-true walks from ``starts``; dead-ended walks are regenerated. Returns (walks, restarts)."""
        walks, stuck = self._walk_once(starts, rng)
        restarts = 0
        for _ in range(MAX_RESTART_ROUNDS):
            redo = np.flatnonzero(stuck)
            if len(redo) == 0:
                return walks, restarts
            restarts += len(redo)
            walks[redo], stuck_again = self._walk_once(starts[redo], rng)
            stuck[:] = False
            stuck[redo] = stuck_again
        raise WalkGenerationError(
            f"{int(stuck.sum())} walks still dead-ended after {MAX_RESTART_ROUNDS} restarts; "
            "the jumper rules conflict too often on this graph (use fewer jumpers or a denser graph)"
        )


def start_vertices(graph: Graph, count: int, jumper_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """At least ``jumper_fraction`` of walks start at a jumper, spread evenly over all jumpers;
    the rest start at a uniformly random vertex. Returned in random order."""
    at_jumper = int(np.ceil(jumper_fraction * count))
    jumpers = graph.jumper_vertex[np.arange(at_jumper) % len(graph.jumper_vertex)]
    others = rng.integers(0, graph.n, size=count - at_jumper)
    return rng.permutation(np.concatenate([jumpers, others])).astype(np.int64)


def generate_corpus(graph: Graph, walk_count: int, walk_length: int, jumper_fraction: float, seed: int, stream: str) -> Corpus:
    """A corpus of ``walk_count`` rule-true walks for (seed, stream). Chunks use their own
    random streams, so the result does not depend on how the work is scheduled."""
    walker = RuleAwareWalker(graph, walk_length)
    starts = start_vertices(graph, walk_count, jumper_fraction, numpy_rng(seed, stream, "starts"))
    walks = np.empty((walk_count, walk_length), dtype=np.int32)
    restarts = 0
    for chunk, begin in enumerate(range(0, walk_count, CHUNK_WALKS)):
        end = min(begin + CHUNK_WALKS, walk_count)
        walks[begin:end], chunk_restarts = walker.walk(starts[begin:end], numpy_rng(seed, stream, "walks", chunk))
        restarts += chunk_restarts
    return Corpus(walks, find_rule_events(walks, graph), restarts)
