"""Where a run computes and in what precision: the device a run asks for, the autocast context
its precision option means, whether the device does bf16 natively, and waiting for a device's
queued work before reading a clock; how many CPU threads fit the cores that are free."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path

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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity on Linux, else every core)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores(cores: int, load: float) -> int:
    """Cores not taken by other processes: cores − the 1-minute load average, rounded, at least 1."""
    return max(1, min(cores, round(cores - load)))


def thread_advice(cores: int, load: float, threads: int, chosen: bool, jobs: int | None = None) -> str | None:
    """A one-line warning, with the fix, when ``threads`` torch threads (per job, ``jobs`` sweep
    points at once; None = one process) would not fit the free cores; None when they fit or the
    user chose the number (``chosen``: ``--threads`` or ``OMP_NUM_THREADS``).

    ``load`` is the 1-minute load average (runnable processes), free cores = :func:`free_cores`. A
    CPU shared with another busy process runs a threaded step far slower than one thread would (2
    cores, one busy: an epoch took 11.5 s with 2 threads and 4.1 s with 1), so this warns rather
    than letting torch take a thread per core."""
    free = free_cores(cores, load)
    if chosen or threads * (jobs or 1) <= free:
        return None
    if jobs is None:
        fix = f"pass --threads {free} (or set OMP_NUM_THREADS={free})"
    else:
        at_once = min(jobs, free)
        fix = f"pass --jobs {at_once} --threads {max(1, free // at_once)}"
    return (
        f"the CPU is busy (load {load:.1f} on {cores} cores): {threads * (jobs or 1)} threads would compete with other "
        f"processes and run slowly; {fix} to use the {free} free core(s)"
    )


def threads_warning(threads: int, chosen: bool, jobs: int | None = None) -> str | None:
    """:func:`thread_advice` for this machine now (None where the load average is unknown)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return None
    return thread_advice(usable_cores(), load, threads, chosen, jobs)


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo's "model name"), else what ``platform`` knows: where a
    timing was measured (calibration files, benchmark records)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
