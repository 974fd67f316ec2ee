"""Causal multi-head self-attention with one fused QKV projection.

Conventions (row vectors, as everywhere in this package): a position's residual vector x is a
row [d_model]; `qkv(x) = x @ W_qkvᵀ + b_qkv` gives [q | k | v], each [d_model]; head h owns
the slice h·d_head:(h+1)·d_head of q, k and v, and the same rows of the input side of the
output projection, so the block output is Σ_h A_h V_h W_o_h + b_o with
W_o_h = proj.weight[:, h·d_head:(h+1)·d_head]ᵀ  [d_head, d_model].

**Edits (interventions).** ``CausalSelfAttention.edit`` is None — the plain model, every kernel
exactly as written — except inside ``mechanism.interventions.intervene``, which sets it for the
duration of one ``with`` block and always restores None on exit. An edit changes the explicit
kernel in three places only, through the ``AttentionEdit`` protocol: which keys each query may see
(``mask``, before the softmax, so the weights renormalise over the rest), the scores the softmax
sees (``scores``: QKᵀ/√d_head in, edited scores out; a perturbation of QKᵀ) and what the weighted
values add up to (``read``). Every entry point (training ``forward``, ``forward_explicit``,
``forward_last``, the KV-cache ``forward_prefill`` / ``forward_decode``) honours it, so an
intervention runs through the model's own code path; with an edit active the fused SDPA kernel is
never used.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class AttentionEdit(Protocol):
    """An intervention on one layer's attention (see the module docstring; implemented in
    ``mechanism.interventions``). Shapes: ``allowed`` bool [B, H, T_q, T_k] (True = the query may
    see the key; causal, or the decode cache's per-row mask), ``weights`` [B, H, T_q, T_k] (the
    softmax over the allowed keys), ``values`` [B, H, T_k, d_head]."""

    def mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """The keys each query may see under the edit, [B, H, T_q, T_k] bool."""
        ...

    def scores(self, scores: torch.Tensor, scale: float) -> torch.Tensor:
        """The scores under the edit, [B, H, T_q, T_k] (plain: ``scores``, which is QKᵀ·scale with
        scale = 1/√d_head; entries the mask hides do not matter)."""
        ...

    def read(self, weights: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """The heads' outputs under the edit, [B, H, T_q, d_head] (plain: ``weights @ values``);
        ``allowed`` is the unedited mask."""
        ...


class CausalSelfAttention(nn.Module):
    """Causal self-attention over absolute positions < context_window.

    `use_sdpa` picks the kernel of the training path `forward`: torch's fused
    scaled_dot_product_attention (True) or the explicit softmax(QKᵀ/√d_head)·V that the
    extraction path always uses (False; then every mode gives bitwise identical logits).
    """

    # A buffer (register_buffer below): declared so the type checker sees a Tensor, not nn.Module.__getattr__'s Tensor | Module.
    causal_mask: torch.Tensor

    def __init__(self, d_model: int, n_heads: int, context_window: int, dropout: float, *, use_sdpa: bool = False):
        super().__init__()
        assert d_model % n_heads == 0, "checked by TransformerLM"
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.scale = 1.0 / math.sqrt(self.d_head)
        self.dropout = dropout
        self.use_sdpa = use_sdpa
        # One GEMM for q, k and v instead of three: same maths, fewer kernel launches.
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.resid_dropout = nn.Dropout(dropout)
        # Not persistent: it is derived from the shape, so checkpoints hold parameters only.
        mask = torch.ones(context_window, context_window, dtype=torch.bool).tril()
        self.register_buffer("causal_mask", mask, persistent=False)
        # None = the plain model. Set only by mechanism.interventions.intervene, inside its `with` block.
        self.edit: AttentionEdit | None = None

    # -- shape helpers -------------------------------------------------------------------
    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, T, d_model] -> [B, H, T, d_head] (a view, no copy)."""
        batch, length, _ = t.shape
        return t.view(batch, length, self.n_heads, self.d_head).transpose(1, 2)

    def _project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, d_model] -> q, k, v, each [B, H, T, d_head]."""
        q, k, v = self.qkv(x).split(self.d_model, dim=-1)
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """Per-head outputs y [B, H, T_q, d_head] -> block output [B, T_q, d_model]."""
        batch, heads, length, d_head = y.shape
        merged = y.transpose(1, 2).reshape(batch, length, heads * d_head)  # a view when H == 1
        return self.resid_dropout(self.proj(merged))

    # -- attention kernels ---------------------------------------------------------------
    def _scores_and_weights(
        self, q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Explicit attention for queries at the last T_q of T_k positions.

        Returns scores QKᵀ/√d_head [B, H, T_q, T_k], the mask of allowed entries (default:
        causal, [T_q, T_k]; or the given one, broadcastable to the scores), and the softmax
        weights [B, H, T_q, T_k] (zero where not allowed).
        """
        t_q, t_k = q.shape[-2], k.shape[-2]
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if allowed is None:
            allowed = self.causal_mask[t_k - t_q : t_k, :t_k]  # query i sits at absolute position t_k - t_q + i
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return scores, allowed, weights

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of queries q [B, H, T_q, d_head] over keys/values [B, H, T_k, d_head];
        returns [B, H, T_q, d_head]. Causal with the queries at the last T_q positions, unless
        ``allowed`` (bool, broadcastable to [B, H, T_q, T_k]) says which keys each query sees."""
        p = self.dropout if self.training else 0.0
        if self.edit is not None:
            return self._attend_edited(self.edit, q, k, v, allowed)
        if not self.use_sdpa:
            _, _, weights = self._scores_and_weights(q, k, allowed)
            return F.dropout(weights, p, self.training) @ v
        if allowed is not None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        t_q, t_k = q.shape[-2], k.shape[-2]
        if t_q == t_k:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        # SDPA's is_causal aligns the mask top-left; queries at the end need it bottom-right.
        mask = None if t_q == 1 else self.causal_mask[t_k - t_q : t_k, :t_k]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)

    def _edited_weights(
        self, edit: AttentionEdit, q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``_scores_and_weights`` under ``edit`` (the active ``self.edit``): (scores, the unedited mask expanded to
        [B, H, T_q, T_k], the edited mask, weights over the edited mask)."""
        t_q, t_k = q.shape[-2], k.shape[-2]
        if allowed is None:
            allowed = self.causal_mask[t_k - t_q : t_k, :t_k]
        allowed = allowed.expand(q.shape[0], self.n_heads, t_q, t_k)
        edited = edit.mask(allowed)
        scores = edit.scores((q @ k.transpose(-2, -1)) * self.scale, self.scale)
        weights = torch.softmax(scores.masked_fill(~edited, float("-inf")), dim=-1)
        return scores, allowed, edited, weights

    def _attend_edited(
        self, edit: AttentionEdit, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None
    ) -> torch.Tensor:
        """``_attend`` with ``edit`` (the active ``self.edit``) applied (explicit kernel, dropout on the weights as usual)."""
        _, allowed, _, weights = self._edited_weights(edit, q, k, allowed)
        return edit.read(F.dropout(weights, self.dropout if self.training else 0.0, self.training), v, allowed)

    # -- entry points --------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, d_model] (already layer-normed) -> attention block output [B, T, d_model]."""
        return self._output(self._attend(*self._project_qkv(x)))

    def forward_explicit(
        self, x: torch.Tensor, *, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like forward, also returning the internals (not detached).

        Returns (output [B, T, d_model] — [B, 1, d_model], the last position's, with
        ``last_only`` —, qkt [B, H, T, T] = QKᵀ/√d_head with entries above the diagonal set to 0,
        attention [B, H, T, T] softmax weights before dropout, values [B, H, T, d_head]).
        """
        q, k, v = self._project_qkv(x)
        edit = self.edit
        if edit is None:
            scores, allowed, weights = self._scores_and_weights(q, k)
            y = F.dropout(weights, self.dropout if self.training else 0.0, self.training) @ v
        else:  # under an edit: qkt keeps its causal layout; attention shows the edited weights
            scores, allowed, _, weights = self._edited_weights(edit, q, k, None)
            y = edit.read(F.dropout(weights, self.dropout if self.training else 0.0, self.training), v, allowed)
        return self._output(y[:, :, -1:] if last_only else y), scores.masked_fill(~allowed, 0.0), weights, v

    def forward_last(self, x: torch.Tensor) -> torch.Tensor:
        """Output for the last position only: x [B, T, d_model] -> [B, 1, d_model].

        Keys and values are projected for every position, the query only for the last.
        """
        d = self.d_model
        weight, bias = self.qkv.weight, self.qkv.bias
        k, v = F.linear(x, weight[d:], bias[d:]).split(d, dim=-1)
        q = F.linear(x[:, -1:], weight[:d], bias[:d])
        y = self._attend(self._split_heads(q), self._split_heads(k), self._split_heads(v))
        return self._output(y)

    def forward_prefill(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Attention for positions 0..T-1 that also fills a key/value cache.

        x [B, T, d_model]; keys, values [B, H, capacity, d_head] are this layer's cache buffers,
        written in place at positions 0..T-1. Returns [B, T, d_model].
        """
        q, k, v = self._project_qkv(x)
        length = x.shape[1]
        keys[:, :, :length] = k
        values[:, :, :length] = v
        return self._output(self._attend(q, k, v))

    def forward_decode(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Attention for one new position per sequence, each at its own absolute position.

        x [B, 1, d_model]; keys, values [B, H, capacity, d_head], this layer's cache, valid
        below ``positions`` [B] (int64) and written in place at ``positions``. Returns
        [B, 1, d_model].
        """
        q, k, v = self._project_qkv(x)
        rows = torch.arange(len(positions), device=positions.device)
        # index_put does not cast as slice assignment does: under autocast k, v are bf16.
        keys[rows, :, positions] = k[:, :, 0].to(keys.dtype)
        values[rows, :, positions] = v[:, :, 0].to(values.dtype)
        allowed = torch.arange(keys.shape[2], device=positions.device)[None, :] <= positions[:, None]
        return self._output(self._attend(q, keys, values, allowed[:, None, None, :]))  # mask [B, 1, 1, capacity]
