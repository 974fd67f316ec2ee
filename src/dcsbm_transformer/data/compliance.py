"""Compliance: how well token sequences obey the graph and its jumper rules.

This is the one scoring function of the project: the corpus check after generation, the
training gate and later analysis all call ``score_compliance``.

Conventions for ``sequences`` (int array [B, T]):
- a negative token is padding (no token): transitions and rule events touching it are not scored;
- ``score_from`` is the first scored position: a transition t-1→t is scored when t ≥ score_from,
  a rule event (jumper at step s, deadline s + r) when score_from ≤ s + r < T — so the gate can
  score only what the model generated while the prompt still triggers rules;
- ``weights`` (optional, [B]) counts each row that many times (identical prompts generated once);
- ``events`` (optional) are the rule events to score, in the sequences' coordinates, instead of
  every jumper visit found in them: the gate scores each of its drawn events once, on its own
  deadline, and nothing else.

Rule compliance is reported pooled, per r, and per rule (jumper index j: ``graph.jumper_vertex[j]``),
since a pooled share lets frequent rules hide rare ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph


@dataclass(frozen=True)
class RuleEvents:
    """Jumper visits whose deadline falls inside their sequence (all arrays [E], int64)."""

    row: np.ndarray
    step: np.ndarray
    vertex: np.ndarray
    target_block: np.ndarray
    deadline: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def select(self, mask: np.ndarray) -> "RuleEvents":
        return RuleEvents(self.row[mask], self.step[mask], self.vertex[mask], self.target_block[mask], self.deadline[mask])


def find_rule_events(sequences: np.ndarray, graph: Graph) -> RuleEvents:
    """Every jumper visit in ``sequences`` whose deadline s + r lies inside the sequence."""
    sequences = np.asarray(sequences)
    length = sequences.shape[1]
    tokens = np.where(sequences >= 0, sequences, 0)
    is_jumper = (graph.jumper_index[tokens] >= 0) & (sequences >= 0)
    row, step = np.nonzero(is_jumper)
    vertex = sequences[row, step].astype(np.int64)
    deadline = step + graph.vertex_rule_r[vertex]
    inside = deadline < length
    row, step, vertex, deadline = row[inside], step[inside], vertex[inside], deadline[inside]
    return RuleEvents(row, step, vertex, graph.vertex_rule_target[vertex], deadline)


@dataclass(frozen=True)
class ComplianceReport:
    """Scores of one batch of sequences. A share is None when nothing was scored."""

    edge_compliance: float | None
    edge_transitions: int
    rule_compliance: float | None
    rule_events: int
    rule_compliance_by_r: dict[int, float]
    rule_events_by_r: dict[int, int]
    rule_compliance_by_jumper: dict[int, float]  # jumper index → share; only jumpers with scored events
    rule_events_by_jumper: dict[int, int]

    def jumper_compliances(self, jumpers: int) -> list[float | None]:
        """Every rule's compliance in jumper order, None where it had no scored event."""
        return [self.rule_compliance_by_jumper.get(j) for j in range(jumpers)]

    def jumper_events(self, jumpers: int) -> list[int]:
        return [self.rule_events_by_jumper.get(j, 0) for j in range(jumpers)]

    def to_dict(self) -> dict:
        as_text = lambda table: {str(key): value for key, value in table.items()}  # noqa: E731 (JSON keys)
        return {
            "edge_compliance": self.edge_compliance,
            "edge_transitions": self.edge_transitions,
            "rule_compliance": self.rule_compliance,
            "rule_events": self.rule_events,
            "rule_compliance_by_r": as_text(self.rule_compliance_by_r),
            "rule_events_by_r": as_text(self.rule_events_by_r),
            "rule_compliance_by_jumper": as_text(self.rule_compliance_by_jumper),
            "rule_events_by_jumper": as_text(self.rule_events_by_jumper),
        }


def _share(hits: float, total: float) -> float | None:
    return float(hits / total) if total > 0 else None


def _shares_by(keys: np.ndarray, weight: np.ndarray, hit: np.ndarray) -> tuple[dict[int, float], dict[int, int]]:
    """Weighted share of hits and weighted count for every distinct key."""
    shares, counts = {}, {}
    for key in np.unique(keys):
        mine = keys == key
        counts[int(key)] = int(round(weight[mine].sum()))
        shares[int(key)] = float((weight[mine] * hit[mine]).sum() / weight[mine].sum())
    return shares, counts


def score_compliance(
    sequences: np.ndarray,
    graph: Graph,
    score_from: int = 1,
    weights: np.ndarray | None = None,
    events: RuleEvents | None = None,
) -> ComplianceReport:
    """Edge compliance (share of scored transitions that are edges) and rule compliance (share of
    scored rule events whose deadline vertex is in the target block), pooled, per r and per rule."""
    sequences = np.asarray(sequences)
    if sequences.ndim != 2:
        raise ValueError(f"sequences must be 2-D [batch, length], got shape {sequences.shape}")
    if sequences.size and sequences.max() >= graph.n:
        raise ValueError(f"token {int(sequences.max())} is outside the vocabulary [0, {graph.n})")
    batch, length = sequences.shape
    row_weight = np.ones(batch) if weights is None else np.asarray(weights, dtype=np.float64)
    start = max(int(score_from), 1)

    source, target = sequences[:, start - 1 : length - 1], sequences[:, start:]
    scored = (source >= 0) & (target >= 0)
    is_edge = graph.dense_adjacency[np.maximum(source, 0), np.maximum(target, 0)] & scored
    edge_total = float(row_weight @ scored.sum(axis=1))
    edge_hits = float(row_weight @ is_edge.sum(axis=1))

    if events is None:
        events = find_rule_events(sequences, graph)
    events = events.select((events.deadline >= score_from) & (events.deadline < length))
    landed = sequences[events.row, events.deadline]
    events = events.select(landed >= 0)
    landed = landed[landed >= 0]
    obeyed = graph.block[landed] == events.target_block
    event_weight = row_weight[events.row]
    event_r = events.deadline - events.step

    by_r, count_by_r = _shares_by(event_r, event_weight, obeyed)
    by_jumper, count_by_jumper = _shares_by(graph.jumper_index[events.vertex], event_weight, obeyed)

    return ComplianceReport(
        edge_compliance=_share(edge_hits, edge_total),
        edge_transitions=int(round(edge_total)),
        rule_compliance=_share(float((event_weight * obeyed).sum()), float(event_weight.sum())),
        rule_events=int(round(event_weight.sum())),
        rule_compliance_by_r=by_r,
        rule_events_by_r=count_by_r,
        rule_compliance_by_jumper=by_jumper,
        rule_events_by_jumper=count_by_jumper,
    )
