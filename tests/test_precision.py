"""AUPRC beside every AUROC (analysis.stats.precision, statistics.separation_family): the estimator
against a brute-force definition, the jackknife against brute-force leave-one-out, the interval's
coverage and the permutation test's size and power, by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from dcsbm_transformer.analysis.stats.precision import _jackknife_var, ap_keys, auprc_ci, stratified_auprc
from dcsbm_transformer.analysis.stats.statistics import separation, separation_family


def brute_ap(x: np.ndarray, y: np.ndarray) -> float:
    """Average precision straight from its definition: mean over violations of the precision among
    events scored at or above it (NaN excluded)."""
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    return float(np.mean([(y & (x >= x[i])).sum() / (x >= x[i]).sum() for i in np.flatnonzero(y)]))


def test_average_precision_matches_its_definition_with_ties_nan_and_both_orientations():
    rng = np.random.default_rng(1)
    for t in range(120):
        n = int(rng.integers(5, 50))
        x = rng.integers(0, 5, size=n).astype(float) if t % 2 else rng.normal(size=n)
        x[rng.random(n) < 0.1] = np.nan
        y = rng.random(n) < 0.3
        if not (y & np.isfinite(x)).any():
            continue
        g = np.zeros(n, dtype=int)
        assert stratified_auprc(x, y, g)["auprc"] == pytest.approx(brute_ap(x, y), abs=1e-12)
        assert stratified_auprc(x, y, g, orientation="lower")["auprc"] == pytest.approx(brute_ap(-x, y), abs=1e-12)


def test_stratified_ap_weights_each_rule_by_its_violations_and_prevalence_is_the_no_skill_line():
    rng = np.random.default_rng(2)
    x = rng.normal(size=300)
    y = rng.random(300) < 0.2
    g = np.repeat([0, 1, 2], 100)
    st = stratified_auprc(x, y, g)
    nv = np.array([y[g == s].sum() for s in range(3)])
    per = np.array([brute_ap(x[g == s], y[g == s]) for s in range(3)])
    assert st["auprc"] == pytest.approx((nv * per).sum() / nv.sum())
    assert st["prevalence"] == pytest.approx((nv * nv / 100).sum() / nv.sum())


def test_jackknife_variance_is_the_brute_force_leave_one_out():
    rng = np.random.default_rng(3)
    for t in range(40):
        n = int(rng.integers(8, 40))
        x = rng.integers(0, 5, size=n).astype(float) if t % 2 else rng.normal(size=n)
        x[rng.random(n) < 0.1] = np.nan
        y = rng.random(n) < 0.4
        finite = np.isfinite(x)
        if (y & finite).sum() < 3 or (~y & finite).sum() < 3:
            continue
        keys, sentinel, _ = ap_keys(x[:, None])
        leave = {
            cls: [brute_ap(np.delete(x, i), np.delete(y, i)) for i in np.flatnonzero(finite & (y == cls))] for cls in (True, False)
        }
        expected = sum((len(v) - 1) / len(v) * np.sum((np.array(v) - np.mean(v)) ** 2) for v in leave.values())
        assert _jackknife_var(keys, y, sentinel)[0] == pytest.approx(expected, abs=1e-12)


def test_interval_covers_the_population_ap_at_the_analysis_imbalance():
    """4 rules × 2,000 events at 2% violations (40 per rule), binormal scores with d' = 1: the 95%
    interval must cover the population AP (estimated from 4 million draws) in >= 90% of replicates."""
    rng = np.random.default_rng(4)
    prevalence, n, d = 0.02, 2000, 1.0
    nv = int(prevalence * n)
    big = 4_000_000
    truth = stratified_auprc(
        np.r_[rng.normal(d, 1, int(prevalence * big)), rng.normal(0, 1, big - int(prevalence * big))],
        np.r_[np.ones(int(prevalence * big), bool), np.zeros(big - int(prevalence * big), bool)],
        np.zeros(big, dtype=int),
    )["auprc"]
    reps, covered = 200, 0
    y = np.tile(np.r_[np.ones(nv, bool), np.zeros(n - nv, bool)], 4)
    g = np.repeat(np.arange(4), n)
    for _ in range(reps):
        x = rng.normal(0, 1, 4 * n) + d * y
        st = stratified_auprc(x, y, g)
        low, high = auprc_ci(st["auprc"], st["var"])
        covered += low <= truth <= high
    assert covered / reps >= 0.90


def test_perfect_ranking_gets_an_honest_lower_bound():
    y = np.r_[np.ones(20, bool), np.zeros(200, bool)]
    x = np.r_[np.arange(20) + 1000.0, np.arange(200.0)]
    st = stratified_auprc(x, y, np.zeros(220, dtype=int))
    low, high = auprc_ci(st["auprc"], st["var"])
    assert st["auprc"] == 1.0 and high == 1.0
    assert low == pytest.approx(0.025 ** (1 / 20), abs=1e-9)


def _events(rng, n=400, jumpers=2, prevalence=0.1, lookbacks=4, signal=0.0):
    g = np.repeat(np.arange(jumpers), n // jumpers)
    y = rng.random(n) < prevalence
    x = rng.normal(size=(n, lookbacks)) + signal * y[:, None]
    return x, y, g, np.full(n, lookbacks)


def test_auprc_permutation_p_is_uniform_without_signal_and_small_with_one():
    rng = np.random.default_rng(5)
    p_null = []
    for _ in range(150):
        x, y, g, r = _events(rng)
        res = separation(x, y, g, r, permutations=199, rng=rng, min_events=5)[4]
        p_null.append(res.auprc_p_value)
    p_null = np.array(p_null)
    # two-sided (doubled) p: valid, so rejections at 0.05 and 0.2 stay within Monte-Carlo error of the level
    assert (p_null <= 0.05).mean() <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 150)
    assert (p_null <= 0.2).mean() <= 0.2 + 2 * np.sqrt(0.2 * 0.8 / 150)
    x, y, g, r = _events(rng, signal=1.0)
    res = separation(x, y, g, r, permutations=199, rng=rng, min_events=5)[4]
    assert res.auprc_p_value < 0.02 and res.auprc_orientation == "higher"
    assert np.all(res.auprc[1:] > res.prevalence[1:])
    x, y, g, r = _events(rng, signal=-1.0)
    res = separation(x, y, g, r, permutations=199, rng=rng, min_events=5, alternative="less")[4]
    assert res.auprc_p_value < 0.01 and res.auprc_orientation == "lower"


def test_one_sided_auprc_p_is_uniform_under_the_null():
    rng = np.random.default_rng(6)
    p = np.array(
        [separation(*_events(rng), permutations=99, rng=rng, min_events=5, alternative="greater")[4].auprc_p_value for _ in range(150)]
    )
    assert abs((p <= 0.2).mean() - 0.2) <= 3 * np.sqrt(0.2 * 0.8 / 150)
    assert abs((p <= 0.5).mean() - 0.5) <= 3 * np.sqrt(0.25 / 150)


def test_auprc_uses_the_aurocs_shuffles_without_changing_them():
    """The AUROC's p is the same with or without the AUPRC's test (no extra draws), and the AUPRC's
    test on a prefix of the shuffles is the one the prefix alone would give."""
    rng = np.random.default_rng(7)
    x, y, g, r = _events(rng, signal=0.3)
    arrays = {"a": x, "b": rng.normal(size=x.shape)}
    full = separation_family(arrays, y, g, r, permutations=300, rng=np.random.default_rng(11), min_events=5)
    none = separation_family(arrays, y, g, r, permutations=300, rng=np.random.default_rng(11), min_events=5, auprc_permutations=0)
    part = separation_family(arrays, y, g, r, permutations=300, rng=np.random.default_rng(11), min_events=5, auprc_permutations=100)
    shorter = separation_family(arrays, y, g, r, permutations=100, rng=np.random.default_rng(11), min_events=5, chunk=100)
    prefix = separation_family(
        arrays, y, g, r, permutations=300, rng=np.random.default_rng(11), min_events=5, chunk=100, auprc_permutations=100
    )
    for key in arrays:
        assert full[key][4].p_value == none[key][4].p_value
        assert none[key][4].auprc_p_value is None and full[key][4].auprc_permutations == 300
        assert part[key][4].auprc_permutations == 100
        assert prefix[key][4].auprc_p_value == shorter[key][4].auprc_p_value
