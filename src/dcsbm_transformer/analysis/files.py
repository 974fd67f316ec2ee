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
# 2: events need s >= w + 1, the context windows are measured (context.<key>, context_tokens) and
# pass 1's temporal metrics compare with the window before the jumper; a version-1 analysis is redone.
SUMMARY_SCHEMA_VERSION = 2


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
    if summary["schema_version"] != SUMMARY_SCHEMA_VERSION:
        return None  # measured by an earlier version of the analysis: not what this one would write
    if summary["settings"] != Settings.model_validate(settings).model_dump(mode="json"):
        return None
    npz = directory / TOKEN_METRICS_FILE
    if not npz.is_file() or sha256_file(npz) != summary["token_metrics_sha256"]:
        return None
    return summary


# --------------------------------------------------------------------------------------------------
# horizon.json: the statistics of every metric (analysis.horizon builds it)

HORIZON_FILE = "horizon.json"
HORIZON_SCHEMA_VERSION = 1
Number = float | None  # JSON has no NaN: undefined values (too few events, no such lookback) are null


class ContextOnly(_Strict):
    """The metric on the window ending just before the jumper (s − 1): the signal already in the input."""

    auroc: Number
    ci_low: Number
    ci_high: Number


class VersusBehaviour(_Strict):
    """Paired DeLong comparison with the behavioural predictor at the metric's best lookback,
    each oriented in the direction it separates there (AUROC of the metric's side minus that of
    the model's target-block probability on its side)."""

    j: int
    metric_auroc: Number  # oriented: > 0.5 means the metric separates in its direction
    behavioural_auroc: Number  # oriented the same way for the behavioural predictor
    delta: Number
    ci_low: Number
    ci_high: Number
    p_value: Number
    verdict: str  # "better than the logits" | "no better than the logits" | "worse than the logits"


class Separation(_Strict):
    """One metric in one r stratum; list index = lookback j (0 = the pass emitting the deadline token)."""

    status: str  # "ok" | "insufficient" (fewer than min_events violations or successes)
    n_violations: int
    n_successes: int
    counts_per_jumper: dict[str, list[int]]  # rule -> [violations, successes]
    auroc: list[Number]  # jumper-stratified (the headline)
    ci_low: list[Number]  # 95% DeLong, logit scale
    ci_high: list[Number]
    auroc_pooled: list[Number]  # all events pooled: confounded by rule identity, a diagnostic
    auroc_per_jumper: dict[str, list[Number]]
    alternative: str  # "two-sided" (exploratory), "greater" / "less" (a pre-registered direction)
    p_value: Number  # permutation p, statistic max over j >= 1, labels shuffled within jumper, +1 corrected
    p_adjusted: Number  # Holm across the exploratory family of this r (the primary: its own p)
    p_per_j: list[Number]
    p_per_j_holm: list[Number]
    shuffled_95: Number  # 95th percentile of the permutation statistic: the shuffled-label baseline
    significant: bool | None  # p_adjusted < alpha
    direction: str | None  # observed at best_j: "higher before violations" | "lower before violations"
    best_j: int | None
    horizon: int | None  # the spec's: furthest j >= 1 with AUROC > threshold
    confident_horizon: int | None  # largest J with CI lower bound > threshold for every j in 1..J
    horizon_lower: int | None  # the same for a metric lower before violations (AUROC < 1 - threshold)
    confident_horizon_lower: int | None
    context_only: ContextOnly | None
    versus_behaviour: VersusBehaviour | None


class MetricStatistics(_Strict):
    target: str
    layer: int
    head: int
    metric: str
    by_r: dict[str, Separation]


class PrimaryResult(_Strict):
    key: str  # the token_metrics.npz array tested
    target: str
    layer: int  # resolved (analysis.primary.layer -1 = the last layer)
    head: int
    metric: str
    direction: str  # pre-registered: "higher" | "lower" before violations
    statement: str  # the hypothesis in words
    by_r: dict[str, Separation]
    summary: str  # the result in one sentence with its numbers


class HorizonSettings(_Strict):
    permutations: int
    min_events: int
    horizon_threshold: float
    alpha: float
    confidence_interval: str
    test: str
    stratification: str
    family: str
    seed: int
    stream: str


class Horizon(_Strict):
    schema_version: int = HORIZON_SCHEMA_VERSION
    experiment_id: str
    exploratory: bool
    exploratory_reason: str | None
    token_metrics_sha256: str
    settings: HorizonSettings
    r_values: list[int]
    counts_by_r: dict[str, dict[str, int]]  # r -> {"violations", "successes"}
    primary: PrimaryResult
    behavioural: MetricStatistics  # the model's own target-block probability (metric "target_block_probability")
    metrics: dict[str, MetricStatistics]  # every non-constant metric array (the exploratory family + the primary's)
    constant: list[str]  # arrays constant by construction: not tested
    top: dict[str, list[str]]  # r -> keys ordered by strength (significant first, then oriented AUROC at best_j)
    timings: dict[str, float]
    versions: dict[str, Any]


def write_horizon(directory: Path, payload: dict[str, Any]) -> Path:
    """Validate ``payload`` against the schema, then write horizon.json atomically."""
    return atomic_write_validated(directory / HORIZON_FILE, Horizon, payload)


def read_horizon(directory: Path) -> dict[str, Any] | None:
    """The parsed, validated horizon.json in ``directory``, or None (missing or invalid)."""
    try:
        return Horizon.model_validate(json.loads((directory / HORIZON_FILE).read_text())).model_dump(mode="json")
    except (OSError, ValueError):
        return None
