"""Greedy generation and the gate evaluator: the fast path gives exactly the plain path's tokens,
the questions are fixed, and evaluation leaves the training RNG alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from dcsbm_transformer.model import TransformerLM
from dcsbm_transformer.training.evaluation import GateEvaluator
from dcsbm_transformer.training.generation import greedy_continue, plain_greedy_continue


def model_for(vocab=20, window=8, seed=0):
    torch.manual_seed(seed)
    return TransformerLM(vocab, window, d_model=16, n_layers=2, n_heads=2).eval()


def left_aligned(prompts: list[list[int]], window: int) -> tuple[torch.Tensor, torch.Tensor]:
    context = torch.zeros(len(prompts), window, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        context[i, : len(prompt)] = torch.tensor(prompt)
    return context, torch.tensor([len(p) for p in prompts])


@pytest.mark.parametrize("steps", [1, 5, 30])
def test_fast_generation_equals_the_plain_reference_for_mixed_prompts(steps):
    model = model_for()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 20, size=int(n)).tolist() for n in rng.integers(1, 9, size=40)]
    prompts += [prompts[0], prompts[3], prompts[3]]  # duplicates are generated once
    context, lengths = left_aligned(prompts, 8)
    assert torch.equal(greedy_continue(model, context, lengths, steps), plain_greedy_continue(model, context, lengths, steps))


def test_free_running_generation_with_cache_and_merging_equals_the_plain_reference():
    model = model_for(vocab=6)  # few tokens: walks collide and merge into shared cycles
    seeds = [[t] for t in range(6)] * 5
    context, lengths = left_aligned(seeds, 8)
    fast = greedy_continue(model, context, lengths, 40)
    assert torch.equal(fast, plain_greedy_continue(model, context, lengths, 40))
    assert torch.equal(fast[:6], fast[6:12])  # identical seeds, identical continuations


@pytest.fixture(scope="module")
def tiny_setup():
    from dcsbm_transformer.data.dataset import build_data

    config = tiny_config()
    return config, build_data(config)


def test_jumper_prefix_gate_asks_fixed_questions_and_scores_only_generated_tokens(tiny_setup):
    config, data = tiny_setup
    first = GateEvaluator(config, data.graph, data.eval)
    second = GateEvaluator(config, data.graph, data.eval)
    assert np.array_equal(first.prompts, second.prompts)  # the same events every epoch
    assert first.sequence_count == config.gate.eval_sequences
    # prompts end at a jumper: the last visible token of every prompt is a jumper
    assert np.isin(first.last_prompt_tokens, data.graph.jumper_vertex).all()
    # the eval walks' own continuations obey every edge and rule: scored through the same path
    steps = first.event_step[:, None] + 1 + np.arange(first.steps)[None, :]
    truth = data.eval.walks[first.event_walk[:, None], np.minimum(steps, data.eval.walks.shape[1] - 1)]
    report = first.score(truth)
    assert report.edge_compliance == 1.0 and report.rule_compliance == 1.0
    # each drawn event is scored once, on its own deadline; nothing pending from the prompt is
    assert report.rule_events == config.gate.eval_sequences
    model = TransformerLM.from_config(config)
    evaluation = first.evaluate(model)
    assert evaluation.sequences == config.gate.eval_sequences
    assert evaluation.generated_tokens == config.gate.eval_sequences * int(data.graph.jumper_r.max())
    assert evaluation.report.edge_transitions == evaluation.generated_tokens
    assert evaluation.report.rule_events == config.gate.eval_sequences


def test_gate_events_are_stratified_by_jumper_and_scored_on_their_own_deadline(stress_config, stress_data):
    """16 rules with three jump lengths and nested rules everywhere: the same number of events
    for every rule, whatever its visit frequency, and exactly one scored rule per prompt."""
    graph, events = stress_data.graph, stress_data.eval.events
    visits = np.array([(events.vertex == v).sum() for v in graph.jumper_vertex])
    assert visits.max() > 1.5 * visits.min()  # proportional drawing would weigh rules unequally
    evaluator = GateEvaluator(stress_config, graph, stress_data.eval)
    quota = -(-stress_config.gate.eval_sequences // graph.n_jumpers)
    drawn = np.array([(evaluator.last_prompt_tokens == v).sum() for v in graph.jumper_vertex])
    assert (drawn == np.minimum(quota, visits)).all()
    # every drawn event is a distinct eval event
    keys = evaluator.event_walk * stress_config.walks.walk_length + evaluator.event_step
    assert len(np.unique(keys)) == len(keys)
    # a rule-true continuation (the walk itself) scores each drawn event once: the counts per rule
    # are the draws, although the prompts hold pending rules and the continuations nested ones
    walks = stress_data.eval.walks
    steps = evaluator.event_step[:, None] + 1 + np.arange(evaluator.steps)[None, :]
    truth = walks[evaluator.event_walk[:, None], np.minimum(steps, walks.shape[1] - 1)]
    report = evaluator.score(truth)
    assert report.jumper_events(graph.n_jumpers) == drawn.tolist()
    assert report.rule_compliance == 1.0 and report.rule_events == len(keys)
    # a continuation that breaks exactly one rule's deadlines fails that rule alone
    broken = truth.copy()
    mine = np.flatnonzero(evaluator.last_prompt_tokens == graph.jumper_vertex[5])
    r = graph.jumper_r[5]
    broken[mine, r - 1] = np.flatnonzero(graph.block == graph.block[graph.jumper_vertex[5]])[0]  # not the target block
    per_rule = evaluator.score(broken).jumper_compliances(graph.n_jumpers)
    assert per_rule[5] == 0.0 and all(value == 1.0 for j, value in enumerate(per_rule) if j != 5)


def test_asking_for_more_questions_than_a_rule_has_events_names_the_rule(tiny_setup, caplog):
    config, data = tiny_setup
    events = data.eval.events
    visits = [int((events.vertex == v).sum()) for v in data.graph.jumper_vertex]
    greedy = tiny_config(gate={"eval_sequences": 2 * min(visits) + 2})
    with caplog.at_level("WARNING"):
        evaluator = GateEvaluator(greedy, data.graph, data.eval)
    short = int(np.argmin(visits))
    vertex = int(data.graph.jumper_vertex[short])
    assert f"rule {short} (jumper vertex {vertex}) has only {min(visits)} rule events" in caplog.text
    assert (evaluator.last_prompt_tokens == vertex).sum() == min(visits)


def test_evaluation_does_not_touch_the_training_rng(tiny_setup):
    config, data = tiny_setup
    evaluator = GateEvaluator(config, data.graph, data.eval)
    model = TransformerLM.from_config(config).train()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    evaluator.evaluate(model)
    assert torch.equal(torch.get_rng_state(), before)
    assert np.array_equal(np.random.get_state()[1], np_before)
    assert model.training  # put back in training mode


def test_first_token_gate_draws_seeds_from_the_whole_corpus(tiny_setup):
    config, data = tiny_setup
    config = tiny_config(gate={"prompt": "first_token", "eval_sequences": 150})
    evaluator = GateEvaluator(config, data.graph, data.eval)
    assert evaluator.sequence_count == 150
    assert (evaluator.prompt_lengths == 1).all() and evaluator.steps == config.walks.walk_length - 1
    seeds = evaluator.prompts[:, 0]
    starts = data.eval.walks[:, 0]
    assert np.isin(seeds, starts).all()
    assert not np.array_equal(seeds, starts[:150])  # drawn at random, not the first N walks
    evaluation = evaluator.evaluate(TransformerLM.from_config(config))
    assert evaluation.report.edge_transitions == 150 * (config.walks.walk_length - 1)
    assert evaluation.distinct_sequences <= len(np.unique(seeds))  # identical seeds, identical walks
