"""The gate cannot be passed by a model that knows the graph but not the rules.

A rule-blind policy (the training walks' bigram argmax: every edge right, no memory of which
jumper was visited) is judged by the gate exactly as a model is, on the presets' real data.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import REPO

from dcsbm_transformer.config import load_config
from dcsbm_transformer.data.dataset import build_data
from dcsbm_transformer.training.baselines import (
    argmax_successor,
    bigram_counts,
    rule_blind_baseline,
    rule_blind_continuations,
    sampling_chance,
)
from dcsbm_transformer.training.evaluation import GateEvaluator
from dcsbm_transformer.training.trainer import judge


def rule_blind_verdict(config, data):
    evaluator = GateEvaluator(config, data.graph, data.eval)
    baseline = rule_blind_baseline(evaluator, data.train.walks)
    return baseline, judge(config, data.graph, baseline.argmax_report)


@pytest.mark.parametrize("preset, seed", [("quick", 42), ("quick", 2), ("anchor", 42)])
def test_a_rule_blind_bigram_model_fails_the_gate(preset, seed):
    config = load_config(REPO / "configs" / f"{preset}.json").model_copy(update={"seed": seed})
    data = build_data(config)
    baseline, decision = rule_blind_verdict(config, data)
    report = baseline.argmax_report
    assert report.edge_compliance == 1.0  # it knows the graph...
    assert not decision.passed  # ...and still fails the gate
    per_rule = report.jumper_compliances(data.graph.n_jumpers)
    assert set(per_rule) <= {0.0, 1.0}  # deterministic from each jumper: a rule is got or missed
    assert 0.0 in per_rule and decision.rule_score == 0.0
    short = [label for label, value in zip(data.graph.rule_labels, per_rule) if value == 0.0]
    assert all(label in decision.failure_reason for label in short)
    # the sampler's chance sits near 1/K: nowhere near the threshold
    assert all(0.05 < chance < 0.6 for chance in baseline.sampling_chance)


def test_bigram_baselines_match_their_definitions():
    walks = np.array([[0, 1, 2, 0, 1], [1, 2, 2, 0, 2]])
    counts = bigram_counts(walks, 3)
    assert counts.toarray().tolist() == [[0, 2, 1], [0, 0, 2], [2, 0, 1]]
    successor = argmax_successor(counts)
    assert successor.tolist() == [1, 2, 0]
    assert rule_blind_continuations(successor, np.array([0, 2]), 4).tolist() == [[1, 2, 0, 1], [0, 1, 2, 0]]


def test_sampling_chance_is_the_r_step_transition_probability(quick_data):
    graph = quick_data.graph
    counts = bigram_counts(quick_data.train.walks, graph.n)
    transition = (sp.diags(1 / counts.sum(axis=1)) @ counts).toarray()
    chance = sampling_chance(counts, graph)
    for j, (v, target, r) in enumerate(zip(graph.jumper_vertex, graph.jumper_target_block, graph.jumper_r)):
        after_r = np.linalg.matrix_power(transition, int(r))[v]
        assert chance[j] == pytest.approx(after_r[graph.block == target].sum())


def test_pooled_reading_of_a_lax_gate_lets_the_rule_blind_model_through(quick_config, quick_data):
    """The same machinery can pass: with no thresholds and the pooled reading the bigram policy
    gets through, so the failures above are the gate's doing, not the baseline's."""
    lax = quick_config.model_copy(
        update={
            "gate": quick_config.gate.model_copy(update={"edge_threshold": 0.0, "rule_threshold": 0.0, "rule_aggregate": "pooled"})
        }
    )
    _, decision = rule_blind_verdict(lax, quick_data)
    assert decision.passed
