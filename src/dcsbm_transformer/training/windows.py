"""Training examples: windows of context_window + 1 tokens cut from the training walks.

Each epoch cuts every walk into k = walk_length // (w + 1) back-to-back windows starting at a
random *phase* (0 .. walk_length - k(w + 1)), drawn per walk and per epoch, and shuffles all
windows. So an epoch uses k(w + 1)/walk_length of the tokens (76% for the anchor config), a
different part of each walk every epoch; a jumper sits at every window position equally often;
and a rule with r ≤ w lies wholly inside one window (jumper and deadline seen together) in a
share of epochs of about (w + 1 - r) / (w + 1) — a different share of the pairs each epoch —
instead of never, as with fixed chunks at fixed offsets.

With ``training.window_stride`` = s (≤ w + 1) the windows of a walk overlap: they start every
s tokens, k = (walk_length − (w + 1)) // s + 1 of them from a random phase. A rule of jump length
r lies wholly inside some window of every epoch when s ≤ w + 1 − r (there are w + 1 − r starts
that hold a jumper and its deadline together, and one of every s consecutive starts is used), at
the price of (w + 1)/s times as many windows per epoch: an epoch then means one pass over
overlapping windows, not over the tokens once; compare runs at equal steps, not equal epochs
(docs/learnability.md). Unset (the default), s = w + 1: back-to-back windows, as above.

Everything is drawn from a generator seeded by (seed, epoch), so any epoch's batches can be
rebuilt exactly (resume needs no data-loader state).
"""

from __future__ import annotations

import math

import torch

from ..reproducibility import torch_generator


def windows_per_walk(walk_length: int, context_window: int, stride: int | None = None) -> int:
    """k: back-to-back windows of w + 1 tokens (stride None), or windows starting every ``stride`` tokens."""
    span = context_window + 1
    if stride is None:
        return walk_length // span
    return (walk_length - span) // stride + 1


def steps_per_epoch(walk_count: int, walk_length: int, context_window: int, batch_size: int, stride: int | None = None) -> int:
    return math.ceil(walk_count * windows_per_walk(walk_length, context_window, stride) / batch_size)


def epoch_windows(
    walk_count: int, walk_length: int, context_window: int, seed: int, epoch: int, stride: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffled (walk index, start position) of every window of ``epoch``; int64 [walks * k] each."""
    per_walk = windows_per_walk(walk_length, context_window, stride)
    span = context_window + 1
    step = span if stride is None else stride
    covered = (per_walk - 1) * step + span  # tokens from the first window's start to the last one's end
    generator = torch_generator(seed, "epoch-windows", epoch)
    phase = torch.randint(0, walk_length - covered + 1, (walk_count,), generator=generator)
    walk = torch.arange(walk_count).repeat_interleave(per_walk)
    start = phase.repeat_interleave(per_walk) + torch.arange(per_walk).repeat(walk_count) * step
    order = torch.randperm(len(walk), generator=generator)
    return walk[order], start[order]


def gather_windows(walks: torch.Tensor, walk: torch.Tensor, start: torch.Tensor, length: int) -> torch.Tensor:
    """Token windows [batch, length] (int64) from ``walks`` [W, L] on the same device."""
    offsets = torch.arange(length, device=walks.device)
    return walks[walk[:, None], start[:, None] + offsets].long()
