"""Data generation: the anchor graph and both corpora with full nested-rule enforcement.

Measured in a fresh subprocess (so peak memory is the generation's own): wall seconds and peak
resident memory of ``build_data`` (graph, 200,000 + 22,222 walks of 256 steps, corpus checks).
Beside it, in the same run, a plain vectorised random walk over the same graph that enforces
*no* rule — the floor for walking that many steps — so the ratio is the price of the rules.

Run: python -m bench.data_generation [--config configs/anchor.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import print_table, record

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, resource, sys, time
import numpy as np
from dcsbm_transformer.config import load_config
from dcsbm_transformer.data.dataset import build_data
config = load_config(sys.argv[1])
started = time.perf_counter()
data = build_data(config)
seconds = time.perf_counter() - started
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
np.save(sys.argv[2], data.graph.indptr); np.save(sys.argv[3], data.graph.indices)
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "walks": len(data.train.walks) + len(data.eval.walks),
                  "restarts": data.train.restarted_walks + data.eval.restarted_walks}))
"""


def plain_walks(indptr: np.ndarray, indices: np.ndarray, count: int, length: int, seed: int = 0) -> np.ndarray:
    """Uniform random walks with no rules: one vectorised step per column."""
    rng = np.random.default_rng(seed)
    degree = np.diff(indptr)
    walks = np.empty((count, length), dtype=np.int32)
    walks[:, 0] = rng.integers(0, len(degree), size=count)
    for step in range(1, length):
        current = walks[:, step - 1]
        walks[:, step] = indices[indptr[current] + (rng.random(count) * degree[current]).astype(np.int64)]
    return walks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "anchor.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, args.config, str(scratch / "indptr.npy"), str(scratch / "indices.npy")],
            capture_output=True,
            text=True,
            check=True,
        )
        indptr, indices = np.load(scratch / "indptr.npy"), np.load(scratch / "indices.npy")
    ours = json.loads(child.stdout.strip().splitlines()[-1])
    config = json.loads(Path(args.config).read_text())
    started = time.perf_counter()
    plain_walks(indptr, indices, ours["walks"], config["walks"]["walk_length"])
    plain_s = time.perf_counter() - started
    row = {
        "walks": ours["walks"],
        "ours_s": ours["seconds"],
        "peak_mb": ours["peak_mb"],
        "plain_no_rules_s": plain_s,
        "rule_overhead": ours["seconds"] / plain_s,
        "restarted_walks": ours["restarts"],
    }
    print_table(f"data generation, {Path(args.config).name} (targets: <= 30 s, <= 2048 MB)", [row])
    record("data_generation", {"config": Path(args.config).name, **row})


if __name__ == "__main__":
    main()
