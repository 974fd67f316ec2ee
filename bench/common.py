"""Helpers shared by the benchmarks: timing, a plain-text table, and a results file per machine."""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from dcsbm_transformer.devices import cpu_name, synchronize
from dcsbm_transformer.storage import atomic_write_bytes

# Where results files go; DCSBM_BENCH_RESULTS moves them (the smoke tests write to a temp folder).
RESULTS_DIR = Path(os.environ.get("DCSBM_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def median_seconds(fn: Callable[[], Any], warmup: int = 3, repeat: int = 10) -> float:
    """Median wall-clock seconds of one call to `fn` over `repeat` timed calls after `warmup`."""
    for _ in range(warmup):
        fn()
    synchronize()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print rows (dicts sharing the first row's keys) as an aligned text table."""
    print(f"\n{title}")
    if not rows:
        return
    keys = list(rows[0])
    cells = [[_format(row.get(k)) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.rjust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths)))


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where a number was measured: host, CPU (and GPU), thread count, torch version, date."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machine_key(device: torch.device | str = "cpu") -> str:
    """File stem for this machine's results: the GPU's name on CUDA, else the hostname."""
    name = machine_info(device).get("gpu") or socket.gethostname()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def record(name: str, payload: dict[str, Any], device: torch.device | str = "cpu") -> Path:
    """Merge {name: payload + machine info} into bench/results/<machine>.json, keeping the
    file's other entries; written atomically so a crash leaves the old file whole."""
    path = RESULTS_DIR / f"{machine_key(device)}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {**payload, "machine": machine_info(device)}
    return atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
