"""What every figure of the report, the mechanism section, the comparison page and the training
curves shares: resolution, the page's width, panel grids that wrap, and panels that say in words
that they have nothing to draw.

Legibility is a matter of inches, not pixels: a page shows a figure at most ``PAGE_WIDTH_IN``
inches wide at ``DISPLAY_PX_PER_INCH`` CSS pixels per inch (≈ 1200 px, the report's column), so a
figure no wider than that keeps its 7-pt labels at ≈ 10 px on screen; a wider one is scaled down
with everything in it. Small multiples therefore wrap into rows of at most ``MAX_COLUMNS`` panels
(:func:`grid_shape`, :func:`group_grid`) instead of growing sideways. PNGs are written at ``DPI``
(200: sharp on a high-density screen and in print) and shown at their natural size
(:func:`display_width`), so a higher resolution never makes a figure larger on the page.
"""

from __future__ import annotations

import io
import struct
import textwrap

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

DPI = 200
DISPLAY_PX_PER_INCH = 100  # CSS px per figure inch on a page: 12 in = 1200 px, the report's column
PAGE_WIDTH_IN = 12.0  # the widest a figure may be and still show at full size on the page
MAX_COLUMNS = 3
PANEL_WIDTH_IN = PAGE_WIDTH_IN / MAX_COLUMNS  # 4 in: three panels side by side fill the page


def grid_shape(n: int, max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: at most ``max_columns`` per row, rows as evenly filled as
    possible (4 panels: 2 × 2, not 3 + 1; 5: 3 + 2)."""
    if n < 1:
        raise ValueError(f"a grid needs at least one panel, got {n}")
    rows = -(-n // max_columns)
    return rows, -(-n // rows)


def group_shape(groups: list[int], max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    """(rows, columns) of :func:`group_grid` for panels in groups of these sizes."""
    if not groups or min(groups) < 1:
        raise ValueError(f"every group needs at least one panel, got sizes {groups}")
    columns = max(grid_shape(n, max_columns)[1] for n in groups)
    return sum(-(-n // columns) for n in groups), columns


def group_grid(figure: Figure, groups: list[int], *, max_columns: int = MAX_COLUMNS, **subplot_kw) -> list[list]:
    """Axes for panels in groups (e.g. one group per r): each group starts a new row and wraps
    after the shared column count (:func:`group_shape`); unused cells are hidden. Returns one
    list of axes per group."""
    rows, columns = group_shape(groups, max_columns)
    axes = figure.subplots(rows, columns, squeeze=False, **subplot_kw)
    out, top = [], 0
    for n in groups:
        height = -(-n // columns)
        cells = [axes[top + i // columns, i % columns] for i in range(height * columns)]
        for axis in cells[n:]:
            axis.set_visible(False)
        out.append(cells[:n])
        top += height
    return out


def grid_size(
    rows: int, columns: int, *, panel_height: float, panel_width: float = PANEL_WIDTH_IN, title: float = 0.7
) -> tuple[float, float]:
    """Figure size (inches) for a grid of panels, never wider than the page."""
    return min(PAGE_WIDTH_IN, panel_width * columns), panel_height * rows + title


def say_empty(axis, text: str, *, fontsize: float = 9) -> None:
    """A panel with nothing to draw says why in words: its axis is turned off (no ticks, offset
    text or limits to misread as data; the title stays) and a faint frame keeps its place in the
    grid. Call it on a fresh panel, before anything is drawn on it; shared axes are not touched."""
    axis.set_axis_off()
    axis.add_patch(Rectangle((0, 0), 1, 1, transform=axis.transAxes, fill=False, edgecolor="0.85", clip_on=False))
    width_in = axis.get_position().width * axis.figure.get_figwidth()
    chars = max(16, int(width_in * 72 / (0.6 * fontsize)))  # an average glyph is ≈ 0.6 em wide
    text = "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))
    axis.text(0.5, 0.5, text, transform=axis.transAxes, ha="center", va="center", fontsize=fontsize, color="0.3")


def png_bytes(figure: Figure) -> bytes:
    """The figure as a PNG at ``DPI``, cropped to what is drawn."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    return struct.unpack(">II", png[16:24])


def display_width(png: bytes) -> int:
    """CSS width (px) at which a PNG written at ``DPI`` shows at its natural size on a page."""
    return round(png_size(png)[0] * DISPLAY_PX_PER_INCH / DPI)


__all__ = [
    "DPI",
    "PAGE_WIDTH_IN",
    "display_width",
    "grid_shape",
    "grid_size",
    "group_grid",
    "group_shape",
    "png_bytes",
    "png_size",
    "say_empty",
]
