"""The sufficiency gate: the model knows the rules when edge > edge_threshold and rule > rule_threshold.

``gate_decision`` is a pure function of the scores, so the rule that stops training is testable
without a model: thresholds are strict, and an evaluation that scored no rule events is a
failure with its own reason, never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    failure_reason: str | None


def gate_decision(
    edge_compliance: float | None,
    rule_compliance: float | None,
    rule_events: int,
    edge_threshold: float,
    rule_threshold: float,
) -> GateDecision:
    if rule_events == 0 or rule_compliance is None:
        return GateDecision(False, "no rule events were scored, so rule compliance is unknown (the gate never passes blind)")
    if edge_compliance is None:
        return GateDecision(False, "no transitions were scored, so edge compliance is unknown")
    shortfalls = []
    if not edge_compliance > edge_threshold:
        shortfalls.append(
            f"edge compliance {edge_compliance:.4f} is not above {edge_threshold} (short by {edge_threshold - edge_compliance:.4f})"
        )
    if not rule_compliance > rule_threshold:
        shortfalls.append(
            f"rule compliance {rule_compliance:.4f} is not above {rule_threshold} (short by {rule_threshold - rule_compliance:.4f})"
        )
    return GateDecision(not shortfalls, "; ".join(shortfalls) or None)
