"""The jumper-free null (analysis.measure.null, analysis.stats.null) and the calibration of the
incremental-value models (analysis.stats.calibration): what is drawn and the statistics' size and
power by simulation (the null of a real analysis: tests/test_analysis.py)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from conftest import tiny_config

from dcsbm_transformer.analysis.measure import null as null_module
from dcsbm_transformer.analysis.measure.null import _rule_free_walks, matched_violations, pending_after
from dcsbm_transformer.analysis.stats.calibration import reliability
from dcsbm_transformer.analysis.stats.null import null_comparison


class _Graph:
    """Just what pending_after reads: vertices 1 and 2 are jumpers with r = 3 and 1."""

    jumper_index = np.array([-1, 0, 1, -1, -1])
    jumper_r = np.array([3, 1])


def test_pending_after_marks_the_steps_a_rule_covers():
    walks = np.array([[0, 1, 0, 0, 0, 0, 3], [0, 0, 2, 0, 1, 0, 0]])
    pending = pending_after(walks, _Graph())
    # jumper at step 1 with r = 3: its deadline is step 4, so after steps 1, 2, 3 a rule is pending
    assert pending[0].tolist() == [False, True, True, True, False, False, False]
    # r = 1 at step 2 (pending after step 2 only); r = 3 at step 4 (after 4, 5, 6: the deadline 7 is past the walk)
    assert pending[1].tolist() == [False, False, True, False, True, True, True]


def test_matched_violations_repeat_each_violation_and_respect_the_cap():
    violated = np.array([False, True, False, True, True])
    assert matched_violations(violated, 3, 100, np.random.default_rng(0)).tolist() == [1, 1, 1, 3, 3, 3, 4, 4, 4]
    capped = matched_violations(violated, 3, 4, np.random.default_rng(0))
    assert capped.size == 4 and set(capped) <= {1, 3, 4} and (np.diff(capped) >= 0).all()
    assert matched_violations(np.zeros(5, bool), 3, 100, np.random.default_rng(0)).size == 0


class _DenseRules:
    """Vertex 3 of 4 is a jumper whose rule outlasts the walk: step s is rule-free with probability
    (3/4)^(s+1) on a uniform walk — common at s = 2, rare at 20 (0.24%), never in practice at 60."""

    jumper_index = np.array([-1, -1, -1, 0])
    jumper_r = np.array([100])


def test_rule_free_walks_pool_the_rare_steps_and_count_the_impossible(monkeypatch):
    drawn_streams = []

    def uniform_walks(graph, count, length, start_fraction, seed, stream):
        drawn_streams.append(stream)
        rng = np.random.default_rng(zlib.crc32(stream.encode()))
        return type("Corpus", (), {"walks": rng.integers(0, 4, size=(count, length))})

    monkeypatch.setattr(null_module, "generate_corpus", uniform_walks)
    config = tiny_config(walks={"walk_length": 64})
    step = np.r_[np.full(50, 2), np.full(3, 20), 60]
    walks, found, source, drawn = _rule_free_walks(config, _DenseRules(), step)
    # every common and rare step found a walk (the rare ones in the pooled rounds); the impossible one is counted
    assert found.tolist() == [True] * 53 + [False]
    assert any("-null-pool-" in s for s in drawn_streams)
    rows = np.flatnonzero(found)
    assert not pending_after(walks[rows], _DenseRules())[np.arange(rows.size), step[rows]].any()
    assert np.unique(source[rows]).size == rows.size and source[~found].tolist() == [-1]  # no walk serves two events
    assert drawn >= 2 * null_module.MAX_ROUNDS * 999  # both phases ran all their rounds for the impossible step


def _synthetic(rng, *, shift: float, violations=60, successes=600, null=180, lookbacks=4, jumpers=2):
    """token_metrics-like and null_metrics-like arrays: one metric, violations shifted by ``shift``."""
    y = np.r_[np.ones(violations, bool), np.zeros(successes, bool)]
    g = rng.integers(0, jumpers, y.size)
    arrays = {
        "violated": y,
        "event_jumper": g,
        "event_r": np.full(y.size, lookbacks),
        "m": rng.normal(size=(y.size, lookbacks)) + shift * y[:, None],
    }
    matched = rng.choice(np.flatnonzero(y), null)
    nulls = {
        "event_jumper": g[matched],
        "event_r": np.full(null, lookbacks),
        "event_matched": matched,
        "first_jumper_pass": np.zeros(null, dtype=np.int16),
        "m": rng.normal(size=(null, lookbacks)),
    }
    return arrays, nulls


def _compare(arrays, nulls, rng, permutations=99):
    return null_comparison(arrays, nulls, ["m"], permutations=permutations, alpha=0.05, min_events=10, threshold=0.75, rng=rng)[
        "metrics"
    ]["m"]["by_r"]["4"]


def test_violations_vs_null_p_is_uniform_without_signal_and_small_with_one():
    rng = np.random.default_rng(1)
    p = np.array([_compare(*_synthetic(rng, shift=0.0), rng)["p_value"] for _ in range(120)])
    assert (p <= 0.05).mean() <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 120)
    assert abs((p <= 0.5).mean() - 0.5) <= 3 * np.sqrt(0.25 / 120)
    entry = _compare(*_synthetic(rng, shift=0.8), rng)
    assert entry["p_value"] < 0.02 and entry["significant"]
    assert min(entry["ci_low"][1:]) > 0.5  # violations above the null at every lookback
    assert entry["successes_vs_null"]["ci_low"][1] < 0.5 < entry["successes_vs_null"]["ci_high"][1]  # successes look like it
    q = entry["quantiles"]
    assert q["violations"]["q50"][1] > q["null"]["q50"][1] and q["null"]["q10"][1] < q["null"]["q50"][1] < q["null"]["q90"][1]


def test_reliability_is_calibrated_for_true_probabilities_and_flags_wrong_ones():
    rng = np.random.default_rng(2)
    p_values = []
    for _ in range(80):
        p = 1 / (1 + np.exp(-rng.normal(-3.5, 1.0, 3000)))
        p_values.append(reliability(p, rng.random(3000) < p, rng=rng, resamples=300)["p_value"])
    p_values = np.array(p_values)
    assert (p_values <= 0.05).mean() <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 80) and (p_values <= 0.5).mean() > 0.3
    p = 1 / (1 + np.exp(-rng.normal(-3.5, 1.0, 3000)))
    wrong = reliability(p, rng.random(3000) < np.minimum(1.0, 2 * p), rng=rng)  # twice as many violations as predicted
    assert wrong["p_value"] < 0.01 and wrong["ece"] > wrong["ece_calibrated_95"]
    assert wrong["count"] == [300] * 10 and wrong["bins"] == 10  # equal-count bins, as stated
    manual = sum(n / 3000 * abs(o - m) for n, o, m in zip(wrong["count"], wrong["observed"], wrong["mean_predicted"]))
    assert wrong["ece"] == pytest.approx(manual)


def test_incremental_value_reports_the_calibration_of_both_models_out_of_fold():
    from dcsbm_transformer.analysis.stats.incremental import incremental_value

    rng = np.random.default_rng(3)
    n = 2000
    g = rng.integers(0, 2, n)
    base = rng.normal(size=n)
    metric = rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(-3 + base + metric)))
    out = incremental_value(metric, {"base": base}, y, g, rng=rng)
    for name in ("full", "reduced"):
        cal = out["calibration"][name]
        assert cal["bins"] == 10 and sum(cal["count"]) == n and "out-of-fold" in cal["binning"]
        assert 0 <= cal["ece"] < 0.05 and cal["p_value"] > 0.001  # a correctly specified model: calibrated out of fold
