"""The pre-registration of a run: ``results/<id>/preregistration.json``, written once when the run
folder is created — before training, before any analysis exists — and never rewritten.

It fixes, from the config the run was created with, the one confirmatory hypothesis and how it
will be judged:

* the **primary hypothesis** (``analysis.primary``: target, layer — resolved, −1 = last —, head,
  metric with its registry version, direction before violations) and the **secondary** one (the
  same metric on AVWₒ, ``analysis.avwo_direction``: the direction its horizon is read in);
* the **analysis it is tested in** (events, stream, top_k, temperature, permutations,
  min_events, horizon threshold) — an analysis with other values of these is exploratory;
* the **decision rule**: α; the held-out share of the events (``confirmatory_fraction``, split
  seeded and stratified by jumper) used for the registered test alone; the registered effect
  size (``min_effect_auroc``); the probability-level baseline to beat (the model's own
  target-block probability). The verdict is *confirmed* (permutation p < α, AUROC at the
  lookback chosen on the exploratory events ≥ the registered size, and the paired difference
  with the baseline there has a 95% CI above 0), *inconclusive* (significant but too small or
  no better than the baseline), or *rejected* (not significant).

``registration_check`` compares an analysis's settings with the registration: any difference
makes that analysis exploratory, with the reason in words. A run created before registrations
were recorded has none, and every analysis of it is exploratory. The file is written with
exclusive creation: an existing registration is never replaced, whatever the config says now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .config import ExperimentConfig
from .storage import write_once

REGISTRATION_FILE = "preregistration.json"
REGISTRATION_SCHEMA_VERSION = 1
# The analysis keys a registered test depends on; any other analysis key (chunk_mb) changes no value.
REGISTERED_ANALYSIS_KEYS = ("events", "stream", "top_k", "temperature", "permutations", "min_events", "horizon_threshold")
BASELINE = "target_block_probability"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisteredPrimary(_Strict):
    target: str
    layer: int = Field(ge=0, description="resolved: -1 in the config is the last layer")
    head: int = Field(ge=0)
    metric: str
    metric_version: int = Field(ge=1)
    direction: str  # "higher" | "lower" before violations
    key: str  # the token_metrics.npz array: <target>.layer_<L>.head_<H>.<metric>


class DecisionRule(_Strict):
    alpha: float
    confirmatory_fraction: float = Field(description="share of events per jumper held out for the registered test")
    split_stream: str = Field(description="random stream of the held-out split: (seed, analysis.stream, 'split')")
    min_effect_auroc: float
    baselines: list[str] = Field(description="probability-level predictors the primary must beat at the chosen lookback")
    test: str
    verdicts: dict[str, str]


class Secondary(_Strict):
    """The declared secondary hypothesis: the primary's metric on AVWₒ at the same layer and head."""

    key: str
    direction: str


class Registration(_Strict):
    schema_version: int = REGISTRATION_SCHEMA_VERSION
    experiment_id: str
    config_hash: str
    registered_at: str = Field(description="UTC time the run folder was created, before training and any analysis")
    statement: str
    primary: RegisteredPrimary
    secondary: Secondary | None = None  # None in a registration written before the secondary was recorded
    analysis: dict[str, Any] = Field(description="the analysis settings the registered test is made in")
    decision: DecisionRule


def _metric_version(metric: str) -> int:
    from .analysis.measure.metrics import METRICS  # the registry is the one list of metric names and versions

    return int(getattr(METRICS[metric], "version", 1))


def primary_of(config: ExperimentConfig) -> dict[str, Any]:
    """The primary hypothesis of ``config`` in registered form (layer resolved, metric versioned)."""
    p = config.analysis.primary
    layer = p.layer % config.model.n_layers
    return {
        "target": p.target,
        "layer": layer,
        "head": p.head,
        "metric": p.metric,
        "metric_version": _metric_version(p.metric),
        "direction": p.direction,
        "key": f"{p.target}.layer_{layer}.head_{p.head}.{p.metric}",
    }


def secondary_of(config: ExperimentConfig) -> dict[str, Any]:
    """The declared secondary hypothesis of ``config``: the primary's metric on AVWₒ, ``analysis.avwo_direction``."""
    primary = primary_of(config)
    return {
        "key": f"avwo.layer_{primary['layer']}.head_{primary['head']}.{primary['metric']}",
        "direction": config.analysis.avwo_direction,
    }


def registered_analysis(config: ExperimentConfig) -> dict[str, Any]:
    a = config.analysis.model_dump(mode="json")
    return {key: a[key] for key in REGISTERED_ANALYSIS_KEYS}


def decision_rule(config: ExperimentConfig) -> dict[str, Any]:
    a = config.analysis
    return {
        "alpha": a.alpha,
        "confirmatory_fraction": a.confirmatory_fraction,
        "split_stream": f"{a.stream}/split",
        "min_effect_auroc": a.min_effect_auroc,
        "baselines": [BASELINE],
        "test": "on the held-out events only: within-jumper permutation test, one-sided in the registered direction, "
        "statistic max over lookbacks j >= 1; the lookback j* for effect size and baselines is the best one on the "
        "exploratory events (never chosen on the held-out ones)",
        "verdicts": {
            "confirmed": "p < alpha, AUROC at j* >= min_effect_auroc, and the paired DeLong difference with every baseline "
            "at j* has its 95% CI above 0",
            "inconclusive": "p < alpha, but the effect is below min_effect_auroc or no better than a baseline",
            "rejected": "p >= alpha",
        },
    }


def registration_payload(config: ExperimentConfig, registered_at: str | None = None) -> dict[str, Any]:
    primary = primary_of(config)
    return {
        "schema_version": REGISTRATION_SCHEMA_VERSION,
        "experiment_id": config.experiment_id,
        "config_hash": config.config_hash,
        "registered_at": registered_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "statement": config.analysis.primary.describe(),
        "primary": primary,
        "secondary": secondary_of(config),
        "analysis": registered_analysis(config),
        "decision": decision_rule(config),
    }


def register(run_dir: Path, config: ExperimentConfig) -> Path:
    """Write ``preregistration.json`` into a new run folder with exclusive creation (never replaced).

    Called before training writes anything else the analysis could use; a folder that already
    holds a registration keeps it.
    """
    path = Path(run_dir) / REGISTRATION_FILE
    payload = Registration.model_validate(registration_payload(config)).model_dump(mode="json")
    write_once(path, (json.dumps(payload, indent=2) + "\n").encode())
    return path


def read_registration(run_dir: Path) -> dict[str, Any] | None:
    """The validated registration of a run folder, or None when it has none. An unreadable one
    raises ValueError: a registration is never silently ignored."""
    path = Path(run_dir) / REGISTRATION_FILE
    if not path.is_file():
        return None
    try:
        return Registration.model_validate(json.loads(path.read_text())).model_dump(mode="json")
    except ValueError as error:
        raise ValueError(f"{path}: not a valid pre-registration ({' '.join(str(error).split())[:300]})") from None


@dataclass(frozen=True)
class RegistrationCheck:
    """Whether an analysis is the registered one. ``confirmatory`` only when every registered
    setting matches; ``reasons`` says, in words, what differs."""

    confirmatory: bool
    reasons: list[str]
    registration: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        r = self.registration
        return {
            "status": "confirmatory" if self.confirmatory else "exploratory",
            "reasons": self.reasons,
            "registered_at": r["registered_at"] if r else None,
            "registered_statement": r["statement"] if r else None,
            "registered_primary": r["primary"] if r else None,
            "decision": r["decision"] if r else None,
        }


def registration_check(registration: dict[str, Any] | None, config: ExperimentConfig, *, gate_passed: bool) -> RegistrationCheck:
    """Compare the analysis ``config`` describes (its ``analysis`` block as used) with the run's registration."""
    if registration is None:
        return RegistrationCheck(False, ["the run has no pre-registration (created before registrations were recorded)"], None)
    reasons = []
    if not gate_passed:
        reasons.append("the run's gate did not pass")
    if registration["config_hash"] != config.config_hash:
        reasons.append("the registration belongs to another config (its config hash differs)")
    now = primary_of(config)
    was = registration["primary"]
    if now != was:
        differs = ", ".join(f"{k} {was[k]!r} → {now[k]!r}" for k in was if k != "key" and was[k] != now[k])
        reasons.append(f"its primary hypothesis is not the registered one ({differs}; registered {registration['registered_at']})")
    settings = registered_analysis(config)
    for key, value in registration["analysis"].items():
        if settings.get(key) != value:
            reasons.append(f"analysis.{key} is {settings.get(key)!r}, registered {value!r}")
    decision = decision_rule(config)
    for key in ("alpha", "confirmatory_fraction", "min_effect_auroc"):
        if decision[key] != registration["decision"][key]:
            reasons.append(f"analysis.{key} is {decision[key]!r}, registered {registration['decision'][key]!r}")
    if registration["decision"]["confirmatory_fraction"] == 0:
        reasons.append("the registration holds out no events (confirmatory_fraction 0): no confirmatory test")
    return RegistrationCheck(not reasons, reasons, registration)
