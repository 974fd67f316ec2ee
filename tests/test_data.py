"""Graph, rules, walks and the compliance function, on the data the project really makes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from dcsbm_transformer.config import config_from_dict
from dcsbm_transformer.data.compliance import find_rule_events, score_compliance
from dcsbm_transformer.data.dcsbm import GraphGenerationError, choose_jumpers, generate_graph, zipf_theta
from dcsbm_transformer.data.graph import Graph
from dcsbm_transformer.data.walks import RuleAwareWalker


def brute_force_compliance(walks: np.ndarray, graph) -> tuple[int, int, int, int]:
    """The definition, one token at a time: (edges ok, transitions, rules ok, rule events)."""
    edges = {(int(u), int(v)) for u in range(graph.n) for v in graph.indices[graph.indptr[u] : graph.indptr[u + 1]]}
    rules = {int(v): (int(t), int(r)) for v, t, r in zip(graph.jumper_vertex, graph.jumper_target_block, graph.jumper_r)}
    edge_ok = transitions = rule_ok = events = 0
    for walk in walks:
        for s in range(len(walk) - 1):
            transitions += 1
            edge_ok += (int(walk[s]), int(walk[s + 1])) in edges
        for s, v in enumerate(walk):
            if int(v) in rules:
                target, r = rules[int(v)]
                if s + r < len(walk):
                    events += 1
                    rule_ok += graph.block[walk[s + r]] == target
    return edge_ok, transitions, rule_ok, events


@pytest.fixture(params=["quick", "stress"])
def data(request, quick_data, stress_data):
    return {"quick": quick_data, "stress": stress_data}[request.param]


def test_graph_structure(data):
    graph = data.graph
    K = graph.K
    assert np.bincount(graph.block, minlength=K).tolist() == [graph.n // K] * K  # equal blocks
    components, _ = connected_components(graph.adjacency, directed=True, connection="strong")
    assert components == 1
    assert graph.out_degree.min() >= 3
    assert not graph.adjacency.diagonal().any()  # no self-loops
    # ids are shuffled: the block is not a function of the id range
    assert not np.array_equal(graph.block, np.sort(graph.block))
    for b in range(K):  # theta normalised per block
        assert graph.theta[graph.block == b].mean() == pytest.approx(1.0)


def test_jumper_rules_are_non_trivial(data):
    graph = data.graph
    reach = graph.block_reach(int(graph.jumper_r.max()))
    assert len(set(graph.jumper_vertex.tolist())) == len(graph.jumper_vertex)
    for v, target, r in zip(graph.jumper_vertex, graph.jumper_target_block, graph.jumper_r):
        assert target != graph.block[v]
        assert reach[r, v, target]  # target reachable in exactly r steps
        assert reach[r, v].sum() >= 2  # ...and so is some other block


def test_rule_targets_are_balanced_over_the_blocks(data):
    graph = data.graph
    per_block = np.bincount(graph.jumper_target_block, minlength=graph.K)
    assert (per_block == graph.n_jumpers // graph.K).all()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 42])
def test_quick_preset_targets_are_balanced_on_every_seed(quick_config, seed):
    graph = generate_graph(quick_config.model_copy(update={"seed": seed}))
    assert sorted(graph.jumper_target_block.tolist()) == list(range(graph.K))  # one rule into every block
    assert (graph.jumper_target_block != graph.block[graph.jumper_vertex]).all()


def test_a_graph_without_non_trivial_rules_says_why():
    # a directed 4-cycle alternating blocks: from every vertex exactly one vertex is r steps away,
    # so no rule is non-trivial (the graph alone would force it)
    ring = Graph.from_arrays(
        {
            "indptr": np.array([0, 1, 2, 3, 4]),
            "indices": np.array([2, 3, 1, 0]),
            "block": np.array([0, 0, 1, 1]),
            "theta": np.ones(4),
            "jumper_vertex": np.zeros(0),
            "jumper_target_block": np.zeros(0),
            "jumper_r": np.zeros(0),
            "K": np.asarray(2),
        }
    )
    why = choose_jumpers(ring, [2, 2], 1, np.random.default_rng(0))
    assert isinstance(why, str) and why.startswith("no balanced set of non-trivial rules (block 0 has no free vertex whose r=2 rule")


def test_every_walk_obeys_the_graph_and_every_rule(data):
    for corpus in (data.train, data.eval):
        report = score_compliance(corpus.walks, data.graph)
        assert report.edge_compliance == 1.0
        assert report.rule_compliance == 1.0
        assert report.rule_events == len(corpus.events) > 0
    sample = data.train.walks[:300]
    edge_ok, transitions, rule_ok, events = brute_force_compliance(sample, data.graph)
    assert edge_ok == transitions and rule_ok == events


def test_at_least_half_the_walks_start_at_a_jumper_spread_over_all(data):
    graph, walks = data.graph, data.train.walks
    starts = walks[:, 0]
    at_jumper = np.isin(starts, graph.jumper_vertex)
    assert at_jumper.mean() >= 0.5
    counts = np.bincount(graph.jumper_index[starts[at_jumper]], minlength=len(graph.jumper_vertex))
    assert counts.min() >= len(walks) // 2 // len(graph.jumper_vertex)  # every jumper gets its share
    assert np.mean(np.bincount(data.train.events.row, minlength=len(walks)) > 0) >= 0.5


def test_nested_rules_are_common_in_the_stress_config_and_obeyed(stress_data):
    graph, corpus = stress_data.graph, stress_data.train
    events = corpus.events
    # a rule is nested when its jumper is visited while an earlier rule of the same walk is pending
    order = np.lexsort((events.step, events.row))
    span = 2 * corpus.walks.shape[1]  # keys of different walks never interleave
    step_key = events.row[order] * span + events.step[order]
    pending_until = np.maximum.accumulate(events.row[order] * span + events.deadline[order])
    nested = step_key[1:] < pending_until[:-1]
    walks_with_nesting = np.unique(events.row[order][1:][nested])
    assert len(walks_with_nesting) / len(corpus.walks) > 0.3
    assert len(np.unique(graph.jumper_r)) == 3


def test_train_and_eval_are_drawn_independently(quick_data):
    train, eval_ = quick_data.train.walks, quick_data.eval.walks
    assert not np.array_equal(train[: len(eval_)], eval_)
    assert len({w.tobytes() for w in eval_} & {w.tobytes() for w in train}) == 0


def test_compliance_detects_violations(quick_data):
    graph = quick_data.graph
    walks = quick_data.eval.walks[:200].copy()
    events = find_rule_events(walks, graph)
    # break the first 10 rules: move each deadline vertex into a block other than the target
    for i in range(10):
        row, deadline, target = events.row[i], events.deadline[i], events.target_block[i]
        walks[row, deadline] = np.flatnonzero(graph.block != target)[0]
    report = score_compliance(walks, graph)
    edge_ok, transitions, rule_ok, count = brute_force_compliance(walks, graph)
    assert report.edge_compliance == pytest.approx(edge_ok / transitions) and report.edge_compliance < 1
    assert report.rule_compliance == pytest.approx(rule_ok / count) and report.rule_compliance < 1
    assert report.rule_events == count


def test_compliance_scores_from_a_step_with_padding_and_weights(quick_data):
    graph = quick_data.graph
    walks = quick_data.eval.walks[:4].astype(np.int64)
    full = score_compliance(walks, graph)
    assert full.edge_transitions == walks.size - len(walks)
    later = score_compliance(walks, graph, score_from=10)
    assert later.edge_transitions == 4 * (walks.shape[1] - 10)
    assert later.rule_events == int((find_rule_events(walks, graph).deadline >= 10).sum())
    padded = np.concatenate([np.full((4, 5), -1), walks], axis=1)
    assert score_compliance(padded, graph).edge_transitions == full.edge_transitions
    doubled = score_compliance(walks[:1], graph, weights=np.array([3.0]))
    single = score_compliance(walks[:1], graph)
    assert doubled.edge_transitions == 3 * single.edge_transitions
    assert doubled.rule_events == 3 * single.rule_events
    assert score_compliance(np.zeros((2, 1), dtype=np.int64), graph).rule_compliance is None
    with pytest.raises(ValueError, match="outside the vocabulary"):
        score_compliance(np.array([[0, graph.n]]), graph)


def test_per_r_compliance_is_reported(stress_data):
    report = score_compliance(stress_data.eval.walks, stress_data.graph)
    assert set(report.rule_events_by_r) == set(stress_data.graph.jumper_r.tolist())
    assert sum(report.rule_events_by_r.values()) == report.rule_events


def test_zipf_theta_matches_the_measured_lowest_rank():
    theta = zipf_theta(16)
    assert theta.mean() == pytest.approx(1.0)
    assert theta[-1] == pytest.approx(0.3, abs=0.01)  # DESIGN.md: lowest-ranked vertex θ ≈ 0.3


def test_impossible_graph_gives_a_clear_error():
    config = config_from_dict(
        {
            "graph": {"n": 40, "K": 4, "p_in": 0.05, "p_out": 0.01, "max_attempts": 3},
            "walks": {"walk_length": 128, "train_walks": 4000},
        }
    )
    with pytest.raises(GraphGenerationError, match="no graph passed validation in graph.max_attempts=3"):
        generate_graph(config)


def test_walker_horizon_covers_reachability(quick_data):
    walker = RuleAwareWalker(quick_data.graph, 64)
    reach = quick_data.graph.block_reach(63)
    assert reach[walker.horizon :].all()  # beyond the horizon every vertex reaches every block
    assert not reach[walker.horizon - 1].all()
