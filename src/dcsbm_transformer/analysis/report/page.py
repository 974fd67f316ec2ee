"""``results/<id>/analysis/report.html``: one self-contained page a researcher can read without the code.

Built from the run's files alone — config.json, result.json, analysis/summary.json,
analysis/horizon.json and analysis/token_metrics.npz — with the figures (``analysis.report.figures``)
embedded as base64 PNGs and no external CSS or JavaScript. ``report_context`` is the data the
template renders (numbers raw and formatted), so tests check numbers without parsing HTML.

What it shows: the config in brief; the gate per rule with each rule's rule-blind chance level;
class counts per r and per rule; the pre-registered result in one sentence; per r the horizon
table of the strongest metrics (and the primary); the baselines (shuffled labels, the context-only
window, the model's own target-block probability, and how many significant metrics beat it); the
figures; the statistical settings; versions and timings. A run whose gate did not pass carries an
EXPLORATORY banner.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ...plotting import display_width
from ...storage import atomic_write_bytes
from ...training.plots import FIGURE_FILE as TRAINING_CURVES_FILE
from ...training.plots import plot_from_result
from ..files import HORIZON_FILE, SUMMARY_FILE, TOKEN_METRICS_FILE, read_horizon, read_index
from ..measure.null import NULL_FILE
from ..stats.horizon import TARGET_NAMES
from .figures import FIGURES_DIR, draw_figures, layer_keys, metric_label
from .heads import head_summary
from .random_matrix import random_matrix_section
from .rare_page import auprc_text, calibration_rows, null_context, with_rare_figures

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"
TEMPLATES_DIR = Path(__file__).parent / "templates"
TOP_ROWS = 10
BETTER = "better than the logits"

FIGURE_TEXT = {
    "primary": (
        "The primary metric",
        "AUROC(j) of the analysis's primary metric on the exploratory events (the held-out ones are kept for the "
        "registered test), with its 95% CI band, against the lookback j (j passes before the "
        "pass that emits the deadline token; j = 0, shaded, is simultaneous with the outcome and never counts as "
        "prediction). Grey band: 0.5 ± the 95th percentile of the shuffled-label statistic (what label noise gives). "
        "Dashed red: the model's own probability of the target block (the behavioural predictor; expected below 0.5, "
        "since less probability on the target block goes with violations). Dotted: the horizon threshold.",
    ),
    "auroc_small_multiples": (
        "AUROC(j) by target and layer",
        "The strongest few metrics of each target (rows: QKᵀ, AVWₒ) and layer (columns), ordered as in the table "
        "(significant first, then by oriented AUROC at the best lookback), with 95% CI bands. * = significant after "
        "Holm adjustment. AUROC below 0.5 means lower before violations.",
    ),
    "event_aligned": (
        "Event-aligned metric values",
        "Mean metric ± 95% CI (mean ± 1.96·sd/√n) for violations (red) and successes (blue) at every lookback, "
        "centred within rule (each rule's success mean subtracted, so successes sit at 0: the rules differ in level "
        "and in violation rate, and pooled means would show which rule is active as if it were a warning); the "
        "diamond at the left is the window that ended just before the jumper entered the context (context-only "
        "baseline): a gap already there is signal in the input, not a warning produced by the rule.",
    ),
    "primary_by_layer": (
        "The primary's metric at every layer",
        "AUROC(j) of the primary's metric on QKᵀ and AVWₒ at every layer and head, with 95% CI bands (thick: the "
        "registered layer). Which layer's metric separates violations from successes, and how far ahead; exploratory "
        "except for the registered layer's one-sided test.",
    ),
    "training_curves": (
        "Training curves",
        "Left: the cross-entropy loss at every optimiser step (faint lines: epoch boundaries). Right: at every epoch, "
        "the gate's edge compliance (green), its rule aggregate (red squares) and each rule's own compliance (one "
        "labelled line per rule: its r and its block → target block), with the gate thresholds dashed. Redrawn from "
        "result.json's curves.",
    ),
    "overview": (
        "Overview",
        "For every metric (rows) and target / layer / head (columns): the best oriented AUROC (0.5 + |AUROC − 0.5|) "
        "over lookbacks j ≥ 1, per r. * = significant after Holm; the red box is the pre-registered metric.",
    ),
}


# --------------------------------------------------------------------------------------------------
# formatting


FIGURE_TEXT = with_rare_figures(FIGURE_TEXT)  # AUPRC and calibration figures, the null band (issue 26)


def fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def fmt_p(value: float | None) -> str:
    """p-values in scientific notation: ``1.0e-04``."""
    return "—" if value is None or not np.isfinite(value) else f"{value:.1e}"


def fmt_ci(value: float | None, low: float | None, high: float | None) -> str:
    return "—" if value is None else f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def _yes_no(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "no")


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


# --------------------------------------------------------------------------------------------------
# reading the run


def _read_json(path: Path, missing: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {missing}")
    return json.loads(path.read_text())


def read_analysis(analysis_dir: Path) -> dict[str, Any]:
    """config, result, registration, summary and horizon of one analysis folder
    (``results/<id>/analysis/<name>/``); a missing file raises FileNotFoundError saying which stage writes it."""
    analysis = Path(analysis_dir)
    run_dir = analysis.parent.parent
    config = _read_json(run_dir / "config.json", "is this an analysis folder (results/<id>/analysis/<name>/)?")
    result = _read_json(run_dir / "result.json", "train the run first (`dcsbm run`)")
    summary = _read_json(analysis / SUMMARY_FILE, "analyse the run first (`dcsbm analyze`)")
    horizon = read_horizon(analysis)
    if horizon is None:
        raise FileNotFoundError(f"{analysis / HORIZON_FILE} is missing or invalid: run `dcsbm analyze` again to (re)compute it")
    from ...mechanism.report import mechanism_section  # the floor above draws its own section (None without mechanism.json)

    return {
        "config": config,
        "result": result,
        "summary": summary,
        "horizon": horizon,
        "mechanism": mechanism_section(analysis),
        "random_matrix": random_matrix_section(analysis),
        "sibling": sampled_sibling(analysis),
    }


# --------------------------------------------------------------------------------------------------
# the context


def _horizons(entry: dict[str, Any], direction: str) -> tuple[int | None, int | None]:
    if direction == "lower":
        return entry["horizon_lower"], entry["confident_horizon_lower"]
    return entry["horizon"], entry["confident_horizon"]


def _side(entry: dict[str, Any]) -> str:
    """The direction a row's horizon is counted in: the tested side, or (two-sided) the observed one."""
    if entry["alternative"] == "greater":
        return "higher"
    if entry["alternative"] == "less":
        return "lower"
    return "lower" if (entry["direction"] or "").startswith("lower") else "higher"


def metric_row(key: str, stats: dict[str, Any], r: int, *, role: str = "") -> dict[str, Any]:
    """One row of the horizon table: raw numbers (for tests) and their formatted text."""
    entry = stats["by_r"][str(r)]
    row = {
        "key": key,
        "role": role,
        "label": metric_label(key),
        "metric": stats["metric"].replace("_", " "),
        "target": TARGET_NAMES.get(stats["target"], stats["target"]),
        "layer": stats["layer"],
        "head": stats["head"],
        "status": entry["status"],
        "n_violations": entry["n_violations"],
        "n_successes": entry["n_successes"],
    }
    if entry["status"] != "ok" or entry["best_j"] is None:
        why = "insufficient" if entry["status"] != "ok" else "no lookback j ≥ 1 with enough finite values"
        row["insufficient"] = f"{why} ({entry['n_violations']} violations, {entry['n_successes']} successes)"
        return row
    j, side = entry["best_j"], _side(entry)
    horizon, confident = _horizons(entry, side)
    context, versus = entry["context_only"], entry["versus_behaviour"]
    row.update(
        {
            "insufficient": None,
            "direction": entry["direction"] or "—",
            "side": side,
            "best_j": j,
            "auroc": entry["auroc"][j],
            "ci_low": entry["ci_low"][j],
            "ci_high": entry["ci_high"][j],
            "auroc_text": fmt_ci(entry["auroc"][j], entry["ci_low"][j], entry["ci_high"][j]),
            "pooled": entry["auroc_pooled"][j],
            "pooled_text": fmt(entry["auroc_pooled"][j]),
            "p_value": entry["p_value"],
            "p_adjusted": entry["p_adjusted"],
            "p_text": fmt_p(entry["p_adjusted"]),
            "significant": entry["significant"],
            "significant_text": _yes_no(entry["significant"]),
            "horizon": horizon,
            "confident_horizon": confident,
            "horizon_text": f"{horizon} ({side})" if horizon is not None else "—",
            "confident_text": "—" if confident is None else str(confident),
            "shuffled_95": entry["shuffled_95"],
            "context_auroc": None if context is None else context["auroc"],
            "context_text": "—" if context is None else fmt_ci(context["auroc"], context["ci_low"], context["ci_high"]),
            "delta": None if versus is None else versus["delta"],
            "versus_text": "—"
            if versus is None
            else f"j = {versus['j']}: {fmt(versus['delta'])} [{fmt(versus['ci_low'])}, {fmt(versus['ci_high'])}]",
            "verdict": None
            if versus is None
            else versus["verdict"] + (f" (j = {', '.join(map(str, versus['better_at']))})" if versus["better_at"] else ""),
            "incremental_text": incremental_text(entry.get("incremental")),
            "auprc_text": auprc_text(entry, j),
        }
    )
    return row


def incremental_text(incremental: dict[str, Any] | None) -> str:
    """``j = 3: +0.012 [-0.004, 0.028], p_adj 4.1e-01``: the cross-validated AUROC gain over the bases."""
    if not incremental or incremental["gain"] is None:
        return "—"
    p = incremental["p_adjusted"] if incremental["p_adjusted"] is not None else incremental["p_value"]
    return (
        f"j = {incremental['j']}: {incremental['gain']:+.3f} [{fmt(incremental['gain_ci_low'])}, "
        f"{fmt(incremental['gain_ci_high'])}], p {fmt_p(p)}"
    )


def baseline_rows(horizon: dict[str, Any], r: int) -> list[dict[str, Any]]:
    """The baselines at r (the logits' predictors and attention on the jumper): best lookback, AUROC, CI, p."""
    rows = []
    for key, stats in {"target_block_probability": horizon["behavioural"], **horizon["baselines"]}.items():
        entry = stats["by_r"].get(str(r))
        if entry is None:
            continue
        row = {
            "key": key,
            "kind": "mechanistic" if stats["target"] == "attention" else "behavioural",
            "counts": f"{entry['n_violations']} / {entry['n_successes']}",
        }
        if entry["status"] != "ok" or entry["best_j"] is None:
            rows.append(
                {**row, "insufficient": f"insufficient ({entry['n_violations']} violations, {entry['n_successes']} successes)"}
            )
            continue
        j = entry["best_j"]
        rows.append(
            {
                **row,
                "insufficient": None,
                "best_j": j,
                "direction": entry["direction"] or "—",
                "auroc_text": fmt_ci(entry["auroc"][j], entry["ci_low"][j], entry["ci_high"][j]),
                "auprc_text": auprc_text(entry, j),
                "j0_text": fmt_ci(entry["auroc"][0], entry["ci_low"][0], entry["ci_high"][0]),
                "p_text": fmt_p(entry["p_value"]),
            }
        )
    return rows


def versus_logits(horizon: dict[str, Any], r: int) -> dict[str, Any]:
    """How many significant metrics (the primary included) beat the logits at some lookback j >= 1, by a
    band simultaneous over the lookbacks (so the count holds whichever lookback is looked at)."""
    significant = [k for k, s in horizon["metrics"].items() if s["by_r"][str(r)]["significant"]]
    better = [k for k in significant if (s := horizon["metrics"][k]["by_r"][str(r)]["versus_behaviour"]) and s["verdict"] == BETTER]
    n, m = len(better), len(significant)
    if m == 0:
        sentence = "No metric is significant at this r, so none can be said to do better than the logits."
    elif n == 0:
        sentence = (
            f"None of the {m} significant metrics does better than the logits at any lookback (band simultaneous over "
            "the lookbacks): no attention "
            "metric separates violations from successes measurably better than the model's own target-block probability."
        )
    else:
        sentence = (
            f"{n} of the {m} significant metrics do better than the logits at some lookback (a band simultaneous "
            "over the lookbacks; shown where the advantage is clearest)."
        )
    details = []
    for key in better:
        versus = horizon["metrics"][key]["by_r"][str(r)]["versus_behaviour"]
        details.append(
            f"{metric_label(key)} at j = {versus['j']}: oriented AUROC {fmt(versus['metric_auroc'])} vs the logits' "
            f"{fmt(versus['behavioural_auroc'])}, Δ {fmt(versus['delta'])} [{fmt(versus['ci_low'])}, {fmt(versus['ci_high'])}]"
        )
    return {"n_better": n, "n_significant": m, "better": better, "details": details, "sentence": sentence}


def _behavioural(horizon: dict[str, Any], r: int) -> dict[str, Any]:
    entry = horizon["behavioural"]["by_r"][str(r)]
    out = {"status": entry["status"], "n_violations": entry["n_violations"], "n_successes": entry["n_successes"]}
    if entry["status"] != "ok":
        out["insufficient"] = f"insufficient ({entry['n_violations']} violations, {entry['n_successes']} successes)"
        return out
    side = _side(entry)
    horizon_j, confident = _horizons(entry, side)
    out.update(
        {
            "insufficient": None,
            "side": side,
            "horizon": horizon_j,
            "confident_horizon": confident,
            "p_text": fmt_p(entry["p_value"]),
            "best_j": entry["best_j"],
            "by_j": [
                {
                    "j": j,
                    "auroc": entry["auroc"][j],
                    "text": fmt_ci(entry["auroc"][j], entry["ci_low"][j], entry["ci_high"][j]),
                    "pooled": fmt(entry["auroc_pooled"][j]),
                }
                for j in range(len(entry["auroc"]) - 1, -1, -1)
            ],
        }
    )
    return out


def _shuffled(horizon: dict[str, Any], r: int) -> dict[str, Any]:
    primary = horizon["primary"]["by_r"][str(r)]["shuffled_95"]
    others = [s["by_r"][str(r)]["shuffled_95"] for k, s in horizon["metrics"].items() if k != horizon["primary"]["key"]]
    others = [v for v in others if v is not None]
    return {
        "primary": primary,
        "primary_text": fmt(primary),
        "low_text": fmt(min(others)) if others else "—",
        "high_text": fmt(max(others)) if others else "—",
    }


def layer_rows(horizon: dict[str, Any], r: int, top: int = TOP_ROWS) -> list[dict[str, Any]]:
    """Per target, layer and head: the primary's metric there (metric_row) and how many of the
    ``top`` strongest exploratory arrays sit at that layer and head."""
    strongest = [horizon["metrics"][k] for k in horizon["top"].get(str(r), [])[:top]]
    rows = []
    for target in TARGET_NAMES:
        for key in layer_keys(horizon, target):
            stats = horizon["metrics"][key]
            row = metric_row(
                key,
                stats if key != horizon["primary"]["key"] else {**stats, "by_r": horizon["primary"]["by_r"]},
                r,
                role="primary" if key == horizon["primary"]["key"] else "",
            )
            row["strongest_here"] = sum(
                s["layer"] == stats["layer"] and s["head"] == stats["head"] and s["target"] == target for s in strongest
            )
            rows.append(row)
    return rows


def stratum(horizon: dict[str, Any], r: int, top: int = TOP_ROWS) -> dict[str, Any]:
    """Everything the report shows for one r stratum."""
    primary_key = horizon["primary"]["key"]
    primary = metric_row(primary_key, {**horizon["metrics"][primary_key], "by_r": horizon["primary"]["by_r"]}, r, role="primary")
    rows = [metric_row(k, horizon["metrics"][k], r) for k in horizon["top"].get(str(r), [])[:top]]
    counts = horizon["counts_by_r"][str(r)]
    return {
        "r": r,
        "violations": counts["violations"],
        "successes": counts["successes"],
        "primary": primary,
        "rows": rows,
        "tested": len(horizon["metrics"]),
        "behavioural": _behavioural(horizon, r),
        "shuffled": _shuffled(horizon, r),
        "baselines": baseline_rows(horizon, r),
        "layers": layer_rows(horizon, r, top),
        "versus": versus_logits(horizon, r),
    }


def _config_brief(
    config: dict[str, Any], result: dict[str, Any], summary: dict[str, Any], horizon: dict[str, Any]
) -> list[tuple[str, str]]:
    g, w, m, t = config["graph"], config["walks"], config["model"], config.get("training", {})
    training = result.get("training", {})
    jumpers = g["jumpers_per_block"] * g["K"]
    r_values = result.get("data", {}).get("jumper_r") or horizon["r_values"]
    events = (summary.get("counts") or {}).get(
        "events", sum(c["violations"] + c["successes"] for c in horizon["counts_by_r"].values())
    )
    return [
        (
            "graph",
            f"DCSBM, n = {g['n']} vertices in K = {g['K']} blocks, p_in = {g['p_in']}, p_out = {g['p_out']}, seed {config.get('seed')}",
        ),
        (
            "jumpers",
            f"{jumpers} ({g['jumpers_per_block']} per block), jump scales {', '.join(map(str, g['jump_scales']))} "
            f"→ r = {', '.join(map(str, r_values))}",
        ),
        ("context window", f"w = {m['context_window']} tokens"),
        ("model", f"{m['n_layers']} layer(s), {m['n_heads']} head(s), d_model = {m['d_model']}, dropout {m.get('dropout', 0.0)}"),
        (
            "training walks",
            f"{w['train_walks']:,} walks of {w['walk_length']} tokens; batch {t.get('batch_size', '—')}, "
            f"lr {t.get('lr', '—')}; {training.get('epochs_trained', '—')} epoch(s) trained",
        ),
        (
            "analysis events",
            f"{events:,} rule events (one per fresh walk, full windows only), continuations {summary.get('continuations', '—')}",
        ),
        ("pre-registered", horizon["primary"]["statement"]),
    ]


def _gate(config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    training, evaluation, gate = result.get("training", {}), result.get("evaluation") or {}, config.get("gate", {})
    threshold = gate.get("rule_threshold")
    rules = [
        {
            "rule": rule["rule"],
            "vertex": rule["vertex"],
            "block": rule.get("block", "—"),
            "target_block": rule["target_block"],
            "r": rule["r"],
            "events": rule.get("gate_events", "—"),
            "compliance": rule.get("compliance"),
            "compliance_text": fmt(rule.get("compliance")),
            "chance_argmax": fmt(rule.get("chance_bigram_argmax")),
            "chance_sampling": fmt(rule.get("chance_bigram_sampling")),
            "above": "—" if rule.get("compliance") is None or threshold is None else _yes_no(rule["compliance"] > threshold),
        }
        for rule in result.get("rules", [])
    ]
    blind = result.get("rule_blind_baseline") or {}
    return {
        "passed": bool(training.get("gate_passed")),
        "epoch": training.get("gate_epoch"),
        "failure_reason": training.get("failure_reason"),
        "edge_compliance": fmt(evaluation.get("edge_compliance")),
        "rule_score": fmt(evaluation.get("rule_score")),
        "rule_compliance": fmt(evaluation.get("rule_compliance")),
        "aggregate": gate.get("rule_aggregate", "—"),
        "rule_threshold": threshold,
        "edge_threshold": gate.get("edge_threshold"),
        "prompt": gate.get("prompt", "—"),
        "rules": rules,
        "blind": {
            "rule_score": fmt(blind.get("rule_score")),
            "edge_compliance": fmt(blind.get("edge_compliance")),
            "passed": blind.get("passed"),
            "failure_reason": blind.get("failure_reason"),
        }
        if blind
        else None,
    }


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    by_r = [{"r": r, **c} for r, c in sorted(summary.get("counts_by_r", {}).items(), key=lambda item: int(item[0]))]
    return {"total": summary.get("counts"), "by_r": by_r, "by_rule": summary.get("counts_by_rule", [])}


def _figures(figures: dict[str, Path] | None) -> list[dict[str, str | int]]:
    out: list[dict[str, str | int]] = []
    for name, path in (figures or {}).items():
        if name == "training_curves":  # shown in the gate's section (_training_figure)
            continue
        base = "auroc_small_multiples" if name.startswith("auroc_small_multiples") else name
        title, caption = FIGURE_TEXT.get(base, (name.replace("_", " "), ""))
        if name != base:
            title += f" ({name.removeprefix(base + '_')})"
        out.append(
            {
                "name": name,
                "title": title,
                "caption": caption,
                "src": data_uri(path),
                "width": display_width(Path(path).read_bytes()),  # natural size: 100 CSS px per figure inch
                "file": Path(path).name,
            }
        )
    return out


def _training_figure(figures: dict[str, Path] | None) -> dict[str, str | int] | None:
    path = (figures or {}).get("training_curves")
    if path is None:
        return None
    title, caption = FIGURE_TEXT["training_curves"]
    png = Path(path).read_bytes()
    return {
        "name": "training_curves",
        "title": title,
        "caption": caption,
        "src": data_uri(path),
        "width": display_width(png),
        "file": Path(path).name,
    }


def _versions(result: dict[str, Any], summary: dict[str, Any], horizon: dict[str, Any]) -> list[tuple[str, str]]:
    env = result.get("environment", {})
    merged = {**env, **summary.get("versions", {}), **horizon.get("versions", {})}
    keep = ("python", "torch", "numpy", "scipy", "device", "device_name", "precision", "threads", "git_commit")
    return [(k, str(merged[k])) for k in keep if merged.get(k) is not None]


def _timings(
    result: dict[str, Any], summary: dict[str, Any], horizon: dict[str, Any], figure_seconds: float | None
) -> list[tuple[str, str]]:
    rt, st, ht = result.get("timings", {}), summary.get("timings", {}), horizon.get("timings", {})
    rows = [
        ("training", rt.get("train_seconds")),
        ("gate evaluation", rt.get("eval_seconds")),
        ("analysis: events and metrics", st.get("total_seconds")),
        ("statistics (horizon.json)", ht.get("total_seconds")),
        ("figures", figure_seconds),
    ]
    return [(name, f"{value:.1f} s") for name, value in rows if value is not None]


def report_context(analysis_dir: Path, figures: dict[str, Path] | None = None) -> dict[str, Any]:
    """The data ``report.html`` renders, from the analysis's files (figures: name → PNG path, embedded)."""
    return _context(read_analysis(analysis_dir), figures, figure_seconds=None)


def _context(run: dict[str, Any], figures: dict[str, Path] | None, *, figure_seconds: float | None) -> dict[str, Any]:
    config, result, summary, horizon = run["config"], run["result"], run["summary"], run["horizon"]
    gate = _gate(config, result)
    exploratory = bool(horizon["exploratory"] or summary.get("exploratory") or not gate["passed"])
    reason = horizon.get("exploratory_reason") or summary.get("exploratory_reason") or gate["failure_reason"]
    settings = horizon["settings"]
    registration = horizon["registration"]
    return {
        "experiment_id": horizon["experiment_id"],
        "analysis_name": horizon["analysis_name"],
        "exploratory": exploratory,
        "exploratory_reason": reason,
        "gate_failed": not gate["passed"],
        "headline": horizon["headline"],
        "registration": registration,
        "registered": horizon["primary"]["registered"],
        "confirmatory": _confirmatory(horizon),
        "split": horizon["split"],
        "sensitivity": _sensitivity(horizon, run.get("sibling")),
        "primary_summary": horizon["primary"]["summary"],
        "primary_statement": horizon["primary"]["statement"],
        "primary_key": horizon["primary"]["key"],
        "config": _config_brief(config, result, summary, horizon),
        "gate": gate,
        "counts": _counts(summary),
        "strata": [stratum(horizon, r) for r in horizon["r_values"]],
        "constant": horizon["constant"],
        "threshold": settings["horizon_threshold"],
        "alpha": settings["alpha"],
        "settings": [(k.replace("_", " "), str(v)) for k, v in settings.items()]
        + [
            (
                "exploratory family (Holm)",
                f"{horizon['holm']['family_size']} arrays; {horizon['holm']['permutations_used']:,} "
                f"permutations (asked {horizon['holm']['permutations_requested']:,}); smallest reachable adjusted p "
                f"(Holm floor m/(P+1)) {fmt_p(horizon['holm']['floor'])}",
            ),
        ],
        "figures": _figures(figures),
        "training_figure": _training_figure(figures),
        "versions": _versions(result, summary, horizon),
        "timings": _timings(result, summary, horizon, figure_seconds),
        "guard_hits": {k: v for k, v in summary.get("guard_hits", {}).items() if v},
        "mechanism": run.get("mechanism"),
        "random_matrix": run.get("random_matrix"),
        "heads": head_summary(horizon),
        "null_section": null_context(horizon),
        "calibration": calibration_rows(horizon),
    }


SAMPLED_MAY_DIFFER = ("temperature", "events")  # what the sampled sensitivity analysis changes (analysis.sensitivity_*)


def _apart_from_sampling(settings: dict[str, Any]) -> dict[str, Any]:
    block = {k: v for k, v in settings["analysis"].items() if k not in SAMPLED_MAY_DIFFER}
    return {**{k: v for k, v in settings.items() if k not in (*SAMPLED_MAY_DIFFER, "analysis")}, "analysis": block}


def sampled_sibling(analysis_dir: Path) -> dict[str, Any] | None:
    """The analysis of the same run with the same settings but another temperature (the sampled
    second estimate ``dcsbm run`` makes), compared with this one: per r, the primary's exploratory
    best AUROC and p there, and whether the answer (significance and direction) is the same."""
    analysis_dir = Path(analysis_dir)
    run_dir = analysis_dir.parent.parent
    try:
        mine = json.loads((analysis_dir / SUMMARY_FILE).read_text())["settings"]
        entries = read_index(run_dir)
    except (OSError, ValueError, KeyError):
        return None
    for entry in entries:
        other_dir = run_dir / "analysis" / entry["name"]
        if other_dir == analysis_dir:
            continue
        try:
            theirs = json.loads((other_dir / SUMMARY_FILE).read_text())["settings"]
        except (OSError, ValueError, KeyError):
            continue
        if theirs["temperature"] == mine["temperature"] or _apart_from_sampling(theirs) != _apart_from_sampling(mine):
            continue
        horizon = read_horizon(other_dir)
        if horizon is None:
            continue
        return {"name": entry["name"], "temperature": theirs["temperature"], "horizon": horizon}
    return None


def _sensitivity(horizon: dict[str, Any], sibling: dict[str, Any] | None) -> list[dict[str, str]]:
    """Rows of the sensitivity table: edge-clean events, and sampled continuations when analysed."""
    alpha = horizon["settings"]["alpha"]
    rows = []
    edge = (horizon.get("sensitivity") or {}).get("edge_clean")
    for r, entry in horizon["primary"]["by_r"].items():
        base = (
            f"{fmt_ci(entry['auroc'][entry['best_j']], entry['ci_low'][entry['best_j']], entry['ci_high'][entry['best_j']])} at j = {entry['best_j']}"
            if entry["status"] == "ok" and entry["best_j"] is not None
            else entry["status"]
        )
        if edge is not None:
            e = edge["exploratory"].get(r)
            verdicts = edge["confirmatory_verdicts"] or {}
            text = (
                "—"
                if e is None or e["best_j"] is None
                else f"{fmt_ci(e['auroc'], e['ci_low'], e['ci_high'])} at j = {e['best_j']}, p {fmt_p(e['p_value'])}"
            )
            rows.append(
                {
                    "r": r,
                    "case": f"edge-clean events only ({edge['events_with_an_invalid_edge']} events with an earlier non-edge set aside at the lookbacks after it)",
                    "primary": text,
                    "verdict": verdicts.get(r, "—"),
                    "all_events": base,
                    "holds": "—" if edge["holds"] is None else ("yes" if edge["holds"] else "NO"),
                }
            )
        if sibling is not None:
            other = sibling["horizon"]["primary"]["by_r"].get(r)
            if other is None or other["status"] != "ok" or other["best_j"] is None:
                text, holds = "insufficient" if other is None else other["status"], "—"
            else:
                j = other["best_j"]
                p_there = other["p_adjusted"]
                text = f"{fmt_ci(other['auroc'][j], other['ci_low'][j], other['ci_high'][j])} at j = {j}, adjusted p {fmt_p(p_there)}"
                found_there = (
                    p_there is not None
                    and p_there < alpha
                    and other["direction"] == f"{horizon['primary']['direction']} before violations"
                )
                test = (horizon["confirmatory"] or {}).get(r)
                if test is not None:  # the registered answer: is there an effect in the registered direction?
                    found_here = test["verdict"] in ("confirmed", "inconclusive")
                else:
                    found_here = (
                        entry["p_adjusted"] is not None
                        and entry["p_adjusted"] < alpha
                        and entry["direction"] == f"{horizon['primary']['direction']} before violations"
                    )
                holds = "yes" if found_here == found_there else "NO"
            rows.append(
                {
                    "r": r,
                    "case": f"sampled continuations, temperature {sibling['temperature']:g} (analysis/{sibling['name']}, exploratory, "
                    f"{other['n_violations'] if other else 0} violations)",
                    "primary": text,
                    "verdict": "exploratory",
                    "all_events": base,
                    "holds": holds,
                }
            )
    return rows


def _confirmatory(horizon: dict[str, Any]) -> list[dict[str, Any]]:
    """The registered test per r, formatted (empty in an exploratory analysis)."""
    rows = []
    for r, test in (horizon["confirmatory"] or {}).items():
        versus = (
            "; ".join(
                f"{v['baseline'].replace('_', ' ')}: Δ {fmt(v['delta'])} [{fmt(v['ci_low'])}, {fmt(v['ci_high'])}]"
                f" ({'beaten' if v['beaten'] else 'not beaten'})"
                for v in test["versus"]
            )
            or "—"
        )
        rows.append(
            {
                "r": r,
                "verdict": test["verdict"],
                "p_text": "—" if test["p_value"] is None else f"{test['p_value']:.4g}",
                "n_violations": test["n_violations"],
                "n_successes": test["n_successes"],
                "j": "—" if test["j"] is None else test["j"],
                "auroc_text": fmt_ci(test["auroc"], test["ci_low"], test["ci_high"]),
                "min_effect": test["min_effect_auroc"],
                "versus": versus,
                "reasons": "; ".join(test["reasons"]) or "—",
                "incremental": incremental_text(test["incremental"]),
            }
        )
    return rows


def render(context: dict[str, Any]) -> str:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    return environment.get_template(TEMPLATE).render(**context)


def write_report(analysis_dir: Path) -> Path:
    """Draw the figures and write ``<analysis_dir>/report.html`` (atomically); returns its path."""
    analysis = Path(analysis_dir)
    run = read_analysis(analysis)
    started = time.perf_counter()
    npz = analysis / TOKEN_METRICS_FILE
    if npz.is_file():
        null_npz = analysis / NULL_FILE
        with np.load(npz, allow_pickle=False) as arrays:  # lazy: only the plotted arrays are read
            if run["horizon"].get("null") is not None and null_npz.is_file():
                with np.load(null_npz, allow_pickle=False) as null:
                    figures = draw_figures(analysis, run["horizon"], arrays, null=null)
            else:
                figures = draw_figures(analysis, run["horizon"], arrays)
    else:  # no event-aligned figure without the arrays
        figures = draw_figures(analysis, run["horizon"], None)
    gate = run["config"].get("gate", {})
    curves = plot_from_result(analysis / FIGURES_DIR / TRAINING_CURVES_FILE, run["result"], gate, run["horizon"]["experiment_id"])
    if curves is not None:
        figures = {**figures, "training_curves": curves}
    context = _context(run, figures, figure_seconds=time.perf_counter() - started)
    return atomic_write_bytes(analysis / REPORT_FILE, render(context).encode("utf-8"))
