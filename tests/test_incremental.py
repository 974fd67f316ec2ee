"""Incremental value (``analysis.stats.incremental``): a metric that is its context-only value plus noise
adds nothing — the likelihood-ratio test keeps its level and the cross-validated gain is about 0 —
while a metric with an added independent signal is found; and the numbers are those of a direct
statsmodels fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dcsbm_transformer.analysis.stats.incremental import incremental_value

EVENTS = 600


def events(seed: int, extra_signal: float):
    """Violations driven by the context value and the logits; the metric = context + noise (+ an
    independent signal of the violation when ``extra_signal`` > 0)."""
    rng = np.random.default_rng(seed)
    jumper = np.arange(EVENTS) % 3
    context = rng.normal(size=EVENTS)
    logits = rng.normal(size=EVENTS)
    hidden = rng.normal(size=EVENTS)  # what only the metric may know
    linear = -1.5 + 0.4 * jumper + 0.8 * context - 0.8 * logits + extra_signal * hidden
    violated = rng.random(EVENTS) < 1 / (1 + np.exp(-linear))
    metric = context + 0.5 * rng.normal(size=EVENTS) + (hidden if extra_signal > 0 else 0.0)
    return metric, {"context-only value": context, "target_block_probability": logits}, violated, jumper


def test_context_plus_noise_adds_nothing_and_the_lr_test_keeps_its_level():
    results = [
        incremental_value(*events(seed, 0.0)[:2], *events(seed, 0.0)[2:], rng=np.random.default_rng(seed)) for seed in range(100)
    ]
    p = np.array([r["p_value"] for r in results])
    assert np.isfinite(p).all()
    assert np.mean(p < 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 100)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    gains = np.array([r["gain"] for r in results])
    assert abs(gains.mean()) < 0.01  # the cross-validated AUROC gain is about zero
    assert np.mean([r["gain_ci_low"] > 0 for r in results]) <= 0.1


def test_an_independent_signal_is_found_beyond_the_bases():
    found = [
        incremental_value(*events(100 + seed, 1.0)[:2], *events(100 + seed, 1.0)[2:], rng=np.random.default_rng(seed))
        for seed in range(20)
    ]
    assert np.mean([r["p_value"] < 0.01 and r["gain_ci_low"] > 0 for r in found]) >= 0.9
    assert all(r["coefficient"] > 0 for r in found)


def test_the_lr_statistic_is_that_of_a_direct_fit_and_unfittable_data_give_nan():
    import statsmodels.api as sm

    metric, bases, violated, jumper = events(7, 0.5)
    result = incremental_value(metric, bases, violated, jumper, rng=np.random.default_rng(0))
    dummies = np.column_stack([(jumper == k).astype(float) for k in range(3)])
    z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    reduced = sm.Logit(
        violated.astype(float), np.column_stack([dummies, z(bases["context-only value"]), z(bases["target_block_probability"])])
    ).fit(disp=0)
    full = sm.Logit(violated.astype(float), np.column_stack([reduced.model.exog, z(metric)])).fit(disp=0)
    assert result["lr_statistic"] == pytest.approx(2 * (full.llf - reduced.llf), rel=1e-6)
    assert result["events"] == EVENTS and result["bases"] == ["context-only value", "target_block_probability"]
    # a metric that separates perfectly cannot be fitted honestly: NaN, not a number
    perfect = incremental_value(violated.astype(float), bases, violated, jumper, rng=np.random.default_rng(0))
    assert np.isnan(perfect["p_value"])
    # NaN values drop their events
    holes = metric.copy()
    holes[:50] = np.nan
    assert incremental_value(holes, bases, violated, jumper, rng=np.random.default_rng(0))["events"] == EVENTS - 50
