"""The gate's question, asked the same way every epoch: can the model continue held-out walks
without breaking an edge or a rule?

Two prompt modes (``gate.prompt``; DESIGN.md, "What the gate generates from"):

- ``jumper_prefix`` (default): ``eval_sequences`` rule events are drawn at random from the eval
  walks — a jumper visit at step s whose deadline s + r lies inside the walk. The model gets the
  walk up to and including step s (it sees the last w tokens) and greedily generates r tokens.
  Scored: generated transitions, and every rule whose deadline falls among the generated tokens —
  the drawn one, any earlier one still pending, and any nested one triggered while generating.
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
from ..data.compliance import ComplianceReport, score_compliance
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
        if count > len(events):
            log.warning(
                "gate.eval_sequences is %d but the eval corpus holds only %d rule events: the gate asks all %d "
                "(more eval walks, walks.eval_walks, give it more)", count, len(events), len(events)
            )
        chosen = np.sort(rng.choice(len(events), size=min(count, len(events)), replace=False))
        row, step = events.row[chosen], events.step[chosen]
        self.event_walk, self.event_step = row, step
        r = events.deadline[chosen] - step
        self.steps = int(r.max())
        # History reaching back max r tokens: every rule that can fall due among the generated
        # tokens was triggered inside it. Left-padded with -1 (no token).
        history = int(self.graph.jumper_r.max())
        columns = step[:, None] - history + 1 + np.arange(history)[None, :]
        self.history = np.where(columns >= 0, walks[row[:, None], np.maximum(columns, 0)], -1)
        self.score_from = history
        self.generated_limit = r  # tokens beyond an event's own r are not scored
        self.prompt_lengths = np.minimum(step + 1, self.window)
        self.prompts = self._left_aligned(walks, row, step + 1 - self.prompt_lengths, self.prompt_lengths)

    def _prepare_first_token(self, walks, count: int, rng: np.random.Generator) -> None:
        chosen = rng.choice(len(walks), size=count, replace=count > len(walks))
        self.steps = walks.shape[1] - 1
        self.history = walks[chosen, :1]
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

    def evaluate(self, model: TransformerLM, autocast: AbstractContextManager | None = None) -> GateEvaluation:
        """Generate greedily from every prompt and score what was generated."""
        started = time.perf_counter()
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with autocast or nullcontext():
                generated = greedy_continue(
                    model,
                    torch.from_numpy(self.prompts).to(device),
                    torch.from_numpy(self.prompt_lengths).to(device),
                    self.steps,
                ).cpu().numpy()
        finally:
            model.train(was_training)
        sequences = self.scored_sequences(generated)
        report = score_compliance(sequences, self.graph, score_from=self.score_from)
        return GateEvaluation(
            report=report,
            sequences=len(sequences),
            distinct_sequences=len(np.unique(sequences, axis=0)),
            generated_tokens=int(self.generated_limit.sum()),
            seconds=time.perf_counter() - started,
        )
