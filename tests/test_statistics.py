"""The statistics core: midrank AUROC, stratification, DeLong CI, permutation test, Holm, horizons."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, norm

from dcsbm_transformer.analysis.stats.statistics import (
    auroc,
    auroc_ci,
    delong,
    holm,
    horizons,
    lookback_view,
    permuted_labels,
    r_strata,
    separation,
    stratified_auroc,
    stratum_mask,
)


def brute_auroc(x, y):
    v, s = x[y], x[~y]
    d = v[:, None] - s[None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


def planted(rng, n_v, n_s, r, k, delta, jumpers=1):
    """Events of one r stratum; violations' values shifted by delta at lookbacks j <= k."""
    E = n_v + n_s
    y = np.zeros(E, bool)
    y[:n_v] = True
    vals = rng.normal(size=(E, r)).astype(np.float32)
    j = np.arange(k + 1)
    vals[np.ix_(y, j)] += delta  # lookback order: column j is lookback j
    g = rng.integers(0, jumpers, E)
    return vals, y, g, np.full(E, r)


def test_lookback_view_and_strata():
    vals = np.arange(12, dtype=np.float32).reshape(3, 4)  # pass k in column k-1
    r = np.array([4, 2, 3])
    lb = lookback_view(vals, r)
    assert lb.shape == (3, 4)
    np.testing.assert_array_equal(lb[0], [3, 2, 1, 0])
    np.testing.assert_array_equal(lb[1, :2], [5, 4])
    assert np.isnan(lb[1, 2:]).all()
    np.testing.assert_array_equal(lb[2, :3], [10, 9, 8])
    assert np.isnan(lb[2, 3])
    assert r_strata(r) == [2, 3, 4]
    np.testing.assert_array_equal(stratum_mask(r, 3), [False, False, True])


def test_auroc_matches_brute_force_with_ties_and_is_not_folded():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(70, 6)).astype(float)  # many ties
    x[rng.random(x.shape) < 0.1] = np.nan
    y = rng.random(70) < 0.4
    a = auroc(x, y)
    for j in range(6):
        f = np.isfinite(x[:, j])
        assert a[j] == pytest.approx(brute_auroc(x[f, j], y[f]), abs=1e-12)
    np.testing.assert_allclose(auroc(-x, y), 1 - a, atol=1e-12)
    a_d, _ = delong(x, y)
    np.testing.assert_allclose(a_d, a, atol=1e-12)
    low = auroc(np.where(y, 0.0, 1.0), y)  # lower before violations: not folded
    assert low == 0.0


def test_delong_variance_matches_definition():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 6, 40).astype(float)
    y = rng.random(40) < 0.5
    v, s = x[y], x[~y]
    psi = (v[:, None] > s[None, :]) + 0.5 * (v[:, None] == s[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    var = v10.var(ddof=1) / v.size + v01.var(ddof=1) / s.size
    a, d = delong(x, y)
    assert a == pytest.approx(psi.mean())
    assert d == pytest.approx(var)


def test_stratified_is_weighted_within_jumper_and_one_jumper_equals_pooled():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(90, 3))
    y = rng.random(90) < 0.4
    g = rng.integers(0, 3, 90)
    st = stratified_auroc(x, y, g)
    num = den = 0.0
    for s in range(3):
        m = g == s
        w = y[m].sum() * (~y[m]).sum()
        num += w * brute_auroc(x[m, 0], y[m])
        den += w
    assert st["auroc"][0] == pytest.approx(num / den)
    one = stratified_auroc(x, y, np.zeros(90, int))
    np.testing.assert_allclose(one["auroc"], auroc(x, y))
    # a jumper without violations gets weight 0
    extra = np.concatenate([g, [9, 9]])
    xs = np.vstack([x, [[100.0] * 3] * 2])
    ys = np.concatenate([y, [False, False]])
    np.testing.assert_allclose(stratified_auroc(xs, ys, extra)["auroc"], st["auroc"])


def test_delong_ci_coverage():
    rng = np.random.default_rng(4)
    delta, reps, n = 1.0, 1000, 60
    true = norm.cdf(delta / np.sqrt(2))
    x = rng.normal(size=(2 * n, reps))
    y = np.arange(2 * n) < n
    x[y] += delta  # each column an independent replicate
    a, var = delong(x, y)
    lo, hi = auroc_ci(a, var)
    assert ((lo <= a) & (a <= hi) & (lo >= 0) & (hi <= 1)).all()
    cover = np.mean((lo <= true) & (true <= hi))
    assert 0.93 <= cover <= 0.97, cover
    # near the bound too (where a plain Wald interval under-covers)
    x = rng.normal(size=(2 * n, reps))
    x[y] += 2.0
    lo, hi = auroc_ci(*delong(x, y))
    true = norm.cdf(2.0 / np.sqrt(2))
    assert 0.93 <= np.mean((lo <= true) & (true <= hi)) <= 0.97


def test_auroc_ci_edges():
    lo, hi = auroc_ci(np.array([1.0, 0.0, 0.5, np.nan]), np.array([0.0, 0.01, 0.01, 0.01]))
    assert lo[0] == hi[0] == 1.0 and lo[1] == 0.0 and hi[1] == pytest.approx(0.196, abs=1e-3)
    assert lo[2] == pytest.approx(1 / (1 + np.exp(1.96 * 0.1 / 0.25)), abs=1e-3) and hi[2] == pytest.approx(1 - lo[2])
    assert np.isnan(lo[3]) and np.isnan(hi[3])


def test_planted_signal_horizon_and_p():
    rng = np.random.default_rng(5)
    k, r = 4, 12
    vals, y, g, rr = planted(rng, 300, 300, r, k, delta=1.5, jumpers=3)
    res = separation(vals, y, g, rr, permutations=1000, rng=np.random.default_rng(0))[r]
    assert res.status == "ok"
    assert (res.auroc[1 : k + 1] > 0.75).all()
    assert np.all(np.abs(res.auroc[k + 1 :] - 0.5) < 0.1)
    assert res.horizon == k
    assert 0 < res.confident_horizon <= k
    assert res.p_value < 0.01
    assert res.direction == "higher before violations"
    assert (res.ci_low <= res.auroc).all() and (res.auroc <= res.ci_high).all()
    assert res.p_per_j[1] == pytest.approx(1 / 1001)
    assert res.p_per_j_holm[1] == pytest.approx(11 / 1001)  # Holm over the 11 lookbacks j >= 1
    assert np.isnan(res.p_per_j_holm[0])
    # negated metric: AUROC mirrored, direction "lower", horizon 0 (threshold is on the AUROC)
    neg = separation(-vals, y, g, rr, permutations=200, rng=np.random.default_rng(0))[r]
    np.testing.assert_allclose(neg.auroc, 1 - res.auroc, atol=1e-12)
    assert neg.direction == "lower before violations" and neg.horizon == 0 and neg.p_value < 0.01


def test_no_signal_p_roughly_uniform():
    rng = np.random.default_rng(6)
    reps, P = 200, 200
    ps = []
    for _ in range(reps):
        vals, y, g, rr = planted(rng, 30, 40, 5, 0, 0.0, jumpers=2)
        ps.append(separation(vals, y, g, rr, permutations=P, rng=rng)[5].p_value)
    ps = np.array(ps)
    hits = int(np.sum(ps < 0.05))
    lo, hi = binom.ppf(0.001, reps, 0.05), binom.ppf(0.999, reps, 0.05)
    assert lo <= hits <= hi, hits
    assert 0.4 < ps.mean() < 0.6


def test_confounding_by_rule_identity():
    rng = np.random.default_rng(7)
    n = 400
    g = np.repeat([0, 1], n)
    y = np.concatenate([rng.random(n) < 0.8, rng.random(n) < 0.2])  # different violation rates
    level = np.where(g == 0, 2.0, 0.0)  # different metric levels, no within-jumper signal
    vals = (level[:, None] + rng.normal(size=(2 * n, 6))).astype(np.float32)
    res = separation(vals, y, g, np.full(2 * n, 6), permutations=500, rng=np.random.default_rng(1))[6]
    assert np.all(res.auroc_pooled > 0.65)  # rule identity alone makes the pooled AUROC look predictive
    assert np.all(np.abs(res.auroc - 0.5) < 0.07)
    assert res.p_value > 0.05
    assert set(res.auroc_per_jumper) == {0, 1}
    assert res.counts_per_jumper[0][0] + res.counts_per_jumper[1][0] == res.n_violations


def test_permutations_preserve_counts_and_p_floor():
    rng = np.random.default_rng(8)
    y = rng.random(50) < 0.3
    g = rng.integers(0, 4, 50)
    L = permuted_labels(y, g, 300, rng)
    for s in range(4):
        assert (L[:, g == s].sum(axis=1) == y[g == s].sum()).all()
    assert not (L == y).all(axis=1).all()  # it does shuffle
    vals, yy, gg, rr = planted(rng, 100, 100, 6, 5, 3.0, jumpers=2)
    res = separation(vals, yy, gg, rr, permutations=50, rng=rng)[6]
    assert res.p_value == pytest.approx(1 / 51)
    assert np.nanmin(res.p_per_j) == pytest.approx(1 / 51)


def test_holm_hand_computed():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # finite sorted: .005 (x4=.02), .01 (x3=.03), .03 (x2=.06), .04 (x1=.04 -> monotone .06)
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    np.testing.assert_allclose(holm([0.5, 0.4]), [0.8, 0.8])
    np.testing.assert_allclose(holm([0.9, 0.6]), [1.0, 1.0])  # capped at 1
    assert np.isnan(holm([np.nan])).all()


def test_insufficient():
    rng = np.random.default_rng(9)
    vals, y, g, rr = planted(rng, 5, 200, 4, 3, 3.0)
    res = separation(vals, y, g, rr, permutations=100, rng=rng)[4]
    assert res.status == "insufficient"
    assert res.n_violations == 5 and res.n_successes == 200
    assert np.isnan(res.auroc).all() and np.isnan(res.ci_low).all() and np.isnan(res.auroc_pooled).all()
    assert res.p_value is None and res.horizon is None


def test_strata_by_r_are_separate():
    rng = np.random.default_rng(10)
    a = planted(rng, 40, 40, 5, 2, 2.0)
    b = planted(rng, 40, 40, 8, 0, 0.0)
    vals = np.full((160, 8), np.nan, np.float32)
    vals[:80, :5] = a[0]
    vals[80:] = b[0]
    res = separation(
        vals, np.concatenate([a[1], b[1]]), np.concatenate([a[2], b[2]]), np.concatenate([a[3], b[3]]), permutations=0, rng=rng
    )
    assert set(res) == {5, 8}
    assert res[5].auroc.shape == (5,) and res[8].auroc.shape == (8,)
    assert res[5].horizon == 2 and res[5].p_value is None


def test_horizon_definitions():
    a = np.array([0.99, 0.8, 0.9, 0.7, 0.76, 0.5])
    lo = np.array([0.99, 0.77, 0.6, 0.8, 0.8, 0.2])
    assert horizons(a, lo) == (4, 1)  # furthest j with A > .75 is 4; CI fails first at j = 2
    assert horizons(np.array([0.99, 0.5]), np.array([0.99, 0.4])) == (0, 0)  # j = 0 ignored
    assert horizons(np.array([0.5, 0.8, 0.8]), np.array([0.5, 0.8, 0.8])) == (2, 2)
    assert horizons(np.array([0.5, 0.8, np.nan]), np.array([0.5, 0.8, np.nan])) == (1, 1)
    assert horizons(np.array([0.5, 0.75]), np.array([0.5, 0.75])) == (0, 0)  # strict >


def test_reproducible():
    vals, y, g, rr = planted(np.random.default_rng(11), 40, 60, 6, 1, 0.4, jumpers=2)
    p1 = separation(vals, y, g, rr, permutations=300, rng=np.random.default_rng(42))[6]
    p2 = separation(vals, y, g, rr, permutations=300, rng=np.random.default_rng(42))[6]
    assert p1.p_value == p2.p_value and p1.shuffled_95 == p2.shuffled_95
    np.testing.assert_array_equal(p1.p_per_j, p2.p_per_j)
    assert isinstance(p1.to_dict()["auroc"], list)
