"""Config validation: every impossible value is rejected, all problems at once, each naming its field."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from dcsbm_transformer.config import ConfigError, config_from_dict, load_config


def problems_of(raw) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw)
    return caught.value.problems


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"graph": {"n": 0}}, "graph.n"),
        ({"graph": {"K": 1}}, "graph.K"),
        ({"graph": {"p_in": 0.0}}, "graph.p_in"),
        ({"graph": {"p_in": 1.5}}, "graph.p_in"),
        ({"graph": {"p_out": -0.1}}, "graph.p_out"),
        ({"graph": {"n": 500, "K": 3}}, "graph.K"),
        ({"graph": {"n": 500, "K": 100, "jumpers_per_block": 6}}, "graph.jumpers_per_block"),
        ({"graph": {"jump_scales": [0.5, 0.0]}}, "graph.jump_scales.1"),
        ({"graph": {"jump_scales": [-1.0]}}, "graph.jump_scales.0"),
        ({"graph": {"jump_scales": []}}, "graph.jump_scales"),
        ({"graph": {"jump_scales": [0.001]}}, "graph.jump_scales.0"),
        ({"graph": {"jump_scales": [5.0]}}, "graph.jump_scales.0"),
        ({"walks": {"walk_length": 100}}, "walks.walk_length"),
        ({"walks": {"train_walks": 49_999}}, "walks.train_walks"),
        ({"walks": {"jumper_start_fraction": 0.3}}, "walks.jumper_start_fraction"),
        ({"training": {"batch_size": 0}}, "training.batch_size"),
        ({"training": {"lr": 0.0}}, "training.lr"),
        ({"training": {"lr": -1e-3}}, "training.lr"),
        ({"training": {"max_epochs": 0}}, "training.max_epochs"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"model": {"dropout": -0.1}}, "model.dropout"),
        ({"model": {"d_model": 130, "n_heads": 4}}, "model.d_model"),
        ({"gate": {"edge_threshold": 1.2}}, "gate.edge_threshold"),
        ({"gate": {"rule_threshold": -0.1}}, "gate.rule_threshold"),
        ({"gate": {"prompt": "random"}}, "gate.prompt"),
        ({"graph": {"colour": "red"}}, "graph.colour"),
        ({"optimiser": {}}, "optimiser"),
        ({"graph": {"n": "500"}}, "graph.n"),
        ({"graph": {"n": 500.0}}, "graph.n"),
        ({"training": {"batch_size": True}}, "training.batch_size"),
        ({"graph": []}, "graph"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**70}, "seed"),
    ],
)
def test_each_bad_value_is_rejected_naming_its_field(raw, field):
    problems = problems_of(raw)
    assert any(p.startswith(f"{field}:") for p in problems), problems


def test_all_problems_are_reported_at_once():
    raw = {
        "graph": {"n": 10, "K": 3, "p_in": 2.0, "unknown": 1},
        "walks": {"train_walks": "many"},
        "model": {"dropout": 1.5, "context_window": 64},
        "training": {"lr": 0},
    }
    fields = {p.split(":")[0] for p in problems_of(raw)}
    assert {"graph.K", "graph.p_in", "graph.unknown", "walks.train_walks", "model.dropout", "training.lr"} <= fields


def test_defaults_are_the_anchor_experiment_and_presets_load():
    config = config_from_dict({})
    assert (config.graph.n, config.graph.K, config.model.context_window) == (500, 4, 64)
    assert config.jumper_r_values() == [58] * 8  # round(0.9 * 64)
    anchor = load_config(REPO / "configs" / "anchor.json")
    assert anchor.to_dict() == config.to_dict()
    assert load_config(REPO / "configs" / "quick.json").graph.n == 64


def test_config_is_frozen_and_round_trips():
    config = config_from_dict({"graph": {"jump_scales": [0.5, 0.9]}})
    with pytest.raises(Exception):  # noqa: B017 (pydantic's frozen-instance error type is an implementation detail)
        config.graph.n = 3
    assert config_from_dict(json.loads(config.to_json())) == config


def test_r_values_cycle_over_jumpers_and_round_halves_up():
    config = config_from_dict({"graph": {"jump_scales": [0.25, 0.5, 0.9]}, "model": {"context_window": 10}})
    # 0.25 * 10 = 2.5 rounds up to 3 (not to even)
    assert config.jumper_r_values() == [3, 5, 9, 3, 5, 9, 3, 5]


def test_hashes_and_experiment_id():
    base = config_from_dict({})
    assert base.data_hash == config_from_dict({}).data_hash
    assert base.experiment_id == config_from_dict({}).experiment_id
    # context_window shapes the data (r depends on it)
    assert config_from_dict({"model": {"context_window": 32}}).data_hash != base.data_hash
    assert config_from_dict({"graph": {"p_in": 0.3}}).data_hash != base.data_hash
    assert config_from_dict({"walks": {"eval_walks": 100}}).data_hash != base.data_hash
    # training settings do not change the data, but do change the experiment
    other = config_from_dict({"training": {"lr": 1e-3}})
    assert other.data_hash == base.data_hash
    assert other.experiment_id != base.experiment_id


def test_load_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"graph": {"n": 64,}}')
    with pytest.raises(ConfigError, match="not valid JSON.*line 1"):
        load_config(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_config(listed)
