"""Violations against the jumper-free null: is the signal a response to rule events at all?

``analysis.measure.null`` measured every metric on continuations of walks that are under no rule,
position-matched to the violations (same walk step, same r, the violation's rule as stratum). Here,
per metric and r stratum, on the exploratory events and the null events matched to them (the
caller, ``horizon.compute_horizon``, drops those matched to held-out violations: the held-out half
stays for the registered test alone):

* **the test** — violations vs null: the jumper-stratified AUROC at every lookback with its DeLong
  95% CI and the within-stratum permutation test with the max-over-j statistic
  (``statistics.separation_family``, two-sided: labels "violation" / "null" shuffled within each
  rule's matched set, which keeps the matching), the AUPRC beside it (prevalence: the violations'
  share of the two; value and interval only, its permutation test would cost more than the rest
  and the null's question is the AUROC's); one Holm-Bonferroni family per r of its own — the null comparisons are
  another question than violations vs successes, and do not dilute (or borrow from) that family.
  Its shuffles come from their own stream (``<stream>/null``), ``permutations_needed`` of them so
  that the family's Holm floor is below alpha / 2;
* **the effect size** — that AUROC per lookback (0.5: violations look like walks under no rule), and
  successes vs null likewise (descriptive: AUROC with DeLong CI, no test);
* **the distributions** — per lookback, the 10%, 50% and 90% quantiles of the metric for violations,
  successes and null events (the band drawn on the event-aligned figure).

How to read it: a metric that separates violations from successes, and whose violations *and*
successes differ from the null in the same way, responds to rule events (the jumper entering the
window), not to the violation; one whose violations alone differ from the null carries something
about the violation; one whose violations look like the null is not responding to rules at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..files import CONTEXT_PREFIX
from .statistics import auroc_ci, holm, holm_floor, permutations_needed, separation_family, stratified_auroc

NULL_PERMUTATIONS = 2000  # at least; more when the family's Holm floor needs it
QUANTILES = (0.1, 0.5, 0.9)


def _numbers(values) -> list[float | None]:
    return [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]


def _number(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def quantile_bands(values: np.ndarray) -> dict[str, list[float | None]]:
    """The 10/50/90% quantiles per column of ``values [n, J]`` (NaN ignored; None where a column is empty)."""
    out = {}
    finite = np.isfinite(values).any(axis=0)
    for q in QUANTILES:
        column = np.full(values.shape[1], np.nan)
        if finite.any():
            column[finite] = np.nanquantile(values[:, finite], q, axis=0)
        out[f"q{int(round(q * 100))}"] = _numbers(column)
    return out


def null_comparison(
    arrays: dict[str, np.ndarray],
    null: dict[str, np.ndarray],
    keys: list[str],
    *,
    permutations: int,
    alpha: float,
    min_events: int,
    threshold: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Violations (and successes) of ``arrays`` (token_metrics.npz's, the exploratory events) against
    the null events of ``null`` (null_metrics.npz) for every metric in ``keys``; the horizon.json section."""
    y = np.asarray(arrays["violated"], dtype=bool)
    g = np.asarray(arrays["event_jumper"])
    r = np.asarray(arrays["event_r"], dtype=np.int64)
    ng, nr = np.asarray(null["event_jumper"]), np.asarray(null["event_r"], dtype=np.int64)
    keys = [k for k in keys if k in null]
    count = int(nr.size)
    p_used = permutations_needed(len(keys), alpha, min(permutations, NULL_PERMUTATIONS)) if permutations > 0 else 0
    # the test: violations (label True) against null events (False), within the matched rule
    combined = {
        key: np.concatenate([np.asarray(arrays[key], dtype=np.float64)[y], np.asarray(null[key], dtype=np.float64)]) for key in keys
    }
    label = np.r_[np.ones(int(y.sum()), dtype=bool), np.zeros(count, dtype=bool)]
    results = separation_family(
        combined,
        label,
        np.r_[g[y], ng],
        np.r_[r[y], nr],
        permutations=p_used,
        rng=rng,
        min_events=min_events,
        threshold=threshold,
        auprc_permutations=0,  # the AUPRC's value and interval are reported; the test here is the AUROC's
    )
    metrics: dict[str, Any] = {key: {"by_r": {}} for key in keys}
    for rv in sorted(int(v) for v in np.unique(r[y])):
        p = np.array([np.nan if (res := results[k].get(rv)) is None or res.p_value is None else res.p_value for k in keys])
        adjusted = dict(zip(keys, holm(p))) if p.size else {}
        mine, null_mine = (r == rv), (nr == rv)
        for key in keys:
            res = results[key].get(rv)
            if res is None:
                continue
            x = np.asarray(arrays[key], dtype=np.float64)[mine, :rv]
            xn = np.asarray(null[key], dtype=np.float64)[null_mine, :rv]
            metrics[key]["by_r"][str(rv)] = _entry(res, adjusted.get(key), alpha, x, y[mine], g[mine], xn, ng[null_mine], min_events)
    return {
        "events": count,
        "per_violation": float(count / max(1, np.unique(np.asarray(null["event_matched"])).size)),
        "generated_jumpers": int((np.asarray(null["first_jumper_pass"]) > 0).sum()),
        "unmatched": int(null.get("unmatched", 0)),  # schema 1 files: none could be (module measure.null)
        "permutations": p_used,
        "auprc_permutations": 0,
        "family_size": len(keys),
        "floor": holm_floor(len(keys), p_used) if p_used > 0 else None,
        "metrics": metrics,
    }


def _entry(res, p_adjusted, alpha, x, y, g, xn, gn, min_events) -> dict[str, Any]:
    """One metric in one r stratum: the test's numbers, successes vs null, the three distributions."""
    ok = res.status == "ok"
    none: list[float | None] = [None] * x.shape[1]
    successes_vs_null = {"auroc": none, "ci_low": none.copy(), "ci_high": none.copy()}
    if (~y).sum() >= min_events and len(xn) >= min_events:
        st = stratified_auroc(
            np.concatenate([x[~y], xn]), np.r_[np.ones(int((~y).sum()), bool), np.zeros(len(xn), bool)], np.r_[g[~y], gn]
        )
        low, high = auroc_ci(st["auroc"], st["var"])
        successes_vs_null = {"auroc": _numbers(st["auroc"]), "ci_low": _numbers(low), "ci_high": _numbers(high)}
    listed = lambda v: [None] * len(res.auroc) if v is None else _numbers(v)  # noqa: E731
    return {
        "status": res.status,
        "n_violations": res.n_violations,
        "n_null": res.n_successes,
        "n_successes": int((~y).sum()),
        "auroc": _numbers(res.auroc),
        "ci_low": _numbers(res.ci_low),
        "ci_high": _numbers(res.ci_high),
        "auprc": listed(res.auprc),
        "prevalence": listed(res.prevalence),
        "p_value": _number(res.p_value),
        "p_adjusted": _number(p_adjusted),
        "p_per_j": listed(res.p_per_j),
        "significant": None if p_adjusted is None or not np.isfinite(p_adjusted) else bool(p_adjusted < alpha),
        "best_j": res.best_j if ok else None,
        "direction": res.direction if ok else None,
        "successes_vs_null": successes_vs_null,
        "quantiles": {"violations": quantile_bands(x[y]), "successes": quantile_bands(x[~y]), "null": quantile_bands(xn)},
    }


def null_answer(section: dict[str, Any], primary: str, main: dict[str, Any], label: str) -> list[str]:
    """The plain-language answer, one sentence per r: the primary against the null, and how many of
    the metrics that separate violations from successes (Holm) also separate violations from the null."""
    sentences = []
    for rv, entry in section["metrics"].get(primary, {"by_r": {}})["by_r"].items():
        if entry["status"] != "ok" or entry["best_j"] is None:
            sentences.append(
                f"r = {rv}: too few events to compare {label} on violations with the jumper-free null "
                f"({entry['n_violations']} violations, {entry['n_null']} null events)."
            )
            continue
        j = entry["best_j"]
        s = entry["successes_vs_null"]
        successes = (
            f"; successes vs null there {s['auroc'][j]:.3f} [{s['ci_low'][j]:.3f}, {s['ci_high'][j]:.3f}]"
            if s["auroc"][j] is not None
            else ""
        )
        verdict = "differs from walks under no rule" if entry["significant"] else "is not distinguishable from walks under no rule"
        separating = [k for k, stats in main.items() if (e := stats["by_r"].get(rv)) is not None and e.get("significant")]
        also = [k for k in separating if (n := section["metrics"].get(k, {}).get("by_r", {}).get(rv)) is not None and n["significant"]]
        sentences.append(
            f"r = {rv}: on violations, {label} {verdict}: AUROC violations vs the jumper-free null {entry['auroc'][j]:.3f} "
            f"[{entry['ci_low'][j]:.3f}, {entry['ci_high'][j]:.3f}] at lookback j = {j} (pointwise, chosen after looking), "
            f"permutation p = {entry['p_adjusted']:.3g} (Holm, its own family; {entry['n_violations']} violations vs "
            f"{entry['n_null']} position-matched null events){successes}. Of the {len(separating)} metric arrays that separate "
            f"violations from successes after Holm, {len(also)} also separate violations from the null."
        )
    return sentences


__all__ = ["CONTEXT_PREFIX", "null_answer", "null_comparison", "quantile_bands"]
