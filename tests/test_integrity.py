"""Analysis integrity: a registration fixed when the run is created, a post-hoc swap of the primary
labelled exploratory everywhere, analyses that coexist (each with its own settings, in the
comparison too), a held-out confirmatory test with a three-outcome verdict whose error rate holds,
results a researcher can load, and the documented examples (run as they stand)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli, tiny_config
from scipy import stats

from dcsbm_transformer import load_run
from dcsbm_transformer.analysis.files import ANALYSIS_DIR, read_horizon
from dcsbm_transformer.analysis.stats.confirmatory import VERDICTS, held_out_events
from dcsbm_transformer.analysis.stats.horizon import compute_horizon
from dcsbm_transformer.analysis.stats.statistics import holm
from dcsbm_transformer.comparison import report
from dcsbm_transformer.experiment import RunOptions, run_experiment
from dcsbm_transformer.pipeline import run_pipeline
from dcsbm_transformer.registration import REGISTRATION_FILE, RegistrationCheck, read_registration, registration_payload

ALWAYS = {"edge_threshold": 0.0, "rule_threshold": 0.0, "rule_aggregate": "pooled"}
# Sampled continuations: a one-epoch model then both follows and breaks each rule.
ANALYSIS = {"events": 80, "permutations": 200, "min_events": 3, "temperature": 1.0}
SWAPPED = {"target": "avwo", "metric": "spectral_entropy", "direction": "lower"}


def quiet(_):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained once, with its default (registered) analysis."""
    root = tmp_path_factory.mktemp("integrity")
    config = tiny_config(gate=ALWAYS, training={"max_epochs": 1}, analysis=ANALYSIS)
    options = RunOptions(results_root=root / "results", cache_root=root / "cache")
    outcome = run_pipeline(config, options, echo=quiet)
    return config, options, outcome.run_dir, outcome.analysis


@pytest.fixture
def copy(trained, tmp_path):
    """A copy of the trained run folder, free to change."""
    return Path(shutil.copytree(trained[2], tmp_path / "results" / trained[2].name))


def index_names(run_dir: Path) -> list[str]:
    return [entry["name"] for entry in json.loads((run_dir / ANALYSIS_DIR / "index.json").read_text())["analyses"]]


# ---- the registration --------------------------------------------------------------------------


def test_the_registration_is_written_when_the_run_is_created_and_never_replaced(trained, tmp_path):
    config, options, run_dir, _ = trained
    registration = read_registration(run_dir)
    assert registration["primary"]["key"] == "qkt.layer_0.head_0.grassmannian_distance"
    assert registration["primary"]["direction"] == "higher" and registration["config_hash"] == config.config_hash
    assert registration["analysis"]["events"] == 80 and registration["decision"]["confirmatory_fraction"] == 0.5
    assert (run_dir / REGISTRATION_FILE).stat().st_mtime <= (run_dir / "result.json").stat().st_mtime
    before = (run_dir / REGISTRATION_FILE).read_bytes()
    # the same experiment asked again with another primary: the registration stays what it was
    other = tiny_config(gate=ALWAYS, training={"max_epochs": 1}, analysis={**ANALYSIS, "primary": SWAPPED})
    assert other.experiment_id == config.experiment_id
    run_experiment(other, options, echo=quiet)
    assert (run_dir / REGISTRATION_FILE).read_bytes() == before
    # a restart trains again but cannot register again
    root = tmp_path / "results"
    shutil.copytree(run_dir, root / run_dir.name)
    run_experiment(other, RunOptions(results_root=root, cache_root=options.cache_root, restart=True), echo=quiet)
    assert (root / run_dir.name / REGISTRATION_FILE).read_bytes() == before


def test_the_registered_analysis_gives_a_three_outcome_verdict_on_held_out_events(trained):
    _, _, run_dir, summary = trained
    horizon = read_horizon(run_dir / ANALYSIS_DIR / summary["analysis_name"])
    assert horizon["registration"]["status"] == "confirmatory" and not horizon["exploratory"]
    assert horizon["primary"]["registered"] and horizon["primary"]["by_r"]["6"]["alternative"] == "greater"
    test = horizon["confirmatory"]["6"]
    assert test["verdict"] in VERDICTS
    split = horizon["split"]
    assert split["exploratory_events"] + split["confirmatory_events"] == 80 and split["confirmatory_events"] == 40
    counts = split["counts_by_r"]["6"]
    assert (test["n_violations"], test["n_successes"]) == (counts["confirmatory_violations"], counts["confirmatory_successes"])
    assert horizon["primary"]["by_r"]["6"]["n_violations"] == counts["exploratory_violations"]
    assert horizon["headline"][0].startswith(f"r = 6: registered hypothesis {test['verdict'].upper()}")
    page = (run_dir / ANALYSIS_DIR / summary["analysis_name"] / "report.html").read_text()
    assert 'id="exploratory-banner"' not in page and test["verdict"].upper() in page


def test_a_post_hoc_swap_of_the_primary_is_exploratory_everywhere(copy, tmp_path):
    registered = read_registration(copy)
    config = json.loads((copy / "config.json").read_text())
    config["analysis"]["primary"] = {**config["analysis"]["primary"], **SWAPPED}
    (copy / "config.json").write_text(json.dumps(config))
    done = run_cli("analyze", str(copy), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "No confirmatory claim" in done.stdout and "registered hypothesis" not in done.stdout.lower().replace("no confirmatory", "")
    name = next(n for n in index_names(copy) if read_horizon(copy / ANALYSIS_DIR / n)["primary"]["metric"] == "spectral_entropy")
    horizon = read_horizon(copy / ANALYSIS_DIR / name)
    assert horizon["exploratory"] and horizon["confirmatory"] is None
    assert horizon["registration"]["status"] == "exploratory"
    assert any("not the registered one" in reason for reason in horizon["registration"]["reasons"])
    primary = horizon["primary"]
    assert not primary["registered"] and primary["summary"].startswith("Exploratory hypothesis (not the registered one)")
    entry = primary["by_r"]["6"]
    assert entry["alternative"] == "two-sided"
    family = [k for k in horizon["metrics"]]  # the swapped primary is one of the exploratory family
    raw = np.array([np.nan if (p := horizon["metrics"][k]["by_r"]["6"]["p_value"]) is None else p for k in family])
    adjusted = dict(zip(family, holm(raw)))
    assert entry["p_adjusted"] == pytest.approx(adjusted[primary["key"]])
    # the report says what was registered, and when
    page = (copy / ANALYSIS_DIR / name / "report.html").read_text()
    assert 'id="exploratory-banner"' in page and "No confirmatory claim" in page
    assert registered["statement"] in page and registered["registered_at"] in page
    assert "is <strong>exploratory</strong>" in page
    # and so does the comparison
    out = report([copy], [], tmp_path / "cmp", echo=quiet, analysis=name)
    entry = json.loads((out.parent / "comparison.json").read_text())["runs"][0]
    assert not entry["primary"]["registered"] and entry["primary"]["by_r"]["6"]["verdict"] == "exploratory"
    assert not entry["in_horizon_figures"]


# ---- analyses that coexist ----------------------------------------------------------------------


def test_two_analyses_coexist_each_with_its_own_settings_in_the_comparison(copy, tmp_path):
    (first,) = index_names(copy)
    stamp = (copy / ANALYSIS_DIR / first / "summary.json").stat().st_mtime_ns
    done = run_cli(
        "analyze", str(copy), "--name", "greedy40", "--set", "analysis.events=40", "--set", "analysis.temperature=0", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert index_names(copy) == [first, "greedy40"]
    assert (copy / ANALYSIS_DIR / first / "summary.json").stat().st_mtime_ns == stamp  # untouched
    second = read_horizon(copy / ANALYSIS_DIR / "greedy40")
    assert second["registration"]["status"] == "exploratory"
    assert "analysis.events is 40, registered 80" in second["registration"]["reasons"]
    assert load_run(copy).analysis("greedy40").summary["counts"]["events"] == 40
    assert load_run(copy).analysis().name == first  # the default: made from the run's own config

    page = report([copy], [], tmp_path / "cmp", echo=quiet)
    comparison = json.loads((page.parent / "comparison.json").read_text())
    entries = {entry["analysis"]: entry for entry in comparison["runs"]}
    assert set(entries) == {first, "greedy40"}
    assert entries["greedy40"]["analysis_settings"]["events"] == 40 and entries[first]["analysis_settings"]["events"] == 80
    assert entries["greedy40"]["differs"]["analysis.temperature"] == 0.0 and entries[first]["differs"]["analysis.temperature"] == 1.0
    assert {"analysis.events", "analysis.temperature"} <= set(comparison["differing_keys"])
    text = page.read_text()
    assert f"{copy.name}/greedy40" in text and f"{copy.name}/{first}" in text
    only = report([copy], [], tmp_path / "one", echo=quiet, analysis="greedy40")
    assert [e["analysis"] for e in json.loads((only.parent / "comparison.json").read_text())["runs"]] == ["greedy40"]

    # a name is never reused for other settings; bad keys are refused; nothing is written
    listing = sorted(p.name for p in (copy / ANALYSIS_DIR).iterdir())
    for args, message in (
        (["--name", "greedy40", "--set", "analysis.events=30"], "holds an analysis with other settings"),
        (["--set", "training.lr=0.1"], "only analysis.* keys can be set"),
        (["--set", "analysis.nope=1"], "analysis.nope: unknown key"),
        (["--set", "analysis.events=-3"], "analysis.events"),
        (["--name", "../x"], "--name '../x'"),
    ):
        refused = run_cli("analyze", str(copy), *args, cwd=tmp_path)
        assert refused.returncode == 2 and message in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert sorted(p.name for p in (copy / ANALYSIS_DIR).iterdir()) == listing


def test_dcsbm_run_with_another_analysis_block_analyses_anew_beside_the_old(trained, copy):
    config, options, _, summary = trained
    said = []
    other = config.model_copy(update={"analysis": config.analysis.model_copy(update={"events": 60})})
    outcome = run_pipeline(other, RunOptions(results_root=copy.parent, cache_root=options.cache_root), echo=said.append)
    assert outcome.analysis["counts"]["events"] == 60 and not any("reusing" in line for line in said)
    assert index_names(copy) == [summary["analysis_name"], outcome.analysis["analysis_name"]]


# ---- the held-out test and its error rate ---------------------------------------------------------


def test_the_held_out_split_is_seeded_and_stratified_by_jumper():
    jumper = np.repeat([0, 1, 2], [10, 31, 7])
    held = held_out_events(jumper, 0.5, np.random.default_rng(3))
    assert [int(held[jumper == g].sum()) for g in range(3)] == [5, 16, 4]  # round(0.5 · n) per rule
    assert np.array_equal(held, held_out_events(jumper, 0.5, np.random.default_rng(3)))
    assert not held_out_events(jumper, 0.0, np.random.default_rng(3)).any()


R, EVENTS = 4, 400
SIM = tiny_config(model={"context_window": 8}, analysis={"permutations": 199, "min_events": 10, "min_effect_auroc": 0.6})
SIM_REGISTERED = RegistrationCheck(True, [], registration_payload(SIM))
SIM_PRIMARY = "qkt.layer_0.head_0.grassmannian_distance"


def simulated(seed: int, shift: float, logits_shift: float = 0.0, events: int = EVENTS) -> dict[str, np.ndarray]:
    """``events`` events of r = 4 over two rules; violations shift the primary by ``shift`` at every
    lookback j >= 1 and the logits' target-block probability down by ``logits_shift``."""
    rng = np.random.default_rng(seed)
    violated = rng.random(events) < 0.3
    noise = rng.normal(size=(events, R))
    return {
        SIM_PRIMARY: (noise + shift * violated[:, None] * (np.arange(R) >= 1)).astype(np.float32),
        "target_block_probability": (rng.normal(size=(events, R)) - logits_shift * violated[:, None]).astype(np.float32),
        "violated": violated,
        "event_jumper": np.arange(events) % 2,
        "event_r": np.full(events, R),
    }


def verdict_of(arrays) -> dict:
    summary = {
        "experiment_id": "sim",
        "exploratory": False,
        "exploratory_reason": None,
        "token_metrics_sha256": "0" * 64,
        "constant_metrics": [],
    }
    return compute_horizon(arrays, SIM, summary, check=SIM_REGISTERED)["confirmatory"][str(R)]


def test_with_no_signal_the_registered_test_errs_at_its_level_and_its_p_is_uniform():
    tests = [verdict_of(simulated(seed, 0.0)) for seed in range(300)]
    p = np.array([t["p_value"] for t in tests])
    significant = np.mean(p < SIM.analysis.alpha)
    assert significant <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 300)  # false positives at most alpha, within MC error
    assert np.mean([t["verdict"] == "confirmed" for t in tests]) <= significant
    assert stats.kstest(p, "uniform").pvalue > 0.01  # the null p is uniform (P = 199: steps of 1/200)


def test_a_planted_signal_is_confirmed_and_one_the_logits_already_carry_is_inconclusive():
    planted = [verdict_of(simulated(seed, 1.0)) for seed in range(20)]
    assert np.mean([t["verdict"] == "confirmed" for t in planted]) >= 0.9
    assert all(t["j"] is not None and t["oriented_auroc"] >= 0.6 for t in planted if t["verdict"] == "confirmed")
    # the same signal where the model's own output probability separates far better: not confirmed
    stronger = [verdict_of(simulated(seed, 1.0, logits_shift=4.0)) for seed in range(10)]
    assert all(t["verdict"] == "inconclusive" for t in stronger)
    assert all(any("no better than target_block_probability" in reason for reason in t["reasons"]) for t in stronger)
    # and a real but small effect (AUROC Φ(0.2/√2) ≈ 0.556), clearly significant on 4,000 events, is
    # inconclusive: below the registered size 0.6
    small = verdict_of(simulated(0, 0.2, events=4000))
    assert small["p_value"] < 0.01 and small["verdict"] == "inconclusive"
    assert any("below the registered 0.6" in reason for reason in small["reasons"])


# ---- results a researcher can load, and the documented examples ----------------------------------


def test_the_loaded_analysis_agrees_with_its_files(trained):
    _, _, run_dir, summary = trained
    run = load_run(run_dir)
    assert [a["name"] for a in run.analyses] == [summary["analysis_name"]]
    analysis = run.analysis()
    frame = analysis.horizon_frame()
    horizon = analysis.horizon
    key = horizon["primary"]["key"]
    row = frame[(frame.key == key) & (frame.r == 6) & (frame.j == 2)].iloc[0]
    assert row.role == "primary" and row.auroc == pytest.approx(horizon["primary"]["by_r"]["6"]["auroc"][2])
    assert set(frame.role) == {"primary", "exploratory", "behavioural"}
    assert len(frame) == (len(horizon["metrics"]) + 1) * 6
    assert analysis.token_metrics.axes(key) == ("event", "lookback") and analysis.token_metrics[key].shape == (80, 6)
    assert analysis.events["held_out"].sum() == horizon["split"]["confirmatory_events"]
    with pytest.raises(FileNotFoundError, match="no analysis named 'nope'"):
        run.analysis("nope")


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def run_example(code: str, run_dir: Path) -> dict:
    """Execute documentation code as it stands, with the example's run folder replaced by ``run_dir``."""
    code = re.sub(r"^run_dir = .*# your run folder$", f"run_dir = Path({str(run_dir)!r})", code, flags=re.M)
    namespace: dict = {"Path": Path}
    exec(compile(code, "<docs example>", "exec"), namespace)
    return namespace


def test_the_add_a_metric_example_measures_a_new_metric_without_deleting_anything(copy):
    from dcsbm_transformer.analysis.measure.metrics import METRICS

    (first,) = index_names(copy)
    stamp = (copy / ANALYSIS_DIR / first / "token_metrics.npz").stat().st_mtime_ns
    try:
        namespace = run_example("\n".join(code_blocks(REPO / "docs" / "add-a-metric.md")), copy)
    finally:
        METRICS.pop("sigma_ratio_2", None)
    assert index_names(copy)[-1] == "with-sigma-ratio" and first in index_names(copy)
    assert (copy / ANALYSIS_DIR / first / "token_metrics.npz").stat().st_mtime_ns == stamp
    values = namespace["values"]
    assert values.shape == (80, 6) and np.isfinite(values).all() and (values <= 1 + 1e-6).all()
    assert namespace["summary"]["settings"]["metrics"]["sigma_ratio_2"] == 1
    assert set(namespace["result"]) == {6}


def test_the_readme_python_example_runs_as_written(trained):
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- tested: tests/test_integrity.py -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    namespace = run_example(code, trained[2])
    assert abs(namespace["again"] - namespace["row"].auroc) < 1e-9


# ---- sensitivity ------------------------------------------------------------------------------------


def test_edge_clean_view_sets_aside_the_lookbacks_after_a_generated_non_edge():
    from dcsbm_transformer.analysis.stats.horizon import edge_clean_view

    values = np.arange(12, dtype=np.float32).reshape(3, 4)  # lookback order, r = 4: column j is pass 4 - j
    clean = edge_clean_view(values, np.array([0, 2, 4]), np.array([4, 4, 4]))
    assert np.array_equal(clean[0], values[0])  # every edge valid
    assert np.isnan(clean[1, :3]).all() and clean[1, 3] == values[1, 3]  # non-edge at pass 2: passes 2..4 (j <= 2) set aside
    assert np.isnan(clean[2, 0]) and np.array_equal(clean[2, 1:], values[2, 1:])  # at pass 4: only j = 0


def test_dcsbm_run_adds_a_sampled_second_estimate_and_the_report_says_whether_the_answer_holds(trained, copy):
    config, options, _, summary = trained
    greedy = config.model_copy(update={"analysis": config.analysis.model_copy(update={"temperature": 0.0, "sensitivity_events": 60})})
    outcome = run_pipeline(greedy, RunOptions(results_root=copy.parent, cache_root=options.cache_root), mechanism=False, echo=quiet)
    assert outcome.analysis["continuations"] == "greedy (argmax)"
    assert outcome.sensitivity["continuations"] == "sampled at temperature 1.0" and outcome.sensitivity["counts"]["events"] == 60
    assert outcome.sensitivity["analysis_name"] in index_names(copy) and summary["analysis_name"] in index_names(copy)
    directory = copy / ANALYSIS_DIR / outcome.analysis["analysis_name"]
    page = (directory / "report.html").read_text()
    assert 'id="sensitivity"' in page and "sampled continuations, temperature 1" in page
    edge = read_horizon(directory)["sensitivity"]["edge_clean"]
    assert edge["events_with_an_invalid_edge"] == int(
        (load_run(copy).analysis(directory.name).events["first_bad_edge_pass"] > 0).sum()
    )
    assert "edge-clean events only" in page


def test_a_gate_failed_run_is_analysed_as_a_negative_control_when_asked(tmp_path):
    from dcsbm_transformer.sweep.status import assess

    config = tiny_config(
        gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, training={"max_epochs": 1}, analysis={**ANALYSIS, "include_failed": True}
    )
    options = RunOptions(results_root=tmp_path / "results", cache_root=tmp_path / "cache")
    outcome = run_pipeline(config, options, echo=quiet)
    assert not outcome.result["training"]["gate_passed"] and outcome.analysis is not None
    assert outcome.analysis["exploratory"] and outcome.analysis["settings"]["include_failed"]
    horizon = read_horizon(outcome.run_dir / ANALYSIS_DIR / outcome.analysis["analysis_name"])
    assert horizon["exploratory"] and horizon["confirmatory"] is None
    assert "the run's gate did not pass" in horizon["registration"]["reasons"]
    done = assess(config, options.results_root)
    assert done.state == "done" and "negative control" in done.detail
    refused = tiny_config(gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, training={"max_epochs": 1}, analysis=ANALYSIS)
    assert run_pipeline(refused, options, echo=quiet).analysis is None  # without the key: excluded, as the spec says
