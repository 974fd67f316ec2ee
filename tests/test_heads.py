"""The multi-head ablation: configs/sweep-heads.json expands to n_heads = 1, 2, 4 at a constant d_head,
and a tiny 2-head run's report carries the per-head summary, each head named, with the Holm floor."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, tiny_config
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from dcsbm_transformer.analysis.report.heads import head_summary
from dcsbm_transformer.analysis.report.page import TEMPLATES_DIR, report_context
from dcsbm_transformer.experiment import RunOptions
from dcsbm_transformer.pipeline import run_pipeline
from dcsbm_transformer.sweep.plan import load_sweep

QUIET = {"echo": lambda _: None}


def test_the_heads_preset_holds_d_head_constant():
    plan = load_sweep(REPO / "configs" / "sweep-heads.json")
    shapes = [(p.config.model.n_heads, p.config.model.d_model, p.config.seed) for p in plan.points]
    assert shapes == [(1, 32, 1), (2, 64, 1), (4, 128, 1), (1, 32, 2), (2, 64, 2), (4, 128, 2)]
    assert {p.config.model.d_model // p.config.model.n_heads for p in plan.points} == {32}
    assert all(p.config.model.context_window == 16 and set(p.config.jumper_r_values()) == {8} for p in plan.points)


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """A tiny config with two heads, trained 3 epochs (the gate need not pass: analysed as exploratory) and
    analysed on 120 events (~25 s on the shared 2-core CPU, half of it the report's figures)."""
    root = tmp_path_factory.mktemp("heads")
    config = tiny_config(
        graph={"n": 32, "K": 4, "p_in": 1.0, "p_out": 0.15},
        model={"d_model": 16, "n_heads": 2},
        training={"max_epochs": 3},
        analysis={"events": 120, "permutations": 100, "min_events": 3, "include_failed": True},
    )
    options = RunOptions(results_root=root / "results", cache_root=root / "cache")
    outcome = run_pipeline(config, options, mechanism=False, **QUIET)
    return outcome.run_dir / "analysis" / outcome.analysis["analysis_name"]


def test_the_report_names_every_head_with_its_strongest_array_and_the_holm_floor(two_heads):
    heads = report_context(two_heads)["heads"]
    horizon = json.loads((two_heads / "horizon.json").read_text())
    assert [(row["layer"], row["head"]) for row in heads["rows"]] == [(0, 0), (0, 1)]  # one r: one row per head
    for row in heads["rows"]:
        assert row["where"] == f"layer 0, head {row['head']}"
        if row["key"] is not None:  # the strongest array is the head's own, with its own horizon numbers
            assert row["key"].startswith(("qkt.layer_0.head_", "avwo.layer_0.head_")) and f"head_{row['head']}." in row["key"]
            entry = horizon["metrics"][row["key"]]["by_r"][str(row["r"])]
            assert row["auroc"] == entry["auroc"][row["best_j"]] and row["p_adjusted"] == entry["p_adjusted"]
    holm = horizon["holm"]
    assert heads["holm"]["family_size"] == holm["family_size"] and heads["holm"]["permutations_used"] == holm["permutations_used"]
    # the analysis raised the 100 requested permutations until the floor m / (P + 1) is below alpha / 2
    assert holm["permutations_used"] > 100 and heads["holm"]["floor_ok"]
    page = (two_heads.parent.parent / "analysis" / two_heads.name / "report.html").read_text()
    assert 'id="heads-table"' in page and "layer 0, head 1" in page and 'id="random-matrix"' in page


def test_a_head_without_enough_events_is_said_and_renders():
    entry = {"status": "insufficient", "best_j": None, "auroc": [None], "significant": None, "p_adjusted": None}
    horizon = {
        "settings": {"alpha": 0.05},
        "primary": {"key": "qkt.layer_0.head_0.stable_rank", "registered": False},
        "r_values": [4],
        "metrics": {
            f"qkt.layer_0.head_{h}.stable_rank": {
                "target": "qkt",
                "layer": 0,
                "head": h,
                "metric": "stable_rank",
                "by_r": {"4": entry},
            }
            for h in (0, 1)
        },
        "holm": {"family_size": 2, "permutations_requested": 0, "permutations_used": 0, "floor": None},
    }
    heads = head_summary(horizon)
    assert [row["label"] for row in heads["rows"]] == ["no array with enough events"] * 2 and not heads["holm"]["floor_ok"]
    environment = Environment(loader=FileSystemLoader(TEMPLATES_DIR), undefined=StrictUndefined)
    page = environment.get_template("heads.html.j2").render(heads=heads)
    assert "layer 0, head 1" in page and "not below alpha / 2" in page and heads["concentration"].startswith("No head")
