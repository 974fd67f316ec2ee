"""Greedy generation and the gate evaluator: the fast path gives exactly the plain path's tokens,
the questions are fixed, and evaluation leaves the training RNG alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcsbm_transformer.data.compliance import score_compliance
from dcsbm_transformer.model import TransformerLM
from dcsbm_transformer.training.evaluation import GateEvaluator
from dcsbm_transformer.training.generation import greedy_continue, plain_greedy_continue

from conftest import tiny_config


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
    last = first.prompts[np.arange(len(first.prompts)), first.prompt_lengths - 1]
    assert np.isin(last, data.graph.jumper_vertex).all()
    # the eval walks' own continuations obey every edge and rule: scored through the same path
    steps = first.event_step[:, None] + 1 + np.arange(first.steps)[None, :]
    truth = data.eval.walks[first.event_walk[:, None], np.minimum(steps, data.eval.walks.shape[1] - 1)]
    report = score_compliance(first.scored_sequences(truth), data.graph, score_from=first.score_from)
    assert report.edge_compliance == 1.0 and report.rule_compliance == 1.0
    assert report.rule_events >= config.gate.eval_sequences
    model = TransformerLM.from_config(config)
    evaluation = first.evaluate(model)
    assert evaluation.sequences == config.gate.eval_sequences
    assert evaluation.generated_tokens == config.gate.eval_sequences * int(data.graph.jumper_r.max())
    assert evaluation.report.edge_transitions == evaluation.generated_tokens
    assert evaluation.report.rule_events >= config.gate.eval_sequences


def test_asking_for_more_questions_than_the_eval_corpus_holds_says_so(tiny_setup, caplog):
    config, data = tiny_setup
    events = len(data.eval.events)
    greedy = tiny_config(gate={"eval_sequences": events + 1})
    with caplog.at_level("WARNING"):
        evaluator = GateEvaluator(greedy, data.graph, data.eval)
    assert evaluator.sequence_count == events
    assert f"gate.eval_sequences is {events + 1}" in caplog.text and f"only {events} rule events" in caplog.text


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
