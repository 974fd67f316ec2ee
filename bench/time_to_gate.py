"""The main job end to end: ``dcsbm run`` on a preset from an empty results folder and an empty
data cache (data generation included), timed until the gate passes (or the budget ends).

Run: python -m bench.time_to_gate [--config configs/quick.json] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import print_table, record

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quick.json"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "dcsbm_transformer.cli",
            "run",
            "--config",
            args.config,
            "--device",
            args.device,
            "--results-dir",
            f"{scratch}/results",
            "--cache-dir",
            f"{scratch}/cache",
            "--no-analyze",
        ]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        result = json.loads(next(Path(scratch, "results").glob("*/result.json")).read_text())
    training = result["training"]
    row = {
        "config": Path(args.config).name,
        "seconds": seconds,
        "gate_passed": training["gate_passed"],
        "gate_epoch": training["gate_epoch"],
        "final_rule": training["final_rule_compliance"],
        "device": result["environment"]["device"],
    }
    print_table("time to gate (process start to finish, data generation included)", [row])
    record(f"time_to_gate_{Path(args.config).stem}", row, result["environment"]["device"])


if __name__ == "__main__":
    main()
