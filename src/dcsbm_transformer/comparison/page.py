"""comparison.html: one self-contained page (Jinja2, autoescaped; figures embedded as base64 PNG
data URIs; no external CSS, JavaScript or images), rendered from comparison.json's payload."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ..plotting import display_width
from .figures import COMPLIANCE_INTERVAL, GATE_INTERVAL
from .tables import LISTING_COLUMNS, TARGET_NAMES, TARGETS, listing_rows

TEMPLATES_DIR = Path(__file__).parent / "templates"
TEMPLATE = "comparison.html.j2"

FIGURES = {  # name -> (title, caption)
    "compliance": (
        "Rule compliance against r/w",
        "Per run and r: the mean (left) and the worst (right) compliance of the rules with that r at the last evaluated "
        "epoch; filled points passed the gate, hollow ones did not; grey crosses: the rule-blind chance (a model that "
        "samples the training bigrams); dotted: the gate's rule threshold; bars: mean ± 95% t-interval over the runs.",
    ),
    "gate": (
        "Gate pass rate against r/w",
        "Share of finished runs whose sufficiency gate passed, with Wilson 95% intervals (k/n beside each point); "
        "a run with several r is counted at each of its r/w values.",
    ),
    "horizons": (
        "Predictive horizon against r/w: QKᵀ beside AVWₒ",
        "Top: the predictive horizon (furthest lookback j ≥ 1 with AUROC beyond the threshold); bottom: the "
        "confident horizon (CI beyond the threshold at every j up to it). Right: QKᵀ − AVWₒ within the same run "
        "and r. The research abstract predicts QKᵀ's horizon exceeds AVWₒ's, more so as r passes w. Analysed "
        "runs only; bars: mean ± 95% t-interval over the runs.",
    ),
    "auroc": (
        "AUROC(j) of the primary metric, one panel per r",
        "One line per analysed run with its 95% DeLong CI band; lookbacks in time order (the earliest pass at the "
        "left, the pass emitting the deadline token, j = 0, shaded at the right); solid: chance 0.5; dotted: the "
        "horizon thresholds.",
    ),
}


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _f(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _run_name(entry: dict[str, Any]) -> str:
    name = Path(entry["folder"]).name
    return name if entry.get("analysis") is None else f"{name}/{entry['analysis']}"


def _gate_row(entry: dict[str, Any]) -> dict[str, Any]:
    g, c = entry["gate"], entry["compliance"]
    if g is None or not g["finished"]:
        text, passed = entry["status"], None
    elif g["passed"]:
        text, passed = f"passed at epoch {g['epoch']}", True
    else:
        text, passed = f"not passed: {g['failure_reason'] or 'within max_epochs'}", False
    by_r = "; ".join(f"r={r}: {_f(v['worst'])} / {_f(v['mean'])} ({v['rules']})" for r, v in (c or {}).get("by_r", {}).items())
    return {
        "run": _run_name(entry),
        "gate": text,
        "passed": passed,
        "epochs": g["epochs_trained"] if g else "–",
        "edge": _f(c["edge"]) if c else "–",
        "worst": _f(c["worst"]) if c else "–",
        "mean": _f(c["mean"]) if c else "–",
        "by_r": by_r or "–",
    }


def _primary_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    p = entry["primary"]
    if p is None:
        return []
    rows = []
    for r, v in p["by_r"].items():
        ok = v["status"] == "ok" and v["best_j"] is not None
        rows.append(
            {
                "run": _run_name(entry),
                "statement": p["statement"],
                "r": r,
                "counts": f"{v['n_violations']} / {v['n_successes']}",
                "best_j": v["best_j"] if ok else "–",
                "auroc": f"{_f(v['auroc'])} [{_f(v['ci_low'])}, {_f(v['ci_high'])}]" if ok else v["status"],
                "p": _f(v["p_value"], 4) if ok else "–",
                "verdict": v["verdict"] if v["held_out_p"] is None else f"{v['verdict']} (held-out p = {v['held_out_p']:.4g})",
                "by_layer": by_layer_text(v["by_layer"]),
                "strongest": strongest_text(v.get("strongest_by_layer", [])),
            }
        )
    return rows


def by_layer_text(by_layer: dict[str, dict[str, Any]]) -> str:
    """The primary's metric at every target, layer and head: AUROC at its best j, * when significant
    after Holm (or why there is none)."""
    return (
        "; ".join(
            f"{TARGET_NAMES[x['target']]} L{x['layer']}H{x['head']} "
            + (f"{_f(x['auroc'])} (j={x['best_j']}){'*' if x['significant'] else ''}" if x["status"] == "ok" else x["status"])
            for x in by_layer.values()
        )
        or "–"
    )


def strongest_text(rows: list[dict[str, Any]]) -> str:
    """Per layer and head, its strongest exploratory array: name, AUROC at its best j, * when significant
    after Holm, and how many of its arrays are significant."""
    return (
        "; ".join(
            f"L{x['layer']}H{x['head']}: {x['label']} {_f(x['auroc'])} (j={x['best_j']}){'*' if x['significant'] else ''}, "
            f"{x['significant_arrays']}/{x['tested_arrays']} significant"
            for x in rows
        )
        or "–"
    )


def _horizon_text(v: dict[str, Any]) -> str:
    counts = "" if v["n_violations"] is None else f"; {v['n_violations']}/{v['n_successes']}"
    if v["status"] != "ok":
        return f"{v['status']}{counts}"
    share = "" if v["horizon_over_r"] is None else f" = {v['horizon_over_r']:g} r"
    return f"{v['horizon']}{share} ({v['confident_horizon']}), {v['direction']}{counts}"


def _horizon_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    if not entry["horizons"] or not entry["in_horizon_figures"]:
        return []
    p = entry["primary"]
    rows = []
    for r, v in entry["horizons"].items():
        q, a = (v[t] for t in TARGETS)
        both = q["horizon"] is not None and a["horizon"] is not None
        confident = q["confident_horizon"] is not None and a["confident_horizon"] is not None
        difference = f"{q['horizon'] - a['horizon']:+d}" if both else "–"
        if both and confident:
            difference += f" ({q['confident_horizon'] - a['confident_horizon']:+d})"
        rows.append(
            {
                "run": _run_name(entry),
                "series": entry["series"],
                "metric": f"{p['metric']} (layer {p['layer']}, head {p['head']}, {p['direction']})",
                "r": r,
                "rw": f"{v['r_over_w']:g}",
                "qkt": _horizon_text(q),
                "avwo": _horizon_text(a),
                "difference": difference,
            }
        )
    return rows


def _excluded_counts(excluded: list[dict[str, Any]]) -> str:
    gate_failed = sum(item["reason"].startswith("excluded from analysis") for item in excluded)
    not_analysed = sum(item["reason"].startswith("gate passed,") for item in excluded)
    other = len(excluded) - gate_failed - not_analysed
    return (
        f"{len(excluded)} run(s) left out of the horizon figures: {gate_failed} gate not passed, "
        f"{not_analysed} gate passed but not analysed, {other} unfinished, unreadable, duplicate or exploratory."
    )


def render_page(comparison: dict[str, Any], pngs: dict[str, bytes | None]) -> str:
    """The HTML of comparison.html from the comparison.json payload and the figures' PNG bytes."""
    entries = comparison["runs"]
    keys = comparison["differing_keys"]
    figures = []
    for name, (title, caption) in FIGURES.items():
        png = pngs.get(name)
        figures.append(
            {
                "name": name,
                "title": title,
                "caption": caption,
                "data_uri": data_uri(png) if png else None,
                "width": display_width(png) if png else None,  # natural size (100 CSS px per figure inch)
                "missing": "no run qualifies for this figure (see the runs left out above)",
            }
        )
    context = {
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "roots": comparison["roots"],
        "where": comparison["filter"]["where"],
        "runs_found": comparison["filter"]["runs_found"],
        "runs_matching": comparison["filter"]["runs_matching"],
        "listing_columns": LISTING_COLUMNS,
        "listing": listing_rows(entries),
        "differing_keys": keys,
        "differences": [
            {"run": _run_name(e), "cells": [str(e["differs"].get(key, "–")) for key in keys]} for e in entries if e["differs"]
        ],
        "gate_rows": [_gate_row(e) for e in entries],
        "primary_rows": [row for e in entries if e["in_horizon_figures"] for row in _primary_rows(e)],
        "horizon_rule": comparison["horizon_rule"],
        "horizon_rows": [row for e in entries for row in _horizon_rows(e)],
        "excluded": [{"run": Path(item["folder"]).name, **item} for item in comparison["excluded"]],
        "excluded_counts": _excluded_counts(comparison["excluded"]),
        "compliance_interval": COMPLIANCE_INTERVAL,
        "gate_interval": GATE_INTERVAL,
        "figures": figures,
    }
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return environment.get_template(TEMPLATE).render(**context)
