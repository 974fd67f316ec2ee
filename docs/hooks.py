"""MkDocs hooks: pages written at build time from the code, so they cannot fall out of date.

- ``<!-- metric-table -->`` (the maths page): every metric of the registry
  (``dcsbm_transformer.analysis.measure.metrics.METRICS``: name, kind, formula, version, and the first
  paragraph of the metric function's docstring);
- ``<!-- cli-help -->`` (the command-line page): ``dcsbm <command> --help`` for every command.
"""

from __future__ import annotations

import inspect

METRIC_MARKER = "<!-- metric-table -->"
CLI_MARKER = "<!-- cli-help -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def metric_table() -> str:
    from dcsbm_transformer.analysis.measure.metrics import METRICS

    rows = [
        "| metric | kind | definition (the registry's formula) | version | from the function's docstring |",
        "|---|---|---|---|---|",
    ]
    for metric in METRICS.values():
        doc = inspect.getdoc(metric.function) or ""
        first = doc.split("\n\n")[0]
        needs = f" (needs: {', '.join(metric.needs)})" if metric.needs else ""
        rows.append(f"| `{metric.name}` | {metric.kind}{needs} | {_cell(metric.formula)} | {metric.version} | {_cell(first)} |")
    return "\n".join(rows)


def cli_help() -> str:
    import argparse
    import os

    from dcsbm_transformer.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal's width: the same page on every machine
    try:
        parser = build_parser()
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sections = [f"### dcsbm\n\n```text\n{parser.format_help()}```"]
        sections += [f"### dcsbm {name}\n\n```text\n{sub.format_help()}```" for name, sub in commands.choices.items()]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return "\n\n".join(sections)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if METRIC_MARKER in markdown:
        markdown = markdown.replace(METRIC_MARKER, metric_table())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_help())
    return markdown
