"""``horizon.json``: how well, and how far ahead, each metric separates violations from successes.

Reads ``token_metrics.npz`` (and nothing else the analysis measured), so anyone can recompute it.
For every metric array and every r stratum: the jumper-stratified AUROC at every lookback with
its DeLong 95% CI, pooled and per-jumper AUROCs beside it, the within-jumper permutation test
(statistic max over j ≥ 1, +1 corrected) and both horizons (``statistics.separation_family``;
every metric is tested on the same shuffles). Then, in the same tables:

* **the primary hypothesis** (``analysis.primary``, fixed in the config before any data exist),
  tested one-sided in its declared direction and alone: its p-value is not adjusted;
* **the exploratory family**: every other non-constant metric array, two-sided, Holm-Bonferroni
  adjusted across the family *within each r* (strata are never pooled; each r is its own family);
* **baselines**: the shuffled-label distribution (95th percentile of the permutation statistic),
  the *context-only* AUROC (the metric on the window ending just before the jumper: signal that
  was already in the input), and the *behavioural predictor* — the model's own probability of the
  target block at each pass — as its own row (tested one-sided: lower before violations), and
  compared with each metric at the metric's best lookback by a paired DeLong test, each oriented
  in the direction it separates there (``versus_behaviour``): when an SVD metric does no better
  than the logits, the file and the report say so.

Arrays constant by construction are listed, not tested. A stratum with fewer than
``analysis.min_events`` violations or successes is "insufficient" (counts only).
"""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy

from ..config import ExperimentConfig
from ..experiment import git_commit
from ..reproducibility import numpy_rng
from ..storage import read_npz
from .files import CONTEXT_PREFIX, HORIZON_FILE, TOKEN_METRICS_FILE, read_horizon, write_horizon
from .statistics import (
    SeparationResult, auroc_ci, auroc_difference, holm, lookback_view, separation_family, stratified_auroc, stratum_mask,
)

KEY = re.compile(r"^(?P<target>qkt|avwo)\.layer_(?P<layer>\d+)\.head_(?P<head>\d+)\.(?P<metric>\w+)$")
BEHAVIOURAL = "target_block_probability"
TARGET_NAMES = {"qkt": "QKᵀ", "avwo": "AVWₒ"}


def metric_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-pass metric arrays of a token_metrics.npz (``<target>.layer_<L>.head_<H>.<metric>``)."""
    return {key: values for key, values in arrays.items() if KEY.match(key)}


def primary_key(config: ExperimentConfig) -> str:
    """The array the pre-registered hypothesis is about (layer -1 resolved to the last layer)."""
    primary = config.analysis.primary
    layer = primary.layer % config.model.n_layers
    return f"{primary.target}.layer_{layer}.head_{primary.head}.{primary.metric}"


def horizon_settings(config: ExperimentConfig) -> dict[str, Any]:
    a = config.analysis
    return {
        "permutations": a.permutations,
        "min_events": a.min_events,
        "horizon_threshold": a.horizon_threshold,
        "alpha": a.alpha,
        "confidence_interval": "95% DeLong (structural components from midranks), on the logit scale, at every lookback",
        "test": "permutation: labels shuffled within jumper inside each r stratum; statistic max over j >= 1 of "
        "|AUROC - 0.5| (exploratory) or of the signed deviation in the declared direction (primary); p = (1 + #exceed) / (1 + P)",
        "stratification": "by r (never pooled across r) and by jumper (within-jumper AUROCs weighted by n_violations * n_successes)",
        "family": "the primary is tested alone; every other non-constant metric array is exploratory, Holm-Bonferroni "
        "adjusted across that family within each r",
        "seed": config.seed,
        "stream": f"{a.stream}/permutations",
    }


def _numbers(values) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=np.float64)]


def _number(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _oriented(direction: str | None) -> float:
    return -1.0 if direction is not None and direction.startswith("lower") else 1.0


def _context_only(context: np.ndarray | None, y, g, min_events: int) -> dict | None:
    """Stratified AUROC of the pre-jumper window's value, with its CI (None without enough events)."""
    if context is None:
        return None
    x = np.asarray(context, dtype=np.float64)[:, None]
    finite = np.isfinite(x[:, 0])
    if (finite & y).sum() < min_events or (finite & ~y).sum() < min_events:
        return {"auroc": None, "ci_low": None, "ci_high": None}
    st = stratified_auroc(x, y, g)
    low, high = auroc_ci(st["auroc"], st["var"])
    return {"auroc": _number(st["auroc"][0]), "ci_low": _number(low[0]), "ci_high": _number(high[0])}


def _versus_behaviour(x: np.ndarray, behaviour: np.ndarray, behaviour_auroc: np.ndarray, y, g, result: SeparationResult,
                      direction: str | None) -> dict | None:
    """Paired DeLong comparison with the behavioural predictor at the metric's best lookback.

    Each side is oriented in the direction it separates: the metric in ``direction``, the logits
    in the direction their own AUROC takes at that lookback (so a metric is never called better
    than logits that separate well, only the other way round from the usual)."""
    if result.status != "ok" or result.best_j is None:
        return None
    j = result.best_j
    sign = _oriented(direction)
    metric = sign * x[:, j : j + 1]
    logits_sign = 1.0 if np.isfinite(behaviour_auroc[j]) and behaviour_auroc[j] > 0.5 else -1.0
    logits = logits_sign * behaviour[:, j : j + 1]
    compared = auroc_difference(metric, logits, y, g)
    delta, low, high = (float(compared[name][0]) for name in ("delta", "ci_low", "ci_high"))
    if not np.isfinite(delta):
        return None
    metric_auroc = 0.5 + sign * (result.auroc[j] - 0.5)
    verdict = ("better than the logits" if low > 0 else "worse than the logits" if high < 0 else "no better than the logits")
    return {
        "j": j,
        "metric_auroc": _number(metric_auroc),
        "behavioural_auroc": _number(metric_auroc - delta),
        "delta": _number(delta),
        "ci_low": _number(low),
        "ci_high": _number(high),
        "p_value": _number(compared["p_value"][0]),
        "verdict": verdict,
    }


def _separation_entry(result: SeparationResult, *, p_adjusted, alpha: float, context, versus) -> dict[str, Any]:
    ok = result.status == "ok"
    return {
        "status": result.status,
        "n_violations": result.n_violations,
        "n_successes": result.n_successes,
        "counts_per_jumper": {str(k): [int(v[0]), int(v[1])] for k, v in result.counts_per_jumper.items()},
        "auroc": _numbers(result.auroc),
        "ci_low": _numbers(result.ci_low),
        "ci_high": _numbers(result.ci_high),
        "auroc_pooled": _numbers(result.auroc_pooled),
        "auroc_per_jumper": {str(k): _numbers(v) for k, v in result.auroc_per_jumper.items()},
        "alternative": result.alternative,
        "p_value": _number(result.p_value),
        "p_adjusted": _number(p_adjusted),
        "p_per_j": _numbers(result.p_per_j) if result.p_per_j is not None else [None] * len(result.auroc),
        "p_per_j_holm": _numbers(result.p_per_j_holm) if result.p_per_j_holm is not None else [None] * len(result.auroc),
        "shuffled_95": _number(result.shuffled_95),
        "significant": None if p_adjusted is None or not np.isfinite(p_adjusted) else bool(p_adjusted < alpha),
        "direction": result.direction,
        "best_j": result.best_j,
        "horizon": result.horizon if ok else None,
        "confident_horizon": result.confident_horizon if ok else None,
        "horizon_lower": result.horizon_lower if ok else None,
        "confident_horizon_lower": result.confident_horizon_lower if ok else None,
        "context_only": context,
        "versus_behaviour": versus,
    }


def _strength(entry: dict[str, Any]) -> tuple:
    """Sort key for the top-metrics list: significant first, then the best oriented AUROC."""
    if entry["status"] != "ok" or entry["best_j"] is None:
        return (1, 1, 0.0)
    a = entry["auroc"][entry["best_j"]]
    return (0 if entry["significant"] else 1, 0, -abs((a if a is not None else 0.5) - 0.5))


def primary_sentence(primary: dict[str, Any], threshold: float, alpha: float, permutations: int) -> str:
    """The primary result in one sentence per r, with its numbers."""
    name = f"{TARGET_NAMES[primary['target']]} {primary['metric'].replace('_', ' ')} (layer {primary['layer']}, head {primary['head']})"
    clauses = []
    for r, entry in primary["by_r"].items():
        if entry["status"] != "ok":
            clauses.append(
                f"r = {r}: insufficient data ({entry['n_violations']} violations, {entry['n_successes']} successes; "
                f"at least the configured minimum of each is needed)"
            )
            continue
        j = entry["best_j"]
        if j is None:
            clauses.append(f"r = {r}: no lookback j >= 1 with enough finite values")
            continue
        horizon, confident = (
            (entry["horizon"], entry["confident_horizon"]) if primary["direction"] == "higher"
            else (entry["horizon_lower"], entry["confident_horizon_lower"])
        )
        p = entry["p_value"]
        supported = p is not None and p < alpha
        test = f"one-sided permutation p = {p:.4g} ({permutations:,} within-jumper shuffles)" if p is not None else "no permutation test"
        clauses.append(
            f"r = {r}: strongest at lookback j = {j}, AUROC {entry['auroc'][j]:.3f} "
            f"[{entry['ci_low'][j]:.3f}, {entry['ci_high'][j]:.3f}] ({entry['n_violations']} violations vs "
            f"{entry['n_successes']} successes), {test}: {'supported' if supported else 'not supported'} at alpha = {alpha}; "
            f"horizon {horizon} (confident {confident}) at threshold {threshold}"
        )
    return f"Pre-registered: {name} is {primary['direction']} before violations. " + "; ".join(clauses) + "."


def compute_horizon(arrays: dict[str, np.ndarray], config: ExperimentConfig, summary: dict[str, Any]) -> dict[str, Any]:
    """The horizon.json payload (validated on writing) from the arrays of token_metrics.npz."""
    started = time.perf_counter()
    a = config.analysis
    y = np.asarray(arrays["violated"], dtype=bool)
    g = np.asarray(arrays["event_jumper"])
    r = np.asarray(arrays["event_r"], dtype=np.int64)
    metrics = metric_arrays(arrays)
    constant = sorted(key for key in metrics if key in set(summary["constant_metrics"]))
    tested = {key: values for key, values in metrics.items() if key not in constant}
    primary = primary_key(config)
    if primary not in metrics:
        raise KeyError(f"{TOKEN_METRICS_FILE} has no array {primary!r} for the pre-registered hypothesis (analysis.primary)")
    declared = a.primary.direction
    alternatives = {primary: "greater" if declared == "higher" else "less", BEHAVIOURAL: "less"}
    family = dict(tested)
    family[primary] = metrics[primary]  # tested one-sided even when constant (then "insufficient"-like NaNs)
    family[BEHAVIOURAL] = arrays[BEHAVIOURAL]
    rng = numpy_rng(config.seed, a.stream, "permutations")
    results = separation_family(
        family, y, g, r, permutations=a.permutations, rng=rng, min_events=a.min_events,
        threshold=a.horizon_threshold, alternatives=alternatives,
    )
    stats_seconds = time.perf_counter() - started

    r_values = sorted(int(v) for v in np.unique(r))
    exploratory = [key for key in tested if key != primary]
    adjusted: dict[str, dict[int, float | None]] = {key: {} for key in family}
    for rv in r_values:
        p = np.array([np.nan if results[k][rv].p_value is None else results[k][rv].p_value for k in exploratory])
        for key, value in zip(exploratory, holm(p) if p.size else []):
            adjusted[key][rv] = value
        adjusted[primary][rv] = results[primary][rv].p_value
        adjusted[BEHAVIOURAL][rv] = results[BEHAVIOURAL][rv].p_value

    behaviour_by_r = {rv: lookback_view(np.asarray(arrays[BEHAVIOURAL], dtype=np.float64)[stratum_mask(r, rv)], r[stratum_mask(r, rv)])[:, :rv] for rv in r_values}

    def statistics_of(key: str, direction_of) -> dict[str, Any]:
        by_r = {}
        for rv in r_values:
            m = stratum_mask(r, rv)
            result = results[key][rv]
            context_values = arrays.get(f"{CONTEXT_PREFIX}{key}")
            context = None
            versus = None
            if key != BEHAVIOURAL:
                context = _context_only(None if context_values is None else context_values[m], y[m], g[m], a.min_events)
                x = lookback_view(np.asarray(family[key], dtype=np.float64)[m], r[m])[:, :rv]
                versus = _versus_behaviour(x, behaviour_by_r[rv], results[BEHAVIOURAL][rv].auroc, y[m], g[m], result,
                                           direction_of(result))
            by_r[str(rv)] = _separation_entry(result, p_adjusted=adjusted[key].get(rv), alpha=a.alpha, context=context, versus=versus)
        return by_r

    def described(key: str, by_r) -> dict[str, Any]:
        parts = KEY.match(key)
        return {"target": parts["target"], "layer": int(parts["layer"]), "head": int(parts["head"]), "metric": parts["metric"], "by_r": by_r}

    def observed(result: SeparationResult) -> str | None:  # exploratory: the side it was found on
        return result.direction

    metric_stats = {key: described(key, statistics_of(key, observed)) for key in tested if key != primary}
    primary_by_r = statistics_of(primary, lambda _: "higher before violations" if declared == "higher" else "lower before violations")
    metric_stats[primary] = described(primary, primary_by_r)
    parts = KEY.match(primary)
    primary_entry = {
        "key": primary, "target": parts["target"], "layer": int(parts["layer"]), "head": int(parts["head"]),
        "metric": parts["metric"], "direction": declared, "statement": a.primary.describe(), "by_r": primary_by_r,
    }
    primary_entry["summary"] = primary_sentence(primary_entry, a.horizon_threshold, a.alpha, a.permutations)
    behavioural = {"target": "logits", "layer": -1, "head": -1, "metric": BEHAVIOURAL, "by_r": statistics_of(BEHAVIOURAL, observed)}
    top = {
        str(rv): sorted((k for k in metric_stats if k != primary), key=lambda k: _strength(metric_stats[k]["by_r"][str(rv)]))
        for rv in r_values
    }
    counts = {str(rv): {"violations": int(y[r == rv].sum()), "successes": int((~y[r == rv]).sum())} for rv in r_values}
    return {
        "experiment_id": summary["experiment_id"],
        "exploratory": summary["exploratory"],
        "exploratory_reason": summary["exploratory_reason"],
        "token_metrics_sha256": summary["token_metrics_sha256"],
        "settings": horizon_settings(config),
        "r_values": r_values,
        "counts_by_r": counts,
        "primary": primary_entry,
        "behavioural": behavioural,
        "metrics": metric_stats,
        "constant": constant,
        "top": top,
        "timings": {"statistics_seconds": round(stats_seconds, 3), "total_seconds": round(time.perf_counter() - started, 3)},
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__, "git_commit": git_commit()},
    }


def horizon_is_current(horizon: dict[str, Any] | None, config: ExperimentConfig, summary: dict[str, Any]) -> bool:
    """Whether a horizon.json (parsed, or None) was made from this summary's token_metrics.npz
    with this config's statistics settings and primary hypothesis."""
    return (
        horizon is not None
        and horizon["token_metrics_sha256"] == summary["token_metrics_sha256"]
        and horizon["settings"] == horizon_settings(config)
        and horizon["primary"]["key"] == primary_key(config)
        and horizon["primary"]["direction"] == config.analysis.primary.direction
    )


def horizon_for_run(analysis_dir: Path, config: ExperimentConfig, summary: dict[str, Any], echo=print) -> dict[str, Any]:
    """horizon.json of a finished analysis: reused when it was made from the same token_metrics.npz
    with the same settings, computed and written (validated, atomically) otherwise."""
    done = read_horizon(analysis_dir)
    if horizon_is_current(done, config, summary):
        echo(f"{analysis_dir / HORIZON_FILE}: already computed from this token_metrics.npz, reusing it")
        return done
    arrays = read_npz(analysis_dir / TOKEN_METRICS_FILE)
    payload = compute_horizon(arrays, config, summary)
    write_horizon(analysis_dir, payload)
    echo(f"{analysis_dir / HORIZON_FILE}: {len(payload['metrics'])} metric arrays tested in {payload['timings']['total_seconds']:.1f}s")
    echo(payload["primary"]["summary"])
    return read_horizon(analysis_dir)
