"""The baselines measured beside every metric (``analysis.measure.behaviour``): rule-feasible mass, output
entropy, the oracle KL from the true next-step distribution, attention on the jumper — their
known answers, and their rows in horizon.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from dcsbm_transformer import load_run
from dcsbm_transformer.analysis.measure.behaviour import PassBehaviour, attention_to_jumper
from dcsbm_transformer.analysis.measure.events import draw_analysis_events
from dcsbm_transformer.experiment import RunOptions
from dcsbm_transformer.pipeline import run_pipeline

ALWAYS = {"edge_threshold": 0.0, "rule_threshold": 0.0, "rule_aggregate": "pooled"}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    config = tiny_config(
        gate=ALWAYS, training={"max_epochs": 1}, analysis={"events": 80, "permutations": 100, "min_events": 3, "temperature": 1.0}
    )
    outcome = run_pipeline(config, RunOptions(results_root=root / "results", cache_root=root / "cache"), echo=lambda _: None)
    return config, load_run(outcome.run_dir).analysis()


def test_the_baselines_are_measured_at_every_pass_with_their_known_properties(analysed):
    config, analysis = analysed
    tm, n, r = analysis.token_metrics, config.graph.n, 6
    feasible, target = tm["rule_feasible_mass"], tm["target_block_probability"]
    assert feasible.shape == target.shape == (80, r)
    np.testing.assert_allclose(feasible[:, 0], target[:, 0], rtol=1e-5)  # at the deadline: the target block itself
    assert ((feasible >= -1e-6) & (feasible <= 1 + 1e-6)).all()
    entropy = tm["output_entropy"]
    assert ((entropy >= 0) & (entropy <= np.log(n) + 1e-5)).all()
    kl = tm["oracle_kl"]
    assert (kl[np.isfinite(kl)] >= -1e-5).all() and np.isfinite(kl).mean() > 0.9
    attention = tm["attention_jumper.layer_0.head_0"]
    assert ((attention >= 0) & (attention <= 1)).all()  # r = 6 < w = 8: the jumper is in the window at every pass
    assert set(analysis.horizon["baselines"]) == {
        "rule_feasible_mass",
        "output_entropy",
        "oracle_kl",
        "attention_jumper.layer_0.head_0",
    }
    row = analysis.horizon["baselines"]["attention_jumper.layer_0.head_0"]
    assert row["target"] == "attention" and row["by_r"]["6"]["alternative"] == "two-sided"


def test_rule_feasible_mass_and_oracle_kl_known_answers(quick_config, quick_data):
    """A model that spreads its mass evenly over the current token's out-neighbours: the feasible
    mass is the share of neighbours from which the target block is reachable in j steps, and the
    KL from the true (rule-respecting, uniform) step is ln(out-degree / allowed moves)."""
    graph = quick_data.graph
    events = draw_analysis_events(quick_config, graph, 40)
    history = torch.from_numpy(np.concatenate([events.before, events.prompts[:, -1:]], axis=1))
    passes = int(events.r.max())
    recorder = PassBehaviour(graph, history, torch.from_numpy(events.target_block), torch.from_numpy(events.r), passes, 1, 1)
    tokens = np.concatenate([history.numpy(), events.walk_continuation], axis=1)  # the walks' own rule-true steps
    reach = graph.block_reach(passes)
    for k in range(1, passes + 1):
        current = tokens[:, history.shape[1] + k - 2]
        uniform = torch.zeros((len(events), graph.n))
        for e, v in enumerate(current):  # building the test's input, not the code under test
            uniform[e, graph.indices[graph.indptr[v] : graph.indptr[v + 1]]] = 1.0 / graph.out_degree[v]
        recorder.record(k, uniform, torch.from_numpy(current), None)
        expected = np.array(
            [
                reach[max(events.r[e] - k, 0)][graph.indices[graph.indptr[v] : graph.indptr[v + 1]], events.target_block[e]].mean()
                for e, v in enumerate(current)
            ]
        )
        np.testing.assert_allclose(recorder.values["rule_feasible_mass"][:, k - 1].numpy(), expected, rtol=1e-5)
    kl = recorder.finish(events.walk_continuation)["oracle_kl"]
    required = recorder.walker.pending_rules(history.numpy())
    for k in range(1, passes + 1):
        step = history.shape[1] + k - 1
        current = tokens[:, step - 1].astype(np.int64)
        _, allowed = recorder.walker.allowed_successors(required, current, step)
        np.testing.assert_allclose(kl[:, k - 1], np.log(graph.out_degree[current] / allowed.sum(axis=1)), rtol=1e-5, atol=1e-6)
        recorder.walker.add_rules(required, tokens[:, step].astype(np.int64), step)
    assert (kl > 0.01).any()  # the rules do restrict some moves (at the deadline, to the target block)


def test_attention_to_the_jumper_follows_it_across_the_window_and_stops_when_it_leaves():
    last = torch.arange(2 * 1 * 1 * 4, dtype=torch.float32).reshape(2, 1, 1, 4)
    assert attention_to_jumper(last, 1)[0, 0, 0] == 3  # pass 1: the window ends at the jumper
    assert attention_to_jumper(last, 4)[1, 0, 0] == 4  # pass w: it is the first position
    assert torch.isnan(attention_to_jumper(last, 5)).all()  # pass w + 1: gone
