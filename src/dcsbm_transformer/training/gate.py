"""The sufficiency gate: the model knows the rules when edge > edge_threshold and its rule
compliance, read as ``gate.rule_aggregate`` says, > rule_threshold.

- ``every_rule`` (default): every jumper's rule compliance must exceed the threshold. This is
  how we read the spec's "rule compliance > 80%": a model that knows two rules of four does not
  know the rules, however the events happen to be weighted.
- ``mean_rule``: the mean of the per-rule compliances (each rule weighs the same).
- ``pooled``: the share of all scored events, whatever rule they belong to (the first reading,
  kept for comparison: frequent rules can hide unlearned ones).

``gate_decision`` is a pure function of the scores, so the rule that stops training is testable
without a model: thresholds are strict, and a rule (or an evaluation) with no scored event is a
failure with its own reason, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

RuleAggregate = Literal["every_rule", "mean_rule", "pooled"]
RULE_AGGREGATES: tuple[str, ...] = ("every_rule", "mean_rule", "pooled")


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    failure_reason: str | None
    rule_score: float | None  # what was compared with rule_threshold (the worst rule under every_rule)
    worst_rule: int | None  # index of the rule with the lowest compliance (None: no rule scored)


def worst_rule(per_rule: Sequence[float | None]) -> int | None:
    """Index of the lowest compliance among the scored rules."""
    scored = [(value, j) for j, value in enumerate(per_rule) if value is not None]
    return min(scored)[1] if scored else None


def rule_score(aggregate: RuleAggregate, per_rule: Sequence[float | None], pooled: float | None) -> float | None:
    """The single rule figure the gate compares with its threshold; None when any rule it needs is unscored."""
    if aggregate == "pooled":
        return pooled
    scored = [value for value in per_rule if value is not None]
    if not per_rule or len(scored) < len(per_rule):
        return None
    return min(scored) if aggregate == "every_rule" else math.fsum(scored) / len(scored)


def _short(what: str, value: float, threshold: float) -> str:
    return f"{what} {value:.4f} is not above {threshold} (short by {threshold - value:.4f})"


def gate_decision(
    edge_compliance: float | None,
    per_rule: Sequence[float | None],
    pooled: float | None,
    edge_threshold: float,
    rule_threshold: float,
    aggregate: RuleAggregate = "every_rule",
    rule_names: Sequence[str] | None = None,
) -> GateDecision:
    """Pass or fail, with every reason for a failure. ``per_rule[j]`` is rule j's compliance (None:
    no scored event); ``pooled`` the share over all scored events; ``rule_names[j]`` names rule j
    in the failure reason."""
    if aggregate not in RULE_AGGREGATES:
        raise ValueError(f"gate.rule_aggregate must be one of {RULE_AGGREGATES}, got {aggregate!r}")
    names = list(rule_names) if rule_names is not None else [f"rule {j}" for j in range(len(per_rule))]
    worst, score = worst_rule(per_rule), rule_score(aggregate, per_rule, pooled)
    if pooled is None or worst is None:
        return GateDecision(
            False, "no rule events were scored, so rule compliance is unknown (the gate never passes blind)", None, None
        )
    if edge_compliance is None:
        return GateDecision(False, "no transitions were scored, so edge compliance is unknown", score, worst)

    shortfalls = []
    if not edge_compliance > edge_threshold:
        shortfalls.append(_short("edge compliance", edge_compliance, edge_threshold))
    unscored = [names[j] for j, value in enumerate(per_rule) if value is None]
    if unscored and aggregate != "pooled":
        shortfalls.append(f"no scored events for {', '.join(unscored)}, so its compliance is unknown")
    elif aggregate == "every_rule":  # every rule is scored here (no unscored ones)
        shortfalls += [
            _short(names[j], value, rule_threshold)
            for j, value in enumerate(per_rule)
            if value is not None and not value > rule_threshold
        ]
    else:
        # pooled: score is `pooled`, not None (returned above); mean_rule: every rule is scored here
        assert score is not None, "rule_score is None only when pooled is or a rule is unscored"
        if not score > rule_threshold:
            label = "mean rule compliance" if aggregate == "mean_rule" else "pooled rule compliance"
            shortfalls.append(f"{_short(label, score, rule_threshold)}; weakest {names[worst]} at {per_rule[worst]:.4f}")
    return GateDecision(not shortfalls, "; ".join(shortfalls) or None, score, worst)
