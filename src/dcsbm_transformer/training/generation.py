"""Greedy (argmax) continuation of prompts, batched across sequences, the model seeing the last w tokens.

Work is saved four ways, none of which changes what is computed beyond float rounding:
- **a KV cache until a window slides**: positions are absolute, so while a sequence is shorter
  than w nothing it has seen moves, and each new token costs one position instead of the whole
  prefix. Every prompt is prefilled once, whatever its length (``TransformerLM.prefill`` takes
  per-row lengths), and decodes at its own position until its window is full;
- **no needless logits once it slides**: a full window that slid is recomputed (every position
  moved), but only the last position's logits are asked for (``TransformerLM.logits_last``);
- **deduplication**: greedy decoding is deterministic, so two sequences whose visible context
  is identical have identical futures. Identical prompts are generated once, and sequences
  whose last-w windows become identical (free-running walks fall into shared cycles) are
  merged; the merged rows take their representative's tokens when results are expanded;
- **cache-sized slices on a CPU**: sliding windows go through the model about 8,192 tokens at
  a time, so activations stay in cache (``_Batch.next_logits``).

Prompts are held left-aligned in a [B, w] buffer with their lengths: a short prompt occupies
positions 0..len-1 (causal attention makes the unused tail irrelevant), a full one slides.
The KV cache holds w positions of every layer for each sequence that has not slid yet
(2 · n_layers · w · d_model floats a sequence: 256 KiB for the anchor model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import KVCache, TransformerLM

CPU_TOKENS_PER_FORWARD = 8192  # measured fastest on a 2-core EPYC for the anchor model (64-128 rows of 64)


@dataclass
class _Merge:
    step: int  # first step whose token the merged rows take from their representative
    rows: torch.Tensor
    representatives: torch.Tensor


def _first_of_each_group(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows of ``keys`` [N, D]: (index of the first row with the same content, for every row;
    sorted indices of the representative rows)."""
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    positions = torch.arange(len(keys), device=keys.device)
    first = torch.full((int(inverse.max()) + 1,), len(keys), device=keys.device, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    return first[inverse], torch.sort(first).values


class _Batch:
    """The live sequences: a left-aligned context buffer, lengths, their ids among all rows, and
    the KV cache of the rows that have not slid yet (``cached``, in row order) with those rows'
    next-token logits (``pending``), already computed by the cache."""

    def __init__(self, model: TransformerLM, context: torch.Tensor, lengths: torch.Tensor, ids: torch.Tensor):
        self.model = model
        self.context, self.lengths, self.ids = context, lengths, ids
        self.cached = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        self.cache: KVCache | None = None
        self.pending: torch.Tensor | None = None

    @property
    def window(self) -> int:
        return self.context.shape[1]

    def prefill(self) -> None:
        """Put every sequence in the cache, with the logits that follow its prompt."""
        longest = int(self.lengths.max())
        pending, self.cache = self.model.prefill(self.context[:, :longest], self.lengths, check_ids=False)
        self.pending = pending.float()
        self.cached[:] = True

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (sorted indices), with their cache rows."""
        if self.cache is not None and self.pending is not None:  # set and cleared together
            cache_row = torch.cumsum(self.cached, 0) - 1
            kept = cache_row[rows[self.cached[rows]]]
            self.cache, self.pending = self.cache.select(kept), self.pending[kept]
        self.context, self.lengths, self.ids = self.context[rows], self.lengths[rows], self.ids[rows]
        self.cached = self.cached[rows]

    def next_logits(self) -> torch.Tensor:
        """Logits of every live sequence's next token, [B, vocab]: from the cache for rows that
        have not slid, recomputed over the window for the others. On a CPU the slid windows go
        through the model in slices of about CPU_TOKENS_PER_FORWARD tokens: activations then
        stay in cache, and the memory-bound work (bias copies, GELU, LayerNorm) runs about
        1.6× faster; rows are independent, so the logits are the same."""
        if bool(self.cached.all()):
            # a batch has rows (greedy_continue), so they were all prefilled or decoded: pending holds their logits
            assert self.pending is not None, "every row is cached but no pending logits"
            return self.pending
        logits = torch.empty(len(self.ids), self.model.vocab_size, device=self.context.device)
        slid = torch.nonzero(~self.cached).squeeze(1)
        windows = self.context[slid]
        rows = len(windows) if windows.device.type != "cpu" else max(1, CPU_TOKENS_PER_FORWARD // self.window)
        logits[slid] = torch.cat([self.model.logits_last(part, check_ids=False).float() for part in windows.split(rows)])
        if self.pending is not None:  # the cached rows' logits (set and cleared with the cache)
            logits[torch.nonzero(self.cached).squeeze(1)] = self.pending
        return logits

    def append(self, tokens: torch.Tensor) -> None:
        """Add one token to every sequence: full windows slide (and leave the cache), the
        others grow by one position, which the cache decodes."""
        full = self.lengths == self.window
        if full.any():
            slid = torch.roll(self.context[full], shifts=-1, dims=1)
            slid[:, -1] = tokens[full]
            self.context[full] = slid
        short = torch.nonzero(~full).squeeze(1)
        if len(short):
            self.context[short, self.lengths[short]] = tokens[short]
            self.lengths[short] += 1
        if self.cache is None:
            return
        if bool((self.cached & full).any()):
            self.cache = self.cache.select(torch.nonzero(~full[self.cached]).squeeze(1))
            self.cached &= ~full
        if not bool(self.cached.any()):
            self.cache = self.pending = None
            return
        pending, self.cache = self.model.decode(tokens[self.cached], self.cache, check_ids=False)
        self.pending = pending.float()

    def dedupe(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Drop rows whose (length, context) repeat an earlier row; return (dropped ids, their representatives' ids)."""
        keys = torch.cat([self.lengths[:, None], self.context], dim=1)
        representative, keep = _first_of_each_group(keys)
        if len(keep) == len(keys):
            return None
        dropped = torch.nonzero(representative != torch.arange(len(keys), device=keys.device)).squeeze(1)
        merged = (self.ids[dropped], self.ids[representative[dropped]])
        self.keep(keep)
        return merged


@torch.no_grad()
def greedy_continue(model: TransformerLM, context: torch.Tensor, lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Continue each prompt by ``steps`` argmax tokens.

    context: int64 [B, w], prompt i left-aligned in ``context[i, :lengths[i]]`` (1 ≤ length ≤ w,
    the caller keeps the last w tokens of longer prompts); returns int64 [B, steps].
    """
    device = context.device
    total = len(context)
    out = torch.empty(total, steps, dtype=torch.long, device=device)
    if steps == 0 or total == 0:
        return out
    context = context.clone()
    context[torch.arange(context.shape[1], device=device)[None, :] >= lengths[:, None]] = 0  # canonical tail
    batch = _Batch(model, context, lengths.clone(), torch.arange(total, device=device))
    initial = batch.dedupe()  # identical prompts: generated once
    batch.prefill()
    merges: list[_Merge] = []
    for step in range(steps):
        tokens = batch.next_logits().argmax(dim=-1)
        out[batch.ids, step] = tokens
        if step + 1 == steps:
            break
        batch.append(tokens)
        if (merged := batch.dedupe()) is not None:
            merges.append(_Merge(step + 1, *merged))

    for merge in reversed(merges):  # later merges first: representatives' tails are final by then
        out[merge.rows, merge.step :] = out[merge.representatives, merge.step :]
    if initial is not None:
        out[initial[0]] = out[initial[1]]
    return out


@torch.no_grad()
def plain_greedy_continue(model: TransformerLM, context: torch.Tensor, lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """The plain reference for ``greedy_continue`` (same arguments, same result): at every step,
    every sequence's visible window is recomputed in full, with logits at every position; no
    cache, no deduplication. Sequences whose windows have the same length share a batch."""
    total, window = context.shape
    device = context.device
    history = torch.zeros(total, window + steps, dtype=torch.long, device=device)
    history[:, :window] = context
    length = lengths.clone()
    for _ in range(steps):
        visible = torch.clamp(length, max=window)
        for size in torch.unique(visible).tolist():
            rows = torch.nonzero(visible == size).squeeze(1)
            columns = (length[rows] - size)[:, None] + torch.arange(size, device=device)[None, :]
            logits = model(history[rows[:, None], columns], check_ids=False).logits  # [rows, size, vocab]
            history[rows, length[rows]] = logits[:, -1].argmax(dim=-1)
        length += 1
    columns = lengths[:, None] + torch.arange(steps, device=device)[None, :]
    return history.gather(1, columns)
