"""``results/<id>/analysis/<name>/mechanism.json``: the causal measurements of one analysis's events.

Validated against :class:`Mechanism` before it is written (atomically, ``storage.atomic_write_validated``);
a file that does not validate, has another schema version or other settings is measured again,
never misread. Every proportion is ``{k, n, share, ci_low, ci_high}`` (95% Wilson); JSON has no
NaN, so undefined values are null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..storage import atomic_write_validated

MECHANISM_FILE = "mechanism.json"
MECHANISM_SCHEMA_VERSION = 2  # 2: the perturbation-bound test (mechanism.perturbation)
Number = float | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Proportion(_Strict):
    k: int = Field(ge=0)
    n: int = Field(ge=0)
    share: Number
    ci_low: Number  # 95% Wilson score interval
    ci_high: Number


class RuleProportion(Proportion):
    rule: int
    drop: Number = None  # intact share minus this share (None for the intact model and for patch)


class ConditionResult(_Strict):
    """One condition: the model intact, an intervention on some layers (and heads), or the patched prompts."""

    name: str  # "intact", "knockout.layer_0", "mean_ablation.all", "patch", ...
    kind: str  # intact | knockout | mean_ablation | patch
    layers: list[int]
    heads: list[int] | None  # None = every head
    description: str
    rule: Proportion  # pooled over rules (patch: obeys the *patched* jumper's rule)
    rules: list[RuleProportion]  # per original rule
    edge: Proportion  # generated transitions that are edges
    edge_clean_events: Proportion  # events whose every scored generated transition is an edge
    attention_on_jumper: dict[str, Number] = Field(
        description="layer_L.head_H -> mean weight from the last position to the jumper over passes 2..min(r, w)"
    )


class PatchRule(_Strict):
    rule: int  # the original rule of the events
    patched_with: list[int]  # rules patched in
    same_block: bool | None
    chance_patched_target: Number  # rule-blind sampling chance of the patched rule
    patched_target: Proportion
    original_target: Proportion
    elsewhere: Proportion


class PatchResult(_Strict):
    same_block: Proportion  # patches with a jumper of the original's block
    prompt_edge: Proportion  # patched prompts whose last transition is an edge
    note: str
    pooled: dict[str, Proportion]  # patched_target | original_target | elsewhere
    by_rule: list[PatchRule]
    edge: Proportion


class RuleInfo(_Strict):
    rule: int
    vertex: int
    block: int
    target_block: int
    r: int
    events: int
    chance_sampling: Number  # rule-blind bigram sampler: P(in the target block r steps after the jumper)
    chance_argmax: Number  # rule-blind bigram argmax policy (0 or 1)


class AttentionStratum(_Strict):
    """Attention from the last position to the jumper, intact model, one r stratum; list index = lookback j."""

    n_violations: int
    n_successes: int
    status: str  # "ok" | "insufficient" (a class below analysis.min_events: no AUROC)
    violations_mean: list[Number]
    violations_ci_low: list[Number]
    violations_ci_high: list[Number]
    successes_mean: list[Number]
    successes_ci_low: list[Number]
    successes_ci_high: list[Number]
    auroc: list[Number]  # P(attention higher on a violation), jumper-stratified; < 0.5: lower before violations
    auroc_ci_low: list[Number]
    auroc_ci_high: list[Number]


class AttentionHead(_Strict):
    layer: int
    head: int
    by_r: dict[str, AttentionStratum]


class PerturbationRow(_Strict):
    """One (direction kind, fraction ε, stage, layer) of the perturbation-bound test; layer None pools the layers."""

    kind: str  # random | top_singular
    fraction: float  # ‖E_M‖_F / ‖(QKᵀ)_M‖_F
    stage: str  # attention | av | avwo | block
    layer: int | None
    exceed: Proportion  # cases whose observed change exceeds the bound (a true bound: 0)
    tightness_q10: float  # observed / bound
    tightness_median: float
    tightness_q90: float
    tightness_max: float


class PerturbationResult(_Strict):
    settings: dict[str, Any]
    overall_exceed: Proportion
    rows: list[PerturbationRow]


class MechanismSettings(_Strict):
    """Everything that changes what is measured; the same settings ⇒ mechanism.json is reused."""

    events: int = Field(ge=1)
    layers: list[int]
    include_failed: bool
    checkpoint: str
    checkpoint_sha256: str
    analysis_name: str
    analysis_settings_sha256: str
    continuations: str
    mean_reference: str
    patch_rule: str
    perturbation_windows: int = Field(ge=1)


class Mechanism(_Strict):
    schema_version: int = MECHANISM_SCHEMA_VERSION
    experiment_id: str
    analysis_name: str
    exploratory: bool = Field(description="true when the run's gate did not pass (--include-failed)")
    exploratory_reason: str | None
    settings: MechanismSettings
    rules: list[RuleInfo]
    conditions: list[ConditionResult]
    patch: PatchResult
    attention: list[AttentionHead]
    perturbation: PerturbationResult
    findings: list[str]  # the measurements in plain words, with their numbers
    timings: dict[str, float]
    versions: dict[str, Any]


def write_mechanism(directory: Path, payload: dict[str, Any]) -> Path:
    """Validate ``payload`` against :class:`Mechanism`, then write mechanism.json atomically."""
    return atomic_write_validated(Path(directory) / MECHANISM_FILE, Mechanism, payload)


def read_mechanism(directory: Path) -> dict[str, Any] | None:
    """The parsed, validated mechanism.json in ``directory``, or None (missing, invalid, other schema)."""
    try:
        raw = json.loads((Path(directory) / MECHANISM_FILE).read_text())
        if raw.get("schema_version") != MECHANISM_SCHEMA_VERSION:
            return None
        return Mechanism.model_validate(raw).model_dump(mode="json")
    except (OSError, ValueError, AttributeError):
        return None
