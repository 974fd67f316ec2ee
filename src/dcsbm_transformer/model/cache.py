"""Key/value cache for incremental greedy decoding at absolute positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """Cached keys and values of every layer for a batch of sequences.

    keys, values: [n_layers, B, n_heads, capacity, d_head], capacity = the model's context
    window; row i holds data at positions < lengths[i]. Rows may have different lengths (prompts
    of different lengths decode side by side, each at its own absolute position).
    `TransformerLM.decode` writes in place.
    """

    keys: torch.Tensor
    values: torch.Tensor
    lengths: torch.Tensor  # int64 [B]

    @classmethod
    def empty(
        cls,
        n_layers: int,
        batch: int,
        n_heads: int,
        capacity: int,
        d_head: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> KVCache:
        shape = (n_layers, batch, n_heads, capacity, d_head)
        return cls(
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(batch, device=device, dtype=torch.long),
        )

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def select(self, index: torch.Tensor) -> KVCache:
        """A new cache holding batch rows `index` (1-D integer tensor, repeats allowed), e.g. to
        drop finished or duplicate sequences. The original cache is left unchanged."""
        index = index.to(self.keys.device)
        return KVCache(self.keys.index_select(1, index), self.values.index_select(1, index), self.lengths[index])
