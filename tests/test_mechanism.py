"""The mechanism floor: interventions exact when off, correct when on, causal on a model built by
hand, redirecting on a trained one; `dcsbm mechanism` refuses bad requests and writes nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config
from scipy.stats import binomtest

from dcsbm_transformer.cli import build_parser, main
from dcsbm_transformer.data.graph import Graph
from dcsbm_transformer.experiment import RunOptions, run_directory, run_experiment
from dcsbm_transformer.mechanism.files import MECHANISM_FILE, Mechanism
from dcsbm_transformer.mechanism.interventions import Knockout, MeanAblation, intervene, patch_jumpers
from dcsbm_transformer.mechanism.measure import MechanismEvents, continue_greedy, measure_mechanism, wilson
from dcsbm_transformer.mechanism.run import MechanismRequestError, mechanism_run
from dcsbm_transformer.model import ExtractionMode, TransformerLM
from dcsbm_transformer.pipeline import run_pipeline
from dcsbm_transformer.training.baselines import sampling_chance
from dcsbm_transformer.training.generation import greedy_continue

QUIET = {"echo": lambda _: None}


def random_model(n_layers=2, n_heads=2, vocab=20, window=8, seed=0) -> TransformerLM:
    return TransformerLM(vocab, window, 16, n_layers, n_heads, generator=torch.Generator().manual_seed(seed)).eval()


def every_output(model: TransformerLM, tokens: torch.Tensor) -> list[torch.Tensor]:
    """Logits through every entry point: training forward, extraction, last-position paths, KV cache."""
    with torch.no_grad():
        cached, cache = model.prefill(tokens[:, :-1])
        decoded, _ = model.decode(tokens[:, -1], cache)
        return [
            model(tokens).logits,
            model(tokens, ExtractionMode.FULL).logits,
            model.extract_last(tokens).logits,
            model.logits_last(tokens),
            cached,
            decoded,
        ]


def test_no_intervention_leaves_the_model_bitwise_the_plain_model():
    model = random_model()
    tokens = torch.randint(0, 20, (5, 8), generator=torch.Generator().manual_seed(1))
    plain = every_output(model, tokens)
    with intervene(model, {}):
        assert all(torch.equal(a, b) for a, b in zip(plain, every_output(model, tokens)))
    with intervene(model, {0: Knockout(3), 1: MeanAblation(3, torch.zeros(2, 8))}):
        assert not torch.equal(plain[0], every_output(model, tokens)[0])
    with pytest.raises(RuntimeError), intervene(model, {1: Knockout(2)}):
        raise RuntimeError("an error inside the block")
    assert all(block.attn.edit is None for block in model.blocks)  # restored on exit, error or not
    assert all(torch.equal(a, b) for a, b in zip(plain, every_output(model, tokens)))
    with intervene(model, {0: Knockout(-1), 1: Knockout(99)}):  # the jumper out of the window: nothing to remove
        assert torch.equal(plain[1], model(tokens, ExtractionMode.FULL).logits)


def test_knockout_and_mean_ablation_follow_their_formulas():
    model = random_model(n_layers=1, n_heads=2)
    attn, position = model.blocks[0].attn, 3
    x = torch.randn(4, 8, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, qkt, weights, values = attn.forward_explicit(x)
        with intervene(model, {0: Knockout(position, heads=(1,))}):
            _, _, knocked, _ = attn.forward_explicit(x)
    after = torch.arange(8) > position
    assert torch.equal(knocked[:, 0], weights[:, 0])  # head 0 untouched
    assert (knocked[:, 1, after, position] == 0).all() and torch.equal(knocked[:, 1, ~after], weights[:, 1, ~after])
    scores = qkt[:, 1].masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), float("-inf"))
    scores[:, after, position] = float("-inf")
    torch.testing.assert_close(knocked[:, 1], torch.softmax(scores, dim=-1))  # renormalised over the other keys

    mean = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with intervene(model, {0: MeanAblation(position, mean)}):
            ablated, _, same_weights, _ = attn.forward_explicit(x)
        y = weights @ values  # [B, H, T, d_head]
        y[:, :, after] += weights[:, :, after, position, None] * (mean[None, :, None] - values[:, :, position, None])
        expected = attn.proj(y.transpose(1, 2).reshape(4, 8, 16))
    assert torch.equal(same_weights, weights)  # the pattern is kept, only what is read changes
    torch.testing.assert_close(ablated, expected)


def test_every_entry_point_honours_an_edit_and_positions_may_differ_per_row():
    model = random_model()
    tokens = torch.randint(0, 20, (3, 8), generator=torch.Generator().manual_seed(4))
    with intervene(model, {0: Knockout(torch.tensor([2, 5, 7])), 1: Knockout(torch.tensor([2, 5, 7]))}):
        full, explicit, last, cached = every_output(model, tokens)[1:5]
    for i, position in enumerate([2, 5, 7]):
        with intervene(model, {0: Knockout(position), 1: Knockout(position)}):
            torch.testing.assert_close(full[i : i + 1], model(tokens[i : i + 1]).logits)
    torch.testing.assert_close(explicit[:, -1], last)
    torch.testing.assert_close(full[:, -1], last)
    torch.testing.assert_close(full[:, -2], cached)  # the KV-cache prefill sees the same edit


def test_intervene_refuses_what_does_not_exist_and_nesting():
    model = random_model()
    with pytest.raises(ValueError, match="layers 0..1"):
        with intervene(model, {2: Knockout(1)}):
            pass
    with pytest.raises(ValueError, match="heads 0..1"):
        with intervene(model, {0: Knockout(1, heads=(2,))}):
            pass
    with intervene(model, {0: Knockout(1)}), pytest.raises(ValueError, match="do not nest"):
        with intervene(model, {1: Knockout(1)}):
            pass
    assert all(block.attn.edit is None for block in model.blocks)


def test_greedy_continuation_is_the_gates():
    model = random_model(vocab=20, window=8)
    prompts = torch.randint(0, 20, (30, 8), generator=torch.Generator().manual_seed(5))
    tokens, attention = continue_greedy(model, prompts, 10, rows_per_forward=7)
    assert np.array_equal(tokens, greedy_continue(model, prompts, torch.full((30,), 8), 10).numpy())
    assert np.isnan(attention[:, 8:]).all() and np.isfinite(attention[:, :8]).all()  # the jumper leaves after pass 8


def test_wilson_interval_is_scipys():
    k, n = np.array([0, 50, 25, 3]), np.array([50, 50, 50, 7])
    low, high = wilson(k, n)
    reference = [binomtest(int(a), int(b)).proportion_ci(method="wilson") for a, b in zip(k, n)]
    np.testing.assert_allclose(low, [c.low for c in reference], atol=1e-12)
    np.testing.assert_allclose(high, [c.high for c in reference], atol=1e-12)


# --------------------------------------------------------------------------------------------------
# a model built by hand whose only path to the answer is attention to the jumper

K, PER_BLOCK, WINDOW, R = 4, 3, 8, 4  # vertex 3b is block b's representative, 3b + 1 its jumper (target b + 1)


def hand_built() -> tuple[Graph, TransformerLM]:
    """Every non-jumper token embeds to 0, so the logits can only come from what attention reads:
    the jumper's key is large (it takes ~all attention), its value is its target block, and the head
    turns target block t into the representative vertex 3t. Nothing read ⇒ constant logits ⇒ vertex 0."""
    n = K * PER_BLOCK
    block = np.repeat(np.arange(K), PER_BLOCK)
    indices = np.tile(np.arange(n), n)  # complete graph with self-loops: every transition is an edge
    graph = Graph(
        np.arange(0, n * n + 1, n),
        indices.astype(np.int32),
        block.astype(np.int32),
        np.ones(n),
        np.arange(K, dtype=np.int32) * PER_BLOCK + 1,
        (np.arange(K, dtype=np.int32) + 1) % K,
        np.full(K, R, np.int32),
        K,
    )
    d = K + 1  # dims 0..K-1: target block, K: "is a jumper"
    model = TransformerLM(n, WINDOW, d, 1, 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for ln in (model.blocks[0].ln_1, model.blocks[0].ln_2, model.ln_f):
            ln.weight.fill_(1.0)
        for j, vertex in enumerate(graph.jumper_vertex):
            model.tok_emb.weight[vertex, graph.jumper_target_block[j]] = 1.0
            model.tok_emb.weight[vertex, K] = 1.0
        attn = model.blocks[0].attn
        attn.qkv.bias[:d] = 1.0  # a constant query ...
        attn.qkv.weight[d : 2 * d, K] = 30.0  # ... meets a large key at the jumper
        attn.qkv.weight[2 * d : 2 * d + K, :K] = torch.eye(K)  # value: the target block
        attn.proj.weight[:K, :K] = torch.eye(K)
        for b in range(K):
            model.head.weight[b * PER_BLOCK, b] = 1.0
        model.head.bias[0] = 0.01  # when nothing is read, vertex 0 wins
        model.head.bias[[v for v in range(n) if v % PER_BLOCK]] = -10.0
    return graph, model.eval()


def test_knocking_out_the_only_path_drops_compliance_to_chance():
    graph, model = hand_built()
    events = 200
    rng = np.random.default_rng(6)
    jumper = np.repeat(np.arange(K), events // K)
    non_jumpers = np.setdiff1d(np.arange(graph.n), graph.jumper_vertex)
    prompts = np.concatenate([rng.choice(non_jumpers, (events, WINDOW - 1)), graph.jumper_vertex[jumper, None]], axis=1)
    chance = sampling_chance(graph.adjacency.astype(np.float64), graph)  # a uniform walker on the graph
    measured = measure_mechanism(
        model,
        graph,
        MechanismEvents(prompts.astype(np.int64), jumper, np.full(events, R)),
        [0],
        chance_sampling=chance.tolist(),
        min_events=5,
        **QUIET,
    )
    by_name = {row["name"]: row for row in measured.conditions}
    assert by_name["intact"]["rule"]["share"] == 1.0 and by_name["intact"]["edge"]["share"] == 1.0
    for name in ("knockout.layer_0", "mean_ablation.layer_0"):
        rule = by_name[name]["rule"]
        assert rule["ci_low"] <= chance.mean() <= rule["ci_high"]  # down to the rule-blind walker's level
        assert [row["share"] for row in by_name[name]["rules"]] == [0.0, 0.0, 0.0, 1.0]  # always block 0: rule 3's target
    assert by_name["knockout.layer_0"]["attention_on_jumper"]["layer_0.head_0"] == 0.0  # nothing read after pass 1
    assert by_name["intact"]["attention_on_jumper"]["layer_0.head_0"] > 0.99
    assert measured.patch["pooled"]["patched_target"]["share"] == 1.0  # the rule travels with the token


def test_patch_candidates_prefer_the_same_block():
    graph, _ = hand_built()
    two = graph.with_rules([1, 2, 4], [1, 2, 0], [R, R, R])  # block 0 has two jumpers, with targets 1 and 2
    plan = patch_jumpers(two, np.array([0, 1, 2, 2]), np.array([0, 0, 5, 5]))
    assert plan.patched.tolist() == [1, 0, 0, 1] and plan.same_block.tolist() == [True, True, False, False]
    assert plan.edge.all()


# --------------------------------------------------------------------------------------------------
# a trained run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny config with four blocks trained to its gate (epoch 12, ~9 s on one core) and analysed on 200 events."""
    root = tmp_path_factory.mktemp("mechanism")
    config = tiny_config(
        graph={"n": 32, "K": 4, "p_in": 1.0, "p_out": 0.15},
        training={"max_epochs": 20},
        analysis={"events": 200, "permutations": 100, "min_events": 3},
    )
    options = RunOptions(results_root=root / "results", cache_root=root / "cache")
    outcome = run_pipeline(config, options, mechanism=False, **QUIET)  # dcsbm run --no-mechanism
    assert outcome.result["training"]["gate_passed"] and outcome.mechanism is None
    analysis = outcome.run_dir / "analysis" / outcome.analysis["analysis_name"]
    assert not (analysis / MECHANISM_FILE).exists()
    return outcome.run_dir, analysis, root, config, options


def test_patching_a_trained_model_redirects_above_chance_and_the_report_shows_it(trained):
    folder, analysis, *_ = trained
    measured = mechanism_run(folder, **QUIET)
    Mechanism.model_validate(json.loads((analysis / MECHANISM_FILE).read_text()))
    for row in measured["patch"]["by_rule"]:
        assert row["patched_target"]["ci_low"] > row["chance_patched_target"]
    intact = next(c for c in measured["conditions"] if c["name"] == "intact")
    knocked = next(c for c in measured["conditions"] if c["name"] == "knockout.layer_0")
    assert knocked["rule"]["ci_high"] < intact["rule"]["ci_low"]
    page = (analysis / "report.html").read_text()
    assert 'id="mechanism"' in page and "mechanism_patch.png" in page
    # the perturbation bound holds on the trained model too (random and top-singular directions, 1-25%)
    assert measured["perturbation"]["overall_exceed"]["k"] == 0 and measured["perturbation"]["overall_exceed"]["n"] > 0
    assert "mechanism_perturbation.png" in page and 'id="mechanism-perturbation"' in page
    assert 'id="random-matrix"' in page and "random_matrix.png" in page  # the analysis's random-matrix section
    said = []
    again = mechanism_run(folder, echo=said.append)
    assert again == measured and any("already measured" in line for line in said)  # reused when current


def files_under(folder):
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.parametrize("case", ["no such layer", "no analysis", "gate failed", "too many events"])
def test_bad_requests_exit_2_and_write_nothing(trained, case, capsys):
    folder, _, root, *_ = trained
    args = []
    if case == "no such layer":
        args = ["--layers", "0", "3"]
    elif case == "too many events":
        args = ["--events", "100000"]
    elif case == "no analysis":
        folder = shutil.copytree(folder, root / "bare" / folder.name, ignore=shutil.ignore_patterns("analysis"), dirs_exist_ok=True)
    elif case == "gate failed":
        config = tiny_config(gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, training={"max_epochs": 1})
        run_experiment(config, RunOptions(results_root=root / "failed", cache_root=root / "cache"), **QUIET)
        folder = run_directory(config, root / "failed")
    before = files_under(folder)
    assert main(["mechanism", str(folder), *args]) == 2
    error = capsys.readouterr().err
    expected = {
        "no such layer": "--layers 3: the model has 1 layer(s)",
        "no analysis": "dcsbm analyze",
        "gate failed": "--include-failed",
        "too many events": "has only 200 events",
    }[case]
    assert expected in error and "Traceback" not in error
    assert files_under(folder) == before  # nothing written
    with pytest.raises(MechanismRequestError):
        mechanism_run(
            folder,
            **QUIET,
            **({"layers": [0, 3]} if case == "no such layer" else {"events": 100000} if case == "too many events" else {}),
        )


def test_the_main_job_runs_the_mechanism_after_the_analysis_unless_told_not_to(trained):
    folder, analysis, _, config, options = trained
    outcome = run_pipeline(config, options, **QUIET)
    assert outcome.mechanism is not None and outcome.mechanism == json.loads((analysis / MECHANISM_FILE).read_text())
    assert build_parser().parse_args(["run", "--no-mechanism"]).no_mechanism
