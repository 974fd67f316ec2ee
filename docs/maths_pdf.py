"""The maths page as a printable PDF for peer review: ``make maths-pdf`` → ``site/maths.pdf``.

Same source as the documentation site: docs/maths.md, with the site's own hooks applied
(docs/hooks.py: the metric table written from the registry) and the site's Markdown extensions
(mkdocs.yml's ``markdown_extensions``), so the PDF and the page cannot disagree. Added for the
reviewer: after every section, the functions its text names (a code span such as
``statistics.auroc``) with their file and line range, and two appendices — every metric of the
registry with the function that computes it, and every referenced function with its first
docstring line. Line ranges come from ``inspect.getsourcelines`` at build time, so they are those of
the code the PDF was built from (its git commit is on the first page), never typed by hand.

How: Markdown → HTML (Python-Markdown, pymdownx.arithmatex) → every TeX formula to MathML
(latex2mathml, pure Python) → PDF by headless Chromium (``--print-to-pdf``), which lays MathML out
natively. Why not LaTeX: a TeX Live able to set this page (XeLaTeX and fonts for its Unicode:
QKᵀ, AVWₒ, ≥) is about a gigabyte of Debian packages, and pandoc is one more tool; Chromium is
one package, already what the project uses to check its HTML reports, and needs no JavaScript or
network (MathJax would need both). A formula latex2mathml cannot convert stops the build with the
formula named, so the PDF never shows raw TeX.

Usage: ``python docs/maths_pdf.py [--out site/maths.pdf] [--html-only]``; exit status 2 when
Chromium or a Python package is missing (with the install line), 1 when a formula or a reference
cannot be rendered.
"""

from __future__ import annotations

import argparse
import datetime
import html
import importlib
import importlib.util
import inspect
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
MATHS = ROOT / "docs" / "maths.md"
HOOKS = ROOT / "docs" / "hooks.py"
MKDOCS = ROOT / "mkdocs.yml"
DEFAULT_OUT = ROOT / "site" / "maths.pdf"
PACKAGE = "dcsbm_transformer"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL = "apt-get install chromium (Debian/Ubuntu), brew install --cask chromium (macOS), or set CHROMIUM=/path/to/chrome"
CODE_SPAN = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(?:\(\))?`")
SECTION = re.compile(r"^## ", re.M)


class BuildError(RuntimeError):
    """A formula or a reference that cannot be rendered (exit status 1)."""


# --------------------------------------------------------------------------------------------------
# the source: the site's page, hooks applied


def page_markdown() -> str:
    """docs/maths.md as the site renders it: docs/hooks.py's markers replaced."""
    spec = importlib.util.spec_from_file_location("dcsbm_docs_hooks", HOOKS)
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    return hooks.on_page_markdown(MATHS.read_text(encoding="utf-8"), page=None, config=None, files=None)


def markdown_extensions() -> tuple[list[str], dict]:
    """mkdocs.yml's markdown_extensions, with the permalink marks off (they would print)."""
    import yaml

    names, configs = [], {}
    for entry in yaml.safe_load(MKDOCS.read_text())["markdown_extensions"]:
        name, config = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        names.append(name)
        if config:
            configs[name] = dict(config)
    configs.setdefault("toc", {})["permalink"] = False
    names.append("md_in_html")  # the "Implemented in" boxes below hold Markdown tables
    if "pymdownx.snippets" in configs:
        configs["pymdownx.snippets"]["base_path"] = [str(ROOT)]
    return names, configs


# --------------------------------------------------------------------------------------------------
# code references and their line ranges


@dataclass(frozen=True)
class Reference:
    """A function or class the text names, where its code is."""

    name: str  # as written in the text: ``statistics.auroc``
    qualified: str  # ``dcsbm_transformer.analysis.stats.statistics.auroc``
    path: str  # relative to the repository root
    first: int
    last: int
    summary: str  # the docstring's first sentence

    @property
    def where(self) -> str:
        return f"{self.path}:{self.first}–{self.last}"


def package_modules() -> dict[str, ModuleType]:
    """Every module of the package that imports here (one needing an optional extra is left out)."""
    package = importlib.import_module(PACKAGE)
    modules = {PACKAGE: package}
    for info in pkgutil.walk_packages(package.__path__, PACKAGE + "."):
        try:
            modules[info.name] = importlib.import_module(info.name)
        except ImportError:
            continue
    return modules


def source_of(obj) -> tuple[str, int, int] | None:
    """(file relative to the root, first line, last line) of a function, method, class or property."""
    if isinstance(obj, property):
        obj = obj.fget
    obj = inspect.unwrap(obj) if callable(obj) else obj
    if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismethod(obj)):
        return None
    try:
        lines, first = inspect.getsourcelines(obj)
        path = Path(inspect.getsourcefile(obj)).resolve()
    except (OSError, TypeError):
        return None
    try:
        shown = str(path.relative_to(ROOT))
    except ValueError:
        shown = str(path)
    return shown, first, first + len(lines) - 1


def _summary(obj) -> str:
    doc = inspect.getdoc(obj.fget if isinstance(obj, property) else obj) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    return first if len(first) <= 240 else first[:237] + "…"


def resolve(name: str, modules: dict[str, ModuleType]) -> Reference | None:
    """The one function or class ``name`` (``module_suffix.attr[.attr]``) names in the package;
    None when it names no code (a file such as ``summary.json``, a config key, a field)."""
    parts = name.split(".")
    found = {}
    for split in range(len(parts) - 1, 0, -1):
        suffix, rest = ".".join(parts[:split]), parts[split:]
        for module_name, module in modules.items():
            if module_name != suffix and not module_name.endswith("." + suffix):
                continue
            obj = module
            for attribute in rest:
                obj = inspect.getattr_static(obj, attribute, None) if inspect.isclass(obj) else getattr(obj, attribute, None)
                if obj is None:
                    break
            if isinstance(obj, (staticmethod, classmethod)):
                obj = obj.__func__
            place = None if obj is None else source_of(obj)
            if place is not None and place not in found:
                code = inspect.unwrap(obj.fget if isinstance(obj, property) else obj)
                qualified = f"{getattr(code, '__module__', module_name)}.{getattr(code, '__qualname__', '.'.join(rest))}"
                found[place] = Reference(name, qualified, *place, _summary(obj))
    if len(found) > 1:
        raise BuildError(f"`{name}` in docs/maths.md names more than one function: {sorted(r.qualified for r in found.values())}")
    return next(iter(found.values()), None)


def references(text: str, modules: dict[str, ModuleType]) -> list[Reference]:
    """The functions and classes a piece of the page names, in order of first mention."""
    seen, out = set(), []
    for match in CODE_SPAN.finditer(text):
        name = match.group(1)
        if name in seen:
            continue
        seen.add(name)
        reference = resolve(name, modules)
        if reference is not None:
            out.append(reference)
    return out


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def implemented_table(refs: list[Reference]) -> str:
    rows = ["| named in the text | function | file: lines |", "|---|---|---|"]
    rows += [f"| `{r.name}` | `{r.qualified.removeprefix(PACKAGE + '.')}` | `{r.where}` |" for r in refs]
    return "\n".join(rows)


def metric_appendix() -> str:
    """Every registered metric: the function that computes it, where, its registry formula."""
    from dcsbm_transformer.analysis.measure.metrics import METRICS

    rows = ["| metric | kind | function | file: lines |", "|---|---|---|---|"]
    for metric in METRICS.values():
        place = source_of(metric.function)
        where = "—" if place is None else f"`{place[0]}:{place[1]}–{place[2]}`"
        function = f"{metric.function.__module__.removeprefix(PACKAGE + '.')}.{metric.function.__qualname__}"
        rows.append(f"| `{metric.name}` | {metric.kind} | `{function}` | {where} |")
    return "\n".join(rows)


def with_references(markdown: str, modules: dict[str, ModuleType]) -> tuple[str, list[Reference]]:
    """The page with an "Implemented in" table after every level-2 section that names code, and
    the two appendices; returns the text and every reference (for the index)."""
    starts = [m.start() for m in SECTION.finditer(markdown)] + [len(markdown)]
    pieces = [markdown[: starts[0]]]
    everything: dict[str, Reference] = {}
    for start, end in zip(starts, starts[1:]):
        section = markdown[start:end].rstrip("\n")
        refs = references(section, modules)
        pieces.append(section + "\n")
        if refs:
            pieces.append(f'\n<div class="implemented" markdown="1">\n\n**Implemented in**\n\n{implemented_table(refs)}\n\n</div>\n')
        pieces.append("\n")
        for r in refs:
            everything.setdefault(r.qualified, r)
    index = sorted(everything.values(), key=lambda r: (r.path, r.first))
    pieces.append(
        "\n## Appendix A: the metric functions\n\nEvery metric of the registry (`METRICS`), the function that computes it and its lines.\n\n"
    )
    pieces.append(metric_appendix() + "\n")
    pieces.append("\n## Appendix B: every function the text names\n\nIn file order, with the first sentence of its docstring.\n\n")
    pieces.append("| function | file: lines | what it does |\n|---|---|---|\n")
    pieces.append(
        "\n".join(f"| `{r.qualified.removeprefix(PACKAGE + '.')}` | `{r.where}` | {_cell(r.summary)} |" for r in index) + "\n"
    )
    return "".join(pieces), index


# --------------------------------------------------------------------------------------------------
# HTML with MathML


# latex2mathml 3.81 leaves a sized double bar (``\\Bigl\\lVert``) as raw text: drop the size, keep the bar
TEX_FIXES = ((re.compile(r"\\[bB]ig{1,2}[lr]?\s*(\\[lr]Vert)"), r"\1"),)
MATH = re.compile(r'<(span|div) class="arithmatex">\s*\\([(\[])(.*?)\\[)\]]\s*</\1>', re.S)


def to_mathml(page: str) -> str:
    """Every arithmatex formula (``\\(..\\)`` inline, ``\\[..\\]`` display) as MathML."""
    from latex2mathml.converter import convert

    def replace(match: re.Match) -> str:
        tex = html.unescape(match.group(3)).strip()
        for pattern, replacement in TEX_FIXES:
            tex = pattern.sub(replacement, tex)
        display = "block" if match.group(2) == "[" else "inline"
        try:
            mathml = convert(tex, display=display)
        except Exception as error:  # latex2mathml raises its own exception classes per construct
            raise BuildError(f"cannot render the formula {tex!r} ({type(error).__name__}: {error})") from error
        if "\\" in re.sub(r"<[^>]+>", "", mathml):
            raise BuildError(f"the formula {tex!r} holds a command latex2mathml does not know: {mathml}")
        return mathml

    page = MATH.sub(replace, page)
    outside = re.sub(r"<(math|code|pre)\b.*?</\1>", " ", page, flags=re.S)
    stray = [outside[max(0, m.start() - 60) : m.end() + 40] for m in re.finditer(r"\\[A-Za-z]{2,}", outside)]
    if stray:  # TeX that Markdown did not hand to arithmatex (a display formula not in a paragraph of its own)
        contexts = "; ".join(" ".join(context.split()) for context in stray[:3])
        raise BuildError(f"{len(stray)} TeX command(s) outside any formula, shown as raw text on the site too: {contexts}")
    return page


STYLE = """
@page { size: A4; margin: 16mm 15mm 16mm 15mm; }
body { font-family: "DejaVu Serif", Georgia, serif; font-size: 10pt; line-height: 1.4; color: #111; }
h1 { font-size: 18pt; margin: 0 0 0.2em; }
h2 { font-size: 13pt; margin-top: 1.4em; border-bottom: 1px solid #999; page-break-after: avoid; }
h3 { font-size: 11pt; page-break-after: avoid; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 8.5pt; }
table { border-collapse: collapse; font-size: 8pt; margin: 0.5em 0; width: 100%; }
th, td { border: 1px solid #bbb; padding: 2px 4px; vertical-align: top; text-align: left; overflow-wrap: break-word; }
td code { overflow-wrap: anywhere; }
th { background: #eee; }
tr { page-break-inside: avoid; }
math[display="block"] { margin: 0.5em 0; }
.implemented { border-left: 3px solid #1565c0; padding: 0.1em 0 0.1em 0.8em; margin: 0.8em 0; background: #f5f8fc; }
.front { color: #444; font-size: 9pt; }
.toc ul { list-style: none; padding-left: 1.2em; }
a { color: inherit; text-decoration: none; }
"""


def _commit() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "docs/maths.md"], cwd=ROOT, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes to src/ or docs/maths.md" if dirty.strip() else "")


def build_html() -> str:
    """The whole document as one HTML page (MathML, no script, no network)."""
    import markdown

    modules = package_modules()
    text, _ = with_references(page_markdown(), modules)
    names, configs = markdown_extensions()
    converter = markdown.Markdown(extensions=names, extension_configs=configs)
    body = to_mathml(converter.convert(text))
    body = re.sub(r"^\s*<h1[^>]*>.*?</h1>", "", body, count=1, flags=re.S)  # the page's own title: ours is below
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    front = (
        "<h1>The maths of dcsbm-transformer</h1>"
        f'<p class="front">Every metric and statistic the analysis reports: its formula, its reference, and the function that '
        f"computes it with its line range. Built from <code>docs/maths.md</code> (the documentation site's maths page) and "
        f"the code at commit <code>{html.escape(_commit())}</code> on {now}; line ranges by <code>inspect.getsourcelines</code> "
        f"at build time. Regenerate with <code>make maths-pdf</code>.</p>"
        f'<nav class="toc"><strong>Contents</strong>{converter.toc}</nav>'
    )
    return f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>The maths of dcsbm-transformer</title><style>{STYLE}</style></head><body>{front}{body}</body></html>'


# --------------------------------------------------------------------------------------------------
# the PDF


def find_browser() -> str | None:
    import os

    chosen = os.environ.get("CHROMIUM")
    if chosen:
        return chosen if shutil.which(chosen) or Path(chosen).is_file() else None
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def print_pdf(page: Path, out: Path, browser: str) -> Path:
    """Headless Chromium prints ``page`` to ``out`` (no header or footer lines)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # needed as root (containers, CI); the page is our own file
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out}",
            page.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        raise BuildError(f"{browser} did not print {page} (exit {done.returncode}): {done.stderr[-2000:]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the PDF (default: {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--html-only", action="store_true", help="write the HTML beside --out (.html) and stop")
    arguments = parser.parse_args(argv)
    missing = [name for name in ("markdown", "pymdownx", "latex2mathml", "yaml") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"maths-pdf: missing Python packages {missing}: pip install -e '.[docs]'", file=sys.stderr)
        return 2
    browser = None if arguments.html_only else find_browser()
    if not arguments.html_only and browser is None:
        print(f"maths-pdf: no Chromium found ({', '.join(BROWSERS)}): {INSTALL}", file=sys.stderr)
        return 2
    try:
        page = build_html()
        html_path = arguments.out.with_suffix(".html")
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(page, encoding="utf-8")
        if arguments.html_only:
            print(f"wrote {html_path}")
            return 0
        print(f"wrote {print_pdf(html_path, arguments.out, browser)}")
    except BuildError as error:
        print(f"maths-pdf: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
