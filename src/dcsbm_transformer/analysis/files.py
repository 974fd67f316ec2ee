"""The analysis stage's files: ``results/<id>/analysis/<name>/`` per analysis, and ``analysis/index.json``.

**Analyses coexist.** Each analysis of a run lives in its own folder, named by its settings
(``<events>ev-<greedy|tT>-<hash>``) or by a label the user gave (``--name``); the settings are the
analysis block it was made with (events, stream, temperature, primary, statistics…), the metric
set (every registered metric's name and version), the checkpoint and the precision. An analysis
with other settings goes to another folder: nothing is overwritten. ``analysis/index.json`` lists
them (name, labels, settings digest, when, whether made from the run's own config).

**One order for every per-pass array: lookback.** Column ``j`` of every ``[events, lookbacks]``
array in ``token_metrics.npz`` (and list index ``j`` in ``horizon.json``, and the x axis of every
figure) is lookback ``j``: the pass that emits token ``s + r − j``. ``j = 0`` emits the deadline
token; ``j = r − 1`` is pass 1, whose window ends at the jumper. Columns ``j ≥ r`` of an event do
not exist: NaN (float), −1 (``edge_valid``), 0 (``rule_outcome``). Only ``tokens`` and
``context_tokens`` are in time order.

``token_metrics.npz``: one float32 array [events, lookbacks] per
``<target>.layer_<L>.head_<H>.<metric>`` (NaN where undefined). The labels: ``event_r``,
``event_step``, ``event_vertex``, ``event_target_block``, ``event_jumper``, ``violated``,
``first_bad_edge_pass`` (the pass number k of the first generated non-edge, 0 = none) [events];
``edge_valid`` (1/0), ``rule_outcome`` (0 no rule due, 1 followed, 2 violated),
``target_block_probability`` [events, lookbacks]; ``tokens`` int32 [events, w + max r] (the
prompt window, then the generated tokens, −1 past r), so any value can be recomputed from the
model and these tokens alone. ``context.<key>`` float32 [events]: the context-only baseline,
every metric at the window ending at s − 1 (before the jumper entered it; temporal metrics
against the window ending at s − 2), recomputable from ``context_tokens`` int32 [events, w + 1]
(walk tokens s − w − 1 .. s − 1).

``spectra.npz`` (its own ``schema_version``, ``SPECTRA_SCHEMA_VERSION``): the spectrum trajectories, the top
K = min(8, m) singular values of every window, float16 (float32 when a value exceeds float16's range).
``<target>.layer_<L>.head_<H>`` [events, lookbacks, K] in lookback order (NaN where j ≥ r), and
``context.<target>.layer_<L>.head_<H>`` [events, 2, K]: the context windows ending at s − 2 and s − 1
(time order); ``event_r`` [events]; ``schema_version`` (0-d). ``Analysis.spectra`` reads it.

``summary.json`` (validated before it is written, and written last: a summary whose checksum
matches its npz vouches for a finished analysis): counts per class, per r and per rule, guard
hits per metric, metrics constant by construction, W_v·W_o reference spectra, settings,
timings, versions.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..storage import atomic_write_json, atomic_write_validated, read_npz, sha256_file, write_npz

ANALYSIS_DIR = "analysis"
TOKEN_METRICS_FILE = "token_metrics.npz"
CONTEXT_PREFIX = "context."
SUMMARY_FILE = "summary.json"
INDEX_FILE = "index.json"
# 2: events need s >= w + 1, the context windows are measured (context.<key>, context_tokens) and
# pass 1's temporal metrics compare with the window before the jumper; a version-1 analysis is redone.
# 3: one folder per analysis, arrays in lookback order, the settings carry the analysis block and the
# metric set; an analysis of an earlier version (at the top of analysis/) is never read.
SUMMARY_SCHEMA_VERSION = 3
SPECTRA_FILE = "spectra.npz"
# 1: the first version (issue 26): top-8 singular values of every window, lookback order, the context windows apart
SPECTRA_SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Settings(_Strict):
    """Everything that changes what the analysis computes; same settings ⇒ the same folder, reused."""

    events: int = Field(ge=1)
    stream: str
    top_k: int = Field(ge=1)
    temperature: float = Field(ge=0)
    precision: str
    checkpoint: str  # the checkpoint file the model came from
    checkpoint_sha256: str
    include_failed: bool
    metrics: dict[str, int] = Field(description="the metric set: every registered metric's name and version")
    analysis: dict[str, Any] = Field(description="the analysis block used (chunk_mb aside: it changes no value)")


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
    analysis_name: str  # its folder under analysis/
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


def settings_digest(settings: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``settings``: an analysis's identity."""
    canonical = json.dumps(Settings.model_validate(settings).model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def default_name(settings: dict[str, Any]) -> str:
    """``16000ev-greedy-1a2b3c4d``: events, continuations and the settings digest."""
    temperature = settings["temperature"]
    mode = "greedy" if temperature == 0 else f"t{temperature:g}"
    return f"{settings['events']}ev-{mode}-{settings_digest(settings)[:8]}"


# --------------------------------------------------------------------------------------------------
# analysis/index.json: every analysis of a run


class IndexEntry(_Strict):
    name: str  # the folder under analysis/
    labels: list[str] = Field(default_factory=list, description="other names given to the same analysis (--name)")
    settings_sha256: str
    created: str
    from_run_config: bool = Field(description="made with the run folder's own analysis block (what `make run` makes)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="analysis keys set on the command line (--set)")


class AnalysisIndex(_Strict):
    schema_version: int = 1
    analyses: list[IndexEntry]


def analysis_root(run_dir: Path) -> Path:
    return Path(run_dir) / ANALYSIS_DIR


def read_index(run_dir: Path) -> list[dict[str, Any]]:
    """The entries of ``analysis/index.json`` (empty when there is none yet)."""
    path = analysis_root(run_dir) / INDEX_FILE
    if not path.is_file():
        return []
    try:
        return AnalysisIndex.model_validate(json.loads(path.read_text())).model_dump(mode="json")["analyses"]
    except ValueError as error:
        raise ValueError(f"{path}: not a valid analysis index ({' '.join(str(error).split())[:200]})") from None


def record_analysis(
    run_dir: Path, name: str, settings: dict[str, Any], *, label: str | None, from_run_config: bool, overrides: dict[str, Any]
) -> None:
    """Add (or update the labels of) an analysis in ``analysis/index.json``; call under the run lock."""
    entries = read_index(run_dir)
    digest = settings_digest(settings)
    entry = next((e for e in entries if e["name"] == name), None)
    if entry is None:
        entry = {
            "name": name,
            "labels": [],
            "settings_sha256": digest,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "from_run_config": from_run_config,
            "overrides": overrides,
        }
        entries.append(entry)
    entry["from_run_config"] = entry["from_run_config"] or from_run_config
    if label and label != name and label not in entry["labels"]:
        entry["labels"].append(label)
    payload = AnalysisIndex.model_validate({"analyses": entries}).model_dump(mode="json")
    atomic_write_json(analysis_root(run_dir) / INDEX_FILE, payload)


def find_analysis(run_dir: Path, name: str | None = None) -> str:
    """The folder name of the analysis called ``name`` (a folder name or a label); with None, the
    default: the newest made from the run's own config (else the only one). Raises
    FileNotFoundError listing the analyses there are."""
    entries = read_index(run_dir)
    names = ", ".join(e["name"] + (f" (also {', '.join(e['labels'])})" if e["labels"] else "") for e in entries) or "none"
    if name is None:
        own = [e for e in entries if e["from_run_config"]]
        if own:
            return own[-1]["name"]
        if len(entries) == 1:
            return entries[0]["name"]
        raise FileNotFoundError(f"{analysis_root(run_dir)}: no default analysis; name one of: {names}")
    for entry in entries:
        if name == entry["name"] or name in entry["labels"]:
            return entry["name"]
    raise FileNotFoundError(f"{analysis_root(run_dir)}: no analysis named {name!r} (analyses: {names})")


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
    if not (directory / SPECTRA_FILE).is_file():
        return None  # written before the summary: without it the analysis did not finish
    return summary


# --------------------------------------------------------------------------------------------------
# spectra.npz: the spectrum trajectories (the top singular values of every window)


def _lookback_order(values: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Pass-ordered ``values`` [E, passes, K] re-indexed by lookback, as ``statistics.lookback_view`` (column j = pass r − j)."""
    max_r = int(r.max()) if r.size else 0
    column = r[:, None] - 1 - np.arange(max_r)[None, :]
    valid = column >= 0
    out = np.take_along_axis(values, np.where(valid, column, 0)[:, :, None], axis=1)
    out[~valid] = np.nan
    return out


def write_spectra(directory: Path, r: np.ndarray, spectra: dict[str, np.ndarray], context_spectra: dict[str, np.ndarray]) -> Path:
    """Write spectra.npz from ``measure``'s pass-ordered ``spectra`` [E, passes, K] and ``context_spectra`` [E, 2, K].

    float16 halves the file at ~3 significant digits (relative rounding 4.9e-4, enough to draw and explore a
    trajectory; the metrics are computed from the float64 values, not from this file); a key whose finite values
    exceed float16's range (6.55e4) is written as float32 instead, never as inf."""
    r = np.asarray(r, dtype=np.int64)
    arrays: dict[str, np.ndarray] = {"schema_version": np.array(SPECTRA_SCHEMA_VERSION), "event_r": r}
    limit = float(np.finfo(np.float16).max)
    for key, values in spectra.items():
        for name, array in ((key, _lookback_order(values, r)), (CONTEXT_PREFIX + key, context_spectra[key])):
            fits = not (np.abs(array[np.isfinite(array)]) > limit).any()
            arrays[name] = array.astype(np.float16 if fits else np.float32)
    return write_npz(directory / SPECTRA_FILE, arrays)


def read_spectra(directory: Path) -> dict[str, np.ndarray]:
    """Every array of an analysis's spectra.npz; FileNotFoundError when it is missing (an analysis made before
    spectra were stored: re-run dcsbm analyze) or of another schema version (never misread)."""
    path = Path(directory) / SPECTRA_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing — this analysis was made before spectrum trajectories were stored (re-run dcsbm analyze)"
        )
    arrays = read_npz(path)
    version = int(arrays["schema_version"]) if "schema_version" in arrays else None
    if version != SPECTRA_SCHEMA_VERSION:
        raise FileNotFoundError(
            f"{path}: schema_version {version}, this version reads {SPECTRA_SCHEMA_VERSION} (re-run dcsbm analyze)"
        )
    return arrays


# --------------------------------------------------------------------------------------------------
# horizon.json: the statistics of every metric (analysis.stats.horizon builds it)

HORIZON_FILE = "horizon.json"
# 2: lookback-ordered arrays, the registration check, the held-out confirmatory test and its verdict,
# the headline; a version-1 horizon.json is recomputed, never read.
# 3: AUPRC beside every AUROC (value, interval, prevalence, permutation p), the calibration of the
# incremental-value models, the jumper-free null; a version-2 horizon.json is recomputed, never read.
HORIZON_SCHEMA_VERSION = 3
Number = float | None  # JSON has no NaN: undefined values (too few events, no such lookback) are null


class ContextOnly(_Strict):
    """The metric on the window ending just before the jumper (s − 1): the signal already in the input."""

    auroc: Number
    ci_low: Number
    ci_high: Number


class VersusBehaviour(_Strict):
    """The metric against the model's target-block probability at every lookback j >= 1, with a
    simultaneous band (max-|t| over j, DeLong covariance across lookbacks): its error rate holds
    after the lookback is chosen. Each side oriented in the direction it separates; the row shows
    the lookback that carries the verdict (the largest t when better somewhere, the smallest when
    only worse, else the largest |t|)."""

    j: int
    metric_auroc: Number  # oriented: > 0.5 means the metric separates in its direction
    behavioural_auroc: Number  # oriented the same way for the behavioural predictor
    delta: Number
    ci_low: Number  # simultaneous band at j
    ci_high: Number
    p_value: Number  # adjusted for the choice of lookback: P(max_k |Z_k| >= |t_j|)
    verdict: str  # "better than the logits" | "no better than the logits" | "worse than the logits"
    better_at: list[int]  # lookbacks where the band lies above 0
    worse_at: list[int]  # lookbacks where it lies below 0
    critical: Number  # the band's critical value c (|t| quantile of the max over lookbacks)


class Reliability(_Strict):
    """Calibration of one model's out-of-fold probabilities (``analysis.stats.calibration``)."""

    bins: int
    binning: str  # stated: equal-count bins of the predicted probability, out-of-fold predictions
    events: int
    mean_predicted: list[float]  # per bin
    observed: list[float]  # per bin: the violation share
    count: list[int]
    ece: Number  # sum_b n_b / N |observed_b - mean_predicted_b|
    ece_calibrated_95: Number  # 95th percentile of the ECE of outcomes drawn from the predictions themselves
    p_value: Number  # consistency resampling: small = miscalibrated beyond chance


class Calibration(_Strict):
    full: Reliability  # with the metric
    reduced: Reliability  # without it


class Incremental(_Strict):
    """Nested logistic models within jumper at lookback j (``analysis.stats.incremental``): the metric beyond its bases."""

    j: int
    events: int
    violations: int
    bases: list[str]
    lr_statistic: Number
    p_value: Number  # likelihood-ratio chi-square(1)
    p_adjusted: Number  # Holm across the metrics tested for incremental value in this r (the registered test: its own p)
    coefficient: Number  # per standard deviation of the metric, log-odds
    auroc_reduced: Number  # cross-validated, jumper-stratified
    auroc_full: Number
    gain: Number  # auroc_full - auroc_reduced, paired DeLong 95% CI
    gain_ci_low: Number
    gain_ci_high: Number
    calibration: Calibration | None  # of both models' out-of-fold probabilities; None where they could not be made
    note: str


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
    incremental: Incremental | None = None  # the primary and every metric significant after Holm
    # AUPRC beside the AUROC (analysis.stats.precision): jumper-stratified average precision in the orientation below
    auprc: list[Number]
    auprc_ci_low: list[Number]  # 95%, logit scale, jackknife + binomial variance
    auprc_ci_high: list[Number]
    prevalence: list[Number]  # the no-skill line: the violation prevalence, weighted as the AUPRC
    auprc_orientation: str | None  # "higher" | "lower": the metric's side that predicts a violation
    auprc_p_value: Number  # max over j >= 1 of AUPRC - prevalence, the AUROC's shuffles; doubled when two-sided
    auprc_p_adjusted: Number  # Holm across the exploratory family (the registered primary: its own p)
    auprc_p_per_j: list[Number]
    auprc_permutations: int  # how many of the AUROC's shuffles (the first ones) tested it


class MetricStatistics(_Strict):
    target: str
    layer: int
    head: int
    metric: str
    by_r: dict[str, Separation]


class PrimaryResult(_Strict):
    registered: bool = Field(description="true only when this is the run's registered hypothesis in the registered analysis")
    key: str  # the token_metrics.npz array tested
    target: str
    layer: int  # resolved (analysis.primary.layer -1 = the last layer)
    head: int
    metric: str
    direction: str  # pre-registered: "higher" | "lower" before violations
    statement: str  # the hypothesis in words
    by_r: dict[str, Separation]
    summary: str  # the result in one sentence with its numbers


class RegistrationStatus(_Strict):
    status: str  # "confirmatory" | "exploratory"
    reasons: list[str]  # why the analysis is exploratory (empty when confirmatory)
    registered_at: str | None
    registered_statement: str | None
    registered_primary: dict[str, Any] | None
    decision: dict[str, Any] | None


class Split(_Strict):
    """The held-out events: seeded, stratified by jumper; everything but the registered test uses the rest."""

    confirmatory_fraction: float
    stream: str
    exploratory_events: int
    confirmatory_events: int
    counts_by_r: dict[str, dict[str, int]]  # r -> {"exploratory_violations", ... }


class VersusBaseline(_Strict):
    baseline: str
    baseline_auroc: Number  # oriented as the registered direction (> 0.5: separates that way)
    delta: Number
    ci_low: Number
    ci_high: Number
    beaten: bool


class ConfirmatoryTest(_Strict):
    """The registered test, on the held-out events only, in one r stratum."""

    status: str  # "ok" | "insufficient"
    n_violations: int
    n_successes: int
    p_value: Number  # one-sided within-jumper permutation, max over j >= 1
    j: int | None  # the lookback chosen on the exploratory events
    auroc: Number  # at j, on the held-out events (a single pre-chosen lookback: no selection on these data)
    ci_low: Number
    ci_high: Number
    oriented_auroc: Number  # in the registered direction
    min_effect_auroc: float
    versus: list[VersusBaseline]
    incremental: Incremental | None  # the registered incremental test: beyond its context value and the logits, at j
    verdict: str  # "confirmed" | "inconclusive" | "rejected" | "insufficient"
    reasons: list[str]


class HolmFamily(_Strict):
    """The exploratory family's size and the permutations it got: Holm's floor is m / (P + 1), so P is
    raised (``statistics.permutations_needed``) until the floor is below alpha / 2."""

    family_size: int
    permutations_requested: int
    permutations_used: int
    floor: Number


class HorizonSettings(_Strict):
    permutations: int
    min_events: int
    horizon_threshold: float
    alpha: float
    confidence_interval: str
    test: str
    stratification: str
    family: str
    events: str
    seed: int
    stream: str
    auprc: str  # the AUPRC's definition, interval and test, in words
    null: str  # the jumper-free null's matching and test, with analysis.null_multiple and null_max_events


class NullBands(_Strict):
    q10: list[Number]  # per lookback
    q50: list[Number]
    q90: list[Number]


class NullQuantiles(_Strict):
    violations: NullBands
    successes: NullBands
    null: NullBands


class NullSuccesses(_Strict):
    """Successes vs the null: jumper-stratified AUROC per lookback with its DeLong 95% CI (descriptive)."""

    auroc: list[Number]
    ci_low: list[Number]
    ci_high: list[Number]


class NullEntry(_Strict):
    """One metric, one r: violations vs the position-matched jumper-free null (``analysis.stats.null``)."""

    status: str
    n_violations: int
    n_null: int
    n_successes: int
    auroc: list[Number]  # P(violation's value > null's), within the matched rule, per lookback
    ci_low: list[Number]
    ci_high: list[Number]
    auprc: list[Number]
    prevalence: list[Number]
    p_value: Number  # within-rule permutation, max over j >= 1, two-sided
    p_adjusted: Number  # Holm across the null family of this r (its own family)
    p_per_j: list[Number]
    significant: bool | None
    best_j: int | None
    direction: str | None
    successes_vs_null: NullSuccesses
    quantiles: NullQuantiles


class NullMetric(_Strict):
    by_r: dict[str, NullEntry]


class NullSection(_Strict):
    """Is the signal a response to rule events at all? The metrics on walks under no rule (``null_metrics.npz``)."""

    null_multiple: int
    null_max_events: int
    events: int
    per_violation: float  # null events per violation, as drawn
    generated_jumpers: int  # null continuations in which the model emitted a jumper (later passes NaN)
    unmatched: int = 0  # null events left out: no drawn walk was rule-free at their step (absent before: none)
    permutations: int
    auprc_permutations: int
    family_size: int
    floor: Number
    stream: str
    sha256: str  # of the null_metrics.npz it was computed from
    metrics: dict[str, NullMetric]
    answer: list[str]


class Horizon(_Strict):
    schema_version: int = HORIZON_SCHEMA_VERSION
    experiment_id: str
    analysis_name: str
    exploratory: bool = Field(description="true when nothing in it is confirmatory: gate failed, or not the registered analysis")
    exploratory_reason: str | None
    token_metrics_sha256: str
    settings: HorizonSettings
    registration: RegistrationStatus
    split: Split
    confirmatory: dict[str, ConfirmatoryTest] | None  # r -> the registered test; None in an exploratory analysis
    headline: list[str]  # the plain-language verdict, two or three sentences
    # the primary on edge-clean events only (every generated edge valid up to the lookback): its exploratory
    # separation, the registered verdict there, and whether the answer holds; None without first_bad_edge_pass
    sensitivity: dict[str, Any] | None
    holm: HolmFamily
    r_values: list[int]
    counts_by_r: dict[str, dict[str, int]]  # r -> {"violations", "successes"}
    primary: PrimaryResult
    behavioural: MetricStatistics  # the model's own target-block probability (metric "target_block_probability")
    # the other baselines (analysis.measure.behaviour): rule_feasible_mass, output_entropy, oracle_kl (target "logits") and
    # attention_jumper.layer_<L>.head_<H> (target "attention"); two-sided, not in the exploratory family
    baselines: dict[str, MetricStatistics]
    metrics: dict[str, MetricStatistics]  # every non-constant metric array (the exploratory family + the primary's)
    constant: list[str]  # arrays constant by construction: not tested
    top: dict[str, list[str]]  # r -> keys ordered by strength (significant first, then oriented AUROC at best_j)
    null: NullSection | None  # the jumper-free null; None when off (analysis.null_multiple 0) or without violations
    timings: dict[str, float]
    versions: dict[str, Any]


def write_horizon(directory: Path, payload: dict[str, Any]) -> Path:
    """Validate ``payload`` against the schema, then write horizon.json atomically."""
    return atomic_write_validated(directory / HORIZON_FILE, Horizon, payload)


def read_horizon(directory: Path) -> dict[str, Any] | None:
    """The parsed, validated horizon.json in ``directory``, or None (missing, invalid, or of an
    earlier schema: recomputed, never misread)."""
    try:
        raw = json.loads((directory / HORIZON_FILE).read_text())
        if raw.get("schema_version") != HORIZON_SCHEMA_VERSION:
            return None
        return Horizon.model_validate(raw).model_dump(mode="json")
    except (OSError, ValueError, AttributeError):
        return None
