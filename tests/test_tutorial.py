"""The tutorial (``examples/tutorial.py``, a jupytext percent script) runs as a notebook, as it
stands: converted with jupytext, executed with nbclient on a tiny run trained and analysed here,
whose folder reaches it through ``$DCSBM_RUN``.

Skipped, with the reason, where jupytext, nbclient or ipykernel is not installed (the test extra
has them)."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import REPO, tiny_config

from dcsbm_transformer.experiment import RunOptions
from dcsbm_transformer.pipeline import run_pipeline

TUTORIAL = REPO / "examples" / "tutorial.py"
MISSING = [name for name in ("jupytext", "nbclient", "ipykernel") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed: pip install -e '.[test]'")

ALWAYS = {"edge_threshold": 0.0, "rule_threshold": 0.0, "rule_aggregate": "pooled"}
# Sampled continuations: a one-epoch model then both follows and breaks each rule.
ANALYSIS = {"events": 80, "permutations": 200, "min_events": 3, "temperature": 1.0}


def test_the_tutorial_runs_as_a_notebook_on_a_trained_run(tmp_path, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    config = tiny_config(gate=ALWAYS, training={"max_epochs": 1}, analysis=ANALYSIS)
    options = RunOptions(results_root=tmp_path / "results", cache_root=tmp_path / "cache")
    outcome = run_pipeline(config, options, mechanism=False, echo=lambda _: None)
    assert outcome.analysis is not None

    notebook = jupytext.read(TUTORIAL)
    assert sum(cell.cell_type == "code" for cell in notebook.cells) >= 5
    monkeypatch.setenv("DCSBM_RUN", str(outcome.run_dir))
    monkeypatch.setenv("DCSBM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    work = tmp_path / "elsewhere"
    work.mkdir()
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()

    text = "\n".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])
    )
    assert f"run: {outcome.run_dir}" in text
    assert "best lookback" in text or "insufficient" in text  # the metric of one's own was tested
    assert "Holm-adjusted" in text
    assert not [output for cell in notebook.cells for output in cell.get("outputs", []) if output.get("output_type") == "error"]
