"""One finished analysis, loaded for a researcher: ``load_run(path).analysis(name=None)``.

``Analysis.token_metrics`` is the analysis's ``token_metrics.npz`` (read lazily; every
``[events, lookbacks]`` array in **lookback order**: column ``j`` is lookback ``j``, ``j = 0`` the
pass that emits the deadline token — the order of every file, figure and function of the
analysis; see ``analysis.files``). ``Analysis.events`` is a pandas DataFrame of the events (one
row each, with the held-out flag of the registered test). ``Analysis.horizon`` is the parsed
``horizon.json`` and ``Analysis.horizon_frame()`` the same numbers as a tidy DataFrame, one row
per (array, r, lookback). ``Analysis.spectra`` is ``spectra.npz`` (the top singular values of every
window; ``Analysis.spectrum_trajectory(key)`` gives them in time order, context windows first). The statistics that made them are public in
``dcsbm_transformer.analysis.stats.statistics`` (``stratified_auroc``, ``delong``, ``auroc_ci``,
``auroc_difference``, ``separation``, ``holm``…), so a metric of one's own is tested with the same
machinery.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import ExperimentConfig
from ..reproducibility import numpy_rng
from .files import (
    CONTEXT_PREFIX,
    HORIZON_FILE,
    SUMMARY_FILE,
    TOKEN_METRICS_FILE,
    find_analysis,
    read_horizon,
    read_index,
    read_spectra,
)
from .stats.confirmatory import held_out_events

EVENT_COLUMNS = {
    "event_r": "r",
    "event_step": "step",
    "event_vertex": "vertex",
    "event_target_block": "target_block",
    "event_jumper": "jumper",
    "violated": "violated",
    "first_bad_edge_pass": "first_bad_edge_pass",
}


class TokenMetrics(Mapping):
    """The arrays of one ``token_metrics.npz``, read on first access, with named axes.

    ``tm[key]`` is a numpy array; ``tm.axes(key)`` names its axes: ``("event", "lookback")`` for
    per-pass arrays (column j = lookback j), ``("event",)`` for labels and context values,
    ``("event", "position")`` for ``tokens`` / ``context_tokens`` (time order)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._arrays: dict[str, np.ndarray] = {}
        with np.load(self.path, allow_pickle=False) as npz:
            self._keys = list(npz.files)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._keys:
            raise KeyError(f"{self.path} has no array {key!r}")
        if key not in self._arrays:
            with np.load(self.path, allow_pickle=False) as npz:
                self._arrays[key] = npz[key]
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def axes(self, key: str) -> tuple[str, ...]:
        if key in ("tokens", "context_tokens"):
            return ("event", "position")
        return ("event", "lookback") if self[key].ndim == 2 else ("event",)


@dataclass
class Analysis:
    """One analysis folder (``results/<id>/analysis/<name>/``) and its files."""

    name: str
    directory: Path
    config: ExperimentConfig  # the run's config with this analysis's own analysis block
    summary: dict[str, Any]
    horizon: dict[str, Any]
    labels: list[str] = field(default_factory=list)

    @cached_property
    def token_metrics(self) -> TokenMetrics:
        return TokenMetrics(self.directory / TOKEN_METRICS_FILE)

    @cached_property
    def spectra(self) -> dict[str, np.ndarray]:
        """spectra.npz's arrays (``analysis.files``): ``<target>.layer_<L>.head_<H>`` [events, lookbacks, K] in lookback
        order, ``context.<key>`` [events, 2, K], ``event_r``. FileNotFoundError for an analysis made before they were stored."""
        return read_spectra(self.directory)

    def spectrum_trajectory(self, key: str) -> np.ndarray:
        """The σ-trajectory of every event in time order: float32 [events, 2 + max r, K] — the windows ending at
        s − 2 and s − 1, then passes 1 … r (NaN after an event's r): the curve the trajectory metrics measure.
        ``key``: ``qkt.layer_0.head_0`` (a target, layer and head)."""
        arrays = self.spectra
        if key not in arrays or key.startswith(CONTEXT_PREFIX):
            names = [name for name in arrays if name not in ("schema_version", "event_r") and not name.startswith(CONTEXT_PREFIX)]
            raise KeyError(f"{self.directory / 'spectra.npz'} has no spectra {key!r}; it has {', '.join(names)}")
        by_lookback, r = arrays[key].astype(np.float32), arrays["event_r"].astype(np.int64)
        j = r[:, None] - 1 - np.arange(by_lookback.shape[1])[None, :]  # pass k = column k - 1 holds lookback r - k
        passes = np.take_along_axis(by_lookback, np.where(j >= 0, j, 0)[:, :, None], axis=1)
        passes[j < 0] = np.nan
        return np.concatenate([arrays[CONTEXT_PREFIX + key].astype(np.float32), passes], axis=1)

    @property
    def headline(self) -> list[str]:
        return self.horizon["headline"]

    @property
    def registration(self) -> dict[str, Any]:
        return self.horizon["registration"]

    @property
    def confirmatory(self) -> dict[str, Any] | None:
        return self.horizon["confirmatory"]

    def held_out(self) -> np.ndarray:
        """Boolean [events]: the events held out for the registered test (recomputed from the seed)."""
        a = self.config.analysis
        rng = numpy_rng(self.config.seed, a.stream, "split")
        return held_out_events(self.token_metrics["event_jumper"], a.confirmatory_fraction, rng)

    @cached_property
    def events(self) -> pd.DataFrame:
        """One row per event: r, step, vertex, target_block, jumper, violated, first_bad_edge_pass, held_out."""
        frame = pd.DataFrame({column: self.token_metrics[key] for key, column in EVENT_COLUMNS.items()})
        frame["held_out"] = self.held_out()
        return frame

    def horizon_frame(self) -> pd.DataFrame:
        """horizon.json as a tidy table: one row per (array, r, lookback j), computed on the
        exploratory events. Columns: key, target, layer, head, metric, role (primary /
        exploratory / behavioural), r, j, auroc, ci_low, ci_high, auroc_pooled, p_j (per-lookback
        permutation p), p_j_holm, p (the array's family-wise p at this r), p_adj, direction,
        status, n_violations, n_successes."""
        h = self.horizon
        rows = []
        arrays = [(key, stats, "primary" if key == h["primary"]["key"] else "exploratory") for key, stats in h["metrics"].items()]
        arrays.append((h["behavioural"]["metric"], h["behavioural"], "behavioural"))
        for key, stats, role in arrays:
            by_r = h["primary"]["by_r"] if role == "primary" else stats["by_r"]
            for r, entry in by_r.items():
                for j, value in enumerate(entry["auroc"]):
                    rows.append(
                        {
                            "key": key,
                            "target": stats["target"],
                            "layer": stats["layer"],
                            "head": stats["head"],
                            "metric": stats["metric"],
                            "role": role,
                            "r": int(r),
                            "j": j,
                            "auroc": value,
                            "ci_low": entry["ci_low"][j],
                            "ci_high": entry["ci_high"][j],
                            "auroc_pooled": entry["auroc_pooled"][j],
                            "p_j": entry["p_per_j"][j],
                            "p_j_holm": entry["p_per_j_holm"][j],
                            "p": entry["p_value"],
                            "p_adj": entry["p_adjusted"],
                            "direction": entry["direction"],
                            "status": entry["status"],
                            "n_violations": entry["n_violations"],
                            "n_successes": entry["n_successes"],
                        }
                    )
        return pd.DataFrame(rows).astype({"auroc": float, "ci_low": float, "ci_high": float, "p_j": float, "p": float, "p_adj": float})


def list_analyses(run_dir: Path) -> list[dict[str, Any]]:
    """The entries of ``analysis/index.json``: name, labels, settings digest, created, from_run_config, overrides."""
    return read_index(run_dir)


def load_analysis(run_dir: Path, config: ExperimentConfig, name: str | None = None) -> Analysis:
    """The analysis called ``name`` (a folder name or a label; None: the default one). Raises
    FileNotFoundError naming what exists, or when its files are missing or of an earlier version."""
    folder = find_analysis(run_dir, name)
    directory = Path(run_dir) / "analysis" / folder
    horizon = read_horizon(directory)
    if horizon is None:
        raise FileNotFoundError(f"{directory / HORIZON_FILE}: missing, invalid or of an earlier version (re-run dcsbm analyze)")
    summary = json.loads((directory / SUMMARY_FILE).read_text())
    analysis_block = config.analysis.model_validate({**summary["settings"]["analysis"], "chunk_mb": config.analysis.chunk_mb})
    entry = next(e for e in read_index(run_dir) if e["name"] == folder)
    return Analysis(folder, directory, config.model_copy(update={"analysis": analysis_block}), summary, horizon, entry["labels"])
