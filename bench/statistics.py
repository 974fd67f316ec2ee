"""Statistics speed: horizon.json for an anchor-shaped analysis against a plain implementation.

The workload is the anchor analysis's shape: every registered metric (``len(METRICS)``) × 2
targets × ``--layers`` (4) × 1 head metric arrays, 2,000 events of r = 58 (58 lookbacks) over 8
jumpers with a violation rate of about 20%, plus the behavioural predictor and the context-only
arrays; ``compute_horizon`` runs exactly as ``dcsbm analyze`` does (10,000 within-jumper
permutations, raised until Holm's floor is below alpha / 2 for a large family, DeLong CIs, the
simultaneous comparison with the logits, incremental tests, Holm). The values are random: the cost does not depend on them (ties aside).

``plain``: on a subset of arrays and permutations, the straightforward way — for each
permutation, shuffle labels within jumper, then ``scipy.stats.rankdata`` per jumper and per
lookback to get the stratified AUROC (ranks recomputed every resample). It is checked to give
the same statistic as ours on the same shuffles, then timed per (array × permutation);
``speedup`` = plain seconds per (array × permutation) ÷ ours (whole horizon, everything included).

Run: python -m bench.statistics [--events 2000] [--permutations 10000] [--plain-arrays 2] [--plain-permutations 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import rankdata

from bench.common import print_table, record
from dcsbm_transformer.analysis.measure.batched import metric_key
from dcsbm_transformer.analysis.measure.metrics import METRICS
from dcsbm_transformer.analysis.stats.horizon import compute_horizon
from dcsbm_transformer.analysis.stats.statistics import permuted_labels
from dcsbm_transformer.config import config_from_dict

R, LAYERS, JUMPERS = 58, 4, 8


def anchor_arrays(events: int, seed: int = 0, layers: int = LAYERS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    jumper = np.repeat(np.arange(JUMPERS), -(-events // JUMPERS))[:events]
    arrays = {
        "violated": rng.random(events) < 0.2,
        "event_jumper": jumper,
        "event_r": np.full(events, R),
        "target_block_probability": rng.random((events, R)).astype(np.float32),
    }
    for target in ("qkt", "avwo"):
        for layer in range(layers):
            for name in METRICS:
                key = metric_key(target, layer, 0, name)
                arrays[key] = rng.normal(size=(events, R)).astype(np.float32)
                arrays[f"context.{key}"] = rng.normal(size=events).astype(np.float32)
    return arrays


def plain_statistic(x: np.ndarray, labels: np.ndarray, jumper: np.ndarray) -> np.ndarray:
    """Stratified AUROC of every lookback column for one labelling, ranks recomputed from scratch."""
    num = np.zeros(x.shape[1])
    den = np.zeros(x.shape[1])
    for s in np.unique(jumper):
        sel = jumper == s
        y = labels[sel]
        nv, ns = y.sum(), (~y).sum()
        for j in range(x.shape[1]):  # the plain way: a loop over lookbacks, rankdata each time
            ranks = rankdata(x[sel, j])
            num[j] += ranks[y].sum() - nv * (nv + 1) / 2
            den[j] += nv * ns
    return num / den


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--layers", type=int, default=LAYERS, help="layers of the anchor-shaped arrays (the anchor has 4)")
    parser.add_argument("--plain-arrays", type=int, default=2)
    parser.add_argument("--plain-permutations", type=int, default=20)
    args = parser.parse_args()
    arrays = anchor_arrays(args.events, layers=args.layers)
    keys = [k for k in arrays if k.count(".") == 3 and not k.startswith("context.")]
    config = config_from_dict(
        {
            "model": {"n_layers": args.layers},
            "analysis": {"permutations": args.permutations, "confirmatory_fraction": 0.0},  # every event in the family
        }
    )
    summary = {
        "experiment_id": "bench",
        "exploratory": False,
        "exploratory_reason": None,
        "token_metrics_sha256": "0" * 64,
        "constant_metrics": [],
    }
    started = time.perf_counter()
    horizon = compute_horizon(arrays, config, summary)
    ours_s = time.perf_counter() - started
    tested = len(horizon["metrics"]) + 1  # + the behavioural predictor

    y, g = arrays["violated"], arrays["event_jumper"]
    rng = np.random.default_rng(1)
    shuffles = permuted_labels(y, g, args.plain_permutations, rng)
    started = time.perf_counter()
    for key in keys[: args.plain_arrays]:
        x = np.asarray(arrays[key], dtype=np.float64)  # lookback order, as token_metrics.npz
        for labels in shuffles:
            plain_statistic(x, labels, g)
    plain_s = time.perf_counter() - started
    # the same statistic as ours on the same labelling (checked on the observed labels)
    x = np.asarray(arrays[keys[0]], dtype=np.float64)
    ours_auroc = np.array(horizon["metrics"][keys[0]]["by_r"][str(R)]["auroc"], dtype=float)
    assert np.allclose(plain_statistic(x, y, g), ours_auroc), "plain and ours disagree on the observed AUROC"

    plain_per = plain_s / (args.plain_arrays * args.plain_permutations)
    # Holm's floor m / (P + 1) raises P for a large family (statistics.permutations_needed): the rate is per permutation used
    used = horizon["holm"]["permutations_used"]
    ours_per = ours_s / (tested * used)
    row = {
        "events": args.events,
        "arrays": tested,
        "lookbacks": R,
        "permutations": used,
        "permutations_requested": args.permutations,
        "ours_s": round(ours_s, 2),
        "ours_us_per_array_perm": round(ours_per * 1e6, 2),
        "plain_us_per_array_perm": round(plain_per * 1e6, 1),
        "plain_extrapolated_s": round(plain_per * tested * used, 0),
        "speedup": round(plain_per / ours_per, 1),
    }
    record("statistics_anchor", row)
    print_table("statistics: horizon.json for an anchor-shaped analysis (everything) vs plain per-resample rankdata", [row])


if __name__ == "__main__":
    main()
