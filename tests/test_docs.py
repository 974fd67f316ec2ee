"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing page, an
API reference to a name that does not exist fails), and its generated pages list what the code
has: every registered metric on the maths page, every command on the command-line page.

Skipped, with the reason, where MkDocs and its plugins are not installed (``pip install -e '.[docs]'``
or the test extra)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import REPO

from dcsbm_transformer.analysis.measure.metrics import METRICS

NEEDED = {
    "mkdocs": "mkdocs",
    "material": "mkdocs-material",
    "mkdocstrings": "mkdocstrings",
    "mkdocstrings_handlers.python": "mkdocstrings[python]",
}


def _missing() -> list[str]:
    missing = []
    for module, package in NEEDED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            found = False
        if not found:
            missing.append(package)
    return missing


pytestmark = pytest.mark.skipif(
    bool(_missing()), reason=f"the docs tools are not installed ({', '.join(_missing())}): pip install -e '.[docs]'"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_the_site_builds_strict_with_every_page(site):
    assert (site / "index.html").is_file()
    for page in ("getting-started", "maths", "analysis", "tutorial", "api", "changelog", "add-a-metric", "design", "benchmarks"):
        assert (site / page / "index.html").is_file(), page


def test_the_maths_page_lists_every_registered_metric(site):
    page = (site / "maths" / "index.html").read_text()
    assert "<!-- metric-table -->" not in page
    missing = [name for name in METRICS if f"<code>{name}</code>" not in page]
    assert not missing, f"metrics missing from the maths page: {missing}"


def test_the_command_line_page_has_every_command_and_the_api_reference_is_rendered(site):
    cli = (site / "cli" / "index.html").read_text()
    for command in ("run", "generate", "analyze", "mechanism", "sweep", "report"):
        assert f"dcsbm {command}" in cli
    assert "--threads" in cli and "--version" in cli
    api = (site / "api" / "index.html").read_text()
    for name in ("stratified_auroc", "perfect_separation_bound", "simultaneous_difference", "incremental_value", "load_run"):
        assert name in api
