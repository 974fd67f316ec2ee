"""The analysis figures (PNG, in ``results/<id>/analysis/figures/``), drawn from horizon.json and
token_metrics.npz alone.

* ``primary.png`` — the pre-registered metric alone: AUROC(j) with its 95% CI, the shuffled-label
  band, the threshold(s) and the behavioural predictor (the model's target-block probability) beside it;
* ``auroc_small_multiples.png`` (``_r{r}.png`` per r when there are several) — QKᵀ / AVWₒ (rows)
  × layer (columns), the strongest few metrics of each panel with their CI bands;
* ``event_aligned.png`` — mean metric ± 95% CI for violations and successes at every lookback,
  the pre-jumper (context-only) window at the left;
* ``overview.png`` — per r, the best oriented AUROC (0.5 + |AUROC − 0.5|) over j ≥ 1 of every
  metric (rows) × target/layer/head (columns).

Conventions: lookback j = r − k for pass k; j = 0 emits the deadline token (simultaneous, never
called predictive). Every lookback axis runs in time order: the earliest pass (j = r − 1) at the
left, the deadline (j = 0) at the right. AUROC = P(metric higher before a violation than before a
success), ties one half. Figures are drawn with matplotlib's object API (no pyplot, no global
backend) and written atomically.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ...plotting import (
    MAX_COLUMNS,
    PAGE_WIDTH_IN,
    PANEL_WIDTH_IN,
    grid_shape,
    grid_size,
    group_grid,
    group_shape,
    png_bytes,
    say_empty,
)
from ...storage import atomic_write_bytes
from ..files import CONTEXT_PREFIX
from ..stats.horizon import KEY, TARGET_NAMES
from ..stats.statistics import stratum_mask

FIGURES_DIR = "figures"
LOOKBACK_LABEL = "lookback j (passes before the deadline)"
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")
VIOLATION, SUCCESS = "tab:red", "tab:blue"


# --------------------------------------------------------------------------------------------------
# small helpers


def _floats(values) -> np.ndarray:
    """JSON numbers (None = undefined) as a float array with NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def metric_label(key: str) -> str:
    """``qkt.layer_0.head_1.stable_rank`` → ``QKᵀ L0 H1 stable rank``."""
    parts = KEY.match(key)
    if parts is None:
        return key.replace("_", " ")
    return f"{TARGET_NAMES[parts['target']]} L{parts['layer']} H{parts['head']} {parts['metric'].replace('_', ' ')}"


def _threshold(horizon: dict[str, Any]) -> float:
    return float(horizon["settings"]["horizon_threshold"])


def _title(figure: Figure, text: str, horizon: dict[str, Any]) -> None:
    """Suptitle with the experiment id; an exploratory run gets a note and a watermark."""
    if horizon["exploratory"]:
        text += "  —  EXPLORATORY (gate not passed: no confirmatory claim)"
        figure.text(0.5, 0.5, "EXPLORATORY", fontsize=64, color="tab:red", alpha=0.12, rotation=25, ha="center", va="center", zorder=0)
    width = max(60, int(figure.get_figwidth() * 14))  # characters per line at fontsize 10
    figure.suptitle(f"{textwrap.fill(text, width)}\n{horizon['experiment_id']}", fontsize=10)


def _save(figure: Figure, path: Path) -> Path:
    """PNG at ``plotting.DPI`` (≥ 200), written atomically."""
    return atomic_write_bytes(path, png_bytes(figure))


def _lookback_axis(axis, r: int, *, context: bool = False) -> None:
    """Lookback x axis in time order (j = r − 1 at the left, 0 at the right); j = 0 shaded."""
    left = r + 0.5 if context else r - 0.5
    axis.set_xlim(left, -0.5)
    ticks = list(range(r - 1, -1, -1))
    labels = [str(j) for j in ticks]
    if context:
        ticks = [r, *ticks]
        labels = ["pre-\njumper", *labels]
    axis.set_xticks(ticks, labels, fontsize=7 if r > 12 else 8)
    axis.axvspan(0.5, -0.5, color="0.9", zorder=0)
    axis.set_xlabel(LOOKBACK_LABEL, fontsize=8)


def _auroc_axis(axis, threshold: float, *, lower: bool = True) -> None:
    axis.set_ylim(0.0, 1.0)
    axis.axhline(0.5, color="0.4", linewidth=0.8, zorder=1)
    axis.axhline(threshold, color="0.4", linewidth=0.8, linestyle=":", zorder=1)
    if lower:
        axis.axhline(1 - threshold, color="0.4", linewidth=0.8, linestyle=":", zorder=1)
    axis.set_ylabel("AUROC (violation vs success)", fontsize=8)
    axis.tick_params(labelsize=8)


def _auroc_panel(axis, r: int, threshold: float, title: str):
    """An AUROC(j) panel: lookbacks r − 1 .. 0 (the deadline shaded), chance and the thresholds, a title."""
    _lookback_axis(axis, r)
    _auroc_axis(axis, threshold)
    axis.set_title(title, fontsize=9)
    return axis


def _insufficient(axis, entry: dict[str, Any], what: str) -> None:
    axis.text(
        0.5,
        0.5,
        f"{what}: insufficient\n({entry['n_violations']} violations, {entry['n_successes']} successes)",
        transform=axis.transAxes,
        ha="center",
        va="center",
        fontsize=9,
        color="0.3",
    )


def _band(axis, entry: dict[str, Any], colour: str, label: str, **style) -> None:
    """AUROC(j) with its 95% CI band (index = lookback j)."""
    j = np.arange(len(entry["auroc"]))
    axis.fill_between(j, _floats(entry["ci_low"]), _floats(entry["ci_high"]), color=colour, alpha=0.15, linewidth=0)
    axis.plot(j, _floats(entry["auroc"]), color=colour, marker="o", markersize=3, label=label, **style)


def _ok(entry: dict[str, Any] | None) -> bool:
    return entry is not None and entry["status"] == "ok"


# --------------------------------------------------------------------------------------------------
# the figures


def draw_primary(path: Path, horizon: dict[str, Any]) -> Path:
    """AUROC(j) of the pre-registered metric, one panel per r, with its baselines."""
    primary, threshold = horizon["primary"], _threshold(horizon)
    r_values = horizon["r_values"]
    rows, cols = grid_shape(len(r_values))
    figure = Figure(figsize=grid_size(rows, cols, panel_width=max(PANEL_WIDTH_IN, 5.6 if cols == 1 else 0), panel_height=4.0))
    axes = figure.subplots(rows, cols, squeeze=False)
    lower = primary["direction"] == "lower"
    for axis, r in zip(axes.flat, r_values):
        entry, behaviour = primary["by_r"][str(r)], horizon["behavioural"]["by_r"][str(r)]
        _lookback_axis(axis, r)
        _auroc_axis(axis, threshold, lower=lower)
        axis.set_title(f"r = {r}", fontsize=9)
        if not _ok(entry):
            _insufficient(axis, entry, "primary")
            continue
        if entry["shuffled_95"] is not None:
            s = entry["shuffled_95"]
            axis.axhspan(0.5 - s, 0.5 + s, color="0.75", alpha=0.35, zorder=0, label=f"shuffled labels, 95%: 0.5 ± {s:.3f}")
        _band(axis, entry, "black", f"primary ({primary['direction']} before violations)", linewidth=1.8)
        if _ok(behaviour):
            axis.plot(
                np.arange(len(behaviour["auroc"])),
                _floats(behaviour["auroc"]),
                color="tab:red",
                linestyle="--",
                marker="s",
                markersize=3,
                label="logits: target-block probability",
            )
        axis.text(0.0, 0.98, "j = 0:\nsimul-\ntaneous,\nnot a\npre-\ndiction", fontsize=6.5, color="0.35", ha="center", va="top")
        axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    for axis in list(axes.flat)[len(r_values) :]:
        axis.set_visible(False)
    name = metric_label(primary["key"])
    thresholds = f"dotted: {threshold}" + (f" and {1 - threshold:.2f}" if lower else "")
    role = "Registered" if primary.get("registered") else "Exploratory (not the registered hypothesis)"
    _title(
        figure,
        f"{role}: {name} is {primary['direction']} before violations, exploratory events (95% CI band; {thresholds}; grey: j = 0)",
        horizon,
    )
    figure.tight_layout()
    return _save(figure, path)


def layer_keys(horizon: dict[str, Any], target: str) -> list[str]:
    """The primary's metric on ``target`` at every layer and head present in horizon.json, in layer order."""
    metric = horizon["primary"]["metric"]
    keys = [key for key, s in horizon["metrics"].items() if s["target"] == target and s["metric"] == metric]
    return sorted(keys, key=lambda key: (horizon["metrics"][key]["layer"], horizon["metrics"][key]["head"]))


def draw_primary_by_layer(path: Path, horizon: dict[str, Any]) -> Path:
    """AUROC(j) of the primary's metric at every layer and head, QKᵀ and AVWₒ (columns) per r (rows):
    which layer's metric separates, not only the registered one's."""
    r_values, threshold = horizon["r_values"], _threshold(horizon)
    targets = [t for t in TARGET_NAMES if layer_keys(horizon, t)]
    figure = Figure(figsize=grid_size(len(r_values), len(targets), panel_width=5.0, panel_height=3.8))
    axes = figure.subplots(len(r_values), len(targets), squeeze=False)
    for row, r in enumerate(r_values):
        for col, target in enumerate(targets):
            shown = [(key, horizon["metrics"][key]) for key in layer_keys(horizon, target)]
            shown = [(key, s) for key, s in shown if _ok(s["by_r"].get(str(r)))]
            if not shown:
                axes[row, col].set_title(f"{TARGET_NAMES[target]}, r = {r}", fontsize=9)
                say_empty(axes[row, col], f"insufficient events at every layer\n({TARGET_NAMES[target]}, r = {r})")
                continue
            axis = _auroc_panel(axes[row, col], r, threshold, f"{TARGET_NAMES[target]}, r = {r}")
            for colour, (key, s) in zip(COLOURS, shown):
                entry = s["by_r"][str(r)]
                mark = "*" if entry["significant"] else ""
                label = f"layer {s['layer']}, head {s['head']}{mark}"
                _band(axis, entry, colour, label, linewidth=2.0 if key == horizon["primary"]["key"] else 1.0)
            axis.legend(fontsize=7, loc="best", framealpha=0.85)
    _title(
        figure,
        f"{horizon['primary']['metric'].replace('_', ' ')} at every layer and head (95% CI bands; thick: the "
        f"primary's layer; * = significant after Holm)",
        horizon,
    )
    figure.tight_layout()
    return _save(figure, path)


def _panel_keys(horizon: dict[str, Any], r: int, target: str, layer: int, top_n: int) -> list[str]:
    """The strongest ``top_n`` tested metrics of one target and layer, in horizon.json's order."""
    keys = []
    for key in horizon["top"].get(str(r), []):
        stats = horizon["metrics"][key]
        if stats["target"] == target and stats["layer"] == layer and _ok(stats["by_r"][str(r)]):
            keys.append(key)
        if len(keys) == top_n:
            break
    return keys


def draw_small_multiples(path: Path, horizon: dict[str, Any], r: int, *, top_n: int = 4) -> Path:
    """AUROC(j) with CI bands of the ``top_n`` strongest metrics per target and layer, one panel each:
    side by side when they fit in one row, else one target per row group, layers wrapping after three."""
    stats = horizon["metrics"].values()
    targets = [t for t in TARGET_NAMES if any(s["target"] == t for s in stats)]
    layers = sorted({s["layer"] for s in stats})
    threshold = _threshold(horizon)
    panels = [(target, layer) for target in targets for layer in layers]
    # one row when every panel fits in it; else each target starts a row, its layers wrapping after three columns
    sizes = [len(panels)] if len(panels) <= MAX_COLUMNS else [len(layers)] * len(targets)
    figure = Figure(figsize=grid_size(*group_shape(sizes), panel_height=3.5))
    axes = [axis for group in group_grid(figure, sizes) for axis in group]
    for (target, layer), axis in zip(panels, axes):
        keys = _panel_keys(horizon, r, target, layer, top_n)
        if not keys:
            axis.set_title(f"{TARGET_NAMES[target]}, layer {layer}", fontsize=9)
            say_empty(axis, f"no metric with enough events\n({TARGET_NAMES[target]}, layer {layer}, r = {r})")
            continue
        _auroc_panel(axis, r, threshold, f"{TARGET_NAMES[target]}, layer {layer}")
        for colour, key in zip(COLOURS, keys):
            s = horizon["metrics"][key]
            entry = s["by_r"][str(r)]
            mark = "*" if entry["significant"] else ""
            _band(axis, entry, colour, f"H{s['head']} {s['metric'].replace('_', ' ')}{mark}")
        axis.legend(fontsize=7, loc="best", framealpha=0.85)
    _title(
        figure,
        f"r = {r}: AUROC(j) of the {top_n} strongest metrics per target and layer "
        f"(95% CI bands; * = significant after Holm; dotted: {threshold} and {1 - threshold:.2f})",
        horizon,
    )
    figure.tight_layout()
    return _save(figure, path)


def _mean_ci(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NaN-aware mean and normal-approximation 95% half-width per column of ``values [E, J]``."""
    finite = np.isfinite(values)
    n = finite.sum(axis=0)
    total = np.where(finite, values, 0.0).sum(axis=0)
    mean = np.divide(total, n, out=np.full(n.shape, np.nan), where=n > 0)
    squares = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
    sd = np.sqrt(np.divide(squares, n - 1, out=np.full(n.shape, np.nan), where=n > 1))
    half = 1.96 * np.divide(sd, np.sqrt(n), out=np.full(n.shape, np.nan), where=n > 1)
    return mean, half, n


def event_aligned_keys(horizon: dict[str, Any], r: int, extra: int = 3) -> list[str]:
    """The primary metric and the ``extra`` strongest exploratory metrics of stratum ``r``."""
    keys = [horizon["primary"]["key"]]
    for key in horizon["top"].get(str(r), []):
        if len(keys) > extra:
            break
        if _ok(horizon["metrics"][key]["by_r"][str(r)]):
            keys.append(key)
    return keys


def centred_within_rule(values: np.ndarray, y: np.ndarray, jumper: np.ndarray) -> np.ndarray:
    """``values [E, J]`` minus, per rule, the mean of that rule's successes at each column.

    Rules differ in metric level and in violation rate, so pooled class means would show which
    rule is active as if it were a warning (the confounding the stratified AUROC removes); centred
    within rule, successes sit at 0 and violations show the within-rule difference."""
    out = np.array(values, dtype=np.float64)
    for rule in np.unique(jumper):
        mine = jumper == rule
        reference, _, n = _mean_ci(out[mine & ~y])
        out[mine] -= np.where(n > 0, reference, np.nan)
    return out


def draw_event_aligned(
    path: Path,
    horizon: dict[str, Any],
    arrays: Mapping[str, np.ndarray],
    *,
    extra: int = 3,
    null: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Mean ± 95% CI of each metric for violations vs successes at every lookback (rows: r),
    centred within rule (:func:`centred_within_rule`); with ``null`` (null_metrics.npz), the
    jumper-free null's band beside them (``rare_figures.draw_null_band``)."""
    from .rare_figures import centred_null, draw_null_band  # (it imports this module's helpers)

    y = np.asarray(arrays["violated"], dtype=bool)
    jumper = np.asarray(arrays["event_jumper"])
    event_r = np.asarray(arrays["event_r"], dtype=np.int64)
    r_values = horizon["r_values"]
    keys_by_r = [event_aligned_keys(horizon, r, extra) for r in r_values]
    sizes = [len(keys) for keys in keys_by_r]  # one group per r, each starting a row: 4 panels wrap as 2 × 2
    figure = Figure(figsize=grid_size(*group_shape(sizes), panel_height=3.4))
    for r, keys, axes in zip(r_values, keys_by_r, group_grid(figure, sizes)):
        mask = stratum_mask(event_r, r)
        for col, (key, axis) in enumerate(zip(keys, axes)):
            values = np.asarray(arrays[key], dtype=np.float64)[mask, :r]  # lookback order: column j = lookback j
            values = centred_within_rule(values, y[mask], jumper[mask])
            context = arrays[CONTEXT_PREFIX + key] if CONTEXT_PREFIX + key in arrays else None
            if context is not None:
                context = centred_within_rule(np.asarray(context, dtype=np.float64)[mask][:, None], y[mask], jumper[mask])[:, 0]
            if null is not None and key in null:
                null_mask = stratum_mask(np.asarray(null["event_r"]), r)
                null_jumper = np.asarray(null["event_jumper"])[null_mask]
                raw = np.asarray(arrays[key], dtype=np.float64)[mask, :r]
                draw_null_band(axis, centred_null(raw, y[mask], jumper[mask], np.asarray(null[key])[null_mask, :r], null_jumper))
            _event_panel(axis, values, y[mask], context, r)
            role = "primary: " if col == 0 else ""
            status = "" if _ok(horizon["primary"]["by_r"][str(r)]) else " (too few events for statistics)"
            axis.set_title(textwrap.fill(f"r = {r}, {role}{metric_label(key)}{status}", 48), fontsize=8.5)
            axis.legend(fontsize=7, loc="best", framealpha=0.85)
    _title(
        figure,
        "Event-aligned mean metric ± 95% CI (mean ± 1.96·sd/√n), violations vs successes, centred within rule "
        "(each rule's success mean subtracted: rule identity removed); left: the window before the jumper entered "
        "(context only)" + ("; grey: the jumper-free null, mean ± 95% CI and 10–90% of its values" if null is not None else ""),
        horizon,
    )
    figure.tight_layout()
    return _save(figure, path)


def _event_panel(axis, values: np.ndarray, y: np.ndarray, context: np.ndarray | None, r: int) -> None:
    j = np.arange(values.shape[1])
    for label, chosen, colour in (("violations", y, VIOLATION), ("successes", ~y, SUCCESS)):
        mean, half, n = _mean_ci(values[chosen])
        axis.fill_between(j, mean - half, mean + half, color=colour, alpha=0.2, linewidth=0)
        axis.plot(j, mean, color=colour, marker="o", markersize=3, label=f"{label} (n = {int(chosen.sum())})")
        if context is not None:
            c_mean, c_half, _ = _mean_ci(context[chosen][:, None])
            axis.errorbar([r], c_mean, yerr=c_half, color=colour, marker="D", markersize=5, capsize=3, linestyle="none")
    _lookback_axis(axis, r, context=context is not None)
    axis.set_ylabel("metric − its rule's success mean", fontsize=8)
    axis.tick_params(labelsize=8)


def overview_table(horizon: dict[str, Any], r: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(metric names, column labels, best oriented AUROC over j ≥ 1 [metrics, columns], significant mask)."""
    stats = horizon["metrics"]
    metrics = list(dict.fromkeys(s["metric"] for s in stats.values()))
    columns = sorted({(list(TARGET_NAMES).index(s["target"]), s["layer"], s["head"]) for s in stats.values()})
    value = np.full((len(metrics), len(columns)), np.nan)
    significant = np.zeros(value.shape, dtype=bool)
    for s in stats.values():
        entry = s["by_r"].get(str(r))
        if not _ok(entry):
            continue
        a = _floats(entry["auroc"])[1:]
        if not np.isfinite(a).any():
            continue
        i = metrics.index(s["metric"])
        c = columns.index((list(TARGET_NAMES).index(s["target"]), s["layer"], s["head"]))
        value[i, c] = 0.5 + np.nanmax(np.abs(a - 0.5))
        significant[i, c] = bool(entry["significant"])
    labels = [f"{TARGET_NAMES[list(TARGET_NAMES)[t]]}\nL{layer} H{head}" for t, layer, head in columns]
    return metrics, labels, value, significant


def draw_overview(path: Path, horizon: dict[str, Any]) -> Path:
    """Heatmap per r: best oriented AUROC over j ≥ 1, metric (rows) × target/layer/head (columns)."""
    r_values = horizon["r_values"]
    tables = [overview_table(horizon, r) for r in r_values]
    n_rows, n_cols = tables[0][2].shape
    width = max(3.2, 0.62 * n_cols + 2.4)
    height = 0.3 * n_rows + 1.2
    side_by_side = width * len(r_values) + 1.2 <= PAGE_WIDTH_IN  # else one panel per row, never wider than the page
    size = (
        (width * len(r_values) + 1.2, height + 1.4)
        if side_by_side
        else (min(PAGE_WIDTH_IN, width + 1.2), height * len(r_values) + 1.4)
    )
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots(1, len(r_values), squeeze=False) if side_by_side else figure.subplots(len(r_values), 1, squeeze=False)
    primary = horizon["primary"]
    image = None
    for axis, r, (metrics, labels, value, significant) in zip(axes.flat, r_values, tables):
        image = axis.imshow(value, cmap="viridis", vmin=0.5, vmax=1.0, aspect="auto")
        axis.set_xticks(range(len(labels)), labels, fontsize=7)
        axis.set_yticks(range(len(metrics)), [m.replace("_", " ") for m in metrics], fontsize=7)
        axis.set_title(f"r = {r}", fontsize=9)
        if value.size <= 600 and size[0] / (n_cols * (1 if not side_by_side else len(r_values))) >= 0.45:  # room for '0.72*'
            for (i, c), v in np.ndenumerate(value):
                if np.isfinite(v):
                    axis.text(
                        c,
                        i,
                        f"{v:.2f}{'*' if significant[i, c] else ''}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v < 0.8 else "black",
                    )
        _box_primary(axis, primary, metrics, labels)
        counts = horizon["counts_by_r"][str(r)]
        if not np.isfinite(value).any():
            axis.text(
                0.5,
                0.5,
                f"insufficient\n({counts['violations']} violations,\n{counts['successes']} successes)",
                transform=axis.transAxes,
                ha="center",
                va="center",
                fontsize=8,
                color="0.3",
            )
    assert image is not None, "tables[0] exists, so there is at least one panel"
    figure.colorbar(image, ax=list(axes.flat), shrink=0.8, label="best oriented AUROC, j ≥ 1")
    _title(
        figure,
        "Overview: how well each metric separates violations from successes at its best lookback j ≥ 1 "
        "(* significant after Holm; box: the pre-registered metric; blank: constant or insufficient)",
        horizon,
    )
    return _save(figure, path)


def _box_primary(axis, primary: dict[str, Any], metrics: list[str], labels: list[str]) -> None:
    label = f"{TARGET_NAMES[primary['target']]}\nL{primary['layer']} H{primary['head']}"
    if primary["metric"] in metrics and label in labels:
        i, c = metrics.index(primary["metric"]), labels.index(label)
        axis.add_patch(Rectangle((c - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="tab:red", linewidth=2))


def draw_figures(
    analysis_dir: Path,
    horizon: dict[str, Any],
    arrays: Mapping[str, np.ndarray] | None,
    *,
    top_n: int = 4,
    null: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Draw every figure into ``analysis_dir / "figures"``; returns name → path.

    ``arrays``: token_metrics.npz (a lazily loaded ``np.load`` archive is enough: only the labels,
    the plotted metrics and their ``context.`` values are read); None skips ``event_aligned``.
    Names: ``primary``, ``primary_by_layer``, ``auroc_small_multiples`` (one r) or ``auroc_small_multiples_r{r}``,
    ``auprc``, ``event_aligned`` (with the jumper-free null's band when ``null``, null_metrics.npz, is given),
    ``reliability`` (when an incremental-value test was made), ``overview``.
    """
    from .rare_figures import draw_auprc, draw_reliability

    folder = Path(analysis_dir) / FIGURES_DIR
    drawn = {
        "primary": draw_primary(folder / "primary.png", horizon),
        "primary_by_layer": draw_primary_by_layer(folder / "primary_by_layer.png", horizon),
    }
    r_values = horizon["r_values"]
    for r in r_values:
        name = "auroc_small_multiples" if len(r_values) == 1 else f"auroc_small_multiples_r{r}"
        drawn[name] = draw_small_multiples(folder / f"{name}.png", horizon, r, top_n=top_n)
    drawn["auprc"] = draw_auprc(folder / "auprc.png", horizon)
    if arrays is not None:
        drawn["event_aligned"] = draw_event_aligned(folder / "event_aligned.png", horizon, arrays, null=null)
    if (reliability := draw_reliability(folder / "reliability.png", horizon)) is not None:
        drawn["reliability"] = reliability
    drawn["overview"] = draw_overview(folder / "overview.png", horizon)
    return drawn


__all__ = ["FIGURES_DIR", "draw_figures", "event_aligned_keys", "layer_keys", "metric_label", "overview_table"]
