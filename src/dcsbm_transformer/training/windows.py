"""Training examples: windows of context_window + 1 tokens cut from the training walks.

Each epoch cuts every walk into k = walk_length // (w + 1) back-to-back windows starting at a
random *phase* (0 .. walk_length - k(w + 1)), drawn per walk and per epoch, and shuffles all
windows. So an epoch uses k(w + 1)/walk_length of the tokens (76% for the anchor config), a
different part of each walk every epoch; a jumper sits at every window position equally often;
and a rule with r ≤ w lies wholly inside one window (jumper and deadline seen together) in a
share of epochs of about (w + 1 - r) / (w + 1) — a different share of the pairs each epoch —
instead of never, as with fixed chunks at fixed offsets.

Everything is drawn from a generator seeded by (seed, epoch), so any epoch's batches can be
rebuilt exactly (resume needs no data-loader state).
"""

from __future__ import annotations

import math

import torch

from ..reproducibility import torch_generator


def windows_per_walk(walk_length: int, context_window: int) -> int:
    return walk_length // (context_window + 1)


def steps_per_epoch(walk_count: int, walk_length: int, context_window: int, batch_size: int) -> int:
    return math.ceil(walk_count * windows_per_walk(walk_length, context_window) / batch_size)


def epoch_windows(walk_count: int, walk_length: int, context_window: int, seed: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled (walk index, start position) of every window of ``epoch``; int64 [walks * k] each."""
    per_walk = windows_per_walk(walk_length, context_window)
    span = context_window + 1
    generator = torch_generator(seed, "epoch-windows", epoch)
    phase = torch.randint(0, walk_length - per_walk * span + 1, (walk_count,), generator=generator)
    walk = torch.arange(walk_count).repeat_interleave(per_walk)
    start = phase.repeat_interleave(per_walk) + torch.arange(per_walk).repeat(walk_count) * span
    order = torch.randperm(len(walk), generator=generator)
    return walk[order], start[order]


def gather_windows(walks: torch.Tensor, walk: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """Token windows [batch, length] (int64) from ``walks`` [W, L] on the same device."""
    offsets = torch.arange(length, device=walks.device)
    return walks[walk[:, None], start[:, None] + offsets].long()
