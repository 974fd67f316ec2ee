"""The comparison's data: one row per run (parameters, status, gate, compliance, primary result,
horizons), the config keys that differ, and which runs each figure leaves out and why.

Everything here is read from the run folders' files (config.json, result.json,
analysis/horizon.json); nothing is recomputed, so each number can be traced to its file.

**Which horizons are compared** (fixed before looking at any result): the run's pre-registered
primary hypothesis names a metric, a layer, a head and a direction (horizon.json ``primary``;
``analysis.primary`` in the config). The QKᵀ horizon is that metric on QKᵀ and the AVWₒ horizon
the same metric on AVWₒ, both at the primary's layer and head, both read in the primary's declared
direction (``horizon``/``confident_horizon`` for "higher", ``horizon_lower``/``confident_horizon_lower``
for "lower"). No search over metrics, layers or heads is made, so neither side is picked for
looking good.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..analysis.report.heads import head_summary
from .runs import Run

HORIZON_RULE = (
    "For each analysis, the QKᵀ and AVWₒ horizons are those of the run's primary metric (analysis.primary: metric, "
    "layer, head), evaluated on QKᵀ and on AVWₒ at the same layer and head: QKᵀ read in the primary's direction, AVWₒ "
    "in the direction of the registered secondary hypothesis (analysis.avwo_direction, fixed when the run was created; "
    "an unregistered run's own declaration, labelled). The predictive horizon is the furthest lookback j ≥ 1 with AUROC "
    "beyond the threshold, also given as a share of r; the confident horizon the largest J with the 95% CI beyond the "
    "threshold at every j in 1..J. No other metric, layer or head is searched, so neither target is picked after "
    "looking. Every point carries its violation count; a stratum with too few events is marked insufficient, not dropped."
)
TARGETS = ("qkt", "avwo")
TARGET_NAMES = {"qkt": "QKᵀ", "avwo": "AVWₒ"}
# Keys that place a run on the figures' axes or replicate it: never used to split runs into series.
AXIS_KEYS = {"seed", "graph.jump_scales"}


def _rw(r: int, w: int) -> float:
    return round(r / w, 4)


def parameters(run: Run) -> dict[str, Any]:
    """The listing's key parameters (None everywhere when config.json is unreadable)."""
    c = run.config
    if c is None:
        return {key: None for key in ("n", "K", "w", "r", "r_over_w", "layers", "d_model", "seed", "train_walks")}
    w = c.model.context_window
    return {
        "n": c.graph.n,
        "K": c.graph.K,
        "w": w,
        "r": run.r_values,
        "r_over_w": [_rw(r, w) for r in run.r_values],
        "layers": c.model.n_layers,
        "d_model": c.model.d_model,
        "seed": c.seed,
        "train_walks": c.walks.train_walks,
    }


def differing_keys(runs: list[Run]) -> list[str]:
    """The dotted config keys whose values are not the same in every run with a readable config;
    ``analysis.*`` keys compared among the analyses only (each analysis's own settings: a run not
    analysed has none)."""
    flats = [run.flat_config for run in runs if run.config is not None]
    analysed = [run.flat_config for run in runs if run.config is not None and run.summary is not None]
    keys = sorted({key for flat in flats for key in flat})

    def differs(key: str) -> bool:
        among = analysed if key.startswith("analysis.") else flats
        return len({json.dumps(flat.get(key), sort_keys=True) for flat in among}) > 1

    return [key for key in keys if differs(key)]


NEGATIVE_CONTROL = "gate failed: negative control"


def negative_control(run: Run) -> bool:
    """A run whose gate did not pass, analysed anyway (analysis.include_failed / --include-failed):
    where the rule cannot be known (r > w), a metric that still separates measures something else."""
    return (
        run.state == "failed"
        and run.horizon is not None
        and run.summary is not None
        and bool(run.summary["settings"].get("include_failed"))
    )


def series_label(run: Run, keys: list[str]) -> str:
    """The values of the differing keys other than seed and jump scales: runs that share them form
    one series in the figures (their seeds are replicates, their r/w the x axis). Negative controls
    (gate failed, analysed anyway) form series of their own, labelled so."""
    label = _label(run, [key for key in keys if key not in AXIS_KEYS and key != "analysis.include_failed"])
    return f"{label} [{NEGATIVE_CONTROL}]" if negative_control(run) else label


def training_series_label(run: Run, keys: list[str]) -> str:
    """The series of the compliance and gate figures: as ``series_label`` without the analysis keys,
    which cannot change what training learned (a run analysed twice is one training run)."""
    return _label(run, [key for key in keys if key not in AXIS_KEYS and not key.startswith("analysis.")])


def _label(run: Run, shown: list[str]) -> str:
    if not shown or run.config is None:
        return "all runs"
    return ", ".join(f"{key}={json.dumps(run.flat_config.get(key))}" for key in shown)


# ---- compliance --------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compliance(run: Run) -> dict[str, Any] | None:
    """Rule compliance per rule at the last evaluated epoch (the gate epoch when it passed), its worst
    and mean, and the same per r; None without a readable result.json."""
    if run.result is None or run.config is None:
        return None
    w = run.config.model.context_window
    rules = [
        {
            "rule": rule["rule"],
            "r": rule["r"],
            "compliance": rule["compliance"],
            "chance_bigram_sampling": rule["chance_bigram_sampling"],
        }
        for rule in run.result["rules"]
    ]
    values = [rule["compliance"] for rule in rules if rule["compliance"] is not None]
    by_r = {}
    for r in sorted({rule["r"] for rule in rules}):
        own = [rule for rule in rules if rule["r"] == r]
        scored = [rule["compliance"] for rule in own if rule["compliance"] is not None]
        by_r[str(r)] = {
            "r_over_w": _rw(r, w),
            "rules": len(own),
            "worst": min(scored) if scored else None,
            "mean": _mean(scored),
            "chance_bigram_sampling_mean": _mean([rule["chance_bigram_sampling"] for rule in own]),
        }
    training = run.result["training"]
    return {
        "edge": training["final_edge_compliance"],
        "rule_gate_score": training["final_rule_compliance"],
        "worst": min(values) if values else None,
        "mean": _mean(values),
        "rules": rules,
        "by_r": by_r,
    }


def gate(run: Run) -> dict[str, Any] | None:
    if run.result is None:
        return None
    training = run.result["training"]
    rule_threshold = run.config.gate.rule_threshold if run.config else None
    edge_ok = (
        training["final_edge_compliance"] is not None
        and run.config is not None
        and training["final_edge_compliance"] > run.config.gate.edge_threshold
    )
    by_r = {}
    for r, values in (compliance(run) or {}).get("by_r", {}).items():  # each r judged on its own rules
        by_r[r] = None if values["worst"] is None or rule_threshold is None else bool(edge_ok and values["worst"] > rule_threshold)
    return {
        "finished": run.finished,
        "passed": training["gate_passed"],
        "epoch": training["gate_epoch"],
        "epochs_trained": training["epochs_trained"],
        "max_epochs": run.config.training.max_epochs if run.config else None,
        "failure_reason": training["failure_reason"],
        "passed_by_r": by_r,
    }


# ---- analysis ---------------------------------------------------------------------------------------


def _at(values: list[Any], j: int | None) -> Any:
    return values[j] if j is not None and 0 <= j < len(values) else None


def primary(run: Run) -> dict[str, Any] | None:
    """The declared primary per r: on the exploratory events, its AUROC at the best lookback
    (pointwise CI at a lookback chosen after looking) and p; the registered verdict from the
    held-out events when the analysis is the registered one, else "exploratory"."""
    if run.horizon is None:
        return None
    p = run.horizon["primary"]
    alpha = run.horizon["settings"]["alpha"]
    confirmatory = run.horizon["confirmatory"] or {}
    strongest = _strongest_by_layer(run.horizon)
    by_r = {}
    for r, entry in p["by_r"].items():
        j = entry["best_j"] if entry["status"] == "ok" else None
        value = (entry["p_value"] if p["registered"] else entry["p_adjusted"]) if entry["status"] == "ok" else None
        test = confirmatory.get(r)
        by_r[r] = {
            "by_layer": _by_layer(run.horizon, r),
            "strongest_by_layer": strongest.get(int(r), []),
            "status": entry["status"],
            "n_violations": entry["n_violations"],
            "n_successes": entry["n_successes"],
            "best_j": j,
            "auroc": _at(entry["auroc"], j),
            "ci_low": _at(entry["ci_low"], j),
            "ci_high": _at(entry["ci_high"], j),
            "ci_kind": "pointwise, at a lookback chosen after looking",
            "p_value": value,
            "verdict": test["verdict"] if test is not None else "exploratory",
            "held_out_p": test["p_value"] if test is not None else None,
        }
    return {
        "key": p["key"],
        "target": p["target"],
        "layer": p["layer"],
        "head": p["head"],
        "metric": p["metric"],
        "direction": p["direction"],
        "statement": p["statement"],
        "registered": p["registered"],
        "summary": p["summary"],
        "headline": run.horizon["headline"],
        "alpha": alpha,
        "threshold": run.horizon["settings"]["horizon_threshold"],
        "by_r": by_r,
    }


def _by_layer(horizon: dict[str, Any], r: str) -> dict[str, dict[str, Any]]:
    """The primary's metric at every target, layer and head at r: best lookback, AUROC there (pointwise),
    significance after Holm (the registered key: its own test) — which layer separates."""
    metric = horizon["primary"]["metric"]
    out = {}
    for key, stats in sorted(horizon["metrics"].items(), key=lambda item: (item[1]["target"], item[1]["layer"], item[1]["head"])):
        if stats["metric"] != metric:
            continue
        entry = (horizon["primary"] if key == horizon["primary"]["key"] else stats)["by_r"].get(r)
        if entry is None:
            continue
        j = entry["best_j"] if entry["status"] == "ok" else None
        out[key] = {
            "target": stats["target"],
            "layer": stats["layer"],
            "head": stats["head"],
            "status": entry["status"],
            "best_j": j,
            "auroc": _at(entry["auroc"], j),
            "significant": entry["significant"],
        }
    return out


def _strongest_by_layer(horizon: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """r -> per layer (and head), its strongest exploratory array (``analysis.report.heads``: significant
    after Holm first, then |AUROC − 0.5| at the array's best lookback): where the signal sits."""
    out: dict[int, list[dict[str, Any]]] = {}
    for row in head_summary(horizon)["rows"]:
        if row["key"] is None:
            continue
        out.setdefault(int(row["r"]), []).append(
            {
                "layer": row["layer"],
                "head": row["head"],
                "key": row["key"],
                "label": row["label"],
                "best_j": row["best_j"],
                "auroc": row["auroc"],
                "p_adjusted": row["p_adjusted"],
                "significant": row["significant"],
                "significant_arrays": row["significant_count"],
                "tested_arrays": row["tested"],
            }
        )
    return out


def _horizon_of(horizon: dict[str, Any], key: str, r: str, direction: str) -> dict[str, Any]:
    """One target's horizons at r, read in ``direction``, with the class counts and the horizons as
    a share of r; ``status`` says when there are none ("insufficient": too few events, counts kept)."""
    empty: dict[str, Any] = {
        "key": key,
        "direction": direction,
        "horizon": None,
        "confident_horizon": None,
        "horizon_over_r": None,
        "confident_over_r": None,
        "best_j": None,
        "n_violations": None,
        "n_successes": None,
        "auroc": [],
        "ci_low": [],
        "ci_high": [],
    }
    if key in horizon["constant"]:
        return {**empty, "status": "constant (not tested)"}
    metric = horizon["primary"] if key == horizon["primary"]["key"] else horizon["metrics"].get(key)
    entry = None if metric is None else metric["by_r"].get(r)
    if entry is None:
        return {**empty, "status": "missing from horizon.json"}
    suffix = "" if direction == "higher" else "_lower"
    horizon_j, confident = entry[f"horizon{suffix}"], entry[f"confident_horizon{suffix}"]
    return {
        **empty,
        "status": entry["status"],
        "horizon": horizon_j,
        "confident_horizon": confident,
        "horizon_over_r": None if horizon_j is None else round(horizon_j / int(r), 4),
        "confident_over_r": None if confident is None else round(confident / int(r), 4),
        "best_j": entry["best_j"],
        "n_violations": entry["n_violations"],
        "n_successes": entry["n_successes"],
        "auroc": entry["auroc"],
        "ci_low": entry["ci_low"],
        "ci_high": entry["ci_high"],
    }


def secondary_direction(run: Run) -> tuple[str, str]:
    """(direction, source) the AVWₒ horizon is read in: the run's registered secondary hypothesis,
    else the analysis's own ``avwo_direction`` (labelled: not registered)."""
    registered = run.registration
    if registered is not None and registered.get("secondary") is not None:
        return registered["secondary"]["direction"], "registered"
    settings = (run.summary or {}).get("settings", {}).get("analysis", {})
    return settings.get("avwo_direction", "higher"), "declared in the analysis (no registration)"


def horizons(run: Run) -> dict[str, dict[str, Any]] | None:
    """Per r: the QKᵀ and AVWₒ horizons under HORIZON_RULE, with their AUROC(j) curves."""
    if run.horizon is None:
        return None
    p = run.horizon["primary"]
    avwo_direction, source = secondary_direction(run)
    directions = {"qkt": p["direction"], "avwo": avwo_direction}
    out = {}
    for r in p["by_r"]:
        out[r] = {
            "r_over_w": _rw(int(r), run.config.model.context_window) if run.config else None,
            "avwo_direction_source": source,
            **{
                target: _horizon_of(run.horizon, f"{target}.layer_{p['layer']}.head_{p['head']}.{p['metric']}", r, directions[target])
                for target in TARGETS
            },
        }
    return out


# ---- who is left out of what -----------------------------------------------------------------------


def exclusion(run: Run) -> tuple[str | None, str | None]:
    """(why the run is left out of the compliance figures, why it is left out of the horizon figures);
    None = included."""
    if run.duplicate_of is not None:
        reason = f"duplicate: same experiment as {run.duplicate_of}"
        return reason, reason
    if run.state in ("unreadable", "unfinished"):
        return run.status, run.status
    if run.state == "failed":
        if negative_control(run):
            return None, None  # its own labelled series (series_label), never mixed with passed runs
        return None, f"excluded from analysis: {run.status}"
    if run.horizon is None:
        return None, f"gate passed, {run.horizon_error or 'not analysed (no analysis/horizon.json)'}"
    if run.horizon["exploratory"]:
        return None, f"exploratory analysis: {run.horizon['exploratory_reason']}"
    return None, None


def run_entry(run: Run, keys: list[str]) -> dict[str, Any]:
    """Everything comparison.json says about one run."""
    left_out_compliance, left_out_horizons = exclusion(run)
    return {
        "experiment_id": run.experiment_id,
        "folder": str(run.folder),
        "analysis": run.analysis_name,
        "analysis_settings": None if run.summary is None else run.summary["settings"]["analysis"],
        "state": run.state,
        "status": run.status,
        "note": run.note,
        "parameters": parameters(run),
        "differs": {key: run.flat_config.get(key) for key in keys} if run.config is not None else {},
        "series": series_label(run, keys),
        "training_series": training_series_label(run, keys),
        "gate": gate(run),
        "compliance": compliance(run),
        "analysed": run.analysed,
        "in_compliance_figures": left_out_compliance is None,
        "in_horizon_figures": left_out_horizons is None,
        "primary": primary(run),
        "horizons": horizons(run),
    }


def build_comparison(
    runs: list[Run], *, roots: list[str], where: list[str], conditions: dict[str, list[Any]], found: int
) -> dict[str, Any]:
    """The comparison.json payload: the filter, the differing keys, one entry per run, the exclusions."""
    keys = differing_keys([run for run in runs if run.duplicate_of is None])
    excluded = []
    for run in runs:
        left_out_compliance, left_out_horizons = exclusion(run)
        if left_out_horizons is not None:
            excluded.append(
                {
                    "experiment_id": run.experiment_id,
                    "folder": str(run.folder),
                    "analysis": run.analysis_name,
                    "figures": ["horizons"] if left_out_compliance is None else ["compliance", "horizons"],
                    "reason": left_out_horizons,
                }
            )
    entries = [run_entry(run, keys) for run in runs]
    trained: set[str] = set()
    for entry in entries:  # compliance is the training run's: one point per run, whatever its analyses
        if entry["in_compliance_figures"]:
            entry["in_compliance_figures"] = entry["folder"] not in trained
            trained.add(entry["folder"])
    return _finite(
        {
            "schema_version": 3,  # 2: one entry per analysis (its own settings), registered verdicts; 3: training_series
            "roots": roots,
            "filter": {"where": list(where), "conditions": conditions, "runs_found": found, "runs_matching": len(runs)},
            "differing_keys": keys,
            "horizon_rule": HORIZON_RULE,
            "runs": entries,
            "excluded": excluded,
        }
    )


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


# ---- the listing -------------------------------------------------------------------------------------

LISTING_COLUMNS = ("run", "n", "K", "w", "r", "r/w", "layers", "d_model", "seed", "train walks", "status")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _listing_status(entry: dict[str, Any]) -> str:
    """The status in a few words: a failed gate by its worst rule (its full reason is in
    comparison.json and on the page)."""
    gate, compliance = entry["gate"], entry["compliance"]
    if gate and gate.get("finished") and not gate.get("passed") and compliance and compliance.get("worst") is not None:
        exploratory = "; analysed anyway (exploratory)" if entry["analysed"] else ""
        return f"gate failed after {gate['epochs_trained']} epochs (worst rule {compliance['worst']:.3f}){exploratory}"
    return entry["status"]


def listing_rows(entries: list[dict[str, Any]]) -> list[list[str]]:
    """One row of strings per run, in LISTING_COLUMNS order."""
    rows = []
    for entry in entries:
        p = entry["parameters"]
        status = _listing_status(entry) + (f" [{entry['note']}]" if entry["note"] else "")
        rows.append(
            [
                Path(entry["folder"]).name,
                *(_cell(p[key]) for key in ("n", "K", "w", "r", "r_over_w", "layers", "d_model", "seed", "train_walks")),
                status,
            ]
        )
    return rows


def format_listing(entries: list[dict[str, Any]]) -> str:
    """The listing as a fixed-width text table (the status column is left unpadded)."""
    rows = listing_rows(entries)
    widths = [max(len(row[i]) for row in [list(LISTING_COLUMNS), *rows]) for i in range(len(LISTING_COLUMNS) - 1)]
    lines = []
    for row in [list(LISTING_COLUMNS), *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return "\n".join(lines)
