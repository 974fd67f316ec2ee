"""The analysis stage, part 1: fresh independent events, continuations with the internals of the
very forward pass that emits each token, labels, and the files (on real data and a trained run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config

from dcsbm_transformer.analysis.files import ANALYSIS_DIR, SUMMARY_FILE, TOKEN_METRICS_FILE, Summary, read_horizon
from dcsbm_transformer.analysis.measure.batched import metric_key
from dcsbm_transformer.analysis.measure.continuations import (
    RULE_VIOLATED,
    continue_with_targets,
    label_continuations,
)
from dcsbm_transformer.analysis.measure.events import draw_analysis_events
from dcsbm_transformer.analysis.measure.metrics import METRICS
from dcsbm_transformer.analysis.measure.null import read_null
from dcsbm_transformer.analysis.run import AnalysisRefused, analyze_run
from dcsbm_transformer.analysis.stats.statistics import holm
from dcsbm_transformer.api import load_run
from dcsbm_transformer.data.compliance import score_compliance
from dcsbm_transformer.experiment import RunOptions, run_directory, run_experiment
from dcsbm_transformer.model import ExtractionMode, TransformerLM
from dcsbm_transformer.pipeline import run_pipeline
from dcsbm_transformer.storage import read_npz
from dcsbm_transformer.training.generation import greedy_continue

ALWAYS = {"edge_threshold": 0.0, "rule_threshold": 0.0, "rule_aggregate": "pooled"}


@pytest.fixture(scope="module")
def quick_events(quick_config, quick_data):
    return draw_analysis_events(quick_config, quick_data.graph, 400)


def test_events_are_fresh_independent_full_window_and_even_over_rules(quick_config, quick_data, quick_events):
    events, graph, w = quick_events, quick_data.graph, quick_config.model.context_window
    assert np.bincount(events.jumper, minlength=graph.n_jumpers).tolist() == [100] * graph.n_jumpers
    assert len(np.unique(events.walk)) == len(events)  # one event per walk: independent samples
    assert (events.step >= w + 1).all() and events.prompts.shape == (400, w)  # full windows, two more before
    assert (events.before[:, 2:] == events.prompts[:, :-1]).all() and events.before.shape == (400, w + 1)
    assert (events.prompts[:, -1] == events.vertex).all()  # the prompt ends at the jumper
    # the walks are not the training or eval corpora (their own stream)
    for corpus in (quick_data.train.walks, quick_data.eval.walks):
        rows = {row.tobytes() for row in corpus[:, :w].astype(np.int64)}
        assert sum(p.tobytes() in rows for p in events.prompts) < 5
    # the walks' own continuations obey edges and the rule: scored by the one compliance function
    truth = np.concatenate([events.prompts[:, -1:], events.walk_continuation], axis=1)
    report = score_compliance(truth, graph)
    assert report.edge_compliance == 1.0 and report.rule_compliance == 1.0
    again = draw_analysis_events(quick_config, graph, 400)
    assert np.array_equal(again.prompts, events.prompts)  # reproducible


def test_continuations_are_the_gate_generators_tokens_and_targets_come_from_the_same_pass(quick_config, quick_data, quick_events):
    torch.manual_seed(0)
    model = TransformerLM.from_config(quick_config).eval()
    prompts = torch.from_numpy(quick_events.prompts[:64])
    members = torch.from_numpy(quick_data.graph.block[None, :] == quick_events.target_block[:64, None])
    seen = {}
    generated, probability = continue_with_targets(model, prompts, members, 8, lambda k, t: seen.update({k: t}))
    w = prompts.shape[1]
    lengths = torch.full((64,), w)
    assert torch.equal(generated, greedy_continue(model, prompts, lengths, 8))  # the gate's generator decides alike
    history = torch.cat([prompts, generated], dim=1)
    w_o, _ = model.attention_output_weights()
    for k in (1, 5, 8):  # the window that emitted token k: tokens k-1 .. k-1+w-1
        out = model(history[:, k - 1 : k - 1 + w], mode=ExtractionMode.SVD_TARGETS)
        assert torch.allclose(seen[k].qkt, out.qkt, atol=1e-6)
        assert torch.allclose(seen[k].avwo, out.attention @ out.values @ w_o, atol=1e-6)
        target = torch.softmax(out.logits[:, -1], -1)[members].reshape(64, -1).sum(-1)
        assert torch.allclose(probability[:, k - 1], target, atol=1e-6)


def test_labels_of_a_rule_true_and_a_broken_continuation(quick_data, quick_events):
    graph, events = quick_data.graph, quick_events
    truth = events.walk_continuation
    labels = label_continuations(events.prompts, truth, events.r, events.target_block, graph)
    assert not labels.violated.any() and (labels.edge_valid == 1).all() and (labels.first_bad_edge_pass == 0).all()
    assert (labels.rule_outcome != RULE_VIOLATED).all()
    assert (labels.rule_outcome[np.arange(len(events)), events.r - 1] == 1).all()  # every own deadline followed
    broken = truth.copy()
    wrong = np.flatnonzero(graph.block != events.target_block[0])[0]  # a vertex outside the target block
    broken[0, events.r[0] - 1] = wrong
    labels = label_continuations(events.prompts, broken, events.r, events.target_block, graph)
    assert labels.violated.tolist() == [True] + [False] * (len(events) - 1)
    assert labels.rule_outcome[0, events.r[0] - 1] == RULE_VIOLATED
    assert labels.tokens.shape == (len(events), events.prompts.shape[1] + int(events.r.max()))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    config = tiny_config(
        gate=ALWAYS, training={"max_epochs": 1}, analysis={"events": 40, "chunk_mb": 0.01, "permutations": 200}
    )  # 13 events a chunk
    run_experiment(config, RunOptions(results_root=root / "results", cache_root=root / "cache"), echo=lambda _: None)
    return config, run_directory(config, root / "results")


def test_analyze_writes_token_metrics_and_a_valid_summary(tiny_run):
    config, folder = tiny_run
    summary = analyze_run(folder, echo=lambda _: None)
    directory = folder / ANALYSIS_DIR / summary["analysis_name"]
    Summary.model_validate(json.loads((directory / SUMMARY_FILE).read_text()))
    arrays = read_npz(directory / TOKEN_METRICS_FILE)
    events, r = 40, 6
    assert summary["counts"]["events"] == events == summary["counts"]["violated"] + summary["counts"]["followed"]
    assert sum(rule["events"] for rule in summary["counts_by_rule"]) == events
    for target in ("qkt", "avwo"):
        for name in METRICS:
            values = arrays[metric_key(target, 0, 0, name)]
            assert values.shape == (events, r) and values.dtype == np.float32
    # pass 1 (lookback r - 1) compares its temporal metrics with the window ending just before the jumper
    assert np.isfinite(arrays[metric_key("qkt", 0, 0, "grassmannian_distance")][:, r - 1]).all()
    for key in (metric_key("qkt", 0, 0, "stable_rank"), metric_key("avwo", 0, 0, "grassmannian_distance")):
        assert arrays[f"context.{key}"].shape == (events,) and np.isfinite(arrays[f"context.{key}"]).all()
    assert (arrays["context_tokens"][:, 2:] == arrays["tokens"][:, : config.model.context_window - 1]).all()
    assert np.isfinite(arrays[metric_key("qkt", 0, 0, "stable_rank")]).all()
    assert arrays["violated"].sum() == summary["counts"]["violated"]
    assert arrays["tokens"].shape == (events, config.model.context_window + r)
    assert not summary["exploratory"] and summary["continuations"] == "greedy (argmax)"
    assert set(summary["guard_hits"]) == set(METRICS)
    # spectra.npz: the top singular values of every window, read back through the Analysis object in time order
    from dcsbm_transformer import load_run as load

    spectra = load(folder).analysis(summary["analysis_name"])
    trajectory = spectra.spectrum_trajectory("qkt.layer_0.head_0")
    assert trajectory.shape == (events, 2 + r, min(8, config.model.context_window)) and np.isfinite(trajectory).all()
    # any stored value can be recomputed from the model and the stored tokens alone
    from dcsbm_transformer import load_run
    from dcsbm_transformer.analysis.measure.metrics import compute_metrics, spectrum

    model, w, k = load_run(folder).model, config.model.context_window, 3
    window = torch.from_numpy(arrays["tokens"][:, k - 1 : k - 1 + w].astype(np.int64))
    out = model(window, mode=ExtractionMode.SVD_TARGETS)
    again = compute_metrics(spectrum(out.qkt, top_k=config.analysis.top_k, side="left"), None, shifted=True)
    # lookback order: pass k is column r - k
    assert np.allclose(again["stable_rank"][0][:, 0, 0].numpy(), arrays[metric_key("qkt", 0, 0, "stable_rank")][:, r - k], rtol=1e-4)
    recomputed = spectrum(out.qkt, top_k=config.analysis.top_k, side="left").values[:, 0, 0, : trajectory.shape[-1]].numpy()
    assert np.allclose(trajectory[:, 2 + k - 1], recomputed, rtol=1e-3, atol=1e-3)  # pass k, stored as float16
    # the context-only baseline: the window ending at s - 1, its temporal metrics against s - 2
    context = torch.from_numpy(arrays["context_tokens"].astype(np.int64))
    spectra = [
        spectrum(model(context[:, c : c + w], mode=ExtractionMode.SVD_TARGETS).qkt, top_k=config.analysis.top_k, side="left")
        for c in range(2)
    ]
    again = compute_metrics(spectra[1], spectra[0], shifted=True)
    for name in ("stable_rank", "grassmannian_distance"):
        stored = arrays[f"context.{metric_key('qkt', 0, 0, name)}"]
        assert np.allclose(again[name][0][:, 0, 0].numpy(), stored, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """``run_pipeline`` first with analyze=False, then in full. Sampled continuations (temperature 1)
    so that a barely trained model both follows and breaks each rule: a greedy one-epoch model
    breaks one rule always and keeps the other always, which leaves no within-jumper AUROC defined."""
    root = tmp_path_factory.mktemp("main_job")
    config = tiny_config(
        gate=ALWAYS,
        training={"max_epochs": 1},
        analysis={"events": 80, "permutations": 200, "min_events": 3, "temperature": 1.0},
    )
    options = RunOptions(results_root=root / "results", cache_root=root / "cache")
    stopped = run_pipeline(config, options, analyze=False, echo=lambda _: None)
    said = []
    done = run_pipeline(config, options, echo=said.append)
    return stopped, done, said, options


def test_the_main_job_trains_then_analyses_unless_told_not_to(main_job):
    stopped, done, said, options = main_job
    assert stopped.analysis is None and stopped.analysis_skipped == "not asked (--no-analyze)"
    assert done.analysis["counts"]["events"] == 80
    assert read_horizon(done.run_dir / ANALYSIS_DIR / done.analysis["analysis_name"]) is not None
    assert any("already finished" in line for line in said)  # training was not redone
    assert done.analysis["continuations"] == "sampled at temperature 1.0"
    failed = tiny_config(gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, training={"max_epochs": 1})
    refused = run_pipeline(failed, options, echo=lambda _: None)
    assert refused.analysis is None and "excluded from analysis" in refused.analysis_skipped


def test_horizon_agrees_with_an_independent_recomputation_from_token_metrics(main_job):
    """Every AUROC in horizon.json recomputed by brute force (all within-jumper violation/success
    pairs, ties one half) from token_metrics.npz alone; Holm re-applied to the family's p."""
    folder = main_job[1].run_dir / ANALYSIS_DIR / main_job[1].analysis["analysis_name"]
    horizon = read_horizon(folder)
    arrays = read_npz(folder / TOKEN_METRICS_FILE)
    violated, jumper, r = arrays["violated"], arrays["event_jumper"], arrays["event_r"]
    # every number but the registered test's comes from the exploratory events (the held-out ones are recomputed from the seed)
    from dcsbm_transformer import load_run

    held = load_run(main_job[1].run_dir).analysis(folder.name).events["held_out"].to_numpy()
    assert 0 < held.sum() < held.size and horizon["split"]["confirmatory_events"] == held.sum()
    checked = 0
    for key in (horizon["primary"]["key"], *horizon["top"][str(int(r[0]))][:3]):
        for r_value, entry in horizon["metrics"][key]["by_r"].items():
            mine = (r == int(r_value)) & ~held
            for j, reported in enumerate(entry["auroc"]):
                column = arrays[key][mine, j]  # lookback order: column j is lookback j (pass r - j)
                wins = pairs = 0.0
                for rule in np.unique(jumper[mine]):
                    v = column[(jumper[mine] == rule) & violated[mine]]
                    u = column[(jumper[mine] == rule) & ~violated[mine]]
                    v, u = v[np.isfinite(v)], u[np.isfinite(u)]
                    wins += (v[:, None] > u[None, :]).sum() + 0.5 * (v[:, None] == u[None, :]).sum()
                    pairs += v.size * u.size
                if reported is not None:
                    assert reported == pytest.approx(wins / pairs, abs=1e-9)
                    checked += 1
    assert checked >= 4 * int(r[0]) - 4
    r_value = str(int(r[0]))
    family = [k for k in horizon["metrics"] if k != horizon["primary"]["key"]]
    raw = np.array([np.nan if (p := horizon["metrics"][k]["by_r"][r_value]["p_value"]) is None else p for k in family])
    adjusted = np.array([np.nan if (p := horizon["metrics"][k]["by_r"][r_value]["p_adjusted"]) is None else p for k in family])
    np.testing.assert_allclose(adjusted, holm(raw))


def test_same_settings_reuse_other_settings_go_beside_never_over(tiny_run):
    _, folder = tiny_run
    first = analyze_run(folder, echo=lambda _: None)
    summary_file = folder / ANALYSIS_DIR / first["analysis_name"] / SUMMARY_FILE
    stamp = summary_file.stat().st_mtime_ns
    said = []
    analyze_run(folder, echo=said.append)
    assert summary_file.stat().st_mtime_ns == stamp and "reusing" in said[0]
    other = analyze_run(folder, events=20, echo=lambda _: None)
    assert other["counts"]["events"] == 20 and other["analysis_name"] != first["analysis_name"]
    assert summary_file.stat().st_mtime_ns == stamp  # the first analysis is untouched
    names = {entry["name"] for entry in json.loads((folder / ANALYSIS_DIR / "index.json").read_text())["analyses"]}
    assert {first["analysis_name"], other["analysis_name"]} <= names
    # an analysis written by an earlier version of the stage is redone, not reused
    old = json.loads(summary_file.read_text())
    summary_file.write_text(json.dumps({**old, "schema_version": 2}))
    said.clear()
    analyze_run(folder, echo=said.append)
    assert not any("reusing token_metrics" in line for line in said)
    assert json.loads(summary_file.read_text())["schema_version"] == 3


def test_an_interrupted_analysis_leaves_nothing_that_claims_to_be_finished(tiny_run, monkeypatch):
    _, folder = tiny_run
    import dcsbm_transformer.analysis.run as run_module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "write_summary", crash)
    with pytest.raises(KeyboardInterrupt):
        analyze_run(folder, events=24, echo=lambda _: None)
    monkeypatch.undo()
    said = []
    summary = analyze_run(folder, events=24, echo=said.append)  # not reused: the old summary vouches for other settings
    assert summary["counts"]["events"] == 24 and "reusing" not in said[0]


def test_a_run_whose_gate_failed_is_refused_unless_asked(tmp_path):
    config = tiny_config(gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, training={"max_epochs": 1}, analysis={"events": 8})
    run_experiment(config, RunOptions(results_root=tmp_path / "results", cache_root=tmp_path / "cache"), echo=lambda _: None)
    folder = run_directory(config, tmp_path / "results")
    with pytest.raises(AnalysisRefused, match="gate did not pass.*--include-failed"):
        analyze_run(folder, echo=lambda _: None)
    assert not (folder / ANALYSIS_DIR).exists()
    done = run_cli("analyze", str(folder), cwd=tmp_path)
    assert done.returncode == 1 and "gate not passed after 1 epoch:" in done.stderr and "Traceback" not in done.stderr
    assert run_cli("analyze", str(folder), "--events", "0", cwd=tmp_path).returncode == 2
    summary = analyze_run(folder, include_failed=True, echo=lambda _: None)
    assert summary["exploratory"] and "gate not passed" in summary["exploratory_reason"]


def test_chunking_bounds_memory_without_changing_a_value(quick_config, quick_data, quick_events):
    from dcsbm_transformer.analysis.measure.batched import events_per_chunk, measure

    torch.manual_seed(0)
    model = TransformerLM.from_config(quick_config).eval()
    events = draw_analysis_events(quick_config, quick_data.graph, 40)
    assert events_per_chunk(model, 0.05) == 10  # 4 · (16·16 + 16·64) bytes an event
    small = measure(model, quick_data.graph, events, top_k=2, chunk_mb=0.05)
    whole = measure(model, quick_data.graph, events, top_k=2, chunk_mb=100)
    assert np.array_equal(small.labels.tokens, whole.labels.tokens)
    for key, values in whole.metrics.items():
        assert np.allclose(small.metrics[key], values, rtol=1e-4, atol=1e-6, equal_nan=True), key
    assert small.guard_hits == whole.guard_hits


def test_metrics_workers_change_no_value(quick_config, quick_data, monkeypatch):
    """The events split among 1 or 3 metrics workers (threads, each on its share): the same values, bit for bit."""
    from dcsbm_transformer.analysis.measure import batched

    torch.manual_seed(0)
    model = TransformerLM.from_config(quick_config).eval()
    events = draw_analysis_events(quick_config, quick_data.graph, 20)
    measured = {}
    for workers in (1, 3):
        monkeypatch.setattr(batched, "metric_workers", lambda device, events, cores, n=workers: n)
        measured[workers] = batched.measure(model, quick_data.graph, events, top_k=2, chunk_mb=100)
    one, three = measured[1], measured[3]
    for field in ("metrics", "context", "spectra", "context_spectra"):
        for key, values in getattr(one, field).items():
            assert np.array_equal(values, getattr(three, field)[key], equal_nan=True), (field, key)
    assert one.guard_hits == three.guard_hits and one.context_guard_hits == three.context_guard_hits


def test_generate_continuations_reproduces_a_row_of_token_metrics(tiny_run):
    """The README's example: one event's tokens and a stored metric, recomputed from the model."""
    from dcsbm_transformer import load_run
    from dcsbm_transformer.analysis import compute_metrics, generate_continuations, spectrum

    config, folder = tiny_run
    analyze_run(folder, echo=lambda _: None)
    run = load_run(folder, cache_root=folder.parents[1] / "cache")
    stored = read_npz(folder / ANALYSIS_DIR / run.analysis().name / TOKEN_METRICS_FILE)
    w, r = run.config.model.context_window, 6
    again = generate_continuations(run, stored["tokens"][:3, :w])
    assert np.array_equal(again.tokens, stored["tokens"][:3])
    assert np.array_equal(again.labels.violated, stored["violated"][:3])
    k = 3  # pass 3 against pass 2: a temporal metric
    value = compute_metrics(
        spectrum(again.targets[k - 1].qkt, top_k=2, side="left"),
        spectrum(again.targets[k - 2].qkt, top_k=2, side="left"),
        shifted=True,
    )["grassmannian_distance"][0][:, 0, 0]
    assert np.allclose(value.numpy(), stored["qkt.layer_0.head_0.grassmannian_distance"][:3, r - k], rtol=1e-4, atol=1e-6)


def test_walks_of_another_config_are_refused_not_scored(tiny_run, quick_data):
    from dcsbm_transformer import load_run
    from dcsbm_transformer.analysis import generate_continuations

    config, folder = tiny_run
    run = load_run(folder, cache_root=folder.parents[1] / "cache")
    w = config.model.context_window
    foreign = quick_data.eval.walks[:4, :w] % config.graph.n  # ids in range, walks of another graph
    with pytest.raises(ValueError, match="not edges of .*graph.npz.*run.eval_corpus"):
        generate_continuations(run, foreign)
    # the run's own held-out walks, from the cache keyed by its data hash, are accepted
    assert run.eval_corpus.walks.shape == (config.walks.eval_walks, config.walks.walk_length)
    assert score_compliance(run.eval_corpus.walks, run.graph).edge_compliance == 1.0


def test_a_run_folder_whose_graph_is_not_its_configs_is_refused(tiny_run, tmp_path):
    import shutil

    from dcsbm_transformer import load_run
    from dcsbm_transformer.data.dataset import DataIntegrityError
    from dcsbm_transformer.data.dcsbm import generate_graph
    from dcsbm_transformer.storage import write_npz

    config, folder = tiny_run
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    write_npz(copy / "graph.npz", generate_graph(config.model_copy(update={"seed": config.seed + 1})).to_arrays())
    run = load_run(copy, cache_root=folder.parents[1] / "cache")
    with pytest.raises(DataIntegrityError, match="do not match .*graph.npz"):
        run.eval_corpus  # noqa: B018 (the property access is what raises)


def test_loading_an_excluded_run_warns_and_says_so(tmp_path):
    from dcsbm_transformer import load_run
    from dcsbm_transformer.api import ExcludedRunWarning

    config = tiny_config(gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, training={"max_epochs": 1})
    run_experiment(config, RunOptions(results_root=tmp_path / "results", cache_root=tmp_path / "cache"), echo=lambda _: None)
    with pytest.warns(ExcludedRunWarning, match="excluded from analysis, its gate did not pass"):
        run = load_run(run_directory(config, tmp_path / "results"))
    assert run.excluded_from_analysis


def test_a_pass_reads_nothing_back_from_the_device(quick_config, quick_events):
    """Continuations, spectra and metrics never wait on the device pass by pass: host reads do
    not grow with the number of passes (tokens and values come back once, at a chunk's end)."""
    from test_training import _HostReads

    from dcsbm_transformer.analysis.measure.batched import TARGET_SIDE
    from dcsbm_transformer.analysis.measure.metrics import compute_metrics, spectrum

    model = TransformerLM.from_config(quick_config).eval()
    prompts = torch.from_numpy(quick_events.prompts[:32])
    members = torch.ones(32, model.vocab_size, dtype=torch.bool)
    previous = {}

    def metrics_of(k, targets):
        for name in ("qkt", "avwo"):
            side, shifted = TARGET_SIDE[name]
            current = spectrum(targets[name], top_k=2, side=side)
            compute_metrics(current, previous.get(name), shifted=shifted)
            previous[name] = current

    counts = []
    for passes in (3, 8):
        previous.clear()
        with _HostReads() as reads:
            continue_with_targets(model, prompts, members, passes, metrics_of)
        counts.append(reads.calls)
    assert counts[0] == counts[1], f"host reads grow with the passes: {counts[0]} for 3, {counts[1]} for 8"


def test_the_null_is_rule_free_matched_to_violations_and_in_horizon(tiny_run):
    """The jumper-free null of a real analysis (analysis.null_multiple = 3 by default): every null event
    copies a violation's walk step, r and rule, no rule of its prompt falls due at a measured pass, and
    horizon.json compares it with the violations; another multiple is another analysis."""
    config, folder = tiny_run
    summary = analyze_run(folder, echo=lambda _: None)
    directory = folder / ANALYSIS_DIR / summary["analysis_name"]
    null, arrays = read_null(directory, config), read_npz(directory / TOKEN_METRICS_FILE)
    assert null is not None and summary["counts"]["violated"] > 0
    matched = null["event_matched"]
    assert len(matched) == 3 * summary["counts"]["violated"] and arrays["violated"][matched].all()
    for field in ("event_step", "event_r", "event_jumper"):
        assert (null[field] == arrays[field][matched]).all()
    graph = load_run(folder).graph
    w = config.model.context_window
    window = null["tokens"][:, :w].astype(np.int64)
    jumper = graph.jumper_index[window]
    deadline = np.arange(w)[None, :] + np.where(jumper >= 0, graph.jumper_r[np.maximum(jumper, 0)], -(10**6))
    assert not (deadline > w - 1).any()  # no rule of the prompt is pending at a measured pass
    key = metric_key("qkt", 0, 0, "stable_rank")
    assert null[key].shape == (len(matched), arrays[key].shape[1]) and null[key].dtype == np.float32
    first, r = null["first_jumper_pass"], null["event_r"]
    for e in np.flatnonzero(first > 0)[:5]:  # after a jumper the model emitted itself: under its rule, NaN
        k = np.arange(1, r[e] + 1)
        assert np.isnan(null[key][e, r[e] - k[k > first[e]]]).all()
    section = read_horizon(directory)["null"]
    assert section["null_multiple"] == 3 and section["per_violation"] == 3.0 and section["sha256"] and section["answer"]
    entry = next(iter(section["metrics"][metric_key("qkt", 0, 0, "grassmannian_distance")]["by_r"].values()))
    assert len(entry["auroc"]) == len(entry["quantiles"]["null"]["q50"]) == arrays[key].shape[1]
    other = analyze_run(folder, analysis=config.analysis.model_copy(update={"null_multiple": 1}), echo=lambda _: None)
    assert other["analysis_name"] != summary["analysis_name"]  # the multiple is in the settings digest
    assert read_horizon(folder / ANALYSIS_DIR / other["analysis_name"])["null"]["null_multiple"] == 1
