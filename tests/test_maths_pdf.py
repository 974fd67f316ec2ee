"""make maths-pdf: docs/maths.md as a printable PDF with every function it names and its line range.

The HTML is built once (docs/maths_pdf.build_html, from whatever docs/maths.md holds now) and
checked for MathML and for line ranges equal to ``inspect.getsourcelines``; the PDF is printed from
it by headless Chromium and read back with pdftotext. Skipped, with the install line, where
latex2mathml, Chromium or pdftotext is missing."""

from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("maths_pdf", REPO / "docs" / "maths_pdf.py")
maths_pdf = importlib.util.module_from_spec(spec)
sys.modules["maths_pdf"] = maths_pdf  # its dataclass looks its module up there
spec.loader.exec_module(maths_pdf)

if importlib.util.find_spec("latex2mathml") is None or importlib.util.find_spec("markdown") is None:
    pytest.skip(
        "latex2mathml or markdown is not installed (both in the test and docs extras: pip install -e '.[test]')",
        allow_module_level=True,
    )


def headings() -> list[str]:
    """The level-2 and level-3 headings of docs/maths.md as it is now (other work adds sections)."""
    text = (REPO / "docs" / "maths.md").read_text(encoding="utf-8")
    return [re.sub(r"[`*]", "", h).strip() for h in re.findall(r"^#{2,3} (.+)$", text, re.M)]


def where(function) -> str:
    lines, first = inspect.getsourcelines(function)
    path = Path(inspect.getsourcefile(function)).resolve().relative_to(REPO)
    return f"{path}:{first}–{first + len(lines) - 1}"


def squeeze(text: str) -> str:
    """Without whitespace: a table cell wraps its text over lines in the PDF."""
    return re.sub(r"\s+", "", text)


@pytest.fixture(scope="module")
def page() -> str:
    return maths_pdf.build_html()


def test_every_formula_is_mathml_and_every_named_function_has_its_line_range(page):
    from dcsbm_transformer.analysis.stats import statistics

    assert page.count("<math") > 100 and "arithmatex" not in page and "\\frac" not in page
    for function in (statistics.auroc, statistics.holm, statistics.delong, statistics.stratified_auroc):
        assert f"<code>{where(function)}</code>" in page, function.__name__
    for heading in headings():
        assert heading in page.replace("&#x27;", "'").replace("&amp;", "&"), heading
    assert "Appendix A: the metric functions" in page and "Appendix B: every function the text names" in page


def test_a_name_that_is_not_code_is_left_alone():
    modules = maths_pdf.package_modules()
    assert maths_pdf.resolve("summary.json", modules) is None
    assert maths_pdf.resolve("statistics.no_such_function", modules) is None
    reference = maths_pdf.resolve("statistics.holm", modules)
    assert reference.qualified == "dcsbm_transformer.analysis.stats.statistics.holm"


def test_a_formula_it_cannot_render_stops_the_build():
    with pytest.raises(maths_pdf.BuildError, match="cannot render|does not know"):
        maths_pdf.to_mathml('<span class="arithmatex">\\(\\frac{1}{\\)</span>')


def test_no_browser_is_a_usage_error_with_the_install_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-such-browser"))
    assert maths_pdf.main(["--out", str(tmp_path / "m.pdf")]) == 2
    assert "apt-get install chromium" in capsys.readouterr().err
    assert not (tmp_path / "m.pdf").exists()


def test_the_pdf_builds_with_every_section_and_function(page, tmp_path):
    browser = maths_pdf.find_browser()
    if browser is None:
        pytest.skip(f"no Chromium to print the PDF: {maths_pdf.INSTALL}")
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils)")
    from dcsbm_transformer.analysis.measure.metrics import METRICS
    from dcsbm_transformer.analysis.stats import statistics

    html_path = tmp_path / "maths.html"
    html_path.write_text(page, encoding="utf-8")
    pdf = maths_pdf.print_pdf(html_path, tmp_path / "maths.pdf", browser)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    flat = squeeze(text)
    for heading in headings():
        assert squeeze(heading) in flat, heading
    for function in (statistics.auroc, statistics.holm):
        assert squeeze(where(function)) in flat, function.__name__
    for name in METRICS:
        assert name in flat, name
    assert "\\frac" not in text and "\\(" not in text  # formulas rendered, not printed as TeX
