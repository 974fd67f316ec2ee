"""The held-out confirmatory test of the registered hypothesis, its three-outcome verdict, and the
report's plain-language headline.

**The split.** The analysis events are divided once, seeded (``seed``, ``analysis.stream``,
``"split"``) and stratified by jumper, into an *exploratory* part — every table, figure, search
and the choice of a best lookback use it — and a *held-out* part (``confirmatory_fraction`` of
each jumper's events) used for the registered test alone (:func:`held_out_events`). The held-out
events are never looked at for anything else, so the registered test's p-value and the AUROC at
the lookback chosen on the exploratory part carry no selection.

**The verdict** (:func:`verdict`; the rule is fixed in ``preregistration.json``): *rejected* when
the one-sided within-jumper permutation p (max over ``j >= 1``) is not below α; else *confirmed*
when the AUROC at ``j*`` (the best lookback on the exploratory events, in the registered direction)
reaches the registered effect size and the paired DeLong difference with every registered
baseline at ``j*`` has its 95% CI above 0; else *inconclusive*, with the reasons.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .statistics import SeparationResult, auroc_difference

VERDICTS = ("confirmed", "inconclusive", "rejected", "insufficient")


def held_out_events(jumper: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``[E]``: the events held out for the registered test.

    Within each jumper, ``round(fraction · n_jumper)`` events chosen uniformly without replacement
    (one permutation per jumper from ``rng``, jumpers in ascending order), so every rule keeps its
    share in both parts and the split depends only on the events' jumpers and the seed.
    """
    g = np.asarray(jumper)
    held = np.zeros(g.shape, dtype=bool)
    if fraction <= 0:
        return held
    for rule in np.unique(g):
        members = np.flatnonzero(g == rule)
        take = int(np.floor(fraction * members.size + 0.5))
        held[rng.permutation(members)[:take]] = True
    return held


def _number(value) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _oriented(auroc: float | None, direction: str) -> float | None:
    if auroc is None or not np.isfinite(auroc):
        return None
    return float(auroc) if direction == "higher" else 1.0 - float(auroc)


def confirmatory_entry(
    held: SeparationResult,
    chosen_j: int | None,
    *,
    direction: str,
    x_held: np.ndarray,
    baselines: dict[str, tuple[np.ndarray, float]],
    y: np.ndarray,
    g: np.ndarray,
    alpha: float,
    min_effect: float,
) -> dict[str, Any]:
    """The registered test in one r stratum, as horizon.json's ``confirmatory[r]``.

    ``held``: the primary's separation on the held-out events (one-sided, registered direction).
    ``chosen_j``: the best lookback on the exploratory events (None: none testable there).
    ``x_held`` [E_held, lookbacks]: the primary on the held-out events; ``baselines``: name ->
    (values [E_held, lookbacks], sign orienting it as it separates on the exploratory events).
    """
    entry: dict[str, Any] = {
        "status": held.status,
        "n_violations": held.n_violations,
        "n_successes": held.n_successes,
        "p_value": _number(held.p_value),
        "j": chosen_j,
        "auroc": None,
        "ci_low": None,
        "ci_high": None,
        "oriented_auroc": None,
        "min_effect_auroc": min_effect,
        "versus": [],
        "incremental": None,
        "verdict": "insufficient",
        "reasons": [],
    }
    if held.status != "ok" or held.p_value is None or not np.isfinite(held.p_value):
        entry["reasons"].append(
            f"too few held-out events to test ({held.n_violations} violations, {held.n_successes} successes)"
            if held.status != "ok"
            else "no testable lookback among the held-out events"
        )
        return entry
    sign = 1.0 if direction == "higher" else -1.0
    if chosen_j is not None and chosen_j < len(held.auroc):
        j = chosen_j
        entry.update(
            auroc=_number(held.auroc[j]),
            ci_low=_number(held.ci_low[j]),
            ci_high=_number(held.ci_high[j]),
            oriented_auroc=_oriented(held.auroc[j], direction),
        )
        for name, (values, baseline_sign) in baselines.items():
            compared = auroc_difference(sign * x_held[:, j : j + 1], baseline_sign * values[:, j : j + 1], y, g)
            delta, low, high = (float(compared[k][0]) for k in ("delta", "ci_low", "ci_high"))
            metric_side = entry["oriented_auroc"]
            entry["versus"].append(
                {
                    "baseline": name,
                    "baseline_auroc": None if metric_side is None or not np.isfinite(delta) else _number(metric_side - delta),
                    "delta": _number(delta),
                    "ci_low": _number(low),
                    "ci_high": _number(high),
                    "beaten": bool(np.isfinite(low) and low > 0),
                }
            )
    entry["verdict"], entry["reasons"] = verdict(entry["p_value"], entry["oriented_auroc"], entry["versus"], alpha, min_effect)
    return entry


def verdict(
    p: float | None, oriented_auroc: float | None, versus: list[dict[str, Any]], alpha: float, min_effect: float
) -> tuple[str, list[str]]:
    """``(verdict, reasons)`` by the registered decision rule (see the module docstring)."""
    if p is None:
        return "insufficient", ["no p-value"]
    if p >= alpha:
        return "rejected", [f"permutation p = {p:.4g} is not below alpha = {alpha}"]
    reasons = []
    if oriented_auroc is None:
        reasons.append("no lookback could be chosen on the exploratory events, so the effect size is unknown")
    elif oriented_auroc < min_effect:
        reasons.append(f"the effect (AUROC {oriented_auroc:.3f} in the registered direction) is below the registered {min_effect}")
    for row in versus:
        if not row["beaten"]:
            reasons.append(
                f"no better than {row['baseline']} (Δ {_fmt(row['delta'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}])"
            )
    return ("inconclusive", reasons) if reasons else ("confirmed", [])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------------
# the headline


def _best(entry: dict[str, Any], side: str) -> tuple[int | None, float | None]:
    """The lookback j >= 1 where the AUROC is furthest to ``side`` ("higher": above 0.5)."""
    values = [(j, a) for j, a in enumerate(entry["auroc"]) if j >= 1 and a is not None]
    if not values:
        return None, None
    j, a = max(values, key=lambda item: item[1] if side == "higher" else -item[1])
    return j, a


def headline(horizon: dict[str, Any], name: str) -> list[str]:
    """Two or three sentences per r that a reader cannot misread: the registered verdict (or why
    there is none), the exploratory picture with its pointwise caveat and the other direction, the
    context-only value and the comparison with the logits."""
    primary, registration = horizon["primary"], horizon["registration"]
    direction = primary["direction"]
    other = "lower" if direction == "higher" else "higher"
    sentences = []
    if horizon["confirmatory"] is None:
        sentences.append(
            f"No confirmatory claim: this analysis is exploratory ({'; '.join(registration['reasons'])}). "
            + (
                f"The run registered: {registration['registered_statement']} ({registration['registered_at']})."
                if registration["registered_statement"]
                else ""
            )
        )
    for r, entry in primary["by_r"].items():
        test = (horizon["confirmatory"] or {}).get(r)
        if test is not None:
            word = test["verdict"].upper()
            held = f"{test['n_violations']} violations vs {test['n_successes']} successes held out"
            if test["verdict"] == "insufficient":
                sentences.append(
                    f"r = {r}: the registered hypothesis ({name} {direction} before violations) is untestable: "
                    f"{'; '.join(test['reasons'])}."
                )
            else:
                at = (
                    (
                        f"; at the lookback chosen on the exploratory events (j = {test['j']}) its AUROC is "
                        f"{_fmt(test['auroc'])} [{_fmt(test['ci_low'])}, {_fmt(test['ci_high'])}] (registered minimum "
                        f"{test['min_effect_auroc']} in the {direction} direction)"
                    )
                    if test["j"] is not None
                    else ""
                )
                logits = "".join(
                    f"; the logits' {_fmt(v['baseline_auroc'])}, difference {_fmt(v['delta'])} [{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]"
                    for v in test["versus"]
                )
                why = f" ({'; '.join(test['reasons'])})" if test["reasons"] else ""
                sentences.append(
                    f"r = {r}: registered hypothesis {word}{why}: {name} {direction} before violations, "
                    f"one-sided permutation p = {_fmt(test['p_value'], 4)} on {held}{at}{logits}."
                    + _incremental_clause(test.get("incremental"), "Beyond its context-only value and the logits")
                )
        if entry["status"] != "ok":
            sentences.append(
                f"r = {r}: too few exploratory events to describe ({entry['n_violations']} violations, "
                f"{entry['n_successes']} successes)."
            )
            continue
        j, a = _best(entry, direction)
        jo, ao = _best(entry, other)
        if j is None or a is None:  # _best gives both or neither
            continue
        described = (
            f"r = {r}, exploratory events ({entry['n_violations']} violations, {entry['n_successes']} successes): "
            f"strongest {direction} at j = {j}, AUROC {_fmt(a)} [{_fmt(entry['ci_low'][j])}, {_fmt(entry['ci_high'][j])}] "
            "(pointwise CI at a lookback chosen after looking)"
        )
        if jo is not None and ao is not None and abs(ao - 0.5) > abs(a - 0.5):
            described += (
                f"; it separates more strongly the other way — {other} before violations — at j = {jo}, AUROC "
                f"{_fmt(ao)} [{_fmt(entry['ci_low'][jo])}, {_fmt(entry['ci_high'][jo])}]"
            )
        context = entry.get("context_only")
        if context and context["auroc"] is not None:
            described += (
                f"; on the window before the jumper entered it (context only) it already reaches "
                f"{_fmt(context['auroc'])} [{_fmt(context['ci_low'])}, {_fmt(context['ci_high'])}]"
            )
        versus = entry.get("versus_behaviour")
        if versus:
            described += (
                f"; against the model's own target-block probability (a band simultaneous over lookbacks): "
                f"{versus['verdict']}" + (f" at j = {', '.join(map(str, versus['better_at']))}" if versus["better_at"] else "")
            )
        edge_clean = (horizon.get("sensitivity") or {}).get("edge_clean")
        if edge_clean and edge_clean["holds"] is False:
            verdicts = edge_clean["confirmatory_verdicts"]
            described += (
                f". On edge-clean events only ({edge_clean['events_with_an_invalid_edge']} events had generated a "
                "non-edge before the deadline) the answer differs: "
                + (
                    f"registered verdict {verdicts.get(r, '—')}"
                    if verdicts
                    else f"exploratory p = {_fmt((edge_clean['exploratory'].get(r) or {}).get('p_value'), 4)}"
                )
            )
        sentences.append(
            described
            + "."
            + _incremental_clause(
                entry.get("incremental"),
                "At that lookback (chosen after looking, so the p is pointwise), beyond its context-only "
                "value, the behavioural predictors and attention on the jumper",
            )
        )
    return sentences


def _incremental_clause(incremental: dict[str, Any] | None, beyond: str) -> str:
    """One sentence on the nested-model test (``analysis.stats.incremental``), or nothing when absent."""
    if not incremental or incremental["gain"] is None:
        return ""
    p = incremental["p_adjusted"] if incremental["p_adjusted"] is not None else incremental["p_value"]
    fits = p is not None and p < 0.05
    ranks = incremental["gain_ci_low"] is not None and incremental["gain_ci_low"] > 0
    says = (
        "adds"
        if fits and ranks
        else "improves the fit but not measurably the ranking of held-out folds"
        if fits
        else "ranks held-out folds better but the fit's gain is not significant"
        if ranks
        else "adds nothing measurable"
    )
    return (
        f" {beyond} (j = {incremental['j']}, {incremental['events']} events) it "
        f"{says}: cross-validated AUROC {_fmt(incremental['auroc_reduced'])} → "
        f"{_fmt(incremental['auroc_full'])}, gain {_fmt(incremental['gain'])} [{_fmt(incremental['gain_ci_low'])}, "
        f"{_fmt(incremental['gain_ci_high'])}], likelihood-ratio p = {_fmt(p, 4)}."
    )
