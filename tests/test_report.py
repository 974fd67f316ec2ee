"""report.html and the analysis figures, from a synthetic run folder (no model is trained).

The folder holds what the report reads: config.json, result.json, analysis/summary.json, a
token_metrics.npz with a planted signal, and the horizon.json computed from it by the real
statistics (``compute_horizon``), so every number checked here is the pipeline's own.
"""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from dcsbm_transformer.analysis.files import read_horizon, write_horizon
from dcsbm_transformer.analysis.report.figures import draw_figures
from dcsbm_transformer.analysis.report.page import REPORT_FILE, render, report_context, write_report
from dcsbm_transformer.analysis.stats.horizon import compute_horizon
from dcsbm_transformer.config import config_from_dict
from dcsbm_transformer.registration import RegistrationCheck, registration_payload
from dcsbm_transformer.storage import sha256_file, write_npz

PRIMARY = "qkt.layer_0.head_0.grassmannian_distance"
PLANTED = "avwo.layer_0.head_0.stable_rank"  # lower before violations at lookbacks 0..3
CONSTANT = "qkt.layer_0.head_0.gap_8"
NOISE = ("qkt.layer_0.head_0.stable_rank", "avwo.layer_0.head_0.spectral_entropy")
PASSES = 6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RAW_CONFIG = {
    "seed": 3,
    "graph": {"n": 32, "K": 2, "p_in": 0.9, "p_out": 0.2, "jumpers_per_block": 1, "jump_scales": [0.75]},
    "walks": {"walk_length": 24, "train_walks": 3200, "eval_walks": 200},
    "model": {"context_window": 8, "d_model": 16, "n_layers": 1, "n_heads": 1},
    "analysis": {"permutations": 200, "confirmatory_fraction": 0.0},  # every event explored: the counts below are all events
}


def synthetic_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """400 events at r = 6 (jumpers 0, 1; 30% violations) and 40 at r = 3 (jumper 2; 5 violations:
    an insufficient stratum). ``PLANTED`` is lower before violations at lookbacks 0..3; the model's
    target-block probability is only weakly lower, so the planted metric beats the logits."""
    rng = np.random.default_rng(seed)
    r = np.r_[np.full(400, 6), np.full(40, 3)]
    jumper = np.r_[np.arange(400) % 2, np.full(40, 2)]
    violated = np.r_[rng.random(400) < 0.3, np.arange(40) < 5]
    lookback = np.broadcast_to(np.arange(PASSES)[None, :], (r.size, PASSES))  # lookback order: column j is lookback j
    beyond = lookback >= r[:, None]  # no such pass for this event
    y = violated[:, None].astype(np.float64)

    def per_pass(shift: np.ndarray) -> np.ndarray:
        values = rng.normal(size=(r.size, PASSES)) + shift
        return np.where(beyond, np.nan, values).astype(np.float32)

    arrays = {
        "violated": violated,
        "event_r": r,
        "event_jumper": jumper,
        PRIMARY: per_pass(0.0),
        PLANTED: per_pass(-1.6 * y * (lookback <= 3)),
        CONSTANT: np.where(beyond, np.nan, 0.0).astype(np.float32),
        "target_block_probability": per_pass(-0.25 * y),
    }
    for key in NOISE:
        arrays[key] = per_pass(0.0)
    for key in (PRIMARY, PLANTED, CONSTANT, *NOISE):
        arrays[f"context.{key}"] = rng.normal(size=r.size).astype(np.float32)
    return arrays


def counts(arrays, mask) -> dict[str, int]:
    y = arrays["violated"][mask]
    return {
        "events": int(mask.sum()),
        "violated": int(y.sum()),
        "followed": int((~y).sum()),
        "edge_clean": int(mask.sum()),
        "edge_clean_violated": int(y.sum()),
    }


def build_run(folder: Path) -> Path:
    """A results folder with everything write_report reads; returns its analysis folder
    (``<folder>/analysis/synthetic``), the run's registered analysis."""
    config = config_from_dict(RAW_CONFIG)
    analysis = folder / "analysis" / "synthetic"
    arrays = synthetic_arrays()
    write_npz(analysis / "token_metrics.npz", arrays)
    rules = [(0, 4, 0, 1, 6), (1, 20, 1, 0, 6), (2, 9, 0, 1, 3)]  # rule, vertex, block, target block, r
    summary = {
        "experiment_id": config.experiment_id,
        "exploratory": False,
        "exploratory_reason": None,
        "continuations": "greedy (argmax)",
        "token_metrics_sha256": sha256_file(analysis / "token_metrics.npz"),
        "constant_metrics": [CONSTANT],
        "counts": counts(arrays, np.ones(440, dtype=bool)),
        "counts_by_r": {str(r): counts(arrays, arrays["event_r"] == r) for r in (3, 6)},
        "counts_by_rule": [
            {**counts(arrays, arrays["event_jumper"] == rule), "rule": rule, "vertex": v, "target_block": t, "r": r}
            for rule, v, _, t, r in rules
        ],
        "guard_hits": {"condition_number": 2},
        "versions": {"python": "3.11", "numpy": np.__version__},
        "timings": {"total_seconds": 1.5},
    }
    (analysis / "summary.json").write_text(json.dumps(summary))
    registered = RegistrationCheck(True, [], registration_payload(config))
    write_horizon(analysis, compute_horizon(arrays, config, summary, check=registered, analysis_name="synthetic"))
    (folder / "config.json").write_text(config.to_json())
    result = {
        "experiment_id": config.experiment_id,
        "status": "finished",
        "training": {"gate_passed": True, "gate_epoch": 3, "epochs_trained": 3, "failure_reason": None},
        "evaluation": {"edge_compliance": 0.998, "rule_score": 0.91, "rule_compliance": 0.93},
        "rules": [
            {
                "rule": rule,
                "vertex": v,
                "block": b,
                "target_block": t,
                "r": r,
                "gate_events": 32,
                "compliance": 0.91 + 0.01 * rule,
                "chance_bigram_argmax": float(rule % 2),
                "chance_bigram_sampling": 0.5,
            }
            for rule, v, b, t, r in rules
        ],
        "rule_blind_baseline": {
            "edge_compliance": 1.0,
            "rule_score": 0.0,
            "passed": False,
            "failure_reason": "rule 0 0.0 is not above 0.8",
        },
        "data": {"jumper_r": [6, 6, 3]},
        "environment": {"python": "3.11", "device": "cpu"},
        "timings": {"train_seconds": 2.0, "eval_seconds": 0.1},
    }
    (folder / "result.json").write_text(json.dumps(result))
    return analysis


def copy_run(analysis: Path, folder: Path) -> Path:
    """A copy of the run folder holding ``analysis``; returns the copy's analysis folder."""
    shutil.copytree(analysis.parents[1], folder)
    return folder / "analysis" / analysis.name


def make_exploratory(run: Path, folder: Path) -> Path:
    """A copy of ``run`` whose gate did not pass (analysed with --include-failed)."""
    analysis = copy_run(run, folder)
    reason = "the gate did not pass (rule 2 0.7 is not above 0.8); analysed with --include-failed"
    result = json.loads((folder / "result.json").read_text())
    result["training"].update(gate_passed=False, failure_reason="rule 2 0.7 is not above 0.8")
    (folder / "result.json").write_text(json.dumps(result))
    summary = json.loads((analysis / "summary.json").read_text())
    summary.update(exploratory=True, exploratory_reason=reason)
    (analysis / "summary.json").write_text(json.dumps(summary))
    horizon = read_horizon(analysis)
    horizon.update(exploratory=True, exploratory_reason=reason)
    write_horizon(analysis, horizon)
    return analysis


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("report") / "run")


@pytest.fixture(scope="module")
def written(run) -> Path:
    return write_report(run)


def test_report_is_one_self_contained_page(run, written):
    assert written == run / REPORT_FILE and written.is_file()
    page = written.read_text()
    assert 'src="http' not in page and "<link" not in page and "<script" not in page
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert len(sources) == len(list((run / "figures").glob("*.png"))) == 8
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "AUPRC [95% CI] at best j vs no skill (prevalence)" in page and 'id="calibration-table"' in page
    assert 'id="exploratory-banner"' not in page  # the gate passed


def test_report_shows_the_primary_and_the_planted_metric_with_horizon_numbers(run, written):
    horizon = read_horizon(run)
    context = report_context(run)
    page = html.unescape(written.read_text())
    assert horizon["primary"]["summary"] in page
    assert context["primary_summary"] == horizon["primary"]["summary"]

    stratum = next(s for s in context["strata"] if s["r"] == 6)
    assert stratum["primary"]["key"] == PRIMARY and stratum["primary"]["role"] == "primary"
    row = next(row for row in stratum["rows"] if row["key"] == PLANTED)
    entry = horizon["metrics"][PLANTED]["by_r"]["6"]
    j = entry["best_j"]
    assert row["best_j"] == j and row["auroc"] == entry["auroc"][j] and row["auroc"] < 0.25
    assert (row["ci_low"], row["ci_high"], row["p_adjusted"]) == (entry["ci_low"][j], entry["ci_high"][j], entry["p_adjusted"])
    assert row["significant"] is True and row["direction"] == "lower before violations"
    assert row["horizon"] == entry["horizon_lower"] == 3  # planted at lookbacks 0..3: counted in its own direction
    assert row["confident_horizon"] == entry["confident_horizon_lower"]
    assert row["auroc_text"] == f"{entry['auroc'][j]:.3f} [{entry['ci_low'][j]:.3f}, {entry['ci_high'][j]:.3f}]"
    assert row["p_text"] == f"{entry['p_adjusted']:.1e}" and re.fullmatch(r"\d\.\de-\d\d", row["p_text"])
    table = re.search(r'id="horizon-r6">(.*?)</table>', page, re.S).group(1)
    planted_row = re.search(rf'data-key="{re.escape(PLANTED)}">(.*?)</tr>', table, re.S).group(1)
    assert row["auroc_text"] in planted_row and row["p_text"] in planted_row and "3 (lower)" in planted_row
    assert CONSTANT in page  # listed as constant, not tested


def test_insufficient_stratum_says_so_with_its_counts(run, written):
    stratum = next(s for s in report_context(run)["strata"] if s["r"] == 3)
    assert stratum["primary"]["insufficient"] == "insufficient (5 violations, 35 successes)"
    assert all(row["insufficient"] for row in stratum["rows"])
    assert "insufficient (5 violations, 35 successes)" in written.read_text()


def test_better_than_the_logits_count(run, written):
    horizon = read_horizon(run)
    significant = [k for k, s in horizon["metrics"].items() if s["by_r"]["6"]["significant"]]
    better = [k for k in significant if horizon["metrics"][k]["by_r"]["6"]["versus_behaviour"]["verdict"] == "better than the logits"]
    versus = next(s for s in report_context(run)["strata"] if s["r"] == 6)["versus"]
    assert PLANTED in better and versus["better"] == better
    assert (versus["n_better"], versus["n_significant"]) == (len(better), len(significant))
    assert f"{len(better)} of the {len(significant)} significant metrics do better than the logits" in written.read_text()


def test_report_says_plainly_when_no_metric_beats_the_logits(run, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    horizon = read_horizon(folder)
    for stats in horizon["metrics"].values():
        versus = stats["by_r"]["6"]["versus_behaviour"]
        if versus is not None:
            versus["verdict"] = "no better than the logits"
    write_horizon(folder, horizon)
    context = report_context(folder)
    versus = next(s for s in context["strata"] if s["r"] == 6)["versus"]
    assert versus["n_better"] == 0 and versus["n_significant"] >= 1
    assert f"None of the {versus['n_significant']} significant metrics does better than the logits" in render(context)


def test_exploratory_banner_only_for_an_exploratory_run(run, tmp_path):
    assert 'id="exploratory-banner"' not in render(report_context(run))
    folder = make_exploratory(run, tmp_path / "failed")
    context = report_context(folder)
    assert context["exploratory"] is True
    page = render(context)
    assert 'id="exploratory-banner"' in page and "EXPLORATORY" in page and "--include-failed" in page


def test_figures_are_valid_pngs(run, written):
    folder = run / "figures"
    names = {p.stem for p in folder.glob("*.png")}
    assert names == {
        "primary",
        "primary_by_layer",
        "auroc_small_multiples_r3",
        "auroc_small_multiples_r6",
        "event_aligned",
        "overview",
        "auprc",
        "reliability",
    }
    import matplotlib.image

    for path in folder.glob("*.png"):
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert min(matplotlib.image.imread(path).shape[:2]) > 100
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left behind


def test_one_r_and_no_arrays(run, tmp_path):
    """With a single r the small multiples have one file; without the npz there is no event-aligned figure."""
    horizon = read_horizon(run)
    horizon["r_values"] = [6]
    drawn = draw_figures(tmp_path, horizon, None, top_n=2)
    assert {"primary", "primary_by_layer", "auroc_small_multiples", "auprc", "overview"} <= set(drawn)
    assert set(drawn) - {"primary", "primary_by_layer", "auroc_small_multiples", "auprc", "overview"} <= {"reliability"}
    assert all(path.read_bytes()[:8] == PNG_MAGIC for path in drawn.values())


def test_missing_inputs_are_named(run, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    (folder / "horizon.json").unlink()
    with pytest.raises(FileNotFoundError, match="horizon.json"):
        write_report(folder)
    with pytest.raises(FileNotFoundError, match="config.json"):
        report_context(tmp_path)


def test_a_multi_layer_run_shows_the_primary_metric_at_every_layer(tmp_path):
    """Per-layer answers: the primary's metric at each layer, and where the strongest arrays sit."""
    from dcsbm_transformer.analysis.report.page import layer_rows

    config = config_from_dict({**RAW_CONFIG, "model": {**RAW_CONFIG["model"], "n_layers": 2}})
    arrays = synthetic_arrays()
    deeper = PRIMARY.replace("layer_0", "layer_1")  # the registered layer (-1 = the last)
    arrays[deeper] = arrays[PRIMARY].copy()
    arrays[f"context.{deeper}"] = arrays[f"context.{PRIMARY}"]
    arrays[PRIMARY] = arrays[PLANTED].copy()  # the primary's metric separates at layer 0 only
    arrays[PRIMARY.replace("qkt", "avwo")] = arrays[NOISE[0]].copy()
    summary = {
        "experiment_id": config.experiment_id,
        "exploratory": False,
        "exploratory_reason": None,
        "token_metrics_sha256": "0" * 64,
        "constant_metrics": [CONSTANT],
    }
    horizon = compute_horizon(arrays, config, summary, check=RegistrationCheck(True, [], registration_payload(config)))
    rows = {(row["target"], row["layer"]): row for row in layer_rows(horizon, 6)}
    assert set(rows) == {("QKᵀ", 0), ("QKᵀ", 1), ("AVWₒ", 0)}
    assert rows[("QKᵀ", 1)]["role"] == "primary" and rows[("QKᵀ", 0)]["role"] == ""
    assert rows[("QKᵀ", 0)]["significant"] and rows[("QKᵀ", 0)]["auroc"] < 0.25  # the planted signal, at layer 0
    assert rows[("QKᵀ", 0)]["strongest_here"] >= 1
    drawn = draw_figures(tmp_path, horizon, None)
    assert drawn["primary_by_layer"].read_bytes()[:8] == PNG_MAGIC
