"""Every benchmark in turn (``make bench`` / ``python -m bench``): each prints its table and
merges its figures into bench/results/<machine>.json. Options go to the ones that take them."""

from __future__ import annotations

import subprocess
import sys

SUITE = [
    ["bench.gemm"],
    ["bench.training_step"],
    ["bench.data_generation"],
    ["bench.gate_eval"],
    ["bench.epoch", "--steps", "1000"],
    ["bench.epoch", "--steps", "1000", "--precision", "bf16"],
    ["bench.time_to_gate"],
    ["bench.analysis", "--part", "quick"],
    ["bench.analysis", "--part", "anchor"],  # alone in its process: it reports the peak RSS
    ["bench.statistics"],
]


def main() -> int:
    failed = []
    for module, *arguments in SUITE:
        print(f"\n=== python -m {module} {' '.join(arguments)}", flush=True)
        if subprocess.run([sys.executable, "-m", module, *arguments]).returncode != 0:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
