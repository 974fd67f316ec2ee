"""Sweep throughput: the same small sweep run with ``--jobs 1`` and with ``--jobs 2``.

A 4-point grid at the quick scale (``configs/quick.json`` at r = 8, seeds 1-4, 20 epochs at most,
2,000 analysis events): each point trains to the gate, then is analysed, through ``dcsbm sweep``
and submitit's local executor, from empty results folders and a shared, already-built data cache
(the first pass builds it and is not timed). ``jobs_ratio`` = points per hour with ``--jobs 2`` ÷
with ``--jobs 1`` (each job gets cores // jobs threads). Run it on a quiet machine.

Run: python -m bench.sweep [--seeds 4] [--events 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import print_table, record

ROOT = Path(__file__).resolve().parent.parent


def sweep_file(folder: Path, seeds: int, events: int) -> Path:
    path = folder / "throughput.json"
    path.write_text(
        json.dumps(
            {
                "name": "throughput",
                "base": str(ROOT / "configs" / "quick.json"),
                "set": {"training.max_epochs": 20, "analysis.events": events},
                "axes": {"seed": list(range(1, seeds + 1))},
            }
        )
    )
    return path


def run_sweep(path: Path, scratch: Path, jobs: int, cache: Path) -> tuple[float, dict]:
    command = [
        sys.executable,
        "-m",
        "dcsbm_transformer.cli",
        "sweep",
        str(path),
        "--jobs",
        str(jobs),
        "--results-dir",
        str(scratch / "results"),
        "--sweeps-dir",
        str(scratch / "sweeps"),
        "--cache-dir",
        str(cache),
        "--device",
        "cpu",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sweep with --jobs {jobs} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    status = json.loads((scratch / "sweeps" / "throughput" / "status.json").read_text())
    return seconds, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        path = sweep_file(scratch, args.seeds, args.events)
        cache = scratch / "cache"
        subprocess.run(
            [sys.executable, "-m", "dcsbm_transformer.cli", "sweep", str(path), "--dry-run", "--cache-dir", str(cache)],
            check=True,
            capture_output=True,
        )
        for seed in range(1, args.seeds + 1):  # build the data once: the comparison is about training and analysis
            config = json.loads((ROOT / "configs" / "quick.json").read_text())
            config["seed"] = seed
            (scratch / f"s{seed}.json").write_text(json.dumps(config))
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dcsbm_transformer.cli",
                    "generate",
                    "--config",
                    str(scratch / f"s{seed}.json"),
                    "--out",
                    str(scratch / f"data{seed}"),
                    "--cache-dir",
                    str(cache),
                ],
                check=True,
                capture_output=True,
            )
        rows = []
        for jobs in (1, 2):
            seconds, status = run_sweep(path, scratch / f"jobs{jobs}", jobs, cache)
            points = status["rows"]
            rows.append(
                {
                    "jobs": jobs,
                    "points": len(points),
                    "seconds": round(seconds, 1),
                    "points_per_hour": round(3600 * len(points) / seconds, 1),
                    "gate_epochs": [p.get("gate_epoch") for p in points],
                }
            )
    ratio = rows[1]["points_per_hour"] / rows[0]["points_per_hour"]
    for row in rows:
        row["jobs_ratio"] = round(ratio, 2)
    record("sweep_throughput", {"rows": rows, "jobs_ratio": round(ratio, 2)})
    print_table("sweep throughput: the same 4-point quick-scale sweep (train to the gate + analyse), --jobs 1 vs --jobs 2", rows)


if __name__ == "__main__":
    main()
