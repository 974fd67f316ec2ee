"""The comparison figures, drawn from comparison.json's run entries alone (PNG bytes).

* ``compliance`` — rule compliance against r/w: per run and r, the mean and the worst of the
  rules with that r (each run a point), mean ± 95% t-interval over the runs of a series at each r/w;
  the mean rule-blind (bigram sampling) chance as grey crosses, the gate threshold dotted;
* ``gate`` — the share of finished runs whose gate passed against r/w, with Wilson 95% intervals;
* ``horizons`` — predictive and confident horizons against r/w, QKᵀ beside AVWₒ and their paired
  difference per run (the headline: QKᵀ's horizon exceeds AVWₒ's, more so as r passes w);
* ``auroc`` — AUROC(j) of the primary metric, one panel per (w, r), one line per run with its 95% CI band.

A *series* is the set of runs sharing every differing config key except the seed and the jump
scales; seeds are its replicates and r/w its x axis. A vertical line marks r/w = 1 (the rule's
deadline falls outside the context window beyond it). Drawn with matplotlib's object API (no
pyplot, no global backend).
"""

from __future__ import annotations

import textwrap
from collections import defaultdict
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from ..plotting import PAGE_WIDTH_IN, grid_shape, grid_size, png_bytes, say_empty
from .tables import TARGET_NAMES, TARGETS

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
COMPLIANCE_INTERVAL = (
    "mean ± 95% t-interval over the runs of a series at each r/w (mean ± t(0.975, n−1)·s/√n, clipped to "
    "the values the mean can take: [0, 1] for compliance, ≥ 0 for a horizon; no interval from a single run)"
)
GATE_INTERVAL = "Wilson 95% score interval of a proportion"


def t_interval(values: list[float]) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the 95% t-interval of the mean; (mean, None, None) for one value."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if x.size < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))
    return mean, mean - half, mean + half


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson 95% score interval for k successes in n trials (n ≥ 1)."""
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _png(figure: Figure) -> bytes:
    """PNG at ``plotting.DPI`` (≥ 200)."""
    return png_bytes(figure)


def _colours(entries: list[dict[str, Any]]) -> dict[str, str]:
    labels = list(dict.fromkeys(entry["series"] for entry in entries))
    return {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(labels)}


def _offsets(colours: dict[str, str], span: float) -> dict[str, float]:
    """Small x shifts so that series at the same r/w do not hide each other."""
    labels = list(colours)
    step = 0.012 * max(span, 0.5)
    return {label: (i - (len(labels) - 1) / 2) * step for i, label in enumerate(labels)}


def _rw_axis(axis, xs: list[float]) -> None:
    axis.axvline(1.0, color="0.3", linewidth=0.9, linestyle="--", zorder=1)
    low, high = min([*xs, 1.0]), max([*xs, 1.0])
    pad = 0.08 * max(high - low, 0.5)
    axis.set_xlim(low - pad, high + pad)
    axis.set_xlabel("r / w (jump length / context window)", fontsize=8)
    axis.tick_params(labelsize=8)


def _summaries(axis, groups: dict[tuple[str, float], list[float]], colours, offsets, *, bounds=(None, None)) -> None:
    """Mean ± t-interval per (series, r/w), drawn beside the points; the interval is clipped to
    ``bounds``, the values the mean can take (compliance in [0, 1], a horizon ≥ 0)."""
    for (label, x), values in groups.items():
        mean, low, high = t_interval(values)
        xe = x + offsets[label] + 0.006
        if low is not None and high is not None:  # both or neither (one run: no interval)
            floor, ceiling = bounds
            low = low if floor is None else max(low, floor)
            high = high if ceiling is None else min(high, ceiling)
            axis.errorbar([xe], [mean], yerr=[[mean - low], [high - mean]], color=colours[label], capsize=4, linewidth=1.5, zorder=4)
        axis.plot([xe], [mean], marker="_", markersize=14, markeredgewidth=2.5, color=colours[label], zorder=5)


def _legend(axis, colours: dict[str, str]) -> None:
    """One entry per series, below the figure: a series is named by its differing config keys,
    often longer than a panel is wide, so the names wrap at the page's width instead of covering
    the points or widening the figure."""
    if len(colours) > 1:
        handles = [axis.plot([], [], marker="o", linestyle="", color=colour)[0] for colour in colours.values()]
        labels = [textwrap.fill(label, 140) for label in colours]
        axis.figure.legend(
            handles, labels, loc="upper left", bbox_to_anchor=(0.0, 0.0), fontsize=7, frameon=False, title="series", title_fontsize=8
        )


def _series_numbers(entries: list[dict[str, Any]]) -> dict[str, int]:
    return {label: i + 1 for i, label in enumerate(dict.fromkeys(entry["series"] for entry in entries))}


# ---- compliance and gate -------------------------------------------------------------------------


def _by_training_series(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries with their training series as series: what training learned does not depend on
    how a run was analysed (comparison.json's ``training_series``)."""
    return [{**e, "series": e.get("training_series", e["series"])} for e in entries]


def draw_compliance(entries: list[dict[str, Any]], threshold: float | None) -> bytes | None:
    """Mean and worst rule compliance per r against r/w (runs in the compliance figures only)."""
    shown = _by_training_series([e for e in entries if e["in_compliance_figures"] and e["compliance"]])
    if not shown:
        return None
    colours = _colours(shown)
    xs = [float(v["r_over_w"]) for e in shown for v in e["compliance"]["by_r"].values()]
    offsets = _offsets(colours, max(xs) - min(xs))
    figure = Figure(figsize=(11, 4.2))
    axes = figure.subplots(1, 2, sharey=True)
    for axis, which, title in zip(axes, ("mean", "worst"), ("mean over the rules with that r", "worst rule with that r")):
        groups: dict[tuple[str, float], list[float]] = defaultdict(list)
        for e in shown:
            for v in e["compliance"]["by_r"].values():
                if v[which] is None:
                    continue
                x = float(v["r_over_w"])
                failed = not e["gate"]["passed"]
                axis.plot(
                    [x + offsets[e["series"]]],
                    [v[which]],
                    marker="o",
                    linestyle="",
                    markerfacecolor="white" if failed else colours[e["series"]],
                    color=colours[e["series"]],
                    alpha=0.8,
                    zorder=3,
                )
                axis.plot(
                    [x + offsets[e["series"]]], [v["chance_bigram_sampling_mean"]], marker="x", color="0.6", linestyle="", zorder=2
                )
                groups[(e["series"], x)].append(v[which])
        _summaries(axis, groups, colours, offsets, bounds=(0.0, 1.0))
        if threshold is not None:
            axis.axhline(threshold, color="0.4", linestyle=":", linewidth=0.9)
        _rw_axis(axis, xs)
        axis.set_ylim(-0.02, 1.02)
        axis.set_title(f"rule compliance: {title}", fontsize=9)
    axes[0].set_ylabel("rule compliance at the last evaluated epoch", fontsize=8)
    axes[0].plot([], [], marker="o", linestyle="", color="0.3", label="run, gate passed")
    axes[0].plot([], [], marker="o", linestyle="", color="0.3", markerfacecolor="white", label="run, gate not passed")
    axes[0].plot([], [], marker="x", linestyle="", color="0.6", label="rule-blind chance (bigram sampling)")
    axes[0].legend(fontsize=7, loc="lower left")
    _legend(axes[1], colours)
    return _png(figure)


def draw_gate(entries: list[dict[str, Any]]) -> bytes | None:
    """Share of finished runs that passed the gate per (series, r/w). A run with several r is
    counted once at each of its r/w values, as passed there when the rules of that r passed (edge
    compliance and each of those rules above the thresholds), not by the whole run's verdict."""
    shown = _by_training_series([e for e in entries if e["in_compliance_figures"] and e["gate"] and e["gate"]["finished"]])
    if not shown:
        return None
    colours = _colours(shown)
    counts: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0, 0])
    for e in shown:
        by_r = e["gate"].get("passed_by_r") or {}
        rw = e["compliance"]["by_r"] if e["compliance"] else {}
        for r, passed in by_r.items():
            if passed is None:
                continue
            x = float(rw[r]["r_over_w"])
            counts[(e["series"], x)][0] += int(passed)
            counts[(e["series"], x)][1] += 1
    if not counts:
        return None
    xs = [x for _, x in counts]
    offsets = _offsets(colours, max(xs) - min(xs))
    figure = Figure(figsize=(6, 4.2))
    axis = figure.subplots()
    for (label, x), (k, n) in sorted(counts.items(), key=lambda item: item[0][1]):
        low, high = wilson(k, n)
        xe = x + offsets[label]
        rate = k / n  # the Wilson bounds may miss 0 or 1 by a rounding error when k = 0 or k = n
        errors = [[max(0.0, rate - low)], [max(0.0, high - rate)]]
        axis.errorbar([xe], [rate], yerr=errors, marker="o", color=colours[label], capsize=4)
        axis.annotate(f"{k}/{n}", (xe, k / n), textcoords="offset points", xytext=(6, 4), fontsize=7)
    _rw_axis(axis, xs)
    axis.set_ylim(-0.02, 1.08)
    axis.set_ylabel("gate pass rate (finished runs)", fontsize=8)
    axis.set_title("sufficiency gate passed, with Wilson 95% intervals", fontsize=9)
    _legend(axis, colours)
    return _png(figure)


# ---- horizons ------------------------------------------------------------------------------------


def _horizon_points(entries: list[dict[str, Any]]):
    """(series, r/w, r, {qkt: target entry, avwo: ...}) for every analysed run and r."""
    for e in entries:
        if not e["in_horizon_figures"] or not e["horizons"]:
            continue
        for r, v in e["horizons"].items():
            yield e["series"], float(v["r_over_w"]), int(r), {t: v[t] for t in TARGETS}


HORIZON_ROWS = (
    ("horizon", "predictive horizon", "lookback j (tokens before the deadline)"),
    ("confident_horizon", "confident horizon", "lookback j (tokens before the deadline)"),
    ("horizon_over_r", "predictive horizon / r", "share of the jump length r"),
)


def draw_horizons(entries: list[dict[str, Any]]) -> bytes | None:
    """Rows: predictive and confident horizon (in tokens), predictive horizon / r; columns: QKᵀ,
    AVWₒ, QKᵀ − AVWₒ (paired within a run). Each point carries its violation count; a stratum too
    small to test is drawn as an ×  at 0 with its counts, never dropped (the best-learned runs have
    the fewest violations)."""
    points = list(_horizon_points(entries))
    if not points:
        return None
    colours = _colours([e for e in entries if e["in_horizon_figures"] and e["horizons"]])
    xs = [x for _, x, _, _ in points]
    offsets = _offsets(colours, max(xs) - min(xs))
    figure = Figure(figsize=(PAGE_WIDTH_IN, 10.5))
    axes = figure.subplots(3, 3, sharex=True)
    drawn = []  # the panels with something other than zeros to show (the others say so in words)
    for row, (field, name, unit) in enumerate(HORIZON_ROWS):
        for col, target in enumerate((*TARGETS, "difference")):
            axis = axes[row, col]
            title = f"{name}: QKᵀ − AVWₒ (same run, same r)" if target == "difference" else f"{name}: {TARGET_NAMES[target]}"
            if _all_zero(points, field, target):
                axis.set_title(title, fontsize=9)
                say_empty(axis, _zero_text(points, field, target), fontsize=8)
                continue
            drawn.append((row, col))
            groups: dict[tuple[str, float], list[float]] = defaultdict(list)
            for label, x, _r, values in points:
                xe = x + offsets[label]
                sides = [values[t] for t in (TARGETS if target == "difference" else (target,))]
                if any(side["status"] == "insufficient" for side in sides):
                    side = next(side for side in sides if side["status"] == "insufficient")
                    axis.plot([xe], [0.0], marker="x", linestyle="", color=colours[label], zorder=3)
                    axis.annotate(
                        f"insufficient\n{side['n_violations']}/{side['n_successes']}",
                        (xe, 0.0),
                        textcoords="offset points",
                        xytext=(4, -14),
                        fontsize=6,
                        color="0.35",
                    )
                    continue
                if target == "difference":
                    a, b = values["qkt"][field], values["avwo"][field]
                    y = None if a is None or b is None else a - b
                else:
                    y = values[target][field]
                if y is None:
                    continue
                axis.plot([xe], [y], marker="o", linestyle="", color=colours[label], alpha=0.8, zorder=3)
                axis.annotate(
                    f"n={sides[0]['n_violations']}", (xe, y), textcoords="offset points", xytext=(4, 3), fontsize=6, color="0.35"
                )
                groups[(label, x)].append(float(y))
            _summaries(axis, groups, colours, offsets, bounds=(None, None) if target == "difference" else (0.0, None))
            _rw_axis(axis, xs)
            if target == "difference":
                axis.axhline(0.0, color="0.4", linewidth=0.8)
            axis.set_title(title, fontsize=9)
            axis.set_ylabel(unit, fontsize=8)
            axis.yaxis.get_major_formatter().set_useOffset(False)  # never a "1e−17" offset on a near-constant axis
    same_scale = [axes[row, col] for row in range(2) for col in range(2) if (row, col) in drawn]  # QKᵀ, AVWₒ: one scale (tokens)
    if same_scale:
        low = min(axis.get_ylim()[0] for axis in same_scale)
        high = max(axis.get_ylim()[1] for axis in same_scale)
        for axis in same_scale:
            axis.set_ylim(min(low, -0.5), high + 0.5)
    legend_axis = next((axes[row, col] for row, col in drawn if col == 2), next((axes[rc] for rc in drawn), None))
    for col in range(3):  # shared x puts the tick labels on the bottom row: move them up above an empty bottom panel
        lowest = max((row for row, c in drawn if c == col), default=None)
        if lowest is not None and lowest < 2:
            axes[lowest, col].tick_params(labelbottom=True)
    if legend_axis is not None:  # with every panel said in words there are no points to name
        _legend(legend_axis, colours)
    return _png(figure)


def _panel_values(points, field: str, target: str) -> tuple[list[float], int]:
    """(the values a horizon panel would draw, the strata too small to test) for one row and column."""
    values, insufficient = [], 0
    for _label, _x, _r, sides in points:
        chosen = [sides[t] for t in (TARGETS if target == "difference" else (target,))]
        if any(side["status"] == "insufficient" for side in chosen):
            insufficient += 1
            continue
        if target == "difference":
            a, b = sides["qkt"][field], sides["avwo"][field]
            y = None if a is None or b is None else a - b
        else:
            y = sides[target][field]
        if y is not None:
            values.append(float(y))
    return values, insufficient


def _all_zero(points, field: str, target: str) -> bool:
    """True when every tested stratum of the panel is exactly 0 (or none was testable): nothing but
    an axis around 0 to draw."""
    values, _ = _panel_values(points, field, target)
    return all(v == 0.0 for v in values)


def _zero_text(points, field: str, target: str) -> str:
    values, insufficient = _panel_values(points, field, target)
    name = next(n for f, n, _ in HORIZON_ROWS if f == field)
    xs = sorted({x for _, x, _, _ in points})
    where = f"r/w {xs[0]:g}" if len(xs) == 1 else f"r/w {xs[0]:g}–{xs[-1]:g}"
    if not values:
        return f"no stratum could be tested\n({insufficient} too few violations or successes; {where})"
    if target == "difference":
        text = f"QKᵀ − AVWₒ = 0 in all {len(values)} tested strata\n({where}): the same {name}"
    else:
        text = f"{name} = 0 in all {len(values)} tested strata\n({where}): no lookback j ≥ 1 clears the threshold"
    if insufficient:
        text += f"\n({insufficient} more too small to test)"
    return text


def draw_auroc(entries: list[dict[str, Any]], threshold: float | None) -> bytes | None:
    """AUROC(j) of the primary metric: one panel per (w, r), one line per run with its CI band;
    lookbacks in time order (j = r − 1 at the left, the deadline j = 0 at the right, shaded)."""
    panels: dict[tuple[float, int, int], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for e in entries:
        if not e["in_horizon_figures"] or not e["horizons"]:
            continue
        target = e["primary"]["target"]
        for r, v in e["horizons"].items():
            if v[target]["status"] == "ok":
                panels[(float(v["r_over_w"]), int(e["parameters"]["w"]), int(r))].append((e, v[target]))
    if not panels:
        return None
    numbers = _series_numbers([e for group in panels.values() for e, _ in group])
    keys = sorted(panels)
    rows, cols = grid_shape(len(keys))
    figure = Figure(figsize=grid_size(rows, cols, panel_height=4.0, title=0.4))
    axes = np.atleast_1d(figure.subplots(rows, cols, squeeze=False)).ravel()
    for axis, (rw, w, r) in zip(axes, keys):
        for i, (e, curve) in enumerate(panels[(rw, w, r)]):
            colour = COLOURS[i % len(COLOURS)]
            j = np.arange(len(curve["auroc"]))
            as_float = lambda values: np.array([np.nan if v is None else v for v in values], dtype=np.float64)  # noqa: E731
            axis.fill_between(j, as_float(curve["ci_low"]), as_float(curve["ci_high"]), color=colour, alpha=0.15, linewidth=0)
            label = f"seed {e['parameters']['seed']}" + ("" if len(numbers) == 1 else f", series {numbers[e['series']]}")
            axis.plot(j, as_float(curve["auroc"]), color=colour, marker="o", markersize=3, label=label)
        axis.set_xlim(r - 0.5, -0.5)
        axis.set_xticks(range(r - 1, -1, -1) if r <= 16 else range(r - 1 - (r - 1) % 4, -1, -4))
        axis.axvspan(0.5, -0.5, color="0.9", zorder=0)
        axis.axhline(0.5, color="0.4", linewidth=0.8)
        if threshold is not None:
            axis.axhline(threshold, color="0.4", linewidth=0.8, linestyle=":")
            axis.axhline(1 - threshold, color="0.4", linewidth=0.8, linestyle=":")
        axis.set_ylim(0.0, 1.0)
        axis.set_title(f"r = {r}, w = {w} (r/w = {rw:g})", fontsize=9)
        axis.set_xlabel("lookback j (passes before the deadline)", fontsize=8)
        axis.set_ylabel("AUROC (violation vs success)", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.legend(fontsize=7, loc="best")
    for axis in axes[len(keys) :]:
        axis.set_visible(False)
    metrics = sorted({e["primary"]["key"] for group in panels.values() for e, _ in group})
    figure.suptitle(f"primary metric: {', '.join(metrics)} (95% DeLong CI bands)", fontsize=9)
    if len(numbers) > 1:  # the series' full names once, below the panels, wrapped at the page's width
        key = "\n".join(textwrap.fill(f"series {n}: {label}", 140, subsequent_indent="    ") for label, n in numbers.items())
        figure.text(0.0, 0.0, key, fontsize=7, va="top", ha="left")
    return _png(figure)
