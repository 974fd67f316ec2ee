"""Compare runs (``dcsbm report``): find run folders, filter them by config keys, tabulate what
differs, gate outcomes, rule compliance, primary results and QKᵀ/AVWₒ horizons, draw them against
r/w, and write comparison.json and a self-contained comparison.html."""

from .report import add_report_parser, command_report, default_out, report
from .runs import ComparisonError, Run, filter_runs, find_runs, parse_where

__all__ = [
    "ComparisonError",
    "Run",
    "add_report_parser",
    "command_report",
    "default_out",
    "filter_runs",
    "find_runs",
    "parse_where",
    "report",
]
