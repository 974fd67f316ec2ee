"""Defaults that fit a shared machine: the data cache is per user, never the current directory
(``load_run`` works from anywhere), and the thread count is checked against the free cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from dcsbm_transformer import load_run
from dcsbm_transformer.data.dataset import MANIFEST, cache_directory, default_cache_root
from dcsbm_transformer.devices import free_cores, thread_advice
from dcsbm_transformer.experiment import RunOptions, run_directory, run_experiment

ALWAYS = {"edge_threshold": 0.0, "rule_threshold": 0.0, "rule_aggregate": "pooled"}


@pytest.fixture
def user_cache(tmp_path, monkeypatch) -> Path:
    """A per-user cache under tmp_path ($XDG_CACHE_HOME), no $DCSBM_CACHE_DIR."""
    monkeypatch.delenv("DCSBM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "dcsbm-transformer"


def everything_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


# ---- where the cache is ----------------------------------------------------------------------


def test_default_cache_root_is_per_user_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("DCSBM_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert default_cache_root() == tmp_path / "home" / ".cache" / "dcsbm-transformer"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "dcsbm-transformer"
    monkeypatch.setenv("DCSBM_CACHE_DIR", str(tmp_path / "mine"))  # the override still wins
    assert default_cache_root() == tmp_path / "mine"
    assert default_cache_root().is_absolute()


def test_load_run_from_another_directory_finds_the_same_data_and_writes_nothing_there(tmp_path, user_cache, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    config = tiny_config(gate=ALWAYS, training={"max_epochs": 1})
    monkeypatch.chdir(project)
    run_experiment(config, RunOptions(results_root=project / "results"), echo=lambda _: None)
    run_dir = run_directory(config, project / "results")
    data_dir = cache_directory(config)
    assert data_dir.parent == user_cache and (data_dir / MANIFEST).is_file()
    assert not (project / ".cache").exists()
    before = {path: path.stat().st_mtime_ns for path in everything_under(user_cache)}

    monkeypatch.chdir(elsewhere)
    run = load_run(run_dir.absolute())
    walks = run.eval_corpus.walks
    assert everything_under(elsewhere) == []  # nothing written in the current directory
    assert {path: path.stat().st_mtime_ns for path in everything_under(user_cache)} == before  # read, not rebuilt
    assert np.array_equal(walks, np.load(data_dir / "eval.npz")["walks"])


def test_a_run_made_with_the_old_default_reads_its_data_from_beside_its_results(tmp_path, user_cache, monkeypatch):
    """Data written by an older version to <project>/.cache are found from the run folder, not rebuilt."""
    project = tmp_path / "project"
    config = tiny_config(gate=ALWAYS, training={"max_epochs": 1})
    options = RunOptions(results_root=project / "results", cache_root=project / ".cache")
    run_experiment(config, options, echo=lambda _: None)
    run_dir = run_directory(config, options.results_root)
    monkeypatch.chdir(tmp_path)
    assert len(load_run(run_dir).eval_corpus.walks) == config.walks.eval_walks
    assert not user_cache.exists()


# ---- threads ---------------------------------------------------------------------------------


def test_free_cores_rounds_the_idle_share_and_keeps_one():
    assert free_cores(2, 0.1) == 2
    assert free_cores(2, 1.2) == 1
    assert free_cores(2, 5.0) == 1  # overloaded: still one
    assert free_cores(16, 3.6) == 12
    assert free_cores(4, -1.0) == 4


def test_thread_advice_is_silent_when_the_threads_fit_or_were_chosen():
    assert thread_advice(cores=2, load=0.2, threads=2, chosen=False) is None
    assert thread_advice(cores=2, load=1.0, threads=1, chosen=False) is None
    assert thread_advice(cores=2, load=3.0, threads=2, chosen=True) is None  # --threads or OMP_NUM_THREADS given


def test_thread_advice_warns_with_the_fix_when_the_cores_are_busy():
    message = thread_advice(cores=2, load=1.1, threads=2, chosen=False)
    assert message is not None
    assert "load 1.1 on 2 cores" in message
    assert "--threads 1" in message and "OMP_NUM_THREADS=1" in message
    busy = thread_advice(cores=8, load=5.6, threads=8, chosen=False)
    assert busy is not None and "--threads 2" in busy


def test_thread_advice_for_a_sweep_suggests_jobs_and_threads():
    message = thread_advice(cores=4, load=2.0, threads=2, chosen=False, jobs=2)  # 4 threads, 2 free cores
    assert message is not None and "--jobs 2 --threads 1" in message and "OMP_NUM_THREADS" not in message
    assert thread_advice(cores=4, load=2.0, threads=1, chosen=False, jobs=2) is None
