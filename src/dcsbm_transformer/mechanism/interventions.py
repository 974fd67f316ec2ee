"""Interventions on the model's forward pass: what happens to a rule when the model loses the jumper?

Three interventions, each a statement a causal claim can be tested with (DESIGN.md, Wave 3,
"Mechanism"):

* :class:`Knockout` — per layer (and optionally per head): every query *after* the jumper's
  position may no longer attend to it. The score of the jumper's key is set to −inf before the
  softmax, so the weights renormalise over the other keys:
  ``A'[q, k] = exp(s[q, k]) / Σ_{k' ≠ p} exp(s[q, k'])`` for ``q > p``, ``A'[q, p] = 0``.
  The jumper's own query (the pass that emits the first generated token) is left alone: it is not
  a read *of* the jumper from elsewhere, and its residual stream carries the token itself anyway.
* :class:`MeanAblation` — per layer (and head): what the queries after the jumper read from the
  jumper's position is replaced by what they would read from an average position: the head's value
  vector there, ``v_p``, is swapped for a reference mean ``v̄`` (the head's mean value over every
  position of the events' prompt windows, :func:`mean_values`), the attention weights unchanged:
  ``y'_q = Σ_k A[q, k] v_k + A[q, p] (v̄ − v_p)`` for ``q > p``. Unlike the knockout it keeps the
  attention pattern (the head still looks at the jumper as much) and removes only *what* it reads
  (Wang et al. 2022, "Interpretability in the wild", mean-ablation).
* :func:`patch_jumpers` — the input side: the prompt's last token (the jumper) is replaced by
  another jumper with a different target block, the walk before it unchanged. One of the same
  block where the graph has one (the prompt stays a walk: same block, and the jumper is reached by
  the same kind of transition — though the exact edge is still checked and reported); otherwise
  another block's, and then the prompt's last transition may not be an edge (``PatchPlan.edge``
  says, per event).
* :class:`ScorePerturbation` — per layer: a given perturbation E is added to every head's QKᵀ
  before the softmax, ``S' = (QKᵀ + E)/√d_head`` (entries the causal mask hides play no part);
  the perturbation bound of ``mechanism.perturbation`` is tested with it.

**Scope.** :func:`intervene` is a context manager (TransformerLens' ``run_with_hooks``, without
hooks left behind): it sets the edits on the chosen layers' attention modules
(``CausalSelfAttention.edit``), runs the body, and restores ``None`` on exit, error or not. With
no intervention active the model is the plain model, bitwise (a test). The edits go through the
model's own kernels — every entry point honours them — so no copy of the forward pass exists.

**Positions.** A position is the jumper's index among the *keys of the call*: in a sliding window
of w tokens whose last token is s + k − 1 (pass k), the jumper sits at ``w − k``; in a KV-cache call
it is the absolute position. One int for every row, or an int64 tensor [B] (one per row); a
position outside ``0..T_k − 1`` (the jumper has left the window) makes the edit a no-op for that row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..data.graph import Graph
from ..model import ExtractionMode, TransformerLM

__all__ = ["Knockout", "MeanAblation", "PatchPlan", "ScorePerturbation", "intervene", "mean_values", "patch_jumpers"]


def _rows_and_heads(position: int | torch.Tensor, heads: tuple[int, ...] | None, allowed: torch.Tensor):
    """(position per row [B] int64, head selection [H] bool, query-after-the-jumper mask [B, H, T_q] bool,
    key-is-the-jumper mask [B, T_k] bool) for ``allowed`` [B, H, T_q, T_k]."""
    batch, n_heads, _, t_k = allowed.shape
    device = allowed.device
    pos = torch.as_tensor(position, dtype=torch.long, device=device).expand(batch)
    keys = torch.arange(t_k, device=device)
    is_jumper = keys[None, :] == pos[:, None]  # [B, T_k]: all False when the jumper is out of the window
    # a query sits after the jumper when it may see some key beyond it (causal rows: its own position > p)
    after = (allowed & (keys > pos[:, None])[:, None, None, :]).any(dim=-1)  # [B, H, T_q]
    after &= is_jumper.any(dim=1)[:, None, None]
    selected = torch.zeros(n_heads, dtype=torch.bool, device=device)
    selected[list(range(n_heads)) if heads is None else list(heads)] = True
    return pos, selected, after & selected[None, :, None], is_jumper


@dataclass(frozen=True)
class Knockout:
    """Queries after ``position`` may not attend to it (scores −inf before the softmax), in
    ``heads`` (None = every head) of the layer this edit is given to."""

    position: int | torch.Tensor
    heads: tuple[int, ...] | None = None

    def mask(self, allowed: torch.Tensor) -> torch.Tensor:
        _, _, after, is_jumper = _rows_and_heads(self.position, self.heads, allowed)
        return allowed & ~(after[..., None] & is_jumper[:, None, None, :])

    def scores(self, scores: torch.Tensor, scale: float) -> torch.Tensor:
        return scores

    def read(self, weights: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return weights @ values


@dataclass(frozen=True)
class MeanAblation:
    """Queries after ``position`` read the reference ``mean`` [H, d_head] instead of the value
    there, with unchanged attention weights, in ``heads`` (None = every head)."""

    position: int | torch.Tensor
    mean: torch.Tensor
    heads: tuple[int, ...] | None = None

    def mask(self, allowed: torch.Tensor) -> torch.Tensor:
        return allowed

    def scores(self, scores: torch.Tensor, scale: float) -> torch.Tensor:
        return scores

    def read(self, weights: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        pos, _, after, is_jumper = _rows_and_heads(self.position, self.heads, allowed)
        rows = torch.arange(len(pos), device=pos.device)
        jumper_value = values[rows, :, pos.clamp(0, values.shape[2] - 1)]  # [B, H, d_head]
        on_jumper = (weights * is_jumper[:, None, None, :]).sum(dim=-1) * after  # [B, H, T_q]: A[q, p], 0 where not edited
        shift = self.mean.to(values.dtype)[None] - jumper_value  # [B, H, d_head]
        return weights @ values + on_jumper[..., None] * shift[:, :, None, :]


@dataclass(frozen=True)
class ScorePerturbation:
    """``delta`` [B, H, T, T] (in units of QKᵀ, before the 1/√d_head scale) added to the layer's
    QKᵀ: the softmax sees ``(QKᵀ + delta)/√d_head`` over the causal keys. A call with T_q queries at
    the last positions of T_k = T keys (``forward_last``: T_q = 1) takes delta's last T_q rows; a
    call over another number of keys (the KV-cache path) is refused. Attention weights and values
    otherwise as in the plain model."""

    delta: torch.Tensor
    heads: tuple[int, ...] | None = None  # every head; a head left alone has zero rows in delta

    def mask(self, allowed: torch.Tensor) -> torch.Tensor:
        return allowed

    def scores(self, scores: torch.Tensor, scale: float) -> torch.Tensor:
        batch, heads, t_q, t_k = scores.shape
        if tuple(self.delta.shape) != (batch, heads, t_k, t_k) or t_q > t_k:
            raise ValueError(
                f"ScorePerturbation: delta has shape {tuple(self.delta.shape)}, the call's scores {tuple(scores.shape)}; "
                f"expected delta [B, H, T, T] = [{batch}, {heads}, {t_k}, {t_k}]"
            )
        return scores + scale * self.delta[..., t_k - t_q :, :].to(scores.dtype)

    def read(self, weights: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return weights @ values


@contextmanager
def intervene(model: TransformerLM, edits: Mapping[int, Knockout | MeanAblation | ScorePerturbation]) -> Iterator[TransformerLM]:
    """Run the body with ``edits`` (layer → edit) active in ``model``; restores the plain model on exit.

    Raises ValueError for a layer the model does not have, and for nesting (an edit already
    active): one intervention at a time, so none can leak into another."""
    bad = [layer for layer in edits if not 0 <= layer < model.n_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} do not exist: the model has layers 0..{model.n_layers - 1}")
    heads = {h for edit in edits.values() for h in (edit.heads or ())}
    if any(not 0 <= h < model.n_heads for h in heads):
        raise ValueError(f"head(s) {sorted(heads)} do not all exist: the model has heads 0..{model.n_heads - 1}")
    modules = [model.blocks[layer].attn for layer in edits]
    if any(block.attn.edit is not None for block in model.blocks):
        raise ValueError("an intervention is already active on this model: interventions do not nest")
    try:
        for module, edit in zip(modules, edits.values()):
            module.edit = edit
        yield model
    finally:
        for module in modules:
            module.edit = None


@torch.no_grad()
def mean_values(model: TransformerLM, prompts: torch.Tensor, batch_rows: int = 4096) -> torch.Tensor:
    """Every head's mean value vector over every position of ``prompts`` [E, T] (the intact
    model): the reference of :class:`MeanAblation`, [n_layers, n_heads, d_head]."""
    total = torch.zeros(model.n_layers, model.n_heads, model.d_head, dtype=torch.float64)
    for part in prompts.split(batch_rows):
        values = model(part, ExtractionMode.SVD_TARGETS, check_ids=False).values  # [B, L, H, T, d_head]
        total += values.double().sum(dim=(0, 3)).cpu()
    return (total / (prompts.shape[0] * prompts.shape[1])).float()


@dataclass(frozen=True)
class PatchPlan:
    """For E events: the jumper patched in (rule index), whether it is of the original jumper's
    block (then the prompt stays in the same block), and whether the prompt's last transition
    (the token before the jumper → the patched jumper) is an edge of the graph. All [E]."""

    patched: np.ndarray  # int64 rule index of the patched jumper
    same_block: np.ndarray  # bool
    edge: np.ndarray  # bool

    def prompts(self, prompts: np.ndarray, graph: Graph) -> np.ndarray:
        """``prompts`` [E, w] with the last token (the jumper) replaced by the patched jumper."""
        out = np.array(prompts, dtype=np.int64, copy=True)
        out[:, -1] = graph.jumper_vertex[self.patched]
        return out


def patch_jumpers(graph: Graph, jumper: np.ndarray, previous: np.ndarray) -> PatchPlan:
    """For events of rules ``jumper`` [E] whose prompts' second-to-last tokens are ``previous`` [E]:
    the jumper each one is patched with, a jumper whose target block differs from the original's.

    Candidates of the original's own block come first; only when the block has none is another
    block's jumper used. Among the candidates, event i takes candidate ``i mod (count)``, so the
    patches are spread evenly and deterministically over the candidates. Raises ValueError when a
    rule has no candidate at all (every jumper has the same target block)."""
    block = graph.block[graph.jumper_vertex]  # [J] the jumpers' own blocks
    target = graph.jumper_target_block
    other_target = target[None, :] != target[:, None]  # [J, J]
    same = other_target & (block[None, :] == block[:, None])
    candidates = np.where(same.any(axis=1, keepdims=True), same, other_target)  # [J, J]
    counts = candidates.sum(axis=1)
    if (counts == 0).any():
        raise ValueError(
            f"{[graph.rule_labels[j] for j in np.flatnonzero(counts == 0)]}: no other jumper has another "
            "target block, so no patch can change the target"
        )
    # candidate lists as rows: column c of row j is j's c-th candidate (ascending rule index)
    order = np.argsort(~candidates, axis=1, kind="stable")
    jumper = np.asarray(jumper, dtype=np.int64)
    choice = np.arange(len(jumper)) % counts[jumper]
    patched = order[jumper, choice].astype(np.int64)
    same_block = block[patched] == block[jumper]
    edge = graph.dense_adjacency[np.asarray(previous, dtype=np.int64), graph.jumper_vertex[patched]]
    return PatchPlan(patched=patched, same_block=same_block, edge=np.asarray(edge, dtype=bool))
