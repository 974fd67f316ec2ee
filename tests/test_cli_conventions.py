"""One command-line convention across ``dcsbm``'s commands: every bad request exits 2 with one
message and no traceback, nothing written; ``--version``; "did you mean" for a mistyped config
key; a sweep axis of lists that says how to write it; ``--set`` on ``dcsbm sweep``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from dcsbm_transformer import cli
from dcsbm_transformer.sweep import load_sweep

QUICK = str(REPO / "configs" / "quick.json")


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """A current directory with a folder that is not a run, a run folder that never trained, and
    a sweep file; commands run from here."""
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "not-a-run" / "notes.txt").write_text("hello")
    (tmp_path / "untrained").mkdir()
    (tmp_path / "untrained" / "config.json").write_text(Path(QUICK).read_text())
    (tmp_path / "typo.json").write_text(json.dumps({"graph": {"jump_scale": [0.5]}}))
    (tmp_path / "bare-scales.json").write_text(json.dumps({"base": QUICK, "axes": {"graph.jump_scales": [0.5, 0.9]}}))
    (tmp_path / "seeds.json").write_text(json.dumps({"base": QUICK, "axes": {"seed": [1, 2]}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DCSBM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def dcsbm(*args: str) -> int:
    try:
        return cli.main(list(args))
    except SystemExit as done:  # argparse: --version, --help, a malformed command line
        return int(done.code or 0)


BAD_REQUESTS = {
    "run: missing config": ["run", "--config", "missing.json"],
    "run: unknown key in the file": ["run", "--config", "typo.json"],
    "run: unknown --set key": ["run", "--config", QUICK, "--set", "training.lrr=1"],
    "run: --threads 0": ["run", "--config", QUICK, "--threads", "0"],
    "run: unknown option": ["run", "--config", QUICK, "--no-such-option"],
    "generate: missing config": ["generate", "--config", "missing.json", "--out", "data"],
    "analyze: no such folder": ["analyze", "missing"],
    "analyze: not a run folder": ["analyze", "not-a-run"],
    "analyze: a run that never trained": ["analyze", "untrained"],
    "analyze: --set outside analysis": ["analyze", "not-a-run", "--set", "training.lr=1"],
    "mechanism: not a run folder": ["mechanism", "not-a-run"],
    "sweep: missing file": ["sweep", "missing.json"],
    "sweep: an axis of bare scales": ["sweep", "bare-scales.json", "--dry-run"],
    "sweep: unknown --set key": ["sweep", "seeds.json", "--dry-run", "--set", "training.lrr=1"],
    "sweep: --set on an axis": ["sweep", "seeds.json", "--dry-run", "--set", "seed=3"],
    "sweep: --threads 0": ["sweep", "seeds.json", "--threads", "0"],
    "report: not a run folder": ["report", "not-a-run"],
    "report: no such folder": ["report", "missing"],
    "no command": [],
}


@pytest.mark.parametrize("args", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_every_bad_request_exits_2_with_one_message_and_writes_nothing(workspace, capsys, args):
    before = sorted(workspace.rglob("*"))
    assert dcsbm(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err
    if args and not args[-1].startswith("--no-such"):
        assert f"dcsbm {args[0]}: error:" in err  # our message, not argparse's usage text
    assert sorted(workspace.rglob("*")) == before  # no results folder, no cache, no sweep folder


def test_version(capsys):
    assert dcsbm("--version") == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("dcsbm ") and out != "dcsbm "


def test_an_unknown_config_key_says_which_key_was_meant(workspace, capsys):
    assert dcsbm("run", "--config", "typo.json") == 2
    assert "graph.jump_scale: unknown key (not part of the config format); did you mean graph.jump_scales?" in capsys.readouterr().err
    assert dcsbm("run", "--config", QUICK, "--set", "training.lrr=1") == 2
    assert "did you mean training.lr?" in capsys.readouterr().err


def test_a_sweep_axis_of_bare_jump_scales_shows_the_list_of_lists_to_write(workspace, capsys):
    assert dcsbm("sweep", "bare-scales.json", "--dry-run") == 2
    err = capsys.readouterr().err
    assert "each value of this axis is itself a list" in err
    assert "[[0.5], [0.9]]" in err and "[[0.5, 0.9]]" in err
    assert "valid tuple" not in err


def test_sweep_set_applies_to_every_point_before_validation(workspace, capsys):
    plain = load_sweep("seeds.json")
    changed = load_sweep("seeds.json", overrides={"training.max_epochs": 3})
    assert [p.config.training.max_epochs for p in changed.points] == [3, 3]
    assert [p.config.seed for p in changed.points] == [1, 2]
    assert {p.experiment_id for p in changed.points}.isdisjoint(p.experiment_id for p in plain.points)
    assert changed.base["training"]["max_epochs"] == 3  # plan.json records it

    assert dcsbm("sweep", "seeds.json", "--dry-run", "--set", "training.max_epochs=3") == 0
    out = capsys.readouterr().out
    assert all(p.experiment_id in out for p in changed.points)
    assert dcsbm("sweep", "seeds.json", "--dry-run", "--set", "training.max_epochs=-3") == 2  # validated like the file
    assert "every point (2): training.max_epochs" in capsys.readouterr().err
