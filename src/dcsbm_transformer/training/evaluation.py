"""The gate's question, asked the same way every epoch: can the model continue held-out walks
without breaking an edge or a rule?

Two prompt modes (``gate.prompt``; DESIGN.md, "What the gate generates from"):

- ``jumper_prefix`` (default): ``eval_sequences`` rule events are drawn from the eval walks — a
  jumper visit at step s whose deadline s + r lies inside the walk — *stratified by jumper*: the
  same number for every rule (the total split evenly, rounded up), fewer only where the eval
  corpus holds fewer, with a warning naming the rule. Drawing in proportion to visits would let
  the most visited jumper (Zipf θ) dominate the score. The model gets the walk up to and
  including step s (it sees the last w tokens) and greedily generates r tokens. Scored: the
  generated transitions (from the jumper on), and each drawn event exactly once, on its own
  deadline — one question, one answer; rules pending from before the jumper, or triggered by
  the model's own tokens, are not scored.
- ``first_token``: the spec's free-running walks. Seeds are the first tokens of eval walks drawn
  at random from the whole corpus (never the first N); the model generates walk_length - 1
  tokens. Identical seeds are generated once and counted for each copy.

The draws come from their own random stream (seed, "gate", mode), made once: every epoch is
judged on the same questions, and evaluation never touches the training RNG.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..config import ExperimentConfig
from ..data.compliance import ComplianceReport, RuleEvents, score_compliance
from ..data.graph import Graph
from ..data.walks import Corpus
from ..model import TransformerLM
from ..reproducibility import numpy_rng
from .generation import greedy_continue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateEvaluation:
    report: ComplianceReport
    sequences: int
    distinct_sequences: int
    generated_tokens: int
    seconds: float


class GateEvaluator:
    """Holds the fixed prompts of one experiment and scores a model on them."""

    # set by _prepare_*: the rule events to score; None = every rule event the free-running walks contain
    scored_events: RuleEvents | None

    def __init__(self, config: ExperimentConfig, graph: Graph, eval_corpus: Corpus):
        self.graph = graph
        self.window = config.model.context_window
        self.mode = config.gate.prompt
        rng = numpy_rng(config.seed, "gate", self.mode)
        walks = eval_corpus.walks.astype(np.int64)
        if self.mode == "jumper_prefix":
            self._prepare_jumper_prefix(walks, eval_corpus, config.gate.eval_sequences, rng)
        else:
            self._prepare_first_token(walks, config.gate.eval_sequences, rng)

    def _prepare_jumper_prefix(self, walks, corpus: Corpus, count: int, rng: np.random.Generator) -> None:
        events = corpus.events
        if len(events) == 0:
            raise ValueError("the eval corpus holds no rule events: the jumper_prefix gate has nothing to ask")
        chosen = stratified_by_jumper(events, self.graph, count, rng)
        row, step, vertex = events.row[chosen], events.step[chosen], events.vertex[chosen]
        r = events.deadline[chosen] - step
        self.event_walk, self.event_step = row, step
        self.steps = int(r.max())
        # Scored sequence i = [the jumper, its r generated tokens]: the first transition and the
        # drawn rule are in it, and nothing from before the jumper is.
        self.history = vertex[:, None]
        self.score_from = 1
        self.scored_events = RuleEvents(np.arange(len(chosen)), np.zeros_like(r), vertex, events.target_block[chosen], r)
        self.generated_limit = r  # tokens beyond an event's own r are not scored
        self.prompt_lengths = np.minimum(step + 1, self.window)
        self.prompts = self._left_aligned(walks, row, step + 1 - self.prompt_lengths, self.prompt_lengths)

    def _prepare_first_token(self, walks, count: int, rng: np.random.Generator) -> None:
        chosen = rng.choice(len(walks), size=count, replace=count > len(walks))
        self.steps = walks.shape[1] - 1
        self.history = walks[chosen, :1]
        self.scored_events = None  # every rule event the free-running walks contain
        self.score_from = 1
        self.generated_limit = np.full(len(chosen), self.steps)
        self.prompt_lengths = np.ones(len(chosen), dtype=np.int64)
        self.prompts = self._left_aligned(walks, chosen, np.zeros(len(chosen), dtype=np.int64), self.prompt_lengths)

    def _left_aligned(self, walks, row, start, lengths) -> np.ndarray:
        offsets = np.arange(self.window)[None, :]
        columns = np.minimum(start[:, None] + offsets, walks.shape[1] - 1)
        return np.where(offsets < lengths[:, None], walks[row[:, None], columns], 0)

    @property
    def sequence_count(self) -> int:
        return len(self.prompts)

    def scored_sequences(self, generated: np.ndarray) -> np.ndarray:
        """History + generated tokens, generated tokens past each sequence's own limit padded with -1."""
        beyond = np.arange(generated.shape[1])[None, :] >= self.generated_limit[:, None]
        return np.concatenate([self.history, np.where(beyond, -1, generated)], axis=1)

    def score(self, generated: np.ndarray) -> ComplianceReport:
        """Score continuations ``generated`` [sequences, steps] of this evaluator's prompts, from
        the model or from any other policy (the rule-blind baselines), the same way."""
        return self._score_sequences(self.scored_sequences(generated))

    def _score_sequences(self, sequences: np.ndarray) -> ComplianceReport:
        return score_compliance(sequences, self.graph, score_from=self.score_from, events=self.scored_events)

    @property
    def last_prompt_tokens(self) -> np.ndarray:
        """int64 [sequences]: the token every continuation follows (a jumper, in jumper_prefix mode)."""
        return self.prompts[np.arange(len(self.prompts)), self.prompt_lengths - 1]

    def evaluate(self, model: TransformerLM, autocast: AbstractContextManager | None = None) -> GateEvaluation:
        """Generate greedily from every prompt and score what was generated."""
        started = time.perf_counter()
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with autocast or nullcontext():
                generated = (
                    greedy_continue(
                        model,
                        torch.from_numpy(self.prompts).to(device),
                        torch.from_numpy(self.prompt_lengths).to(device),
                        self.steps,
                    )
                    .cpu()
                    .numpy()
                )
        finally:
            model.train(was_training)
        sequences = self.scored_sequences(generated)
        report = self._score_sequences(sequences)
        return GateEvaluation(
            report=report,
            sequences=len(sequences),
            distinct_sequences=len(np.unique(sequences, axis=0)),
            generated_tokens=int(self.generated_limit.sum()),
            seconds=time.perf_counter() - started,
        )


def stratified_by_jumper(events: RuleEvents, graph: Graph, count: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``count`` events (rounded up to a multiple of the rules), the same number
    drawn without replacement for every jumper; a jumper with fewer events gives all it has and
    is named in a warning. Jumpers are drawn in order from one stream, so the draw is reproducible."""
    jumpers = graph.n_jumpers
    quota = -(-count // jumpers)
    chosen = []
    for j, vertex in enumerate(graph.jumper_vertex.tolist()):
        own = np.flatnonzero(events.vertex == vertex)
        if len(own) < quota:
            log.warning(
                "gate: rule %d (jumper vertex %d) has only %d rule events in the eval corpus, fewer than the %d "
                "asked of every rule (gate.eval_sequences=%d over %d rules); it is judged on %d "
                "(more eval walks, walks.eval_walks, give it more)",
                j,
                vertex,
                len(own),
                quota,
                count,
                jumpers,
                len(own),
            )
        chosen.append(rng.choice(own, size=min(quota, len(own)), replace=False))
    return np.sort(np.concatenate(chosen))
