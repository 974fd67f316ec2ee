"""Opening a finished run for analysis: ``run = load_run("results/<experiment_id>")``.

``run.model`` is the gate checkpoint's model when the gate passed, else the newest checkpoint's,
in eval mode on the CPU; ``run.model(tokens, mode=ExtractionMode.SVD_TARGETS)`` exposes the
attention internals. ``run.graph`` carries adjacency, blocks and jumper rules; ``run.data`` the
run's own corpora (``run.eval_corpus``), from the data cache keyed by its data hash (rebuilt
when absent) and checked against the run's graph; the cache is found the same way from any
working directory (``data.dataset.default_cache_root``). A run excluded from analysis (its gate did not
pass) loads with a warning, and says so in ``run.excluded_from_analysis``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .config import ExperimentConfig, load_config
from .data.dataset import (
    CACHE_ENV,
    LEGACY_CACHE,
    DataIntegrityError,
    ExperimentData,
    default_cache_root,
    has_cached_data,
    load_or_build_data,
)
from .data.graph import Graph
from .data.walks import Corpus
from .experiment import CHECKPOINT_DIR
from .model import TransformerLM
from .storage import read_npz
from .training.checkpoint import GATE_CHECKPOINT, load_checkpoint, newest_loadable
from .training.results import RESULT_FILE, read_result


@dataclass(frozen=True, eq=False)
class Run:
    directory: Path
    config: ExperimentConfig
    result: dict[str, Any]
    graph: Graph
    model: TransformerLM
    checkpoint: Path  # the file the weights came from
    cache_root: Path | None = None  # where run.data looks (default: data.dataset.default_cache_root())

    @property
    def excluded_from_analysis(self) -> bool:
        """True when the run's gate did not pass: its model does not provably know every rule."""
        return bool(self.result["training"]["excluded_from_analysis"])

    @cached_property
    def data(self) -> ExperimentData:
        """The graph and corpora this run was trained and gated on, from the data cache (keyed by
        the config's data hash, checksummed; rebuilt identically when absent). Refused when the
        data's graph is not the run's own ``graph.npz``: walks of another config are never scored."""
        data = load_or_build_data(self.config, self._data_root())
        if not _same_graph(data.graph, self.graph):
            raise DataIntegrityError(
                f"the data made for {self.directory / 'config.json'} (data hash {self.config.data_hash[:10]}…) do not "
                f"match {self.directory / 'graph.npz'}: the run folder's files come from different configs"
            )
        return data

    def _data_root(self) -> Path | None:
        """The cache to read: the one asked for, else the default, unless only the old default
        beside the run's results root (``<project>/.cache``, where data went before the per-user
        cache) holds these data: then that one, so a run made there is not regenerated."""
        if self.cache_root is not None or os.environ.get(CACHE_ENV):
            return self.cache_root
        legacy = self.directory.absolute().parent.parent / LEGACY_CACHE
        if not has_cached_data(self.config, default_cache_root()) and has_cached_data(self.config, legacy):
            return legacy
        return None

    @property
    def analyses(self) -> list[dict[str, Any]]:
        """Every analysis of this run (``analysis/index.json``): name, labels, created, from_run_config, overrides."""
        from .analysis.results import list_analyses

        return list_analyses(self.directory)

    def analysis(self, name: str | None = None):
        """One finished analysis (``analysis.results.Analysis``): by folder name or label; None =
        the default (the newest made from the run's own config). Its ``token_metrics`` are in
        lookback order; ``horizon_frame()`` is horizon.json as a pandas DataFrame."""
        from .analysis.results import load_analysis

        return load_analysis(self.directory, self.config, name)

    @property
    def eval_corpus(self) -> Corpus:
        """The held-out walks the gate drew its events from (``walks`` [W, L] and ``events``)."""
        return self.data.eval


def _is_run_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / RESULT_FILE).is_file()


def _check_run_folder(directory: Path) -> None:
    """Refuse, saying what is wrong, a path that is not a run folder written by ``dcsbm run``.

    The common mistake is passing the results root (``results``) instead of one run in it
    (``results/<experiment_id>``): that is recognised and the runs it holds are listed. A folder
    with a config.json is left to the checks of each file that follow.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"no run folder at {directory}: pass results/<experiment_id>, written by dcsbm run")
    if (directory / "config.json").is_file():
        return
    runs = sorted(p.name for p in directory.iterdir() if p.is_dir() and _is_run_folder(p))
    if runs:
        raise FileNotFoundError(
            f"{directory} is a results root, not a run folder: pass {directory / '<experiment_id>'} (runs here: {', '.join(runs)})"
        )
    raise FileNotFoundError(
        f"{directory} is not a run folder: it has no config.json (a run folder is results/<experiment_id>, written by dcsbm run)"
    )


def _same_graph(a: Graph, b: Graph) -> bool:
    first, second = a.to_arrays(), b.to_arrays()
    return first.keys() == second.keys() and all(np.array_equal(first[key], second[key]) for key in first)


def load_run(results_dir: str | Path, *, cache_root: str | Path | None = None) -> Run:
    """Load config, result, graph and trained model of one experiment folder. A run whose gate
    did not pass is loaded with a warning (its model is not the one analysis may use)."""
    directory = Path(results_dir)
    _check_run_folder(directory)
    config = load_config(directory / "config.json")
    result = read_result(directory)
    if result is None:
        raise FileNotFoundError(f"{directory / RESULT_FILE}: missing or not a valid result file")
    graph = Graph.from_arrays(read_npz(directory / "graph.npz"))
    checkpoints = directory / CHECKPOINT_DIR
    if result["training"]["gate_passed"]:
        path = checkpoints / GATE_CHECKPOINT
        state = load_checkpoint(path, config.config_hash)
    else:
        resume = newest_loadable(checkpoints, config.config_hash)
        if resume is None:
            raise FileNotFoundError(f"{checkpoints}: no checkpoint to load the model from")
        path, state = resume.path, resume.state
    model = TransformerLM.from_config(config)
    model.load_state_dict(state["model"])
    model.eval()
    run = Run(directory, config, result, graph, model, path, Path(cache_root) if cache_root is not None else None)
    if run.excluded_from_analysis:
        warnings.warn(
            f"{directory}: excluded from analysis, its gate did not pass ({result['training']['failure_reason']}); "
            f"run.model is the newest checkpoint ({path.name}), not a model that knows every rule",
            ExcludedRunWarning,
            stacklevel=2,
        )
    return run


class ExcludedRunWarning(UserWarning):
    """A run excluded from analysis was loaded: anything measured on it is exploratory."""
