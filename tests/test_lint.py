"""The tree passes ruff's pyflakes, bugbear and import-order checks and is in ruff's format, and
the package passes mypy (both configured in pyproject.toml): an unused import, an undefined name,
a mutable default, an unformatted file or a wrong type is a test failure, not a review comment.
Fix the format with `make format`."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import REPO

PATHS = ["src", "tests", "bench", "examples", "docs/hooks.py", "docs/maths_pdf.py"]


def _ruff(*arguments: str) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff") or str(REPO / ".venv" / "bin" / "ruff")
    try:
        return subprocess.run([ruff, *arguments, *PATHS], cwd=REPO, capture_output=True, text=True)
    except FileNotFoundError:
        done = subprocess.run([sys.executable, "-m", "ruff", *arguments, *PATHS], cwd=REPO, capture_output=True, text=True)
        if "No module named ruff" in done.stderr:
            pytest.skip("ruff is not installed (it is in the test extra: pip install -e '.[test]')")
        return done


def test_ruff_finds_nothing():
    done = _ruff("check")
    assert done.returncode == 0, done.stdout + done.stderr


def test_tree_is_in_ruff_format():
    done = _ruff("format", "--check")
    assert done.returncode == 0, "run `make format`:\n" + done.stdout + done.stderr


def test_mypy_finds_nothing():
    """mypy with pyproject.toml's [tool.mypy] (the package, pydantic's plugin) reports no error."""
    # the interpreter running the tests (the venv's): a mypy found elsewhere on PATH would not see pydantic's plugin
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    if "No module named mypy" in done.stderr:
        pytest.skip("mypy is not installed (it is in the test extra: pip install -e '.[test]')")
    assert done.returncode == 0, done.stdout + done.stderr
