"""The report's rows and sections for the rare-event additions (issue 26, items 1–2): the AUPRC cell
beside every AUROC, the calibration table of the incremental-value models and the jumper-free null
section. Pure functions of horizon.json, rendered by templates/rare_events.html.j2 and the main
template's tables."""

from __future__ import annotations

from typing import Any

from .figures import metric_label
from .rare_figures import calibrated_tests

FIGURE_TEXT = {
    "auprc": (
        "AUPRC(j): precision–recall beside the AUROC",
        "Average precision of violations at every lookback (per rule, weighted by its violations), for the primary, "
        "the logits' target-block probability and the strongest exploratory metrics, each in the direction it predicts, "
        "with 95% logit intervals (jackknife + binomial variance). Dashed: the no-skill line at the violation "
        "prevalence — with rare violations an AUROC away from 0.5 can coexist with a precision barely above it.",
    ),
    "reliability": (
        "Calibration of the incremental-value models",
        "Reliability diagrams of the nested logistic models (with the metric: full; without it: reduced), from their "
        "out-of-fold probabilities (the cross-validation folds of the AUROC gain), in equal-count bins; the dotted "
        "diagonal is perfect calibration. ECE = Σ_b n_b/N |observed_b − predicted_b|; 'calibrated 95%' is the ECE a "
        "perfectly calibrated model reaches 95% of the time on the same predictions (consistency resampling).",
    ),
}


NULL_CAPTION = (
    " Grey: the jumper-free null (walks under no rule, at the violations' walk steps and r, centred by the same "
    "rule's success mean): its mean ± 95% CI (dashed) and the band holding 10–90% of its values. Where violations "
    "and successes both leave the null, the metric responds to the rule event itself."
)


def with_rare_figures(figure_text: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The report's figure texts with the AUPRC and calibration figures added and the null band explained."""
    out = {**figure_text, **FIGURE_TEXT}
    if "event_aligned" in out:
        title, caption = out["event_aligned"]
        out["event_aligned"] = (title, caption + NULL_CAPTION)
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _fmt_p(value: float | None) -> str:
    return "—" if value is None else f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def auprc_text(entry: dict[str, Any], j: int | None) -> str:
    """``0.047 [0.019, 0.110] vs 0.023, p 1.1e-03``: AUPRC at lookback j, its interval, the no-skill
    prevalence and the AUPRC's permutation p (Holm-adjusted where the entry has one)."""
    if j is None or not entry.get("auprc") or entry["auprc"][j] is None:
        return "—"
    p = entry.get("auprc_p_adjusted")
    p = entry.get("auprc_p_value") if p is None else p
    side = "" if entry.get("auprc_orientation") != "lower" else " (low = violation)"
    return (
        f"{entry['auprc'][j]:.3f} [{_fmt(entry['auprc_ci_low'][j])}, {_fmt(entry['auprc_ci_high'][j])}] vs "
        f"{_fmt(entry['prevalence'][j])}{side}, p {_fmt_p(p)}"
    )


def calibration_rows(horizon: dict[str, Any]) -> list[dict[str, str]]:
    """One row per incremental-value test with a calibration: ECE of both models, its reference, p."""
    rows = []
    for label, inc in calibrated_tests(horizon):
        row = {"test": label, "events": str(inc["calibration"]["full"]["events"]), "binning": inc["calibration"]["full"]["binning"]}
        for name in ("full", "reduced"):
            cal = inc["calibration"][name]
            row[name] = f"{_fmt(cal['ece'], 4)} (calibrated 95%: {_fmt(cal['ece_calibrated_95'], 4)}; p {_fmt_p(cal['p_value'])})"
        rows.append(row)
    return rows


def null_context(horizon: dict[str, Any], top: int = 8) -> dict[str, Any] | None:
    """The null section: its settings and counts, the answer and a table (the primary, then the
    metrics that separate violations from successes after Holm, then the strongest others)."""
    null = horizon.get("null")
    if null is None:
        return None
    rows = []
    for r in horizon["r_values"]:
        keys = [horizon["primary"]["key"], *[k for k in horizon["top"].get(str(r), []) if k != horizon["primary"]["key"]]]
        for key in keys[: top + 1]:
            entry = null["metrics"].get(key, {}).get("by_r", {}).get(str(r))
            main = horizon["metrics"].get(key, {}).get("by_r", {}).get(str(r), {})
            if entry is None:
                continue
            row = {
                "r": r,
                "label": metric_label(key),
                "primary": key == horizon["primary"]["key"],
                "counts": f"{entry['n_violations']} / {entry['n_null']}",
            }
            if entry["status"] != "ok" or entry["best_j"] is None:
                rows.append({**row, "insufficient": "insufficient"})
                continue
            j = entry["best_j"]
            s = entry["successes_vs_null"]
            rows.append(
                {
                    **row,
                    "insufficient": None,
                    "main_significant": "yes" if main.get("significant") else "no",
                    "j": j,
                    "auroc": f"{_fmt(entry['auroc'][j])} [{_fmt(entry['ci_low'][j])}, {_fmt(entry['ci_high'][j])}]",
                    "p": _fmt_p(entry["p_adjusted"]),
                    "significant": "yes" if entry["significant"] else "no",
                    "successes": f"{_fmt(s['auroc'][j])} [{_fmt(s['ci_low'][j])}, {_fmt(s['ci_high'][j])}]",
                    "medians": " / ".join(_fmt(entry["quantiles"][c]["q50"][j]) for c in ("violations", "successes", "null")),
                }
            )
    return {
        "answer": null["answer"],
        "events": null["events"],
        "per_violation": f"{null['per_violation']:.2g}",
        "multiple": null["null_multiple"],
        "max_events": null["null_max_events"],
        "generated_jumpers": null["generated_jumpers"],
        "unmatched": null.get("unmatched", 0),
        "permutations": f"{null['permutations']:,}",
        "family_size": null["family_size"],
        "floor": _fmt_p(null["floor"]),
        "rows": rows,
    }


__all__ = ["FIGURE_TEXT", "auprc_text", "calibration_rows", "null_context", "with_rare_figures"]
