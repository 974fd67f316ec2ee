"""``dcsbm report RESULTS_DIR… [--where key=value …] [--out DIR]``: compare runs.

Prints every run found (key parameters and where it stands) and writes, atomically, into the out
folder: ``comparison.json`` (the table data, machine-readable), ``comparison.html`` (one
self-contained page), ``comparison.md`` (its tables in Markdown: gate per r, the primary of passed
runs with the metric by layer, the negative control; ``markdown.py``) and the figures as PNG files
in ``figures/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from ..storage import atomic_write_bytes, atomic_write_json
from .figures import draw_auroc, draw_compliance, draw_gate, draw_horizons
from .markdown import MARKDOWN_FILE, render_markdown
from .page import render_page
from .runs import ComparisonError, filter_runs, find_runs, is_run_folder, parse_where
from .tables import build_comparison, format_listing

OUT_DIR = "comparison"
JSON_FILE = "comparison.json"
HTML_FILE = "comparison.html"
FIGURES_DIR = "figures"


def default_out(paths: list[Path]) -> Path:
    """``<first root>/comparison``: the first path when it is a results root, its parent when it is a run folder."""
    first = Path(paths[0])
    return (first.parent if is_run_folder(first) else first) / OUT_DIR


def _check_out(out: Path) -> None:
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ComparisonError(f"--out {out}: {blocker} exists and is not a folder")


def _no_match_message(runs, conditions: dict[str, list[Any]], where: list[str]) -> str:
    seen = []
    for key in conditions:
        if key == "r":
            values = sorted({r for run in runs for r in run.r_values})
        else:
            values = sorted({json.dumps(run.flat_config[key]) for run in runs if run.config is not None})
        seen.append(f"{key}: {', '.join(str(v) for v in values) or 'no readable config'}")
    return f"no run matches {' '.join(where)} ({len(runs)} run(s) found; values present: {'; '.join(seen)})"


def _thresholds(entries: list[dict[str, Any]], runs) -> tuple[float | None, float | None]:
    """The gate's rule threshold and the horizon threshold when every run shares them (else None: not drawn)."""
    gates = {run.config.gate.rule_threshold for run in runs if run.config is not None}
    horizons = {e["primary"]["threshold"] for e in entries if e["primary"] is not None}
    return (gates.pop() if len(gates) == 1 else None), (horizons.pop() if len(horizons) == 1 else None)


def report(
    paths: list[Path], where: list[str], out: Path | None = None, echo: Callable[[str], None] = print, analysis: str | None = None
) -> Path:
    """Compare the runs under ``paths`` (run folders or results roots) that match ``where``.

    ``echo`` gets the listing (every matching run with its key parameters and status) and the
    paths written. Writes comparison.json, comparison.html and figures/*.png into ``out``
    (default: ``default_out(paths)``, i.e. ``<first results root>/comparison``, or
    ``<parent of the first run folder>/comparison``) and returns the path of comparison.html.
    Raises ComparisonError (a ValueError) for a path that is not a run folder or a results root,
    an unknown or malformed filter, no matching run, or an out path blocked by a file.
    """
    paths = [Path(p) for p in paths]
    conditions = parse_where(list(where))
    found = find_runs(paths, analysis)
    runs = filter_runs(found, conditions)
    if not runs:
        raise ComparisonError(_no_match_message(found, conditions, list(where)))
    out = Path(out) if out is not None else default_out(paths)
    _check_out(out)

    comparison = build_comparison(runs, roots=[str(p) for p in paths], where=list(where), conditions=conditions, found=len(found))
    entries = comparison["runs"]
    rule_threshold, horizon_threshold = _thresholds(entries, runs)
    pngs = {
        "compliance": draw_compliance(entries, rule_threshold),
        "gate": draw_gate(entries),
        "horizons": draw_horizons(entries),
        "auroc": draw_auroc(entries, horizon_threshold),
    }
    heading = f"{len(runs)} of {len(found)} run(s) match {' '.join(where)}" if where else f"{len(runs)} run(s)"
    echo(f"{heading}:\n{format_listing(entries)}")
    for name, png in pngs.items():
        if png is not None:
            atomic_write_bytes(out / FIGURES_DIR / f"{name}.png", png)
        else:  # no run qualifies: a figure from an earlier report must not stay behind
            (out / FIGURES_DIR / f"{name}.png").unlink(missing_ok=True)
    atomic_write_json(out / JSON_FILE, comparison)
    atomic_write_bytes(out / MARKDOWN_FILE, render_markdown(comparison).encode("utf-8"))
    page = atomic_write_bytes(out / HTML_FILE, render_page(comparison, pngs).encode("utf-8"))
    if comparison["excluded"]:
        echo(f"left out of the horizon figures: {len(comparison['excluded'])} run(s) (reasons in {JSON_FILE} and the page)")
    echo(f"wrote {out / HTML_FILE}, {out / JSON_FILE}, {out / MARKDOWN_FILE} and {out / FIGURES_DIR}/")
    return page


def add_report_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``report`` to ``dcsbm``'s subparsers (handler: ``command_report``)."""
    parser = subparsers.add_parser(
        "report", help="compare runs: list them, tabulate what differs, gate outcomes, compliance and horizons, with figures"
    )
    parser.add_argument(
        "results_dirs",
        metavar="RESULTS_DIR",
        nargs="+",
        help="a run folder (results/<experiment_id>) or a results root holding run folders",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep runs whose dotted config key has this value (JSON, else a string): seed=2, "
        "graph.jump_scales=[0.9], model.context_window=16, or r=8 (any jumper's r); repeat to combine "
        "(different keys: all must hold; the same key: any of its values)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="folder for comparison.html, comparison.json and figures/ (default: <first results root>/comparison)",
    )
    parser.add_argument(
        "--analysis",
        default=None,
        metavar="NAME",
        help="compare only the analysis with this name or label (default: every analysis of every run, one row each)",
    )
    parser.set_defaults(handler=command_report)
    return parser


def command_report(args: argparse.Namespace) -> int:
    """``dcsbm report``; raises ComparisonError for a usage mistake (exit status 2)."""
    report([Path(p) for p in args.results_dirs], args.where, Path(args.out) if args.out else None, analysis=args.analysis)
    return 0
