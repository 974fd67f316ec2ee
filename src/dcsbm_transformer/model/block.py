"""Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

from __future__ import annotations

import torch
from torch import nn

from .attention import CausalSelfAttention


class MLP(nn.Module):
    """d_model -> 4·d_model -> GELU -> d_model, with residual dropout on the output."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.act = nn.GELU()
        self.proj = nn.Linear(4 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """One pre-norm decoder block; every method maps the residual stream [B, T, d_model]."""

    def __init__(self, d_model: int, n_heads: int, context_window: int, dropout: float, *, use_sdpa: bool = False):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, context_window, dropout, use_sdpa=use_sdpa)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_explicit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (block output, qkt, attention, values); see CausalSelfAttention.forward_explicit."""
        out, qkt, attention, values = self.attn.forward_explicit(self.ln_1(x))
        x = x + out
        return x + self.mlp(self.ln_2(x)), qkt, attention, values

    def forward_explicit_last(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like forward_explicit, but the block output only at the last position, [B, 1, d_model]:
        the internals cover every position, the MLP runs for the last one alone."""
        out, qkt, attention, values = self.attn.forward_explicit(self.ln_1(x), last_only=True)
        x_last = x[:, -1:] + out
        return x_last + self.mlp(self.ln_2(x_last)), qkt, attention, values

    def forward_last(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d_model] -> the block output at the last position only, [B, 1, d_model]."""
        x_last = x[:, -1:] + self.attn.forward_last(self.ln_1(x))
        return x_last + self.mlp(self.ln_2(x_last))

    def forward_prefill(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Positions 0..T-1 [B, T, d_model] -> [B, T, d_model]; see CausalSelfAttention.forward_prefill."""
        x = x + self.attn.forward_prefill(self.ln_1(x), keys, values)
        return x + self.mlp(self.ln_2(x))

    def forward_decode(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One new position per sequence [B, 1, d_model] -> [B, 1, d_model]; see CausalSelfAttention.forward_decode."""
        x = x + self.attn.forward_decode(self.ln_1(x), keys, values, positions)
        return x + self.mlp(self.ln_2(x))
