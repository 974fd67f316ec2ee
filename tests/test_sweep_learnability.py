"""Sweeps that stop after training (``"analyze": false``) and sweeps of explicit variants (a
one-factor-at-a-time design, as configs/sweep-learnability.json uses): validation, and a real
tiny point run to done through the command line without an analysis folder.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from dcsbm_transformer.cli import main
from dcsbm_transformer.sweep import SweepError, load_sweep, sweep_from_dict

# the tiny config of tests/test_sweep.py: n=32, one epoch of 100 steps, seconds per point
TINY = {
    "seed": 3,
    "graph": {"n": 32, "K": 2, "p_in": 0.9, "p_out": 0.2, "jumpers_per_block": 1, "jump_scales": [0.75]},
    "walks": {"walk_length": 24, "train_walks": 3200, "eval_walks": 200},
    "model": {"context_window": 8, "d_model": 16, "n_layers": 1, "n_heads": 1},
    "training": {"batch_size": 64, "max_epochs": 1, "lr": 3e-3},
    "gate": {"eval_sequences": 64, "edge_threshold": 0.0, "rule_aggregate": "pooled", "rule_threshold": 0.0},
    "analysis": {"events": 40, "permutations": 200},
}


def sweep_args(root, sweep_file, *extra):
    return [
        "sweep",
        str(sweep_file),
        "--results-dir",
        str(root / "results"),
        "--sweeps-dir",
        str(root / "sweeps"),
        "--cache-dir",
        str(root / "cache"),
        "--executor",
        "debug",
        *extra,
    ]


def test_a_bad_analyze_value_and_bad_variants_are_reported_naming_the_field():
    with pytest.raises(SweepError) as caught:
        sweep_from_dict(
            {
                "name": "x",
                "base": TINY,
                "analyze": "no",
                "set": {"model.d_model": 16},
                "axes": {"seed": [1, 2]},
                "variants": [{}, {"model.n_layers": 2}, {"graph.foo": 1}, {"seed": 4}, {"model.d_model": 32}, 7, {}],
            }
        )
    problems = caught.value.problems
    expected = [
        'analyze: expected true or false (false stops every point after training), got "no"',
        "variants[3]: 'graph.foo' is not a config key: graph has no 'foo'",
        "variants[4]: 'seed' is also an axis",
        "variants[5]: 'model.d_model' is also fixed in set",
        "variants[6]: expected an object of dotted config keys and values",
        "variants[7]: {} is listed twice",
    ]
    for text in expected:
        assert any(problem.startswith(text) for problem in problems), (text, problems)
    with pytest.raises(SweepError, match="variants: expected a non-empty list"):
        sweep_from_dict({"name": "x", "base": TINY, "variants": []})
    with pytest.raises(SweepError, match=r"point 2 \(model.n_layers=1\): same experiment id"):
        sweep_from_dict({"name": "x", "base": TINY, "variants": [{}, {"model.n_layers": 1}]})  # the base's own value


def test_variants_cross_the_axes_one_factor_at_a_time():
    plan = sweep_from_dict(
        {
            "name": "ofat",
            "base": TINY,
            "axes": {"seed": [1, 2]},
            "order": {"seed": [2]},
            "variants": [{}, {"model.n_layers": 2}, {"model.d_model": 32, "walks.walk_length": 32}],
        }
    )
    assert plan.analyze is True and plan.columns == ["seed", "model.n_layers", "model.d_model", "walks.walk_length"]
    assert [p.varied for p in plan.points] == [
        {"seed": 2},
        {"model.n_layers": 2, "seed": 2},
        {"model.d_model": 32, "walks.walk_length": 32, "seed": 2},
        {"seed": 1},
        {"model.n_layers": 2, "seed": 1},
        {"model.d_model": 32, "walks.walk_length": 32, "seed": 1},
    ]
    third = plan.points[2].config
    assert (third.model.d_model, third.walks.walk_length, third.model.n_layers, third.seed) == (32, 32, 1, 2)


def test_the_learnability_sweep_file_validates_training_only():
    plan = load_sweep(REPO / "configs" / "sweep-learnability.json")
    assert plan.analyze is False and plan.points[0].varied == {} and len(plan.points) == len(plan.variants)
    assert all(p.config.training.max_epochs == 50 for p in plan.points)


def test_a_sweep_with_analyze_false_runs_a_point_to_done_without_an_analysis(tmp_path, capsys):
    sweep_file = tmp_path / "tiny.json"
    sweep_file.write_text(json.dumps({"base": TINY, "analyze": False, "variants": [{}]}))
    assert main(sweep_args(tmp_path, sweep_file)) == 0
    out = capsys.readouterr().out
    assert "training only (analyze: false)" in out and "analysis not asked" in out, out
    status = json.loads((tmp_path / "sweeps" / "tiny" / "status.json").read_text())
    (row,) = status["rows"]
    assert status["analyze"] is False and status["counts"]["done"] == 1
    assert (row["state"], row["gate_passed"], row["gate_epoch"], row["analysis"]) == ("done", True, 1, "not asked")
    run_dir = tmp_path / "results" / row["experiment_id"]
    assert (run_dir / "result.json").is_file() and not (run_dir / "analysis").exists()
    assert (tmp_path / "sweeps" / "tiny" / "status.tsv").read_text().splitlines()[0].split("\t")[:3] == [
        "point",
        "experiment_id",
        "state",
    ]

    # a rerun counts the trained point as done and runs nothing
    assert main(sweep_args(tmp_path, sweep_file)) == 0
    out = capsys.readouterr().out
    assert "1 points (1 done)" in out and "nothing to run" in out
    assert not (run_dir / "analysis").exists()

    # the same results read by a sweep that analyses: the point is to be analysed, not done
    sweep_file.write_text(json.dumps({"base": TINY, "variants": [{}]}))
    assert main(sweep_args(tmp_path, sweep_file, "--dry-run")) == 0
    assert "partial (gate passed at epoch 1, analysis to do)" in capsys.readouterr().out
