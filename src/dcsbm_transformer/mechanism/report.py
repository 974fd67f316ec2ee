"""The mechanism section of ``report.html``: findings in words, tables and three figures.

``mechanism_section(analysis_dir)`` is the context the template ``analysis/report/templates/mechanism.html.j2``
renders (None when the folder has no valid mechanism.json); ``analysis.report`` asks for it and
includes the template. Figures are drawn with matplotlib's object API (no pyplot state), written to
``figures/mechanism_*.png`` and embedded as base64 PNGs, as the analysis's own figures are:

* ``mechanism_compliance`` — rule compliance per rule under each condition (intact, knockout and
  mean-ablation per layer…) with 95% Wilson intervals; black bars mark each rule's rule-blind
  sampling chance, crosses its argmax chance; the legend gives each condition's edge compliance;
* ``mechanism_patch`` — where patched continuations land at the patched jumper's deadline (patched
  target / original target / elsewhere) per original rule, with the patched rule's chance level;
* ``mechanism_attention`` — attention from the last position to the jumper (intact model),
  violations vs successes, mean ± 95% CI at every lookback j, one panel per layer/head and r;
* ``mechanism_perturbation`` — the perturbation-bound test (``mechanism.perturbation``): tightness
  observed / bound against the perturbation's size, per stage and direction, with the bound at 1.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..plotting import PAGE_WIDTH_IN, display_width, grid_shape, grid_size, png_bytes
from ..storage import atomic_write_bytes
from .files import read_mechanism

FIGURE_TEXT = {
    "mechanism_compliance": (
        "Rule compliance under each intervention",
        "Share of events whose generated token at the deadline lies in the target block, per rule, for the intact model "
        "and under each intervention, with 95% Wilson intervals. Black bars: the rule's rule-blind sampling chance (a "
        "walker sampling successors by the training bigrams); crosses: the rule-blind argmax policy (0 or 1). The legend "
        "gives each condition's edge compliance (share of generated transitions that are edges): an intervention that "
        "breaks the edges proves nothing about rules.",
    ),
    "mechanism_patch": (
        "Patched jumper: where the walk lands",
        "The prompt's jumper replaced by a jumper with another target block: share of continuations in the patched "
        "jumper's target block, the original target block, or elsewhere at the patched jumper's deadline, per original "
        "rule, with 95% Wilson intervals. Black bars: the patched rule's rule-blind sampling chance.",
    ),
    "mechanism_attention": (
        "Attention on the jumper, violations vs successes",
        "Attention weight from the last position to the jumper (intact model) at every lookback j (j = r − 1: the "
        "pass whose window ends at the jumper, its self-attention; j = 0: the pass that emits the deadline token), mean "
        "± 95% CI (mean ± 1.96·sd/√n) for violations (red) and successes (blue); one panel per layer, head and r.",
    ),
    "mechanism_perturbation": (
        "A perturbation of QKᵀ against its bound",
        "Perturbations E of QKᵀ with ‖E_M‖_F = ε‖(QKᵀ)_M‖_F on the causal support (x axis: ε), every head of a layer at "
        "once, through the model's own kernel (float64): observed change / the bound of docs/maths.md, per stage (attention "
        "weights, A·V, A·V·Wₒ per head, the block's summed output), for random Gaussian directions and the top singular "
        "direction u₁v₁ᵀ of QKᵀ. Line: median over windows, heads and layers; band: 10th–90th percentile; dots: maximum. "
        "The dashed line at 1 is the bound: a point above it would refute the derivation.",
    ),
}
COLOURS = ["#424242", "#c62828", "#ef6c00", "#6a1b9a", "#1565c0", "#2e7d32", "#00838f", "#ad1457", "#5d4037"]


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def fmt_share(p: dict[str, Any]) -> str:
    """``0.984 [0.978, 0.989] (3936/4000)``."""
    if p["share"] is None:
        return "— (0 events)"
    return f"{fmt(p['share'])} [{fmt(p['ci_low'])}, {fmt(p['ci_high'])}] ({p['k']}/{p['n']})"


# --------------------------------------------------------------------------------------------------
# findings in words


def _chance_range(rules: list[dict[str, Any]], key: str) -> str:
    values = [rule[key] for rule in rules if rule[key] is not None]
    if not values:
        return "unknown"
    return fmt(values[0]) if min(values) == max(values) else f"{fmt(min(values))}–{fmt(max(values))}"


def _strongest(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The single-layer condition of ``kind`` with the lowest pooled rule compliance."""
    single = [c for c in conditions if c["kind"] == kind and len(c["layers"]) == 1 and c["rule"]["share"] is not None]
    return min(single, key=lambda c: c["rule"]["share"]) if single else None


def findings(payload: dict[str, Any]) -> list[str]:
    """The measurements in plain words, every number with its interval and counts."""
    conditions, rules, patch = payload["conditions"], payload["rules"], payload["patch"]
    intact = next(c for c in conditions if c["kind"] == "intact")
    lines = [
        f"Intact model (greedy, as the gate): rule compliance {fmt_share(intact['rule'])}, edge compliance "
        f"{fmt_share(intact['edge'])}; rule-blind chance per rule: sampling {_chance_range(rules, 'chance_sampling')}, "
        f"argmax {_chance_range(rules, 'chance_argmax')}."
    ]
    for kind, verb in (
        ("knockout", "Knocking out attention to the jumper"),
        ("mean_ablation", "Mean-ablating what is read from the jumper"),
    ):
        for condition in (c for c in conditions if c["kind"] == kind):
            where = (
                "in every selected layer"
                if condition["name"].endswith(".all")
                else f"in layer {condition['layers'][0]}" + ("" if condition["heads"] is None else f", head {condition['heads'][0]}")
            )
            per_rule = "; ".join(
                f"rule {row['rule']} {fmt(row['share'])} (chance {fmt(rules[row['rule']]['chance_sampling'])})"
                for row in condition["rules"]
            )
            lines.append(
                f"{verb} {where}: rule compliance {fmt_share(condition['rule'])} (intact {fmt(intact['rule']['share'])}); "
                f"per rule {per_rule}; edge compliance {fmt_share(condition['edge'])}."
            )
    strongest = _strongest(conditions, "knockout")
    if strongest is not None and intact["rule"]["share"] is not None:
        lines.append(
            f"The largest single-layer knockout effect is {strongest['name']}: "
            f"{fmt(intact['rule']['share'])} → {fmt(strongest['rule']['share'])}."
        )
    pooled = patch["pooled"]
    chances = [row["chance_patched_target"] for row in patch["by_rule"] if row["chance_patched_target"] is not None]
    lines.append(
        f"Patching the jumper for one with another target ({fmt_share(patch['same_block'])} of the same block; "
        f"last prompt transition an edge in {fmt_share(patch['prompt_edge'])}): {fmt_share(pooled['patched_target'])} of "
        f"continuations land in the patched jumper's target block at its deadline (its rule-blind chance "
        f"{fmt(min(chances)) if chances else '—'}–{fmt(max(chances)) if chances else '—'}), "
        f"{fmt_share(pooled['original_target'])} in the original target, {fmt_share(pooled['elsewhere'])} elsewhere; "
        f"edge compliance {fmt_share(patch['edge'])}."
    )
    for head in payload["attention"]:
        for r, entry in head["by_r"].items():
            where = f"layer {head['layer']}, head {head['head']}, r = {r}"
            if entry["status"] != "ok":
                lines.append(
                    f"Attention on the jumper ({where}): too few violations or successes for an AUROC "
                    f"({entry['n_violations']} violations, {entry['n_successes']} successes)."
                )
                continue
            aurocs = [a if a is not None else np.nan for a in entry["auroc"][1:]]
            j = 1 + int(np.nanargmin(aurocs)) if np.isfinite(aurocs).any() else 0
            lines.append(
                f"Attention on the jumper ({where}; {entry['n_violations']} violations, {entry['n_successes']} successes): at "
                f"the deadline pass (j = 0) violations {fmt(entry['violations_mean'][0])} [{fmt(entry['violations_ci_low'][0])}, "
                f"{fmt(entry['violations_ci_high'][0])}] vs successes {fmt(entry['successes_mean'][0])} "
                f"[{fmt(entry['successes_ci_low'][0])}, {fmt(entry['successes_ci_high'][0])}], AUROC {fmt(entry['auroc'][0])} "
                f"[{fmt(entry['auroc_ci_low'][0])}, {fmt(entry['auroc_ci_high'][0])}]; lowest AUROC over j ≥ 1 at j = {j}: "
                f"{fmt(entry['auroc'][j])} [{fmt(entry['auroc_ci_low'][j])}, {fmt(entry['auroc_ci_high'][j])}] (pointwise, "
                "a lookback chosen after looking). AUROC < 0.5: less attention on the jumper before a violation."
            )
    lines.append(perturbation_finding(payload["perturbation"]))
    return lines


def perturbation_finding(section: dict[str, Any]) -> str:
    """The perturbation-bound test in one sentence: the exceed share and the tightness range."""
    pooled = [row for row in section["rows"] if row["layer"] is None]
    block = [row for row in pooled if row["stage"] == "block"]
    attention = [row for row in pooled if row["stage"] == "attention"]
    settings = section["settings"]
    return (
        f"Perturbation bound (docs/maths.md): perturbations of QKᵀ of {100 * min(settings['fractions']):g}–"
        f"{100 * max(settings['fractions']):g}% of its Frobenius norm on {settings['windows']} windows, "
        f"{' and '.join(settings['kinds'])} directions: {fmt_share(section['overall_exceed'])} of the cases exceed their bound; "
        f"tightness (observed / bound) of the attention weights median {fmt(min(r['tightness_median'] for r in attention))}–"
        f"{fmt(max(r['tightness_median'] for r in attention))}, maximum {fmt(max(r['tightness_max'] for r in attention))}; "
        f"of the block output median {fmt(min(r['tightness_median'] for r in block))}–{fmt(max(r['tightness_median'] for r in block))}, "
        f"maximum {fmt(max(r['tightness_max'] for r in block))}."
    )


# --------------------------------------------------------------------------------------------------
# figures


def _png(figure: Figure) -> bytes:
    """PNG at ``plotting.DPI`` (≥ 200)."""
    return png_bytes(figure)


def _error(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    share = np.array([np.nan if p["share"] is None else p["share"] for p in rows], dtype=float)
    low = np.array([np.nan if p["ci_low"] is None else p["ci_low"] for p in rows], dtype=float)
    high = np.array([np.nan if p["ci_high"] is None else p["ci_high"] for p in rows], dtype=float)
    return share, np.maximum(np.vstack([share - low, high - share]), 0.0)  # Wilson bounds may miss 0 or 1 by a rounding error


def compliance_figure(payload: dict[str, Any]) -> Figure:
    conditions = [c for c in payload["conditions"] if c["kind"] != "patch"]
    rules = payload["rules"]
    # the legend sits to the right, outside the axes (≈ 3 in): the whole stays within the page
    figure = Figure(figsize=(min(PAGE_WIDTH_IN - 3.0, max(6.0, 1.1 * len(rules) * max(1, len(conditions)) / 2.2)), 3.8))
    axis = figure.add_subplot()
    width = 0.8 / len(conditions)
    x = np.arange(len(rules))
    for i, condition in enumerate(conditions):
        share, error = _error(condition["rules"])
        axis.bar(
            x - 0.4 + (i + 0.5) * width,
            share,
            width,
            yerr=error,
            capsize=2,
            color=COLOURS[i % len(COLOURS)],
            label=f"{condition['name']} (edges {fmt(condition['edge']['share'])})",
        )
    for j, rule in enumerate(rules):
        if rule["chance_sampling"] is not None:
            axis.hlines(rule["chance_sampling"], j - 0.45, j + 0.45, colors="black", linewidth=2)
        if rule["chance_argmax"] is not None:
            axis.plot(j, rule["chance_argmax"], marker="x", color="black", markersize=7)
    axis.set_xticks(x, [f"rule {r['rule']}\nblock {r['block']}→{r['target_block']}, r={r['r']}" for r in rules], fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("rule compliance")
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axis.set_title("rule compliance per rule, by condition (bars: 95% Wilson); black: rule-blind chance", fontsize=9)
    return figure


def patch_figure(payload: dict[str, Any]) -> Figure:
    rows = payload["patch"]["by_rule"]
    figure = Figure(figsize=(min(PAGE_WIDTH_IN, max(5.0, 1.4 * len(rows))), 3.6))
    axis = figure.add_subplot()
    x = np.arange(len(rows))
    width = 0.27
    for i, (name, colour) in enumerate(zip(("patched_target", "original_target", "elsewhere"), ("#2e7d32", "#c62828", "#9e9e9e"))):
        share, error = _error([row[name] for row in rows])
        axis.bar(x + (i - 1) * width, share, width, yerr=error, capsize=2, color=colour, label=name.replace("_", " "))
    for j, row in enumerate(rows):
        if row["chance_patched_target"] is not None:
            axis.hlines(row["chance_patched_target"], j - 1.5 * width, j - 0.5 * width, colors="black", linewidth=2)
    axis.set_xticks(x, [f"rule {row['rule']}\n→ rule {', '.join(map(str, row['patched_with']))}" for row in rows], fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("share of continuations")
    axis.legend(fontsize=8)
    axis.set_title("where the walk lands at the patched jumper's deadline (95% Wilson)", fontsize=9)
    return figure


def attention_figure(payload: dict[str, Any]) -> Figure | None:
    panels = [(head, r, entry) for head in payload["attention"] for r, entry in head["by_r"].items()]
    if not panels:
        return None
    rows, columns = grid_shape(len(panels))  # at most three panels a row: legible at the page's width
    figure = Figure(figsize=grid_size(rows, columns, panel_height=3.1, title=0.0))
    for index, (head, r, entry) in enumerate(panels):
        axis = figure.add_subplot(rows, columns, index + 1)
        j = np.arange(int(r))
        for prefix, colour, label in (("violations", "#c62828", "violations"), ("successes", "#1565c0", "successes")):
            mean = np.array([np.nan if v is None else v for v in entry[f"{prefix}_mean"]], dtype=float)
            low = np.array([np.nan if v is None else v for v in entry[f"{prefix}_ci_low"]], dtype=float)
            high = np.array([np.nan if v is None else v for v in entry[f"{prefix}_ci_high"]], dtype=float)
            count = entry["n_violations"] if prefix == "violations" else entry["n_successes"]
            axis.plot(j, mean, marker="o", markersize=3, color=colour, label=f"{label} (n = {count})")
            axis.fill_between(j, low, high, color=colour, alpha=0.2)
        axis.invert_xaxis()  # time runs left to right: j = r − 1 first
        axis.set_xlabel("lookback j (passes before the deadline token)", fontsize=8)
        axis.set_ylabel("attention on the jumper", fontsize=8)
        axis.set_title(f"layer {head['layer']}, head {head['head']}, r = {r}", fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def perturbation_figure(payload: dict[str, Any]) -> Figure:
    section = payload["perturbation"]
    stages = [stage for stage in ("attention", "av", "avwo", "block") if any(r["stage"] == stage for r in section["rows"])]
    names = {"attention": "attention weights A", "av": "A·V (per head)", "avwo": "A·V·Wₒ (per head)", "block": "block output Σ_h"}
    rows, columns = grid_shape(len(stages))  # four stages: 2 × 2, legible at the page's width
    figure = Figure(figsize=grid_size(rows, columns, panel_height=3.0, title=0.0))
    for index, stage in enumerate(stages):
        axis = figure.add_subplot(rows, columns, index + 1)
        for kind, colour in zip(section["settings"]["kinds"], ("#1565c0", "#c62828", "#2e7d32")):
            points = sorted(
                (r for r in section["rows"] if r["layer"] is None and r["stage"] == stage and r["kind"] == kind),
                key=lambda r: r["fraction"],
            )
            x = np.array([r["fraction"] for r in points])
            axis.plot(x, [r["tightness_median"] for r in points], marker="o", markersize=3, color=colour, label=kind.replace("_", " "))
            axis.fill_between(x, [r["tightness_q10"] for r in points], [r["tightness_q90"] for r in points], color=colour, alpha=0.2)
            axis.plot(x, [r["tightness_max"] for r in points], linestyle="none", marker=".", color=colour)
        axis.axhline(1.0, color="black", linestyle="--", linewidth=1)
        axis.set_xscale("log")
        axis.set_ylim(0, 1.1)
        axis.set_xlabel("ε = ‖E_M‖_F / ‖(QKᵀ)_M‖_F", fontsize=8)
        axis.set_ylabel("observed / bound", fontsize=8)
        axis.set_title(names[stage], fontsize=9)
        axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def draw_mechanism_figures(analysis_dir: Path, payload: dict[str, Any]) -> dict[str, bytes]:
    """Draw the figures, write ``figures/<name>.png``; returns name → PNG bytes."""
    out = {}
    for name, draw in (
        ("mechanism_compliance", compliance_figure),
        ("mechanism_patch", patch_figure),
        ("mechanism_attention", attention_figure),
        ("mechanism_perturbation", perturbation_figure),
    ):
        figure = draw(payload)
        if figure is None:
            continue
        out[name] = _png(figure)
        atomic_write_bytes(Path(analysis_dir) / "figures" / f"{name}.png", out[name])
    return out


# --------------------------------------------------------------------------------------------------
# the context


def _condition_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for condition in payload["conditions"]:
        rows.append(
            {
                "name": condition["name"],
                "description": condition["description"],
                "rule_text": fmt_share(condition["rule"]),
                "rules_text": [fmt_share(row) for row in condition["rules"]],
                "drops_text": [fmt(row.get("drop")) for row in condition["rules"]],
                "edge_text": fmt_share(condition["edge"]),
                "attention_text": ", ".join(
                    f"{key.replace('_', ' ')}: {fmt(v)}" for key, v in condition["attention_on_jumper"].items()
                ),
            }
        )
    return rows


def _attention_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for head in payload["attention"]:
        for r, entry in head["by_r"].items():
            for j in range(int(r) - 1, -1, -1):
                rows.append(
                    {
                        "where": f"layer {head['layer']}, head {head['head']}",
                        "r": r,
                        "j": j,
                        "status": entry["status"],
                        "violations": f"{fmt(entry['violations_mean'][j])} [{fmt(entry['violations_ci_low'][j])}, {fmt(entry['violations_ci_high'][j])}]",
                        "successes": f"{fmt(entry['successes_mean'][j])} [{fmt(entry['successes_ci_low'][j])}, {fmt(entry['successes_ci_high'][j])}]",
                        "auroc": f"{fmt(entry['auroc'][j])} [{fmt(entry['auroc_ci_low'][j])}, {fmt(entry['auroc_ci_high'][j])}]",
                        "counts": f"{entry['n_violations']} / {entry['n_successes']}",
                    }
                )
    return rows


def _perturbation_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The pooled rows of the perturbation test (layer None), formatted."""
    return [
        {
            "kind": row["kind"].replace("_", " "),
            "fraction": f"{100 * row['fraction']:g}%",
            "stage": section["settings"]["stages"][row["stage"]],
            "exceed": fmt_share(row["exceed"]),
            "tightness": f"{fmt(row['tightness_median'])} [{fmt(row['tightness_q10'])}, {fmt(row['tightness_q90'])}], max {fmt(row['tightness_max'])}",
        }
        for row in section["rows"]
        if row["layer"] is None
    ]


def mechanism_section(analysis_dir: Path) -> dict[str, Any] | None:
    """What the report's mechanism section renders, or None when ``analysis_dir`` has no valid mechanism.json."""
    payload = read_mechanism(Path(analysis_dir))
    if payload is None:
        return None
    figures = draw_mechanism_figures(analysis_dir, payload)
    patch = payload["patch"]
    return {
        "exploratory": payload["exploratory"],
        "findings": payload["findings"],
        "rules": payload["rules"],
        "rules_text": [
            f"rule {r['rule']} (vertex {r['vertex']}, block {r['block']}→{r['target_block']}, r = {r['r']}, "
            f"{r['events']} events): chance sampling {fmt(r['chance_sampling'])}, argmax {fmt(r['chance_argmax'])}"
            for r in payload["rules"]
        ],
        "conditions": _condition_rows(payload),
        "patch": {
            "note": patch["note"],
            "same_block": fmt_share(patch["same_block"]),
            "prompt_edge": fmt_share(patch["prompt_edge"]),
            "edge": fmt_share(patch["edge"]),
            "pooled": {name: fmt_share(p) for name, p in patch["pooled"].items()},
            "rows": [
                {
                    "rule": row["rule"],
                    "patched_with": ", ".join(map(str, row["patched_with"])),
                    "chance": fmt(row["chance_patched_target"]),
                    "patched_target": fmt_share(row["patched_target"]),
                    "original_target": fmt_share(row["original_target"]),
                    "elsewhere": fmt_share(row["elsewhere"]),
                }
                for row in patch["by_rule"]
            ],
        },
        "attention": _attention_rows(payload),
        "perturbation": _perturbation_rows(payload["perturbation"]),
        "figures": [
            {
                "name": name,
                "title": FIGURE_TEXT[name][0],
                "caption": FIGURE_TEXT[name][1],
                "file": f"{name}.png",
                "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                "width": display_width(png),
            }
            for name, png in figures.items()
        ],
        "settings": [
            (k.replace("_", " "), ", ".join(map(str, v)) if isinstance(v, list) else str(v)) for k, v in payload["settings"].items()
        ],
        "timings": [(k.removesuffix("_seconds").replace("_", " "), f"{v:.1f} s") for k, v in payload["timings"].items()],
    }
