"""The analysis stage's files in ``results/<id>/analysis/``: ``token_metrics.npz`` and ``summary.json``.

``token_metrics.npz``: one float32 array [events, passes] per ``<target>.layer_<L>.head_<H>.<metric>``
(NaN where undefined, or past an event's r); pass axis index k − 1 for pass k, lookback j = r − k.
The labels: ``event_r``, ``event_step``, ``event_vertex``, ``event_target_block``, ``event_jumper``,
``violated``, ``first_bad_edge_pass`` [events]; ``edge_valid``, ``rule_outcome`` (0 no rule due,
1 followed, 2 violated), ``target_block_probability`` [events, passes]; ``tokens`` int32
[events, w + max r] (the prompt window, then the generated tokens, −1 past r), so any value can
be recomputed from the model and these tokens alone. ``context.<key>`` float32 [events]: the
context-only baseline, every metric at the window ending at s − 1 (before the jumper entered it;
temporal metrics against the window ending at s − 2), recomputable from ``context_tokens`` int32
[events, w + 1] (walk tokens s − w − 1 .. s − 1).

``summary.json`` (validated before it is written, and written last: a summary whose checksum
matches its npz vouches for a finished analysis): counts per class, per r and per rule, guard
hits per metric, metrics constant by construction, W_v·W_o reference spectra, settings,
timings, versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..storage import atomic_write_validated, sha256_file

ANALYSIS_DIR = "analysis"
TOKEN_METRICS_FILE = "token_metrics.npz"
CONTEXT_PREFIX = "context."
SUMMARY_FILE = "summary.json"
SUMMARY_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Settings(_Strict):
    """Everything that changes what the analysis computes; same settings ⇒ the outputs are reused."""

    events: int = Field(ge=1)
    stream: str
    top_k: int = Field(ge=1)
    temperature: float = Field(ge=0)
    precision: str
    checkpoint: str  # the checkpoint file the model came from
    checkpoint_sha256: str
    include_failed: bool


class ClassCounts(_Strict):
    events: int = Field(ge=0)
    violated: int = Field(ge=0)
    followed: int = Field(ge=0)
    edge_clean: int = Field(ge=0, description="events whose r generated tokens all follow edges")
    edge_clean_violated: int = Field(ge=0)


class RuleCounts(ClassCounts):
    rule: int
    vertex: int
    target_block: int
    r: int


class Summary(_Strict):
    schema_version: int = SUMMARY_SCHEMA_VERSION
    experiment_id: str
    exploratory: bool = Field(description="true when the run's gate did not pass (--include-failed): no confirmatory claim")
    exploratory_reason: str | None
    continuations: str = Field(description="greedy (argmax, as the gate) or sampled at the temperature in settings")
    settings: Settings
    counts: ClassCounts
    counts_by_r: dict[str, ClassCounts]
    counts_by_rule: list[RuleCounts]
    walks_drawn: int
    targets: list[str]
    metrics: list[str]
    layers: int
    heads: int
    passes: int
    arrays: int
    guard_hits: dict[str, int]
    constant_metrics: list[str] = Field(description="arrays with one value (or none) over every event and pass: not evidence")
    ov_circuits: dict[str, dict[str, float | None]]
    token_metrics_sha256: str
    timings: dict[str, float]
    versions: dict[str, Any]


def write_summary(directory: Path, payload: dict[str, Any]) -> Path:
    """Validate ``payload`` against the schema, then write summary.json atomically."""
    return atomic_write_validated(directory / SUMMARY_FILE, Summary, payload)


def finished_summary(directory: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a finished analysis made with exactly ``settings``, or None (missing,
    invalid, other settings, or a token_metrics.npz that is not the one it vouches for)."""
    try:
        summary = Summary.model_validate(json.loads((directory / SUMMARY_FILE).read_text())).model_dump(mode="json")
    except (OSError, ValueError):
        return None
    if summary["settings"] != Settings.model_validate(settings).model_dump(mode="json"):
        return None
    npz = directory / TOKEN_METRICS_FILE
    if not npz.is_file() or sha256_file(npz) != summary["token_metrics_sha256"]:
        return None
    return summary
