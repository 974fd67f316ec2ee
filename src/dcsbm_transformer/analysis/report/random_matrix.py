"""The random-matrix section of ``report.html`` (``templates/random_matrix.html.j2``): from
``random_matrix.json`` (``analysis.stats.random_matrix``), a table per target, layer and head and one
figure, ``figures/random_matrix.png`` (the singular values' histogram against the simulated null and
the Marchenko–Pastur density). ``random_matrix_section`` is None when the file is missing or invalid.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ...plotting import display_width, grid_shape, grid_size, png_bytes
from ...storage import atomic_write_bytes
from ..stats.horizon import TARGET_NAMES
from ..stats.random_matrix import read_random_matrix

FIGURE = "random_matrix"
TITLE = "Singular values against a random-matrix reference"
CAPTION = (
    "Histogram (density) of the measured singular values s, pooled over the windows, on the scale x = s / (σ̂√N) "
    "(σ̂ fitted per matrix from the bulk's median, N the larger side), one panel per target, layer and head. Grey: the "
    "simulated null, Gaussian matrices of the same shape and support (QKᵀ: causal, zero above the diagonal); black "
    "line: the Marchenko–Pastur density of a full Gaussian matrix of that shape (the textbook reference, which the "
    "causal mask of QKᵀ moves away from); dashed red: the flagging edge (the null's 95th percentile of s₁/median(s), "
    "at the null's median)."
)


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if np.isfinite(value) else "—"


def _quartiles(q: dict[str, float]) -> str:
    return f"{_fmt(q['median'])} [{_fmt(q['q25'])}, {_fmt(q['q75'])}]"


def random_matrix_figure(rows: list[dict[str, Any]]) -> Figure:
    grid_rows, columns = grid_shape(len(rows))
    figure = Figure(figsize=grid_size(grid_rows, columns, panel_height=2.8), layout="constrained")
    for index, row in enumerate(rows):
        axis = figure.add_subplot(grid_rows, columns, index + 1)
        histogram = row["histogram"]
        edges = np.asarray(histogram["edges"])
        centres = (edges[1:] + edges[:-1]) / 2
        axis.stairs(histogram["null"], edges, color="0.55", fill=True, alpha=0.5, label="simulated null")
        axis.stairs(histogram["measured"], edges, color="#1565c0", linewidth=1.5, label="measured")
        axis.plot(centres, histogram["mp"], color="black", linewidth=1, label="MP (full matrix)")
        axis.axvline(histogram["threshold_x"], color="#c62828", linestyle="--", linewidth=1, label="flagging edge")
        axis.set_title(f"{TARGET_NAMES.get(row['target'], row['target'])}, layer {row['layer']}, head {row['head']}", fontsize=9)
        axis.set_xlabel("s / (σ̂ √N)", fontsize=8)
        axis.set_ylabel("density", fontsize=8)
        if index == 0:
            axis.legend(fontsize=7)
    return figure


def random_matrix_section(analysis_dir: Path) -> dict[str, Any] | None:
    """What ``random_matrix.html.j2`` renders, or None without a valid random_matrix.json."""
    payload = read_random_matrix(Path(analysis_dir))
    if payload is None:
        return None
    rows = payload["rows"]
    png = png_bytes(random_matrix_figure(rows))
    atomic_write_bytes(Path(analysis_dir) / "figures" / f"{FIGURE}.png", png)
    settings = payload["settings"]
    return {
        "alpha": settings["alpha"],
        "null_draws": settings["null_draws"],
        "variance_fit": settings["variance_fit"],
        "flagging": settings["flagging"],
        "rows": [
            {
                "where": f"{TARGET_NAMES.get(r['target'], r['target'])}, layer {r['layer']}, head {r['head']}",
                "shape": f"{r['rows']} × {r['cols']} ({r['support']}; top {r['rank_used']} used)",
                "sigma": _quartiles(r["sigma_fit"]),
                "sigma_frobenius": _quartiles(r["sigma_frobenius"]),
                "mp_edge": _fmt(r["mp_upper_edge"]),
                "null_edge": f"{_fmt(r['null_edge'])} (s/median > {_fmt(r['null_threshold_ratio'])})",
                "top_over_edge": _quartiles(r["top_over_mp_edge"]),
                "flagged": f"{r['flagged_matrices']}/{r['matrices']} ({100 * r['flagged_matrices'] / r['matrices']:.0f}%)",
                "by_index": ", ".join(f"s{i + 1}: {k}" for i, k in enumerate(r["flagged_by_index"])),
                "per_matrix": _fmt(r["outliers_per_matrix"]),
            }
            for r in rows
        ],
        "figure": {
            "name": FIGURE,
            "title": TITLE,
            "caption": CAPTION,
            "file": f"{FIGURE}.png",
            "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
            "width": display_width(png),
        },
    }
