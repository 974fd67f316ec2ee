"""``horizon.json``: how well, and how far ahead, each metric separates violations from successes.

Reads ``token_metrics.npz`` (and nothing else the analysis measured), so anyone can recompute it;
its per-pass arrays are in lookback order (column j = lookback j), as every list in horizon.json.
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
from typing import Any, TypeGuard

import numpy as np
import scipy

from ...config import ExperimentConfig
from ...experiment import git_commit
from ...registration import RegistrationCheck
from ...reproducibility import numpy_rng
from ...storage import read_npz, sha256_file
from ..files import CONTEXT_PREFIX, HORIZON_FILE, TOKEN_METRICS_FILE, read_horizon, write_horizon
from ..measure.behaviour import ATTENTION_PREFIX
from ..measure.behaviour import BEHAVIOURAL as BEHAVIOURAL_PREDICTORS
from ..measure.null import NULL_FILE, read_null
from .confirmatory import confirmatory_entry, headline, held_out_events
from .incremental import incremental_value
from .null import null_answer, null_comparison
from .statistics import (
    SeparationResult,
    auroc_ci,
    holm,
    holm_floor,
    permutations_needed,
    separation_family,
    simultaneous_difference,
    stratified_auroc,
    stratum_mask,
)

KEY = re.compile(r"^(?P<target>qkt|avwo)\.layer_(?P<layer>\d+)\.head_(?P<head>\d+)\.(?P<metric>\w+)$")
BEHAVIOURAL = "target_block_probability"
TARGET_NAMES = {"qkt": "QKᵀ", "avwo": "AVWₒ"}


def _key_parts(key: str) -> re.Match[str]:
    """The target, layer, head and metric of a metric key (``KEY``); ValueError for a key of another form."""
    parts = KEY.match(key)
    if parts is None:
        raise ValueError(f"{key!r} is not a metric key (<target>.layer_<L>.head_<H>.<metric>)")
    return parts


def metric_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-pass metric arrays of a token_metrics.npz (``<target>.layer_<L>.head_<H>.<metric>``)."""
    return {key: values for key, values in arrays.items() if KEY.match(key)}


def baseline_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The baselines of a token_metrics.npz other than the target-block probability: the behavioural
    predictors and attention on the jumper per layer and head (``analysis.measure.behaviour``)."""
    return {
        key: values for key, values in arrays.items() if key in BEHAVIOURAL_PREDICTORS[1:] or key.startswith(ATTENTION_PREFIX + ".")
    }


def baseline_identity(key: str) -> dict[str, Any]:
    """target / layer / head / metric of a baseline row (layer and head −1 for the output's predictors)."""
    if key.startswith(ATTENTION_PREFIX + "."):
        _, layer, head = key.split(".")
        return {
            "target": "attention",
            "layer": int(layer.removeprefix("layer_")),
            "head": int(head.removeprefix("head_")),
            "metric": "attention_to_jumper",
        }
    return {"target": "logits", "layer": -1, "head": -1, "metric": key}


EDGE_CLEAN = "primary#edge-clean"  # the primary on edge-clean events: a family member, never a metric row
INCREMENTAL_TOP = 10  # Holm survivors per r tested for incremental value (12 logistic fits each), strongest first


def _top_of(metric_stats: dict[str, Any], primary: str, rv: int) -> list[str]:
    """The exploratory arrays at r, strongest first (significant first, then the oriented AUROC at the best lookback)."""
    return sorted((k for k in metric_stats if k != primary), key=lambda k: _strength(metric_stats[k]["by_r"][str(rv)]))


AUPRC_PERMUTATIONS = 2000  # this many of the AUROC's shuffles test the AUPRC, more when Holm's floor needs it ...
AUPRC_BUDGET = 4e8  # ... within this many violation keys sorted (shuffles x columns x violations: the test's cost)
AUPRC_MIN_PERMUTATIONS = 200  # ... and never fewer


def auprc_permutations(permutations: int, family_size: int, alpha: float, columns: int = 0, violations: int = 0) -> int:
    """How many of the AUROC's shuffles (the first ones) test the AUPRC: AUPRC_PERMUTATIONS, or
    what the exploratory family's Holm floor needs (as for the AUROC), at most ``permutations`` —
    and at most what AUPRC_BUDGET allows for ``columns`` (arrays × lookbacks) and ``violations``: a
    shuffle's AP sorts the keys of its violations in every column, so the cost grows with them (the
    quick preset's 153 exploratory violations: 2,800 shuffles, the whole need; its sampled analysis's
    1,136: about 550). Never fewer than AUPRC_MIN_PERMUTATIONS; the number used is in horizon.json."""
    if permutations <= 0:
        return 0
    wanted = min(permutations, max(AUPRC_PERMUTATIONS, permutations_needed(family_size, alpha, 0)))
    if columns > 0 and violations > 0:
        wanted = min(wanted, max(AUPRC_MIN_PERMUTATIONS, int(AUPRC_BUDGET // (columns * violations))))
    return min(permutations, wanted)


INCREMENTAL_BASES = ("target_block_probability", "rule_feasible_mass", "output_entropy")
REGISTERED_BASES = ("target_block_probability",)


def incremental_bases(
    arrays: dict[str, np.ndarray],
    key: str,
    rows: np.ndarray,
    j: int,
    behavioural: tuple[str, ...] = INCREMENTAL_BASES,
    attention: bool = True,
) -> dict[str, np.ndarray]:
    """What a metric must add to: its context-only value, the behavioural predictors and attention
    on the jumper of its own layer and head, each at lookback j, for the events ``rows``."""
    bases = {}
    if f"{CONTEXT_PREFIX}{key}" in arrays:
        bases["context-only value"] = np.asarray(arrays[f"{CONTEXT_PREFIX}{key}"], dtype=np.float64)[rows]
    for name in behavioural:
        if name in arrays:
            bases[name] = np.asarray(arrays[name], dtype=np.float64)[rows, j]
    parts = KEY.match(key)
    jumper_attention = f"{ATTENTION_PREFIX}.layer_{parts['layer']}.head_{parts['head']}" if parts else None
    if attention and jumper_attention in arrays:
        values = np.asarray(arrays[jumper_attention], dtype=np.float64)[rows, j]
        if np.isfinite(values).any():
            bases[jumper_attention] = values
    return bases


def _json_numbers(value):
    """NaN-free JSON: every float NaN / inf inside dicts and lists becomes None."""
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value


def incremental_entry(result: dict[str, Any], j: int, note: str) -> dict[str, Any]:
    return {"j": j, **{k: _json_numbers(v) for k, v in result.items()}, "p_adjusted": None, "note": note}


def _incremental_family(arrays: dict[str, np.ndarray], y, g, r, metric_stats: dict, keys: list[str], rng: np.random.Generator) -> None:
    """The incremental-value test of each key at its best lookback (exploratory events), Holm-adjusted per r."""
    for rv in sorted({int(v) for v in np.unique(r)}):
        rows = stratum_mask(r, rv)
        tested = []
        for key in keys:
            entry = metric_stats[key]["by_r"].get(str(rv))
            if entry is None or entry["status"] != "ok" or entry["best_j"] is None:
                continue
            j = entry["best_j"]
            result = incremental_value(
                np.asarray(arrays[key], dtype=np.float64)[rows, j], incremental_bases(arrays, key, rows, j), y[rows], g[rows], rng=rng
            )
            entry["incremental"] = incremental_entry(
                result,
                j,
                "exploratory: at the metric's best lookback (chosen after looking, so the p is pointwise there), "
                "Holm-adjusted across the metrics tested",
            )
            tested.append(entry["incremental"])
        p = np.array([np.nan if t["p_value"] is None else t["p_value"] for t in tested])
        for entry, value in zip(tested, holm(p) if p.size else []):
            entry["p_adjusted"] = _number(value)


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
        "family": "the registered primary is tested alone (one-sided); every other non-constant metric array, and a primary "
        "that is not the registered one, is exploratory: two-sided, Holm-Bonferroni adjusted across that family within each r",
        "events": "held-out events (analysis.confirmatory_fraction per jumper, seeded) are used for the registered test only; "
        "every other number is computed on the remaining (exploratory) events",
        "seed": config.seed,
        "stream": f"{a.stream}/permutations",
        "auprc": "beside every AUROC: average precision per jumper, weighted by its violations, in the metric's direction "
        "(declared for the registered primary, else the side its AUROC takes at the best lookback); no-skill line = the "
        "violation prevalence weighted alike; 95% logit interval with jackknife + binomial variance; permutation p from the "
        f"first min(P, max({AUPRC_PERMUTATIONS}, the Holm need), {AUPRC_BUDGET:.0e} / (columns x violations)) of the AUROC's shuffles, statistic max over j >= 1 of "
        "AUPRC - prevalence, doubled when the direction was chosen on the data",
        "null": f"jumper-free null: {a.null_multiple} walks under no rule per violation (at most {a.null_max_events}), at the "
        "violation's walk step and r, stratum = its rule; violations vs null per metric and lookback: stratified AUROC with "
        "DeLong CI, within-rule permutation test (max over j >= 1), Holm across the metrics in its own family per r",
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


def _versus_behaviour(
    x: np.ndarray,
    behaviour: np.ndarray,
    behaviour_auroc: np.ndarray,
    y,
    g,
    result: SeparationResult,
    direction: str | None,
    rng: np.random.Generator,
) -> dict | None:
    """The metric against the model's target-block probability at every lookback j >= 1, with a
    band that holds *after* the lookback is chosen (``statistics.simultaneous_difference``).

    The metric is oriented in ``direction`` (the side it separates on), the logits at each j in the
    direction their own AUROC takes there. "better than the logits" when the simultaneous band of
    the difference lies above 0 at some j >= 1, "worse" when below 0 at some j and above at none;
    the row reports the lookback with the largest |t|. A pointwise test at the best lookback would
    call equal information "better" far above its nominal rate (see tests/test_versus_logits.py)."""
    if result.status != "ok" or result.best_j is None or x.shape[1] < 2:
        return None
    sign = _oriented(direction)
    logits_sign = np.where(np.isfinite(behaviour_auroc) & (behaviour_auroc < 0.5), -1.0, 1.0)
    band = simultaneous_difference(sign * x[:, 1:], logits_sign[None, 1:] * behaviour[:, 1:], y, g, rng=rng)
    with np.errstate(divide="ignore", invalid="ignore"):  # a lookback where both sides are constant has se 0
        t = band["delta"] / band["se"]
    if not np.isfinite(t).any():
        return None
    better = [i + 1 for i in np.flatnonzero(band["low"] > 0)]
    worse = [i + 1 for i in np.flatnonzero(band["high"] < 0)]
    # the row shows the lookback that carries the verdict: the clearest advantage, else the clearest deficit
    j = int(np.nanargmax(t)) + 1 if better else int(np.nanargmin(t)) + 1 if worse else int(np.nanargmax(np.abs(t))) + 1
    metric_auroc = 0.5 + sign * (result.auroc[j] - 0.5)
    verdict = "better than the logits" if better else "worse than the logits" if worse else "no better than the logits"
    delta = float(band["delta"][j - 1])
    return {
        "j": j,
        "metric_auroc": _number(metric_auroc),
        "behavioural_auroc": _number(metric_auroc - delta),
        "delta": _number(delta),
        "ci_low": _number(band["low"][j - 1]),
        "ci_high": _number(band["high"][j - 1]),
        "p_value": _number(band["p_adjusted"][j - 1]),
        "verdict": verdict,
        "better_at": better,
        "worse_at": worse,
        "critical": _number(band["critical"]),
    }


def _separation_entry(result: SeparationResult, *, p_adjusted, alpha: float, context, versus, auprc_p_adjusted=None) -> dict[str, Any]:
    ok = result.status == "ok"
    nothing: list[float | None] = [None] * len(result.auroc)

    def listed(values) -> list[float | None]:
        return nothing if values is None else _numbers(values)

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
        "auprc": listed(result.auprc),
        "auprc_ci_low": listed(result.auprc_ci_low),
        "auprc_ci_high": listed(result.auprc_ci_high),
        "prevalence": listed(result.prevalence),
        "auprc_orientation": result.auprc_orientation,
        "auprc_p_value": _number(result.auprc_p_value),
        "auprc_p_adjusted": _number(auprc_p_adjusted),
        "auprc_p_per_j": listed(result.auprc_p_per_j),
        "auprc_permutations": result.auprc_permutations,
    }


def _strength(entry: dict[str, Any]) -> tuple:
    """Sort key for the top-metrics list: significant first, then the best oriented AUROC."""
    if entry["status"] != "ok" or entry["best_j"] is None:
        return (1, 1, 0.0)
    a = entry["auroc"][entry["best_j"]]
    return (0 if entry["significant"] else 1, 0, -abs((a if a is not None else 0.5) - 0.5))


def primary_sentence(primary: dict[str, Any], threshold: float, alpha: float, permutations: int) -> str:
    """The declared primary on the exploratory events, in one sentence per r, with its numbers.

    Descriptive only: the verdict on the registered hypothesis comes from the held-out events
    (``confirmatory``); an unregistered primary is an exploratory hypothesis, Holm-adjusted."""
    name = (
        f"{TARGET_NAMES[primary['target']]} {primary['metric'].replace('_', ' ')} (layer {primary['layer']}, head {primary['head']})"
    )
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
            (entry["horizon"], entry["confident_horizon"])
            if primary["direction"] == "higher"
            else (entry["horizon_lower"], entry["confident_horizon_lower"])
        )
        p = entry["p_adjusted"] if not primary["registered"] else entry["p_value"]
        side = "one-sided" if primary["registered"] else "two-sided, Holm-adjusted in the exploratory family"
        test = f"permutation p = {p:.4g} ({side}, {permutations:,} within-jumper shuffles)" if p is not None else "no permutation test"
        clauses.append(
            f"r = {r}: strongest at lookback j = {j}, AUROC {entry['auroc'][j]:.3f} "
            f"[{entry['ci_low'][j]:.3f}, {entry['ci_high'][j]:.3f}] (pointwise, at a lookback chosen after looking; "
            f"{entry['n_violations']} violations vs {entry['n_successes']} successes), {test}; "
            f"horizon {horizon} (confident {confident}) at threshold {threshold}"
        )
    role = (
        "Registered hypothesis, on the exploratory events"
        if primary["registered"]
        else "Exploratory hypothesis (not the registered one)"
    )
    return f"{role}: {name} is {primary['direction']} before violations. " + "; ".join(clauses) + "."


def _events_subset(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """Every per-event array of a token_metrics.npz restricted to the events in ``keep``."""
    n = keep.shape[0]
    return {key: (values[keep] if np.ndim(values) >= 1 and np.shape(values)[0] == n else values) for key, values in arrays.items()}


def _unregistered(reason: str) -> RegistrationCheck:
    return RegistrationCheck(False, [reason], None)


def compute_horizon(
    arrays: dict[str, np.ndarray],
    config: ExperimentConfig,
    summary: dict[str, Any],
    *,
    check: RegistrationCheck | None = None,
    analysis_name: str = "",
    null: dict[str, np.ndarray] | None = None,
    null_sha256: str = "",
) -> dict[str, Any]:
    """The horizon.json payload (validated on writing) from the arrays of token_metrics.npz.

    ``config`` carries the analysis block this analysis was made with; ``check`` says whether it
    is the run's registered analysis (None: it is not known to be, so it is exploratory); ``null``
    the arrays of null_metrics.npz (its checksum ``null_sha256``), None without a null."""
    started = time.perf_counter()
    a = config.analysis
    check = check or _unregistered("no registration was checked for this analysis")
    held = held_out_events(np.asarray(arrays["event_jumper"]), a.confirmatory_fraction, numpy_rng(config.seed, a.stream, "split"))
    everything = arrays
    arrays = _events_subset(arrays, ~held)
    y = np.asarray(arrays["violated"], dtype=bool)
    g = np.asarray(arrays["event_jumper"])
    r = np.asarray(arrays["event_r"], dtype=np.int64)
    metrics = metric_arrays(arrays)
    constant = sorted(key for key in metrics if key in set(summary["constant_metrics"]))
    tested = {key: values for key, values in metrics.items() if key not in constant}
    primary = primary_key(config)
    if primary not in metrics:
        raise KeyError(f"{TOKEN_METRICS_FILE} has no array {primary!r} for the primary hypothesis (analysis.primary)")
    declared = a.primary.direction
    registered = check.confirmatory
    one_sided = "greater" if declared == "higher" else "less"
    alternatives = {BEHAVIOURAL: "less"}
    if registered:
        alternatives[primary] = one_sided  # the registered hypothesis alone, in its direction
    family = dict(tested)
    family[primary] = metrics[primary]  # tested even when constant (then "insufficient"-like NaNs)
    family[BEHAVIOURAL] = arrays[BEHAVIOURAL]
    baselines = baseline_arrays(arrays)
    family.update(baselines)
    if "first_bad_edge_pass" in arrays:  # the sensitivity to earlier mistakes, on the same shuffles
        family[EDGE_CLEAN] = edge_clean_view(metrics[primary], arrays["first_bad_edge_pass"], r)
        alternatives[EDGE_CLEAN] = alternatives.get(primary, "two-sided")
    exploratory = [key for key in tested if key != primary or not registered]
    if not registered and primary not in exploratory:
        exploratory.append(primary)
    # Holm over m arrays cannot go below m / (P + 1): raise P until a real effect can pass alpha.
    permutations = permutations_needed(len(exploratory), a.alpha, a.permutations) if a.permutations > 0 else 0
    rng = numpy_rng(config.seed, a.stream, "permutations")
    results = separation_family(
        family,
        y,
        g,
        r,
        permutations=permutations,
        rng=rng,
        min_events=a.min_events,
        threshold=a.horizon_threshold,
        alternatives=alternatives,
        auprc_permutations=auprc_permutations(
            permutations, len(exploratory), a.alpha, columns=len(family) * int(r.max(initial=1)), violations=int(y.sum())
        ),
    )
    stats_seconds = time.perf_counter() - started

    r_values = sorted(int(v) for v in np.unique(np.asarray(everything["event_r"])))
    adjusted: dict[str, dict[int, float | None]] = {key: {} for key in family}
    adjusted_auprc: dict[str, dict[int, float | None]] = {key: {} for key in family}
    for rv in r_values:
        for field_, table in (("p_value", adjusted), ("auprc_p_value", adjusted_auprc)):
            p = np.array(
                [
                    np.nan if (res := results[k].get(rv)) is None or getattr(res, field_) is None else getattr(res, field_)
                    for k in exploratory
                ]
            )
            for key, value in zip(exploratory, holm(p) if p.size else []):
                table[key][rv] = value
            own = ([primary] if registered else []) + [BEHAVIOURAL, *baselines]  # each on its own, not in the SVD family
            for key in own:
                table[key][rv] = getattr(results[key][rv], field_) if rv in results[key] else None

    present = [rv for rv in r_values if rv in results[BEHAVIOURAL]]
    versus_rng = numpy_rng(config.seed, a.stream, "versus-logits")
    behaviour_by_r = {rv: np.asarray(arrays[BEHAVIOURAL], dtype=np.float64)[stratum_mask(r, rv), :rv] for rv in present}

    def statistics_of(key: str, direction_of) -> dict[str, Any]:
        by_r = {}
        for rv in present:
            m = stratum_mask(r, rv)
            result = results[key][rv]
            context_values = arrays.get(f"{CONTEXT_PREFIX}{key}")
            context = None
            versus = None
            if key != BEHAVIOURAL and key not in baselines:
                context = _context_only(None if context_values is None else context_values[m], y[m], g[m], a.min_events)
                x = np.asarray(family[key], dtype=np.float64)[m, :rv]
                versus = _versus_behaviour(
                    x, behaviour_by_r[rv], results[BEHAVIOURAL][rv].auroc, y[m], g[m], result, direction_of(result), versus_rng
                )
            by_r[str(rv)] = _separation_entry(
                result,
                p_adjusted=adjusted[key].get(rv),
                auprc_p_adjusted=adjusted_auprc[key].get(rv),
                alpha=a.alpha,
                context=context,
                versus=versus,
            )
        return by_r

    def described(key: str, by_r) -> dict[str, Any]:
        parts = _key_parts(key)
        return {
            "target": parts["target"],
            "layer": int(parts["layer"]),
            "head": int(parts["head"]),
            "metric": parts["metric"],
            "by_r": by_r,
        }

    def observed(result: SeparationResult) -> str | None:  # exploratory: the side it was found on
        return result.direction

    metric_stats = {key: described(key, statistics_of(key, observed)) for key in tested if key != primary}
    primary_by_r = statistics_of(primary, lambda _: "higher before violations" if declared == "higher" else "lower before violations")
    metric_stats[primary] = described(primary, primary_by_r)
    # the primary and the strongest Holm survivors of each r (the top list is ordered by strength)
    survivors = [
        key
        for rv in present
        for key in _top_of(metric_stats, primary, rv)[:INCREMENTAL_TOP]
        if metric_stats[key]["by_r"][str(rv)]["significant"]
    ]
    _incremental_family(
        arrays, y, g, r, metric_stats, list(dict.fromkeys([primary, *survivors])), numpy_rng(config.seed, a.stream, "incremental")
    )
    parts = _key_parts(primary)
    primary_entry: dict[str, Any] = {
        "registered": registered,
        "key": primary,
        "target": parts["target"],
        "layer": int(parts["layer"]),
        "head": int(parts["head"]),
        "metric": parts["metric"],
        "direction": declared,
        "statement": a.primary.describe(),
        "by_r": primary_by_r,
    }
    primary_entry["summary"] = primary_sentence(primary_entry, a.horizon_threshold, a.alpha, a.permutations)
    behavioural = {"target": "logits", "layer": -1, "head": -1, "metric": BEHAVIOURAL, "by_r": statistics_of(BEHAVIOURAL, observed)}
    baseline_stats = {key: {**baseline_identity(key), "by_r": statistics_of(key, observed)} for key in baselines}
    top = {str(rv): _top_of(metric_stats, primary, rv) for rv in present}
    counts = {str(rv): {"violations": int(y[r == rv].sum()), "successes": int((~y[r == rv]).sum())} for rv in present}
    confirmatory, edge_verdicts = (
        _confirmatory(everything, held, primary, declared, results, config) if registered and held.any() else (None, None)
    )
    sensitivity = _edge_clean_sensitivity(everything, primary, registered, results, confirmatory, edge_verdicts, config)
    exploratory_reason = summary["exploratory_reason"] or ("; ".join(check.reasons) if not registered else None)
    payload = {
        "experiment_id": summary["experiment_id"],
        "analysis_name": analysis_name,
        "exploratory": bool(summary["exploratory"] or not registered),
        "exploratory_reason": exploratory_reason,
        "token_metrics_sha256": summary["token_metrics_sha256"],
        "settings": horizon_settings(config),
        "registration": check.as_dict(),
        "split": _split(everything, held, a.confirmatory_fraction, f"{a.stream}/split"),
        "confirmatory": confirmatory,
        "headline": [],
        "sensitivity": sensitivity,
        "holm": {
            "family_size": len(exploratory),
            "permutations_requested": a.permutations,
            "permutations_used": permutations,
            "floor": holm_floor(len(exploratory), permutations) if permutations > 0 else None,
        },
        "r_values": present,
        "counts_by_r": counts,
        "primary": primary_entry,
        "behavioural": behavioural,
        "baselines": baseline_stats,
        "metrics": metric_stats,
        "constant": constant,
        "top": top,
        "timings": {"statistics_seconds": round(stats_seconds, 3), "total_seconds": round(time.perf_counter() - started, 3)},
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "git_commit": git_commit(),
        },
    }
    label = f"{TARGET_NAMES[primary_entry['target']]} {primary_entry['metric'].replace('_', ' ')} (layer {primary_entry['layer']}, head {primary_entry['head']})"
    if null is not None:  # the null events matched to exploratory violations: the held-out half stays untouched
        null = _events_subset(null, ~held[np.asarray(null["event_matched"])])
    payload["null"] = _null_section(arrays, null, null_sha256, [*tested, primary], metric_stats, primary, label, config)
    payload["timings"]["total_seconds"] = round(time.perf_counter() - started, 3)
    payload["headline"] = headline(payload, label)
    return payload


def _null_section(arrays, null, sha256: str, keys: list[str], metric_stats, primary: str, label: str, config) -> dict | None:
    """horizon.json's ``null``: the exploratory violations against the jumper-free null (``stats.null``)."""
    if null is None:
        return None
    a = config.analysis
    section = null_comparison(
        arrays,
        null,
        list(dict.fromkeys(keys)),
        permutations=a.permutations,
        alpha=a.alpha,
        min_events=a.min_events,
        threshold=a.horizon_threshold,
        rng=numpy_rng(config.seed, a.stream, "null"),
    )
    section.update(null_multiple=a.null_multiple, null_max_events=a.null_max_events, stream=f"{a.stream}/null", sha256=sha256)
    section["answer"] = null_answer(section, primary, metric_stats, label)
    return section


def _split(arrays: dict[str, np.ndarray], held: np.ndarray, fraction: float, stream: str) -> dict[str, Any]:
    y, r = np.asarray(arrays["violated"], dtype=bool), np.asarray(arrays["event_r"])
    by_r = {}
    for rv in sorted(int(v) for v in np.unique(r)):
        m = r == rv
        by_r[str(rv)] = {
            "exploratory_violations": int((m & ~held & y).sum()),
            "exploratory_successes": int((m & ~held & ~y).sum()),
            "confirmatory_violations": int((m & held & y).sum()),
            "confirmatory_successes": int((m & held & ~y).sum()),
        }
    return {
        "confirmatory_fraction": fraction,
        "stream": stream,
        "exploratory_events": int((~held).sum()),
        "confirmatory_events": int(held.sum()),
        "counts_by_r": by_r,
    }


def edge_clean_view(values: np.ndarray, first_bad_edge_pass: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``values`` [E, lookbacks] with NaN where the continuation had already generated a non-edge:
    at lookback j (pass k = r − j) an event counts only if its passes 1..k all followed edges
    (``first_bad_edge_pass`` 0 = never, else the pass number of the first non-edge)."""
    x = np.array(values, dtype=np.float64, copy=True)
    bad = np.asarray(first_bad_edge_pass)[:, None]
    k = np.asarray(r)[:, None] - np.arange(x.shape[1])[None, :]
    x[(bad >= 1) & (bad <= k)] = np.nan
    return x


def _edge_clean_sensitivity(
    everything: dict[str, np.ndarray],
    primary: str,
    registered: bool,
    results: dict,
    confirmatory: dict | None,
    edge_verdicts: dict[str, str] | None,
    config: ExperimentConfig,
) -> dict[str, Any] | None:
    """The primary again on edge-clean events only (after an invalid edge the window already holds a
    mistake the model made): its exploratory separation (``EDGE_CLEAN`` in the main family) and, in
    the registered analysis, the registered verdict there; ``holds`` says whether the answer is the
    same. None without ``first_bad_edge_pass``."""
    if EDGE_CLEAN not in results:
        return None
    a = config.analysis
    exploratory, holds = {}, []
    for rv, result in results[EDGE_CLEAN].items():
        j = result.best_j
        exploratory[str(rv)] = {
            "status": result.status,
            "n_violations": result.n_violations,
            "n_successes": result.n_successes,
            "best_j": j,
            "auroc": _number(result.auroc[j]) if j is not None else None,
            "ci_low": _number(result.ci_low[j]) if j is not None else None,
            "ci_high": _number(result.ci_high[j]) if j is not None else None,
            "p_value": _number(result.p_value),
        }
        before = results[primary].get(rv)
        if before is not None and before.p_value is not None and result.p_value is not None and not registered:
            holds.append((before.p_value < a.alpha) == (result.p_value < a.alpha) and before.direction == result.direction)
    if confirmatory is not None and edge_verdicts is not None:
        holds = [edge_verdicts.get(rv) == test["verdict"] for rv, test in confirmatory.items()]
    bad = np.asarray(everything["first_bad_edge_pass"])
    dropped = int(((bad >= 1) & (bad <= np.asarray(everything["event_r"]))).sum())
    return {
        "edge_clean": {
            "events_with_an_invalid_edge": dropped,
            "exploratory": exploratory,
            "confirmatory_verdicts": edge_verdicts,
            "holds": None if not holds else bool(all(holds)),
        }
    }


def _confirmatory(
    arrays: dict[str, np.ndarray],
    held: np.ndarray,
    primary: str,
    declared: str,
    exploratory_results: dict[str, dict[int, SeparationResult]],
    config: ExperimentConfig,
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The registered test on the held-out events: ``({r: ConfirmatoryTest}, {r: edge-clean verdict} or None)``.

    The edge-clean variant of the primary (``EDGE_CLEAN``) is tested on the same shuffles, in one family."""
    a = config.analysis
    part = _events_subset(arrays, held)
    y, g, r = np.asarray(part["violated"], dtype=bool), np.asarray(part["event_jumper"]), np.asarray(part["event_r"], dtype=np.int64)
    one_sided = "greater" if declared == "higher" else "less"
    family = {primary: part[primary], BEHAVIOURAL: part[BEHAVIOURAL]}
    if "first_bad_edge_pass" in part:
        family[EDGE_CLEAN] = edge_clean_view(part[primary], part["first_bad_edge_pass"], r)
    results = separation_family(
        family,
        y,
        g,
        r,
        permutations=a.permutations,
        rng=numpy_rng(config.seed, a.stream, "confirmatory"),
        min_events=a.min_events,
        threshold=a.horizon_threshold,
        alternatives={primary: one_sided, EDGE_CLEAN: one_sided, BEHAVIOURAL: "less"},
    )
    out: dict[str, Any] = {}
    edge_verdicts: dict[str, str] | None = {} if EDGE_CLEAN in results else None
    for rv, held_result in results[primary].items():
        m = stratum_mask(r, rv)
        chosen = exploratory_results[primary].get(rv)
        chosen_j = chosen.best_j if chosen is not None and chosen.status == "ok" else None
        explored_logits = exploratory_results[BEHAVIOURAL].get(rv)
        logits_sign = -1.0
        if chosen_j is not None and explored_logits is not None and np.isfinite(explored_logits.auroc[chosen_j]):
            logits_sign = 1.0 if explored_logits.auroc[chosen_j] > 0.5 else -1.0
        x = np.asarray(part[primary], dtype=np.float64)[m, :rv]
        b = np.asarray(part[BEHAVIOURAL], dtype=np.float64)[m, :rv]
        entry = confirmatory_entry(
            held_result,
            chosen_j,
            direction=declared,
            x_held=x,
            baselines={BEHAVIOURAL: (b, logits_sign)},
            y=y[m],
            g=g[m],
            alpha=a.alpha,
            min_effect=a.min_effect_auroc,
        )
        if chosen_j is not None and held_result.status == "ok":
            bases = incremental_bases(part, primary, m, chosen_j, behavioural=REGISTERED_BASES, attention=False)
            result = incremental_value(
                x[:, chosen_j], bases, y[m], g[m], rng=numpy_rng(config.seed, a.stream, "incremental-registered")
            )
            entry["incremental"] = incremental_entry(
                result,
                chosen_j,
                "registered: beyond its context-only value and the logits, held-out events, at the lookback "
                "chosen on the exploratory events",
            )
            entry["incremental"]["p_adjusted"] = entry["incremental"]["p_value"]
        out[str(rv)] = entry
        if edge_verdicts is not None:
            clean = np.asarray(family[EDGE_CLEAN], dtype=np.float64)[m, :rv]
            edge_verdicts[str(rv)] = confirmatory_entry(
                results[EDGE_CLEAN][rv],
                chosen_j,
                direction=declared,
                x_held=clean,
                baselines={BEHAVIOURAL: (b, logits_sign)},
                y=y[m],
                g=g[m],
                alpha=a.alpha,
                min_effect=a.min_effect_auroc,
            )["verdict"]
    return out, edge_verdicts


def _null_file(analysis_dir: Path, config: ExperimentConfig) -> tuple[dict[str, np.ndarray] | None, str]:
    """The null's arrays and checksum in an analysis folder (None, "" when there is none for these settings)."""
    null = read_null(analysis_dir, config)
    return (null, sha256_file(Path(analysis_dir) / NULL_FILE)) if null is not None else (None, "")


def horizon_is_current(
    horizon: dict[str, Any] | None,
    config: ExperimentConfig,
    summary: dict[str, Any],
    check: RegistrationCheck | None = None,
    directory: Path | None = None,
) -> TypeGuard[dict[str, Any]]:
    """Whether a horizon.json (parsed, or None: never current) was made from this summary's token_metrics.npz
    with this analysis block's statistics settings, primary hypothesis and registration status
    (and, given the analysis ``directory``, from the null_metrics.npz there)."""
    check = check or _unregistered("no registration was checked for this analysis")
    if horizon is not None and directory is not None and (horizon["null"] or {}).get("sha256", "") != _null_file(directory, config)[1]:
        return False
    return (
        horizon is not None
        and horizon["token_metrics_sha256"] == summary["token_metrics_sha256"]
        and horizon["settings"] == horizon_settings(config)
        and horizon["primary"]["key"] == primary_key(config)
        and horizon["primary"]["direction"] == config.analysis.primary.direction
        and horizon["registration"] == check.as_dict()
        and horizon["split"]["confirmatory_fraction"] == config.analysis.confirmatory_fraction
    )


def horizon_for_run(
    analysis_dir: Path, config: ExperimentConfig, summary: dict[str, Any], *, check: RegistrationCheck, echo=print
) -> dict[str, Any]:
    """horizon.json of a finished analysis: reused when it was made from the same token_metrics.npz
    with the same settings, computed and written (validated, atomically) otherwise."""
    done = read_horizon(analysis_dir)
    if horizon_is_current(done, config, summary, check, analysis_dir):
        echo(f"{analysis_dir / HORIZON_FILE}: already computed from this token_metrics.npz, reusing it")
        return done
    arrays = read_npz(analysis_dir / TOKEN_METRICS_FILE)
    null, null_sha256 = _null_file(analysis_dir, config)
    payload = compute_horizon(
        arrays, config, summary, check=check, analysis_name=analysis_dir.name, null=null, null_sha256=null_sha256
    )
    write_horizon(analysis_dir, payload)
    echo(
        f"{analysis_dir / HORIZON_FILE}: {len(payload['metrics'])} metric arrays tested in {payload['timings']['total_seconds']:.1f}s"
    )
    for sentence in payload["headline"]:
        echo(sentence)
    written = read_horizon(analysis_dir)
    assert written is not None, "write_horizon has just written it"
    return written
