"""Shared fixtures: small real configs and the data they make (built once per session)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dcsbm_transformer.config import ExperimentConfig, config_from_dict, load_config
from dcsbm_transformer.data.dataset import build_data
from dcsbm_transformer.devices import usable_cores

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist, each worker (and every process it starts) gets its share of the cores.

    Workers share the machine: with torch's default of one thread per core, ``-n 2`` on 2 cores
    runs 4 OpenMP threads that spin-wait on each other, and a tiny training epoch measured 5.8-12.9 s
    instead of 0.3 s (BENCHMARKS.md, 2026-12-07). Set before any test, so subprocesses inherit it.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        share = max(1, usable_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(share)
        torch.set_num_threads(share)


def run_cli(*args, cwd, env=None):
    """``dcsbm *args`` in a fresh process from ``cwd``; ``env`` adds to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "dcsbm_transformer.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


# Many jumpers (a quarter of all vertices) with three jump lengths: nested rules everywhere.
STRESS = {
    "seed": 7,
    "graph": {"n": 64, "K": 4, "p_in": 0.6, "p_out": 0.08, "jumpers_per_block": 4, "jump_scales": [0.25, 0.5, 0.9]},
    "walks": {"walk_length": 64, "train_walks": 6400, "eval_walks": 800},
    "model": {"context_window": 16},
}


def tiny_config(**sections) -> ExperimentConfig:
    """A config small enough to train for a few epochs in a test."""
    raw = {
        "seed": 3,
        "graph": {"n": 32, "K": 2, "p_in": 0.9, "p_out": 0.2, "jumpers_per_block": 1, "jump_scales": [0.75]},
        "walks": {"walk_length": 24, "train_walks": 3200, "eval_walks": 200},
        "model": {"context_window": 8, "d_model": 16, "n_layers": 1, "n_heads": 1},
        "training": {"batch_size": 64, "max_epochs": 3, "lr": 3e-3},
        "gate": {"eval_sequences": 64},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return config_from_dict(raw)


@pytest.fixture(scope="session", autouse=True)
def _suite_data_cache(tmp_path_factory):
    """The suite's data cache in its own temp folder, not the user's per-user cache (tests that
    check the default location set their own environment)."""
    if "DCSBM_CACHE_DIR" not in os.environ:
        os.environ["DCSBM_CACHE_DIR"] = str(tmp_path_factory.mktemp("data-cache"))
        yield
        os.environ.pop("DCSBM_CACHE_DIR", None)
    else:
        yield


@pytest.fixture(scope="session")
def quick_config() -> ExperimentConfig:
    return load_config(REPO / "configs" / "quick.json")


@pytest.fixture(scope="session")
def stress_config() -> ExperimentConfig:
    return config_from_dict(STRESS)


@pytest.fixture(scope="session")
def quick_data(quick_config):
    return build_data(quick_config)


@pytest.fixture(scope="session")
def stress_data(stress_config):
    return build_data(stress_config)
