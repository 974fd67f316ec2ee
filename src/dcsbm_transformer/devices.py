"""Where a run computes and in what precision: the device a run asks for, the autocast context
its precision option means, whether the device does bf16 natively, and waiting for a device's
queued work before reading a clock."""

from __future__ import annotations

import platform
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


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's as the platform reports it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Native bf16 matrix multiply: on CUDA as torch reports it, on a CPU when oneDNN can use
    AVX512-BF16 or AMX (elsewhere bf16 is emulated and slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def synchronize() -> None:
    """Wait for queued CUDA work, so a wall-clock reading includes it (nothing to wait for on a CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
