"""Chance levels for the gate: what a model that knows the graph but not the rules would score.

Both baselines are built from the training walks' bigram counts (successor frequencies of each
vertex), so they know every edge and every vertex's habits, yet never look further back than
the current token — they are blind to which jumper was visited r steps ago:

- **bigram argmax**: always step to the most frequent successor (ties: the smallest id). It is
  deterministic like the gate's greedy decoding, and its continuations are scored by the gate's
  own scorer on the gate's own prompts. From a given jumper it always walks the same path, so
  each rule's compliance is 0 or 1: it shows which rules a rule-blind policy gets for free.
- **bigram sampling**: the expected compliance of a walker that samples successors in
  proportion to the bigram counts, per rule the probability of standing in the target block r
  steps after the jumper (the r-step transition matrix, exactly). This is the base rate a
  rule's compliance should be read against.

A gate whose thresholds these baselines can meet measures nothing; the run says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..data.compliance import ComplianceReport
from ..data.graph import Graph
from .evaluation import GateEvaluator

COUNT_CHUNK_WALKS = 8192  # bounds the temporary pair arrays (the anchor corpus has 51M transitions)


def bigram_counts(walks: np.ndarray, n: int) -> sp.csr_array:
    """float64 [n, n] sparse: how often token v follows token u in ``walks`` [W, L]."""
    counts = np.zeros(n * n, dtype=np.int64)
    for begin in range(0, len(walks), COUNT_CHUNK_WALKS):
        chunk = walks[begin : begin + COUNT_CHUNK_WALKS].astype(np.int64)
        counts += np.bincount((chunk[:, :-1] * n + chunk[:, 1:]).reshape(-1), minlength=n * n)
    return sp.csr_array(counts.reshape(n, n).astype(np.float64))


def argmax_successor(counts: sp.csr_array) -> np.ndarray:
    """int64 [n]: every vertex's most frequent successor (the smallest id among ties)."""
    return np.asarray(counts.argmax(axis=1)).reshape(-1).astype(np.int64)


def rule_blind_continuations(successor: np.ndarray, last_tokens: np.ndarray, steps: int) -> np.ndarray:
    """int64 [sequences, steps]: the bigram-argmax policy run from each sequence's last token."""
    out = np.empty((len(last_tokens), steps), dtype=np.int64)
    current = np.asarray(last_tokens, dtype=np.int64)
    for step in range(steps):  # batched across sequences
        current = successor[current]
        out[:, step] = current
    return out


def sampling_chance(counts: sp.csr_array, graph: Graph) -> np.ndarray:
    """float64 [jumpers]: P(in the target block r steps after the jumper) for a walker sampling
    successors in proportion to ``counts``."""
    totals = np.asarray(counts.sum(axis=1)).reshape(-1)
    transition = sp.diags(1.0 / np.maximum(totals, 1.0)) @ counts  # rows of unvisited vertices stay 0
    distribution = np.zeros((graph.n_jumpers, graph.n))
    distribution[np.arange(graph.n_jumpers), graph.jumper_vertex] = 1.0
    in_target = graph.block[None, :] == graph.jumper_target_block[:, None]  # [jumpers, n]
    chance = np.zeros(graph.n_jumpers)
    for step in range(1, int(graph.jumper_r.max()) + 1):
        distribution = (transition.T @ distribution.T).T
        due = graph.jumper_r == step
        chance[due] = (distribution[due] * in_target[due]).sum(axis=1)
    return chance


@dataclass(frozen=True)
class RuleBlindBaseline:
    """The two baselines on one gate's prompts: the argmax policy's full report, the sampler's
    per-rule chance."""

    argmax_report: ComplianceReport
    sampling_chance: list[float]


def rule_blind_baseline(evaluator: GateEvaluator, train_walks: np.ndarray) -> RuleBlindBaseline:
    """Both baselines from ``train_walks``' bigrams, on the prompts of ``evaluator``."""
    counts = bigram_counts(train_walks, evaluator.graph.n)
    generated = rule_blind_continuations(argmax_successor(counts), evaluator.last_prompt_tokens, evaluator.steps)
    return RuleBlindBaseline(evaluator.score(generated), sampling_chance(counts, evaluator.graph).tolist())
