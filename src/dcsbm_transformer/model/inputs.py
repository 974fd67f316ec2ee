"""Validation of token inputs: user mistakes become a ValueError that says what to fix,
not an IndexError from deep inside an embedding lookup."""

from __future__ import annotations

import torch

_INTEGER_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def check_tokens(tokens: object, *, vocab_size: int, max_len: int, ndim: int, check_ids: bool, name: str = "tokens") -> torch.Tensor:
    """Return `tokens` as an int64/int32 tensor after checking it.

    Checks: a torch.Tensor of an integer dtype with `ndim` dimensions; for ndim == 2 the
    sequence length T satisfies 1 <= T <= max_len; when `check_ids`, every id lies in
    [0, vocab_size). The id check reads the tensor's min and max, which forces a host sync on
    a GPU, so callers feeding known-good data may turn it off.
    """
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of integer token ids, got {type(tokens).__name__}")
    if tokens.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"{name} must have an integer dtype (token ids), got {tokens.dtype}; convert with .long()")
    if tokens.dim() != ndim:
        expected = "[batch, T]" if ndim == 2 else "[batch]"
        raise ValueError(f"{name} must be {ndim}-D {expected}, got shape {tuple(tokens.shape)}")
    if ndim == 2:
        length = tokens.shape[1]
        if length == 0:
            raise ValueError(f"{name} has an empty time dimension (shape {tuple(tokens.shape)}); need T >= 1")
        if length > max_len:
            raise ValueError(
                f"{name} has T={length} positions but the context window is {max_len}; pass at most the last {max_len} tokens"
            )
    if check_ids and tokens.numel() > 0:
        low, high = (int(v) for v in torch.aminmax(tokens))
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(f"{name} contains id {bad}, outside the vocabulary [0, {vocab_size})")
    # nn.Embedding accepts only int32/int64 indices.
    if tokens.dtype not in (torch.int32, torch.int64):
        tokens = tokens.long()
    return tokens
