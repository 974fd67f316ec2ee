"""Messages a new user meets: a path in the way, or the wrong folder handed to load_run."""

from __future__ import annotations

import pytest
from conftest import REPO, run_cli

from dcsbm_transformer.api import load_run


@pytest.mark.parametrize("results_dir", ["taken", "taken/results"])
def test_a_file_in_the_way_of_the_results_dir_is_a_usage_error(tmp_path, results_dir):
    (tmp_path / "taken").write_text("not a folder")
    done = run_cli(
        "run",
        "--config",
        str(REPO / "configs" / "quick.json"),
        "--results-dir",
        results_dir,
        "--cache-dir",
        str(tmp_path / "cache"),
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert f"--results-dir {results_dir}: taken exists and is not a directory" in done.stderr
    assert "Errno" not in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing written, not even the cache


def fake_run(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "result.json").write_text("{}")


def test_load_run_on_the_results_root_names_the_runs_in_it(tmp_path):
    for name in ("beta", "alpha"):
        fake_run(tmp_path / "results" / name)
    (tmp_path / "results" / "notes").mkdir()
    with pytest.raises(FileNotFoundError) as caught:
        load_run(tmp_path / "results")
    root = tmp_path / "results"
    assert str(caught.value) == (f"{root} is a results root, not a run folder: pass {root}/<experiment_id> (runs here: alpha, beta)")


def test_load_run_on_a_folder_that_is_no_run_says_what_is_missing(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FileNotFoundError, match=r"elsewhere is not a run folder: it has no config.json"):
        load_run(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"no run folder at .*absent: pass results/<experiment_id>"):
        load_run(tmp_path / "absent")


def test_a_directory_given_as_the_config_says_it_is_a_directory(tmp_path):
    done = run_cli("run", "--config", str(REPO / "configs"), "--results-dir", "results", cwd=tmp_path)
    assert done.returncode == 2
    assert "configs is a directory, not a config file" in done.stderr and "not found" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_a_graph_that_cannot_be_built_leaves_no_results_folder(tmp_path):
    config = tmp_path / "sparse.json"
    config.write_text(
        '{"graph": {"n": 40, "K": 4, "p_in": 0.05, "p_out": 0.01, "max_attempts": 2}, '
        '"walks": {"walk_length": 128, "train_walks": 4000}}'
    )
    done = run_cli("run", "--config", str(config), "--results-dir", "results", "--cache-dir", "cache", cwd=tmp_path)
    assert done.returncode == 1 and "no graph passed validation in graph.max_attempts=2" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()  # no config.json, no empty checkpoints/ left behind
