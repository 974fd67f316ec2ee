"""Learning-rate schedule: linear warmup, then cosine decay to a floor — a pure function of the step.

Optimiser step i (0-based) runs at ``peak * lr_multiplier(i, ...)``: warmup climbs linearly from
1/warmup_steps at step 0 to 1.0 at the last warmup step; the cosine then falls from 1.0 at step
``warmup_steps`` to ``min_fraction`` at the last step, ``total_steps - 1``. Stepped every optimiser
step (not every epoch), over the steps of all ``max_epochs`` epochs.
"""

from __future__ import annotations

import math
from functools import partial

import torch


def warmup_steps_for(total_steps: int, warmup_fraction: float) -> int:
    return int(warmup_fraction * total_steps)


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, min_fraction: float) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_fraction + (1.0 - min_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float, min_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over ``lr_multiplier``; its state_dict is plain data (checkpoint-safe)."""
    schedule = partial(
        lr_multiplier,
        total_steps=total_steps,
        warmup_steps=warmup_steps_for(total_steps, warmup_fraction),
        min_fraction=min_fraction,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
