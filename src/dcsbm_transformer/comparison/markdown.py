"""comparison.md: the comparison's tables in Markdown, ready to paste into a paper, a README or an
issue — rendered from comparison.json's payload, so every number is the page's number.

Three tables, one row per r (a run with several jump lengths appears at each of its r):

1. **Gate**: per r and r/w, how many finished runs passed the gate, at which epochs, and each run's
   worst and mean rule compliance at that r (seed in brackets).
2. **The primary, runs that passed the gate**: per analysis, the pre-registered primary's AUROC at
   its best lookback with the 95% CI (pointwise: the lookback is chosen after looking), the p
   (the held-out registered test's where there is one, else the exploratory Holm-adjusted one), the
   verdict, the class counts, and the primary's metric at every layer (which layer separates).
3. **Negative control**: the same for gate-failed runs analysed anyway (``analysis.include_failed``),
   never mixed with table 2: where the rule is not known (or not visible, r > w), a metric that
   "predicts" violations as well as in table 2 measures something other than rule knowledge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .page import by_layer_text, strongest_text

MARKDOWN_FILE = "comparison.md"


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.2g}" if value < 0.001 else f"{value:.3f}"


def _runs_at_r(entries: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """r -> the entries whose config has a jumper with that r, one per run folder (its first analysis)."""
    seen: set[tuple[str, int]] = set()
    out: dict[int, list[dict[str, Any]]] = {}
    for entry in entries:
        for r in entry["parameters"]["r"]:
            if (entry["folder"], r) not in seen:
                seen.add((entry["folder"], r))
                out.setdefault(int(r), []).append(entry)
    return dict(sorted(out.items()))


def _ratio(entry: dict[str, Any], r: int) -> float:
    return r / entry["parameters"]["w"]


def _compliance_at(entry: dict[str, Any], r: int, field: str) -> str:
    """A run's worst or mean rule compliance over its rules with this r, with its seed."""
    value = ((entry["compliance"] or {}).get("by_r") or {}).get(str(r), {}).get(field)
    return f"{_f(value)} ({entry['parameters']['seed']})"


def gate_table(entries: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| r | r/w | finished runs | gate passed | gate epochs | worst rule (seed) | mean rule (seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, runs in _runs_at_r(entries).items():
        finished = [e for e in runs if e["gate"] is not None and e["gate"]["finished"]]
        passed = [e for e in finished if (e["gate"].get("passed_by_r") or {}).get(str(r), e["gate"]["passed"])]
        epochs = ", ".join(str(e["gate"]["epoch"]) for e in passed if e["gate"]["epoch"] is not None) or "–"

        worst, mean = (", ".join(_compliance_at(e, r, field) for e in finished) or "–" for field in ("worst", "mean"))
        lines.append(
            f"| {r} | {_ratio(runs[0], r):.2f} | {len(finished)} | {len(passed)}/{len(finished)} | {epochs} | {worst} | {mean} |"
        )
    return lines


def primary_table(entries: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| r | r/w | run (seed) | analysis | primary AUROC [95% CI, pointwise] at best j | p | verdict | violations / successes "
        "| the metric by layer (* significant) | each layer's strongest exploratory array |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for entry in entries:
        primary = entry["primary"]
        if primary is None:
            continue
        for r_text, stat in primary["by_r"].items():
            r = int(r_text)
            if stat["status"] != "ok":
                auroc = f"{stat['status']}"
            else:
                auroc = f"{_f(stat['auroc'])} [{_f(stat['ci_low'])}, {_f(stat['ci_high'])}] j={stat['best_j']}"
            p = stat["held_out_p"] if stat["held_out_p"] is not None else stat["p_value"]
            kind = "held-out" if stat["held_out_p"] is not None else "Holm"
            rows.append(
                (
                    _ratio(entry, r),
                    entry["parameters"]["seed"],
                    f"| {r} | {_ratio(entry, r):.2f} | {Path(entry['folder']).name} ({entry['parameters']['seed']}) | "
                    f"{entry.get('analysis') or '–'} | {auroc} | {_p(p)} ({kind}) | {stat['verdict']} | "
                    f"{stat['n_violations']} / {stat['n_successes']} | {by_layer_text(stat['by_layer'])} | "
                    f"{strongest_text(stat.get('strongest_by_layer', []))} |",
                )
            )
    return lines + [row for *_, row in sorted(rows, key=lambda x: (x[0], x[1]))] if rows else []


def render_markdown(comparison: dict[str, Any]) -> str:
    entries = comparison["runs"]
    passed = [e for e in entries if e["state"] == "passed"]
    control = [e for e in entries if e["state"] == "failed" and e["primary"] is not None]
    where = " ".join(comparison["filter"]["where"]) or "(no filter)"
    parts = [
        "# Comparison",
        "",
        f"{len({e['folder'] for e in entries})} run(s) from {', '.join(comparison['roots'])}, where {where}; "
        f"differing keys: {', '.join(comparison['differing_keys']) or 'none'}. Made by `dcsbm report` with comparison.json "
        "and comparison.html (figures there).",
        "",
        "## Gate: rule compliance at each r",
        "",
        *gate_table(entries),
        "",
        "## The pre-registered primary, runs that passed the gate",
        "",
        *(primary_table(passed) or ["No analysed run passed the gate."]),
        "",
        "## Negative control: gate-failed runs analysed anyway (exploratory, never mixed with the above)",
        "",
        *(primary_table(control) or ["None (a sweep analyses them with `analysis.include_failed`)."]),
        "",
    ]
    return "\n".join(parts)


__all__ = ["MARKDOWN_FILE", "render_markdown"]
