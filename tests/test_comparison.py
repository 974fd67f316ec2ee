"""dcsbm report: finding and listing runs, --where filters, the differing-keys table, horizons read
back exactly, exclusions with reasons, and a self-contained page — on synthetic run folders
(config.json, result.json, and for analysed runs a horizon.json computed from planted signals)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dcsbm_transformer.analysis.files import ANALYSIS_DIR, read_horizon, record_analysis, write_horizon
from dcsbm_transformer.analysis.stats.horizon import compute_horizon
from dcsbm_transformer.comparison import (
    ComparisonError,
    add_report_parser,
    command_report,
    filter_runs,
    find_runs,
    parse_where,
    report,
)
from dcsbm_transformer.config import config_from_dict
from dcsbm_transformer.registration import RegistrationCheck, registration_payload
from dcsbm_transformer.storage import atomic_write_bytes
from dcsbm_transformer.training.results import write_result

METRIC = "grassmannian_distance"
QKT, AVWO = f"qkt.layer_0.head_0.{METRIC}", f"avwo.layer_0.head_0.{METRIC}"
EVENTS = 400
FAILURE = "rule 1 (vertex 17, block 1→0, r=12) 0.41 < 0.8"


def make_config(scale: float, seed: int, direction: str = "higher", avwo_direction: str | None = None):
    return config_from_dict(
        {
            "seed": seed,
            "graph": {"n": 32, "K": 2, "p_in": 0.9, "p_out": 0.2, "jumpers_per_block": 1, "jump_scales": [scale]},
            "walks": {"walk_length": 32, "train_walks": 3200, "eval_walks": 200},
            "model": {"context_window": 8, "d_model": 16, "n_layers": 1, "n_heads": 1},
            "training": {"max_epochs": 3},
            "analysis": {
                "permutations": 100,
                "min_events": 20,
                "primary": {"direction": direction},
                "avwo_direction": avwo_direction or direction,
            },
        }
    )


def result_payload(config, *, passed: bool, finished: bool = True, compliance=(0.95, 0.9)):
    """A result.json that passes the schema, shaped like a real one."""
    epochs = 3 if finished else 1
    rules = [
        {
            "rule": k,
            "vertex": 3 + 16 * k,
            "block": k,
            "target_block": 1 - k,
            "r": r,
            "gate_events": 32,
            "compliance": compliance[k],
            "chance_bigram_argmax": 0.0,
            "chance_bigram_sampling": 0.3,
        }
        for k, r in enumerate(config.jumper_r_values())
    ]
    per_epoch = [list(compliance)] * epochs
    return {
        "experiment_id": config.experiment_id,
        "status": "finished" if finished else "running",
        "config": config.to_dict(),
        "config_hash": config.config_hash,
        "data_hash": config.data_hash,
        "curves": {
            "train_loss": [3.0] * (10 * epochs),
            "edge_compliance": [1.0] * epochs,
            "rule_compliance": [min(compliance)] * epochs,
            "rule_compliance_per_jumper": per_epoch,
            "rule_events": [64] * epochs,
        },
        "training": {
            "gate_passed": passed,
            "gate_epoch": 3 if passed else None,
            "epochs_trained": epochs,
            "steps_trained": 10 * epochs,
            "steps_per_epoch": 10,
            "total_steps": 30,
            "failure_reason": None if passed or not finished else FAILURE,
            "final_edge_compliance": 1.0,
            "final_rule_compliance": min(compliance),
            "excluded_from_analysis": not passed,
        },
        "evaluation": None,
        "rules": rules,
        "rule_blind_baseline": {
            "edge_compliance": 1.0,
            "rule_compliance_pooled": 0.5,
            "rule_score": 0.0,
            "passed": False,
            "failure_reason": "rule-blind",
        },
        "data": {},
        "environment": {},
        "timings": {},
    }


def token_metrics(config, seed: int, qkt_reach: int, avwo_reach: int):
    """Events of the config's r over its two jumpers; violations shift the QKᵀ metric at lookbacks
    1..qkt_reach and the AVWₒ metric at 1..avwo_reach (strongly: those become the horizons), up
    when the primary's direction is "higher", down when it is "lower"."""
    sign = 1.0 if config.analysis.primary.direction == "higher" else -1.0
    rng = np.random.default_rng(seed)
    r = config.jumper_r_values()[0]
    jumper = np.repeat(np.arange(2), EVENTS // 2)
    violated = rng.random(EVENTS) < 0.3
    lookback = np.arange(r)[None, :].repeat(EVENTS, axis=0)  # lookback order: column j is lookback j

    def metric(reach):
        shift = sign * 4.0 * ((lookback >= 1) & (lookback <= reach))
        return (rng.normal(size=(EVENTS, r)) + violated[:, None] * shift).astype(np.float32)

    return {
        QKT: metric(qkt_reach),
        AVWO: metric(avwo_reach),
        "target_block_probability": metric(0),
        "violated": violated,
        "event_jumper": jumper,
        "event_r": np.full(EVENTS, r),
    }


def write_run(root, config, *, result=None, reaches=None):
    folder = root / config.experiment_id
    atomic_write_bytes(folder / "config.json", config.to_json().encode())
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    if result is not None:
        write_result(folder, result)
    if reaches is not None:
        write_analysis(folder, config, token_metrics(config, config.seed, *reaches), "default")
    return folder


def settings_of(config, events: int = EVENTS, include_failed: bool = False) -> dict:
    """An analysis's settings as analyze_run records them (the analysis block is the config's)."""
    block = config.analysis.model_dump(mode="json")
    block.pop("chunk_mb")
    block["events"] = events
    return {
        "events": events,
        "stream": block["stream"],
        "top_k": block["top_k"],
        "temperature": block["temperature"],
        "precision": "fp32",
        "checkpoint": "checkpoint_gate.pt",
        "checkpoint_sha256": "0" * 64,
        "include_failed": include_failed,
        "metrics": {"stable_rank": 1},
        "analysis": block,
    }


def write_analysis(folder, config, arrays, name: str, *, registered: bool = True, events: int = EVENTS, include_failed: bool = False):
    """analysis/<name>/ with its summary.json and horizon.json, listed in analysis/index.json."""
    settings = settings_of(config, events, include_failed)
    summary = {
        "experiment_id": config.experiment_id,
        "analysis_name": name,
        "exploratory": False,
        "exploratory_reason": None,
        "token_metrics_sha256": "0" * 64,
        "constant_metrics": [],
        "settings": settings,
    }
    directory = folder / ANALYSIS_DIR / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    check = (
        RegistrationCheck(True, [], registration_payload(config))
        if registered
        else RegistrationCheck(False, ["its primary hypothesis is not the registered one"], registration_payload(config))
    )
    write_horizon(directory, compute_horizon(arrays, config, summary, check=check, analysis_name=name))
    record_analysis(folder, name, settings, label=None, from_run_config=registered, overrides={})
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Six runs: r/w 0.5 (two seeds, analysed), 1.0 (analysed; one unfinished), 1.5 (gate failed; passed, not analysed)."""
    root = tmp_path_factory.mktemp("results")
    spec = {
        "analysed_a": (make_config(0.5, 1), dict(passed=True), (3, 1)),
        "analysed_b": (make_config(0.5, 2), dict(passed=True), (2, 2)),
        "analysed_c": (make_config(1.0, 1), dict(passed=True), (5, 2)),
        "failed": (make_config(1.5, 1), dict(passed=False, compliance=(0.9, 0.41)), None),
        "unfinished": (make_config(1.0, 2), None, None),
        "not_analysed": (make_config(1.5, 2), dict(passed=True), None),
    }
    folders = {}
    for name, (config, result, reaches) in spec.items():
        payload = None if result is None else result_payload(config, **result)
        folders[name] = write_run(root, config, result=payload, reaches=reaches)
    return root, folders


@pytest.fixture(scope="module")
def written(runs, tmp_path_factory):
    root, _ = runs
    out = tmp_path_factory.mktemp("out") / "cmp"
    lines = []
    page = report([root], [], out, echo=lines.append)
    return page, json.loads((out / "comparison.json").read_text()), page.read_text(), "\n".join(lines)


def _entry(comparison, folder):
    return next(e for e in comparison["runs"] if e["folder"] == str(folder))


def test_listing_shows_every_run_with_its_status(runs, written):
    _, folders = runs
    _, comparison, _, printed = written
    assert len(comparison["runs"]) == 6
    line = {name: next(l for l in printed.splitlines() if folder.name in l) for name, folder in folders.items()}
    assert "gate passed at epoch 3; analysed" in line["analysed_a"]
    assert "gate failed after 3 epochs (worst rule 0.410)" in line["failed"]  # the full reason is in comparison.json
    assert "unfinished: no epoch finished yet" in line["unfinished"]
    assert "gate passed at epoch 3; not analysed" in line["not_analysed"]
    assert re.search(r"\b32\s+2\s+8\s+12\s+1\.5\s+1\s+16\s+2\s+3200\b", line["not_analysed"])  # n K w r r/w L d seed walks
    states = {name: _entry(comparison, folder)["state"] for name, folder in folders.items()}
    assert states == {
        "analysed_a": "passed",
        "analysed_b": "passed",
        "analysed_c": "passed",
        "failed": "failed",
        "unfinished": "unfinished",
        "not_analysed": "passed",
    }


def test_where_filters_by_config_keys_and_by_r(runs):
    root, folders = runs
    found = find_runs([root])

    def names(*where):
        return {run.folder for run in filter_runs(found, parse_where(list(where)))}

    assert names("seed=2") == {folders[n] for n in ("analysed_b", "unfinished", "not_analysed")}
    assert names("r=4") == {folders["analysed_a"], folders["analysed_b"]}
    assert names("graph.jump_scales=[1.5]") == {folders["failed"], folders["not_analysed"]}
    assert names("r=8", "seed=1") == {folders["analysed_c"]}
    assert names("seed=1", "seed=2") == set(folders.values())  # the same key: any of its values
    assert names("model.context_window=16") == set()


@pytest.mark.parametrize(
    "where, message",
    [
        ("graph.nn=3", "'graph.nn' is not a config key (did you mean graph.n"),
        ("graph=3", "graph is a section"),
        ("seed", "expected key=value"),
        ("graph.jump_scales=0.9", "write it as JSON, e.g. graph.jump_scales=[0.9]"),
        ("r=eight", "r is a jump length in tokens"),
    ],
)
def test_a_bad_filter_is_an_error_naming_it(where, message):
    with pytest.raises(ComparisonError, match=re.escape(message)):
        parse_where([where])


def test_paths_that_are_not_runs_are_errors_naming_them(runs, tmp_path):
    root, _ = runs
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ComparisonError, match=f"{re.escape(str(empty))} is neither a run folder nor a results root"):
        report([root, empty], [], tmp_path / "out")
    with pytest.raises(ComparisonError, match="no such folder"):
        report([tmp_path / "missing"], [], tmp_path / "out")
    with pytest.raises(ComparisonError, match=r"no run matches seed=9 .*seed: 1, 2"):
        report([root], ["seed=9"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_differing_keys_are_exactly_the_keys_that_vary(written):
    _, comparison, page, _ = written
    assert comparison["differing_keys"] == ["graph.jump_scales", "seed"]
    table = page.split('id="differing-keys"')[1].split("</table>")[0]
    assert "<th>graph.jump_scales</th><th>seed</th></tr>" in table and "graph.n<" not in table


def test_horizons_are_those_of_each_runs_horizon_json(runs, written):
    _, folders = runs
    _, comparison, _, _ = written
    checked = 0
    for name in ("analysed_a", "analysed_b", "analysed_c"):
        horizon = read_horizon(folders[name] / ANALYSIS_DIR / "default")
        entry = _entry(comparison, folders[name])
        assert entry["in_horizon_figures"] and set(entry["horizons"]) == set(horizon["primary"]["by_r"])
        for r, values in entry["horizons"].items():
            for target, key in (("qkt", QKT), ("avwo", AVWO)):
                stored = horizon["metrics"][key]["by_r"][r]
                assert values[target]["key"] == key
                assert values[target]["horizon"] == stored["horizon"]  # the primary's direction is "higher"
                assert values[target]["confident_horizon"] == stored["confident_horizon"]
                checked += 1
            p = horizon["primary"]["by_r"][r]
            assert entry["primary"]["by_r"][r]["auroc"] == p["auroc"][p["best_j"]]
            assert entry["primary"]["by_r"][r]["p_value"] == p["p_value"]
    assert checked == 6
    # the planted reaches come back: QKᵀ 3, 2, 5 lookbacks; AVWₒ 1, 2, 2
    assert [
        _entry(comparison, folders[n])["horizons"][r]["qkt"]["horizon"]
        for n, r in (("analysed_a", "4"), ("analysed_b", "4"), ("analysed_c", "8"))
    ] == [3, 2, 5]


def test_excluded_runs_stay_in_compliance_but_not_horizons_and_the_page_says_why(runs, written):
    _, folders = runs
    _, comparison, page, _ = written
    failed, not_analysed, unfinished = (_entry(comparison, folders[n]) for n in ("failed", "not_analysed", "unfinished"))
    assert failed["in_compliance_figures"] and not failed["in_horizon_figures"] and failed["horizons"] is None
    assert failed["compliance"]["worst"] == 0.41 and failed["compliance"]["by_r"]["12"]["mean"] == pytest.approx(0.655)
    assert not_analysed["in_compliance_figures"] and not not_analysed["in_horizon_figures"]
    assert not unfinished["in_compliance_figures"] and not unfinished["in_horizon_figures"]
    reasons = {item["folder"]: item for item in comparison["excluded"]}
    assert set(reasons) == {str(folders[n]) for n in ("failed", "not_analysed", "unfinished")}
    assert reasons[str(folders["failed"])]["figures"] == ["horizons"]
    assert reasons[str(folders["unfinished"])]["figures"] == ["compliance", "horizons"]
    excluded = page.split('id="excluded-table"')[1].split("</table>")[0]
    assert folders["failed"].name in excluded and "gate failed after 3 epochs" in excluded
    assert "0.41 &lt; 0.8" in excluded  # the reason, escaped
    assert folders["not_analysed"].name in excluded and "not analysed" in excluded
    horizon_table = page.split('id="horizon-table"')[1].split("</table>")[0]
    assert folders["failed"].name not in horizon_table and folders["analysed_c"].name in horizon_table


def test_the_page_is_self_contained(written):
    page_path, _, page, _ = written
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'<(script|link)\b|src="http|href="http', page)
    assert sorted(p.name for p in (page_path.parent / "figures").iterdir()) == [
        "auroc.png",
        "compliance.png",
        "gate.png",
        "horizons.png",
    ]
    assert not any(p.name.startswith(".") for p in page_path.parent.iterdir())  # no stray temporaries


def test_command_line_default_out_and_rerun(runs, capsys):
    root, folders = runs
    parser = argparse.ArgumentParser(prog="dcsbm")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(root), "--where", "r=4"])
    assert args.handler is command_report and args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "2 of 6 run(s) match r=4" in printed and folders["analysed_b"].name in printed
    comparison = json.loads((root / "comparison" / "comparison.json").read_text())
    assert comparison["filter"]["where"] == ["r=4"] and comparison["filter"]["conditions"] == {"r": [4]}
    assert len(find_runs([root])) == 6  # the comparison/ folder is not taken for a run


def test_a_copied_run_folder_counts_once(runs, tmp_path):
    _, folders = runs
    shutil.copytree(folders["analysed_a"], tmp_path / "renamed")
    found = find_runs([folders["analysed_a"], tmp_path / "renamed"])
    assert found[0].duplicate_of is None and found[1].duplicate_of == str(folders["analysed_a"])
    assert "same experiment as" in found[1].note and "not the config's experiment id" in found[1].note


def test_avwo_is_read_in_the_registered_secondary_direction_not_the_primarys(tmp_path):
    config = make_config(1.0, 6, direction="lower", avwo_direction="higher")
    folder = write_run(tmp_path, config, result=result_payload(config, passed=True), reaches=(4, 2))
    page = report([tmp_path], [], tmp_path / "out", echo=lambda _: None)
    entry = json.loads((page.parent / "comparison.json").read_text())["runs"][0]
    stored = read_horizon(folder / ANALYSIS_DIR / "default")["metrics"][AVWO]["by_r"]["8"]
    assert entry["horizons"]["8"]["avwo"]["direction"] == "higher" and entry["horizons"]["8"]["qkt"]["direction"] == "lower"
    assert entry["horizons"]["8"]["avwo"]["horizon"] == stored["horizon"] == 0  # planted lower: none in the declared direction
    assert entry["horizons"]["8"]["avwo_direction_source"] == "declared in the analysis (no registration)"
    # a registration fixes it, whatever the analysis says later
    (folder / "preregistration.json").write_text(json.dumps(registration_payload(make_config(1.0, 6, "lower", "lower"))))
    page = report([tmp_path], [], tmp_path / "again", echo=lambda _: None)
    entry = json.loads((page.parent / "comparison.json").read_text())["runs"][0]
    assert entry["horizons"]["8"]["avwo"]["horizon"] == stored["horizon_lower"] == 2
    assert entry["horizons"]["8"]["avwo_direction_source"] == "registered"


def test_every_point_carries_its_counts_and_insufficient_strata_are_marked(runs, written):
    _, folders = runs
    _, comparison, page, _ = written
    entry = _entry(comparison, folders["analysed_a"])["horizons"]["4"]["qkt"]
    assert entry["n_violations"] > 0 and entry["horizon_over_r"] == pytest.approx(entry["horizon"] / 4, abs=1e-4)
    table = page.split('id="horizon-table"')[1].split("</table>")[0]
    assert f"{entry['n_violations']}/{entry['n_successes']}" in table and "= 0.75 r" in table


def test_the_gate_figure_counts_a_multi_r_run_once_per_r_by_its_own_rules(tmp_path):
    raw = make_config(0.5, 1).to_dict()
    raw["graph"]["jump_scales"] = [0.5, 1.0]
    config = config_from_dict(raw)
    result = result_payload(config, passed=False, compliance=(0.95, 0.41))  # the r = 4 rule passes, the r = 8 rule does not
    write_run(tmp_path, config, result=result)
    page = report([tmp_path], [], tmp_path / "out", echo=lambda _: None)
    entry = json.loads((page.parent / "comparison.json").read_text())["runs"][0]
    assert entry["gate"]["passed_by_r"] == {"4": True, "8": False}


def test_a_lower_primary_reads_the_lower_horizons(tmp_path):
    config = make_config(1.0, 5, direction="lower")
    folder = write_run(tmp_path, config, result=result_payload(config, passed=True), reaches=(4, 2))
    horizon = read_horizon(folder / ANALYSIS_DIR / "default")
    page = report([tmp_path], [], tmp_path / "out", echo=lambda _: None)
    entry = json.loads((page.parent / "comparison.json").read_text())["runs"][0]
    for target, key, planted in (("qkt", QKT, 4), ("avwo", AVWO, 2)):
        stored = horizon["metrics"][key]["by_r"]["8"]
        assert entry["horizons"]["8"][target]["horizon"] == stored["horizon_lower"] == planted
        assert entry["horizons"]["8"][target]["confident_horizon"] == stored["confident_horizon_lower"]
        assert stored["horizon"] == 0  # the "higher" horizon, which a lower primary must not read


def test_unreadable_files_are_listed_not_fatal(runs, tmp_path):
    _, folders = runs
    broken_result = tmp_path / "broken_result"
    shutil.copytree(folders["not_analysed"], broken_result)
    (broken_result / "result.json").write_text("{not json")
    broken_config = tmp_path / "broken_config"
    broken_config.mkdir()
    (broken_config / "config.json").write_text(json.dumps({"graph": {"n": "many"}}))
    found = {run.name: run for run in find_runs([tmp_path])}
    assert found["broken_result"].state == "unreadable" and found["broken_result"].status.startswith("result.json unreadable")
    assert found["broken_config"].state == "unreadable" and "graph.n" in found["broken_config"].status
    assert filter_runs(list(found.values()), parse_where(["seed=2"])) == [found["broken_result"]]


def test_gate_pass_rates_of_all_or_none_draw_their_wilson_interval():
    """k = n (and k = 0) put a Wilson bound within a rounding error of the rate: never a negative error bar."""
    from dcsbm_transformer.comparison.figures import wilson

    for k, n in ((3, 3), (0, 3), (1, 1), (24, 24)):
        low, high = wilson(k, n)
        assert low <= k / n + 1e-12 and high >= k / n - 1e-12 and 0 <= low and high <= 1


def test_the_primary_row_shows_the_metric_at_every_layer(runs, written):
    _, folders = runs
    _, comparison, page, _ = written
    by_layer = _entry(comparison, folders["analysed_a"])["primary"]["by_r"]["4"]["by_layer"]
    assert set(by_layer) == {QKT, AVWO} and by_layer[QKT]["layer"] == 0 and by_layer[QKT]["auroc"] is not None
    table = page.split('id="primary-table"')[1].split("</table>")[0]
    assert "QKᵀ L0H0" in table and "AVWₒ L0H0" in table
    # and where the signal sits: the layer's strongest exploratory array, here the planted QKᵀ or AVWₒ one
    strongest = _entry(comparison, folders["analysed_a"])["primary"]["by_r"]["4"]["strongest_by_layer"]
    assert [(x["layer"], x["head"]) for x in strongest] == [(0, 0)] and strongest[0]["significant"]
    assert strongest[0]["key"] in {QKT, AVWO} and "L0H0: " in table


def test_comparison_md_has_the_pages_numbers_in_markdown_tables(runs, written):
    _, folders = runs
    page, comparison, _, _ = written
    markdown = (page.parent / "comparison.md").read_text()
    gate = markdown.split("## Gate")[1].split("## ")[0]
    # r/w 0.5: two seeds, both passed at epoch 3; r/w 1.5: one passed (not analysed), one failed with worst rule 0.410
    assert "| 4 | 0.50 | 2 | 2/2 | 3, 3 |" in gate
    assert "| 12 | 1.50 | 2 | 1/2 |" in gate and "0.410 (1)" in gate
    primary = markdown.split("## The pre-registered primary")[1].split("## Negative control")[0]
    stat = _entry(comparison, folders["analysed_a"])["primary"]["by_r"]["4"]
    row = next(line for line in primary.splitlines() if folders["analysed_a"].name in line)
    assert f"{stat['auroc']:.3f} [{stat['ci_low']:.3f}, {stat['ci_high']:.3f}] j={stat['best_j']}" in row
    assert "QKᵀ L0H0" in row and "AVWₒ L0H0" in row
    assert sum(line.startswith("| ") for line in primary.splitlines()) == 1 + 3  # header + the three analysed runs
    assert "None" in markdown.split("## Negative control")[1]


def test_a_gate_failed_run_analysed_anyway_is_a_labelled_negative_control_never_mixed(runs, tmp_path):
    _, folders = runs
    root = tmp_path / "results"
    shutil.copytree(folders["analysed_c"], root / folders["analysed_c"].name)  # passed, r/w 1.0
    control = make_config(1.5, 3)
    folder = write_run(root, control, result=result_payload(control, passed=False, compliance=(0.9, 0.41)))
    write_analysis(folder, control, token_metrics(control, 3, 1, 1), "control", registered=False, include_failed=True)
    plain = make_config(1.5, 4)
    write_run(root, plain, result=result_payload(plain, passed=False, compliance=(0.9, 0.41)))  # failed, not analysed
    page = report([root], [], tmp_path / "out", echo=lambda _: None)
    comparison = json.loads((page.parent / "comparison.json").read_text())
    entries = {Path(e["folder"]).name: e for e in comparison["runs"]}
    negative, passed, excluded = entries[folder.name], entries[folders["analysed_c"].name], entries[plain.experiment_id]
    assert negative["in_horizon_figures"] and negative["series"].endswith("[gate failed: negative control]")
    assert passed["in_horizon_figures"] and "negative control" not in passed["series"]
    assert not excluded["in_horizon_figures"]
    assert "gate failed: negative control" in page.read_text()
    markdown = (page.parent / "comparison.md").read_text()
    passed_rows, control_rows = markdown.split("## The pre-registered primary")[1].split("## Negative control")
    assert folder.name in control_rows and folder.name not in passed_rows
    assert folders["analysed_c"].name in passed_rows and folders["analysed_c"].name not in control_rows


def test_a_run_analysed_twice_is_one_point_in_the_compliance_and_gate_figures(runs, tmp_path):
    """Compliance is the training run's: a second analysis (another temperature) adds a row to the
    primary table, not a second point, and its analysis keys do not split the training series."""
    _, folders = runs
    root = tmp_path / "results"
    folder = shutil.copytree(folders["analysed_a"], root / folders["analysed_a"].name)
    config = make_config(0.5, 1)
    sampled = config.model_copy(update={"analysis": config.analysis.model_copy(update={"temperature": 1.0})})
    write_analysis(folder, sampled, token_metrics(config, 1, 3, 1), "sampled", registered=False)
    page = report([root], [], tmp_path / "out", echo=lambda _: None)
    entries = json.loads((page.parent / "comparison.json").read_text())["runs"]
    assert len(entries) == 2 and {e["analysis"] for e in entries} == {"default", "sampled"}
    assert [e["in_compliance_figures"] for e in entries].count(True) == 1
    assert {e["training_series"] for e in entries} == {"all runs"} and len({e["series"] for e in entries}) == 2
