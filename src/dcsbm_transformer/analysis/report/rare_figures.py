"""The figures of the rare-event additions (issue 26, items 1–2), drawn from horizon.json (and the
null's arrays) alone:

* ``auprc.png`` — per r, AUPRC(j) of the primary, the behavioural predictor and the strongest
  exploratory metrics, each in its own orientation, with 95% interval bands and the **no-skill line
  at the violation prevalence** (dashed): the precision–recall view beside the AUROC figures;
* ``reliability.png`` — the reliability diagrams of the incremental-value models (full and
  reduced, out-of-fold probabilities in equal-count bins) with their ECE;
* the **null band** on the event-aligned figure (:func:`draw_null_band`, called by
  ``figures.draw_event_aligned``): the jumper-free null's mean ± 95% CI and its 10–90% band.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ...plotting import grid_shape, grid_size, say_empty
from .figures import COLOURS, VIOLATION, _floats, _lookback_axis, _mean_ci, _ok, _save, _title, metric_label

NULL_COLOUR = "0.35"


def _auprc_keys(horizon: dict[str, Any], r: int, extra: int = 3) -> list[tuple[str, dict[str, Any]]]:
    """(label, Separation entry) of the primary, the behavioural predictor and the ``extra`` strongest metrics at r."""
    rows = [(f"primary: {metric_label(horizon['primary']['key'])}", horizon["primary"]["by_r"].get(str(r)))]
    rows.append(("logits: target-block probability", horizon["behavioural"]["by_r"].get(str(r))))
    for key in horizon["top"].get(str(r), []):
        if len(rows) >= extra + 2:
            break
        entry = horizon["metrics"][key]["by_r"].get(str(r))
        if key != horizon["primary"]["key"] and _ok(entry):
            rows.append((metric_label(key), entry))
    return [(label, entry) for label, entry in rows if entry is not None]


def draw_auprc(path: Path, horizon: dict[str, Any]) -> Path:
    """AUPRC(j) with 95% interval bands and the no-skill line at the prevalence, one panel per r."""
    r_values = horizon["r_values"]
    rows, columns = grid_shape(len(r_values))
    figure = Figure(figsize=grid_size(rows, columns, panel_height=3.6))
    for i, r in enumerate(r_values):
        axis = figure.add_subplot(rows, columns, i + 1)
        entries = [(label, e) for label, e in _auprc_keys(horizon, r) if _ok(e)]
        axis.set_title(f"r = {r}", fontsize=9)
        if not entries:
            say_empty(axis, "too few events for statistics")
            continue
        _lookback_axis(axis, r)
        top = 0.0
        for (label, entry), colour in zip(entries, ("tab:red", *COLOURS)):
            j = np.arange(len(entry["auprc"]))
            low, high = _floats(entry["auprc_ci_low"]), _floats(entry["auprc_ci_high"])
            axis.fill_between(j, low, high, color=colour, alpha=0.12, linewidth=0)
            side = "" if entry["auprc_orientation"] == "higher" else " (lower = violation)"
            axis.plot(j, _floats(entry["auprc"]), color=colour, marker="o", markersize=3, label=textwrap.fill(label + side, 40))
            top = max(top, float(np.nanmax(np.r_[high, 0.0])))
        prevalence = _floats(entries[0][1]["prevalence"])
        axis.plot(np.arange(len(prevalence)), prevalence, color="0.3", linestyle="--", linewidth=1.2, label="no skill: prevalence")
        axis.set_ylim(0.0, min(1.0, max(top * 1.1, 2.5 * float(np.nanmax(prevalence)))))
        axis.set_ylabel("AUPRC (average precision)", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.legend(fontsize=6.5, loc="best", framealpha=0.85)
    _title(
        figure,
        "AUPRC(j): average precision per rule, weighted by its violations, each metric in the direction it predicts "
        "(95% logit intervals; dashed: the no-skill line at the violation prevalence)",
        horizon,
    )
    figure.tight_layout()
    return _save(figure, path)


def calibrated_tests(horizon: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, incremental entry) of every incremental-value test with a calibration: the registered
    one on the held-out events first, then the exploratory ones (primary first)."""
    out = []
    for r, test in (horizon.get("confirmatory") or {}).items():
        inc = test.get("incremental")
        if inc and inc.get("calibration"):
            out.append((f"registered, held-out, r = {r}, j = {inc['j']}", inc))
    keys = [horizon["primary"]["key"], *[k for k in horizon["metrics"] if k != horizon["primary"]["key"]]]
    for key in keys:
        for r, entry in horizon["metrics"][key]["by_r"].items():
            inc = entry.get("incremental")
            if inc and inc.get("calibration"):
                out.append((f"{metric_label(key)}, r = {r}, j = {inc['j']}", inc))
    return out


def draw_reliability(path: Path, horizon: dict[str, Any], *, most: int = 6) -> Path | None:
    """Reliability diagrams of the incremental-value models (observed violation share against mean
    predicted probability per equal-count bin, out-of-fold), full and reduced; None without any."""
    tests = calibrated_tests(horizon)[:most]
    if not tests:
        return None
    rows, columns = grid_shape(len(tests))
    figure = Figure(figsize=grid_size(rows, columns, panel_height=3.6))
    for i, (label, inc) in enumerate(tests):
        axis = figure.add_subplot(rows, columns, i + 1)
        top = 0.0
        for name, colour, marker in (("full", "tab:red", "o"), ("reduced", "tab:blue", "s")):
            cal = inc["calibration"][name]
            predicted, observed = _floats(cal["mean_predicted"]), _floats(cal["observed"])
            ece = "—" if cal["ece"] is None else f"{cal['ece']:.4f}"
            reference = "—" if cal["ece_calibrated_95"] is None else f"{cal['ece_calibrated_95']:.4f}"
            axis.plot(
                predicted,
                observed,
                color=colour,
                marker=marker,
                markersize=4,
                label=f"{name} model: ECE {ece} (calibrated 95%: {reference})",
            )
            top = max(top, float(np.nanmax(np.r_[predicted, observed, 0.0])))
        top = top * 1.05 if top > 0 else 1.0
        axis.plot([0, top], [0, top], color="0.5", linestyle=":", linewidth=1, label="perfect calibration")
        axis.set_xlim(0, top)
        axis.set_ylim(0, top)
        axis.set_xlabel("mean predicted violation probability (bin)", fontsize=8)
        axis.set_ylabel("observed violation share (bin)", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.set_title(textwrap.fill(label, 48), fontsize=8.5)
        axis.legend(fontsize=6.5, loc="upper left", framealpha=0.85)
    bins = tests[0][1]["calibration"]["full"]["bins"]
    _title(
        figure,
        f"Calibration of the incremental-value models: out-of-fold probabilities in {bins} equal-count bins "
        "(full: with the metric; reduced: without it)",
        horizon,
    )
    figure.tight_layout()
    return _save(figure, path)


def centred_null(
    values: np.ndarray, y: np.ndarray, jumper: np.ndarray, null_values: np.ndarray, null_jumper: np.ndarray
) -> np.ndarray:
    """The null's values ``[N, J]`` minus, per rule, the mean of that rule's successes (the event-aligned
    figure's centring, ``figures.centred_within_rule``), so the band is on the same scale as the classes."""
    out = np.array(null_values, dtype=np.float64)
    for rule in np.unique(null_jumper):
        reference, _, n = _mean_ci(np.asarray(values, dtype=np.float64)[(jumper == rule) & ~y])
        out[null_jumper == rule] -= np.where(n > 0, reference, np.nan)
    return out


def draw_null_band(axis, null_values: np.ndarray) -> None:
    """On an event-aligned panel (x = lookback j): the null's 10–90% band (light) and its mean ± 95% CI."""
    j = np.arange(null_values.shape[1])
    finite = np.isfinite(null_values).any(axis=0)
    if not finite.any():
        return
    low = np.full(j.size, np.nan)
    high = np.full(j.size, np.nan)
    low[finite], high[finite] = np.nanquantile(null_values[:, finite], [0.1, 0.9], axis=0)
    axis.fill_between(j, low, high, color=NULL_COLOUR, alpha=0.12, linewidth=0, label="null: 10–90% of values")
    mean, half, n = _mean_ci(null_values)
    axis.fill_between(j, mean - half, mean + half, color=NULL_COLOUR, alpha=0.3, linewidth=0)
    axis.plot(
        j, mean, color=NULL_COLOUR, linestyle="--", marker="x", markersize=3, label=f"jumper-free null (n = {null_values.shape[0]})"
    )


__all__ = ["VIOLATION", "calibrated_tests", "centred_null", "draw_auprc", "draw_null_band", "draw_reliability"]
