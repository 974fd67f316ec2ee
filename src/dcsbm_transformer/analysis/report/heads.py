"""Where does the signal concentrate? The report's per-head summary (``templates/heads.html.j2``).

From horizon.json alone: for every (layer, head) and every r, the strongest of the head's arrays
(both targets, every metric; ordered as the report's top list: significant after Holm first, then the
oriented AUROC |AUROC − 0.5| at the array's best lookback j ≥ 1), with its AUROC and 95% CI there, its
Holm-adjusted permutation p (the exploratory family of that r: every array of every head), and how
many of the head's arrays are significant. The Holm family's floor m / (P + 1) is stated with it:
the analysis raises the permutations P (``statistics.permutations_needed``) until the floor is
below α / 2, so a head's array can pass however many heads the model has; a floor that is not
(permutations turned off, an older file) is said, not hidden. The registered primary is tested
alone, one-sided: its row shows its own p, marked.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ..stats.horizon import TARGET_NAMES

KEY = re.compile(r"^(?P<target>\w+?)\.layer_(?P<layer>\d+)\.head_(?P<head>\d+)\.(?P<metric>.+)$")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _strength(entry: dict[str, Any]) -> tuple:
    """Significant first, then the larger oriented AUROC at the best lookback (horizon._strength's order)."""
    a = entry["auroc"][entry["best_j"]]
    return (0 if entry["significant"] else 1, -abs((a if a is not None else 0.5) - 0.5))


def head_summary(horizon: dict[str, Any]) -> dict[str, Any]:
    """``rows`` (one per layer, head and r, in that order), ``holm`` (family size, permutations, floor,
    whether the floor is below α/2) and ``concentration`` (a sentence: the head whose strongest array
    is strongest, per r)."""
    alpha = float(horizon["settings"]["alpha"])
    primary = horizon["primary"]
    heads: dict[tuple[int, int], list[tuple[str, dict[str, Any]]]] = {}
    for key, stats in horizon["metrics"].items():
        heads.setdefault((int(stats["layer"]), int(stats["head"])), []).append((key, stats))
    rows: list[dict[str, Any]] = []
    best_by_r: dict[int, tuple[dict[str, Any], tuple]] = {}
    for (layer, head), arrays in sorted(heads.items()):
        for rv in horizon["r_values"]:
            entries = [
                (key, stats, stats["by_r"][str(rv)])
                for key, stats in arrays
                if str(rv) in stats["by_r"]
                and stats["by_r"][str(rv)]["status"] == "ok"
                and stats["by_r"][str(rv)]["best_j"] is not None
            ]
            row = {"layer": layer, "head": head, "r": rv, "where": f"layer {layer}, head {head}", "tested": len(entries)}
            if not entries:
                rows.append(row | {"key": None, "label": "no array with enough events", "significant": False, "significant_count": 0})
                continue
            key, stats, entry = min(entries, key=lambda item: _strength(item[2]))
            j = entry["best_j"]
            registered = key == primary["key"] and primary["registered"]
            row |= {
                "key": key,
                "label": f"{TARGET_NAMES.get(stats['target'], stats['target'])} {stats['metric'].replace('_', ' ')}",
                "best_j": j,
                "auroc": entry["auroc"][j],
                "auroc_text": f"{_fmt(entry['auroc'][j])} [{_fmt(entry['ci_low'][j])}, {_fmt(entry['ci_high'][j])}]",
                "p_adjusted": entry["p_adjusted"],
                "p_text": ("—" if entry["p_adjusted"] is None else f"{entry['p_adjusted']:.1e}")
                + (" (registered, one-sided, alone)" if registered else ""),
                "significant": bool(entry["significant"]),
                "significant_count": sum(bool(e["significant"]) for _, _, e in entries),
            }
            rows.append(row)
            current = best_by_r.get(rv)
            if current is None or _strength(entry) < current[1]:
                best_by_r[rv] = (row, _strength(entry))
    holm = horizon.get("holm", {})
    floor = holm.get("floor")
    sentences = []
    for rv, (row, _) in sorted(best_by_r.items()):
        verdict = "significant after Holm" if row["significant"] else "not significant after Holm"
        sentences.append(
            f"r = {rv}: the strongest array is in {row['where']} ({row['label']}, AUROC {row['auroc_text']} at j = {row['best_j']}, "
            f"adjusted p {row['p_text']}, {verdict}; {row['significant_count']} of that head's {row['tested']} arrays significant)"
        )
    return {
        "rows": rows,
        "n_heads": len({(row["layer"], row["head"]) for row in rows}),
        "holm": {
            "family_size": holm.get("family_size"),
            "permutations_requested": holm.get("permutations_requested"),
            "permutations_used": holm.get("permutations_used"),
            "floor": floor,
            "floor_text": _fmt(floor, 4) if floor is not None else "—",
            "floor_ok": floor is not None and floor < alpha / 2,
            "alpha": alpha,
        },
        "concentration": "; ".join(sentences) + "." if sentences else "No head has an array with enough events.",
    }
