"""Figures that can be read on the page (issue 27 item 6): written at ≥ 200 dpi, never wider than
the page, small multiples wrapping into rows, an empty or all-zero panel saying so in words, and
the training curves (one labelled line per rule) in report.html.

Figures are captured where they are turned into PNG bytes (``png_bytes``, monkeypatched per module)
so their panels and texts are checked as matplotlib objects, not by parsing pixels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcsbm_transformer import plotting
from dcsbm_transformer.analysis.report import figures as report_figures
from dcsbm_transformer.analysis.report.page import write_report
from dcsbm_transformer.analysis.stats.horizon import compute_horizon
from dcsbm_transformer.comparison import figures as comparison_figures
from dcsbm_transformer.config import GateConfig, config_from_dict
from dcsbm_transformer.registration import RegistrationCheck, registration_payload
from dcsbm_transformer.training import plots

sys.path.insert(0, str(Path(__file__).parent))
from test_report import CONSTANT, PLANTED, PRIMARY, RAW_CONFIG, build_run, synthetic_arrays  # noqa: E402

SRC = Path(__file__).parents[1] / "src" / "dcsbm_transformer"


def capture(monkeypatch, module) -> list:
    """Record every Figure ``module`` turns into PNG bytes (and still write the bytes)."""
    seen = []

    def recording(figure):
        seen.append(figure)
        return plotting.png_bytes(figure)

    monkeypatch.setattr(module, "png_bytes", recording)
    return seen


def panel_rows(figure) -> int:
    """How many rows of visible panels a figure has (distinct panel tops)."""
    tops = {round(axis.get_position().y1, 3) for axis in figure.axes if axis.get_visible() and axis.get_label() != "<colorbar>"}
    return len(tops)


def texts(figure) -> str:
    return "\n".join(t.get_text() for axis in figure.axes for t in axis.texts)


# --------------------------------------------------------------------------------------------------
# the layout helpers


def test_grid_shape_wraps_after_three_and_balances_rows():
    assert plotting.grid_shape(1) == (1, 1)
    assert plotting.grid_shape(3) == (1, 3)
    assert plotting.grid_shape(4) == (2, 2)  # not 3 + 1
    assert plotting.grid_shape(5) == (2, 3)
    assert plotting.grid_shape(8) == (3, 3)
    with pytest.raises(ValueError, match="at least one panel"):
        plotting.grid_shape(0)


def test_group_grid_starts_each_group_on_a_new_row():
    from matplotlib.figure import Figure

    figure = Figure()
    groups = plotting.group_grid(figure, [4, 2])  # two columns (4 → 2 × 2), the second group on its own row
    assert [len(g) for g in groups] == [4, 2]
    assert plotting.group_shape([4, 2]) == (3, 2)
    first_tops = {round(a.get_position().y1, 3) for a in groups[0]}
    second_tops = {round(a.get_position().y1, 3) for a in groups[1]}
    assert len(first_tops) == 2 and len(second_tops) == 1 and not first_tops & second_tops
    assert sum(not a.get_visible() for a in figure.axes) == 0


def test_every_figure_is_saved_through_the_shared_helper():
    """One place sets the resolution: no module but plotting.py calls savefig."""
    callers = [p.relative_to(SRC) for p in SRC.rglob("*.py") if "savefig(" in p.read_text() and p.name != "plotting.py"]
    assert callers == []


# --------------------------------------------------------------------------------------------------
# the analysis report


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The synthetic run of test_report, with result.json's training curves (the real fields)."""
    analysis = build_run(tmp_path_factory.mktemp("layout") / "run")
    result_path = analysis.parents[1] / "result.json"
    result = json.loads(result_path.read_text())
    result["curves"] = {
        "train_loss": list(np.linspace(3.0, 2.4, 30)),
        "edge_compliance": [0.90, 0.99, 1.0],
        "rule_compliance": [0.1, 0.6, 0.91],
        "rule_compliance_per_jumper": [[0.1, 0.3, 0.5], [0.6, 0.7, 0.8], [0.91, 0.92, 0.95]],
        "rule_events": [96, 96, 96],
    }
    result["training"]["steps_per_epoch"] = 10
    result_path.write_text(json.dumps(result))
    return analysis


def test_report_figures_are_200_dpi_and_fit_the_page(run, monkeypatch):
    captured = capture(monkeypatch, plots)
    page = write_report(run).read_text()
    pngs = sorted((run / "figures").glob("*.png"))
    assert {p.stem for p in pngs} >= {"primary", "event_aligned", "overview", "training_curves"}
    for path in pngs:
        image = Image.open(path)
        dpi = image.info["dpi"][0]
        assert dpi >= 199.5, f"{path.name}: {dpi} dpi"
        assert image.size[0] / dpi <= plotting.PAGE_WIDTH_IN + 0.3, f"{path.name}: {image.size[0] / dpi:.1f} in wide"
        width = plotting.display_width(path.read_bytes())
        assert f'width="{width}"' in page  # shown at its natural size, never blown up or squeezed
    # the training curves: in the gate's section of the page, one labelled line per rule
    assert 'id="figure-training_curves"' in page
    assert page.index('id="figure-training_curves"') < page.index("Rule events analysed")
    legend = [t.get_text() for t in captured[0].axes[1].get_legend().get_texts()]
    assert {"rule 0: r = 6, block 0 → 1", "rule 1: r = 6, block 1 → 0", "rule 2: r = 3, block 0 → 1"} <= set(legend)
    assert "edge threshold 0.95" in legend and "worst rule (gate)" in legend


def test_event_aligned_panels_wrap_into_rows(run, monkeypatch):
    """Four panels for one r are 2 × 2 (the squeezed 1881-px strip of four side by side is gone)."""
    from dcsbm_transformer.analysis.files import read_horizon

    captured = capture(monkeypatch, report_figures)
    horizon = read_horizon(run)
    horizon["r_values"] = [6]
    with np.load(run / "token_metrics.npz") as arrays:
        report_figures.draw_event_aligned(run / "ea.png", horizon, arrays)
    figure = captured[-1]
    assert sum(a.get_visible() for a in figure.axes) == 4
    assert panel_rows(figure) == 2
    assert figure.get_figwidth() <= plotting.PAGE_WIDTH_IN


def test_small_multiples_of_many_layers_wrap_and_an_empty_panel_says_so(tmp_path, monkeypatch):
    """Four layers × two targets: eight panels in rows of at most three, never wider than the page;
    a layer whose metrics all lack events says so in words, with no axis."""
    config = config_from_dict({**RAW_CONFIG, "model": {**RAW_CONFIG["model"], "n_layers": 4}})
    arrays = synthetic_arrays()
    for layer in range(1, 4):
        for key in (PRIMARY, PLANTED):
            deeper = key.replace("layer_0", f"layer_{layer}")
            arrays[deeper] = arrays[key].copy()
            arrays[f"context.{deeper}"] = arrays[f"context.{key}"]
    summary = {
        "experiment_id": config.experiment_id,
        "exploratory": False,
        "exploratory_reason": None,
        "token_metrics_sha256": "0" * 64,
        "constant_metrics": [CONSTANT],
    }
    horizon = compute_horizon(arrays, config, summary, check=RegistrationCheck(True, [], registration_payload(config)))
    captured = capture(monkeypatch, report_figures)
    report_figures.draw_small_multiples(tmp_path / "sm.png", horizon, 6)
    figure = captured[-1]
    visible = [a for a in figure.axes if a.get_visible()]
    assert len(visible) == 8 and panel_rows(figure) >= 3  # QKᵀ rows, then AVWₒ rows: each target wraps
    assert figure.get_figwidth() <= plotting.PAGE_WIDTH_IN
    report_figures.draw_small_multiples(tmp_path / "sm3.png", horizon, 3)  # r = 3: too few violations to test
    empty = [a for a in captured[-1].axes if a.get_visible()]
    assert all(not a.axison for a in empty)
    assert "no metric with enough events" in texts(captured[-1])


# --------------------------------------------------------------------------------------------------
# the comparison page


def _entry(seed: int, rw: float, horizon: int, status: str = "ok") -> dict:
    side = {
        "status": status,
        "horizon": horizon,
        "confident_horizon": horizon,
        "horizon_over_r": horizon / 8,
        "n_violations": 30,
        "n_successes": 300,
    }
    return {
        "series": "all runs",
        "in_horizon_figures": True,
        "horizons": {"8": {"r_over_w": rw, "qkt": dict(side), "avwo": dict(side)}},
        "parameters": {"seed": seed, "w": 16},
    }


def test_all_zero_horizon_panels_say_so_in_words(monkeypatch):
    captured = capture(monkeypatch, comparison_figures)
    entries = [_entry(1, 0.5, 0), _entry(2, 0.5, 0), _entry(3, 1.0, 0), _entry(4, 1.0, 0, status="insufficient")]
    assert comparison_figures.draw_horizons(entries)[:8] == b"\x89PNG\r\n\x1a\n"
    figure = captured[-1]
    panels = [a for a in figure.axes if a.get_visible()]
    assert len(panels) == 9 and all(not a.axison for a in panels)  # no axis from -0.4 to 0.4, no 1e-17 offset
    words = texts(figure)
    assert "predictive horizon = 0 in all 3 tested strata (r/w 0.5–1)" in words.replace("\n", " ")
    assert "QKᵀ − AVWₒ = 0 in all 3 tested strata" in words
    assert "(1 more too small to test)" in words
    assert figure.get_figwidth() <= plotting.PAGE_WIDTH_IN


def test_a_horizon_panel_with_a_nonzero_value_is_drawn(monkeypatch):
    captured = capture(monkeypatch, comparison_figures)
    entries = [_entry(1, 0.5, 2), _entry(2, 0.5, 0)]
    comparison_figures.draw_horizons(entries)
    figure = captured[-1]
    assert figure.axes[0].axison  # predictive horizon, QKᵀ: 2 and 0 are data
    assert not figure.axes[2].axison  # their difference is 0 in both runs: said in words
    assert not figure.axes[0].yaxis.get_major_formatter().get_useOffset()


# --------------------------------------------------------------------------------------------------
# the training curves beside result.json


def test_training_curves_png_is_200_dpi_with_a_label_per_rule(tmp_path, monkeypatch):
    captured = capture(monkeypatch, plots)
    path = plots.plot_training_curves(
        tmp_path / plots.FIGURE_FILE,
        [3.0, 2.5, 2.4, 2.3],
        2,
        [0.9, 1.0],
        [0.2, 0.85],
        [[0.2, 0.5], [0.85, 0.9]],
        GateConfig(),
        "run",
        rule_labels=["rule 0: r = 8, block 0 → 1", "rule 1: r = 8, block 1 → 0"],
    )
    assert Image.open(path).info["dpi"][0] >= 199.5
    legend = [t.get_text() for t in captured[0].axes[1].get_legend().get_texts()]
    assert legend[:2] == ["rule 0: r = 8, block 0 → 1", "rule 1: r = 8, block 1 → 0"]


def test_an_older_result_without_curves_draws_no_training_figure(tmp_path):
    """result.json without curves (or with no evaluated epoch): nothing to draw, no error; the
    report then shows no training figure (``_training_figure`` is None)."""
    assert plots.plot_from_result(tmp_path / "t.png", {"rules": []}, {}, "old run") is None
    assert plots.plot_from_result(tmp_path / "t.png", {"curves": {"train_loss": [1.0], "edge_compliance": []}}, {}, "x") is None
    assert not (tmp_path / "t.png").exists()
