"""result.json: the schema, validated before every write, and the atomic writer.

The field names are a contract (DESIGN.md): ``curves.train_loss`` (every optimiser step),
``curves.edge_compliance``, ``curves.rule_compliance`` (the gate's rule aggregate: the worst
rule under ``every_rule``) and ``curves.rule_compliance_per_jumper`` (every epoch), the
``training`` block (``gate_passed``, ``gate_epoch``, ``epochs_trained``, ``failure_reason``,
``final_edge_compliance``, ``final_rule_compliance``, ``excluded_from_analysis``), and ``rules``:
every rule's identity and final compliance beside its rule-blind chance levels.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..storage import atomic_write_validated

RESULT_FILE = "result.json"
RESULT_SCHEMA_VERSION = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Curves(_Strict):
    train_loss: list[float]
    edge_compliance: list[float | None]
    rule_compliance: list[float | None]
    rule_compliance_per_jumper: list[list[float | None]]  # [epoch][rule]
    rule_events: list[int]

    @model_validator(mode="after")
    def _consistent(self) -> "Curves":
        epochs = len(self.edge_compliance)
        if not (epochs == len(self.rule_compliance) == len(self.rule_compliance_per_jumper) == len(self.rule_events)):
            raise ValueError("per-epoch curves must have one entry per evaluated epoch")
        if len({len(rules) for rules in self.rule_compliance_per_jumper}) > 1:
            raise ValueError("rule_compliance_per_jumper must hold every rule at every epoch")
        if any(not math.isfinite(x) for x in self.train_loss):
            raise ValueError("train_loss holds a non-finite value; store finite losses only")
        return self


class TrainingOutcome(_Strict):
    gate_passed: bool
    gate_epoch: int | None
    epochs_trained: int = Field(ge=0)
    steps_trained: int = Field(ge=0)
    steps_per_epoch: int = Field(ge=1)
    total_steps: int = Field(ge=1)
    failure_reason: str | None
    final_edge_compliance: float | None
    final_rule_compliance: float | None
    excluded_from_analysis: bool

    @model_validator(mode="after")
    def _consistent(self) -> "TrainingOutcome":
        if self.gate_passed and (self.gate_epoch is None or self.excluded_from_analysis or self.failure_reason):
            raise ValueError("a passed gate needs gate_epoch, no failure_reason, and inclusion in analysis")
        if not self.gate_passed and not self.excluded_from_analysis:
            raise ValueError("a run whose gate did not pass must be excluded from analysis")
        return self


class Evaluation(_Strict):
    """The most recent gate evaluation in full."""

    epoch: int
    prompt: Literal["jumper_prefix", "first_token"]
    rule_aggregate: Literal["every_rule", "mean_rule", "pooled"]
    rule_score: float | None
    worst_rule: int | None
    passed: bool
    failure_reason: str | None
    sequences: int
    distinct_sequences: int
    generated_tokens: int
    edge_compliance: float | None
    edge_transitions: int
    rule_compliance: float | None
    rule_events: int
    rule_compliance_by_r: dict[str, float]
    rule_events_by_r: dict[str, int]
    rule_compliance_by_jumper: dict[str, float]
    rule_events_by_jumper: dict[str, int]
    seconds: float


class Rule(_Strict):
    """One jumper rule: who it is, how the model does on it, and what a rule-blind model gets."""

    rule: int = Field(ge=0)
    vertex: int
    block: int
    target_block: int
    r: int
    gate_events: int = Field(ge=0, description="events the last gate evaluation scored for this rule")
    compliance: float | None = Field(description="the model's compliance at the last evaluated epoch")
    chance_bigram_argmax: float | None = Field(description="the bigram-argmax policy on the gate's own prompts")
    chance_bigram_sampling: float = Field(ge=0, le=1, description="expected compliance of sampling the training bigrams")


class RuleBlindBaseline(_Strict):
    """The bigram-argmax policy judged by the gate exactly as the model is."""

    edge_compliance: float | None
    rule_compliance_pooled: float | None
    rule_score: float | None
    passed: bool
    failure_reason: str | None


class Result(_Strict):
    schema_version: int = RESULT_SCHEMA_VERSION
    experiment_id: str
    status: Literal["running", "finished"]
    config: dict[str, Any]
    config_hash: str
    data_hash: str
    curves: Curves
    training: TrainingOutcome
    evaluation: Evaluation | None
    rules: list[Rule]
    rule_blind_baseline: RuleBlindBaseline
    data: dict[str, Any]
    environment: dict[str, Any]
    timings: dict[str, Any]


def write_result(directory: Path, payload: dict[str, Any]) -> Path:
    """Validate ``payload`` against the schema, then write result.json atomically."""
    return atomic_write_validated(directory / RESULT_FILE, Result, payload)


def read_result(directory: Path) -> dict[str, Any] | None:
    """The parsed result.json of a run folder, or None when there is none or it is unreadable."""
    path = directory / RESULT_FILE
    try:
        return Result.model_validate(json.loads(path.read_text())).model_dump(mode="json")
    except (OSError, ValueError):
        return None
