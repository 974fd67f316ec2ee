"""Where a run computes and in what precision: the device a run asks for, the autocast context
its precision option means, and waiting for a device's queued work before reading a clock."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from functools import partial

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu`` or ``cuda``; refuses cuda without one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine (use --device cpu or auto)")
    return torch.device(name)


def autocast_factory(precision: str, device: torch.device) -> Callable:
    """A factory of the context the forward passes run in: nothing for fp32, bf16 autocast for bf16."""
    if precision == "fp32":
        return nullcontext
    if precision == "bf16":
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"--precision must be fp32 or bf16, got {precision!r}")


def synchronize() -> None:
    """Wait for queued CUDA work, so a wall-clock reading includes it (nothing to wait for on a CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
