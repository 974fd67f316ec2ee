"""The review's corrections (issue 23, item 1): each test failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from dcsbm_transformer.analysis.stats.statistics import separation

# --------------------------------------------------------------------------------------------------
# a. a lookback with no jumper holding both classes finite has a NaN stratified AUROC: NaN p, not 1/(P+1)


def _no_jumper_has_both_classes(rng, *, all_lookbacks: bool = False):
    """r = 3, two jumpers, 40 violations and 40 successes each. At j = 2 (all j >= 1 if
    ``all_lookbacks``) jumper 0's violations and jumper 1's successes are NaN: the stratum still has
    40 finite values of each class there, but no single jumper has both."""
    n = 160
    g = np.repeat([0, 1], 80)
    y = np.tile(np.repeat([True, False], 40), 2)
    values = rng.normal(size=(n, 3))  # lookback order: column j is lookback j
    values[y, :] += 0.3
    columns = [2, 1] if all_lookbacks else [2]
    for c in columns:
        values[(g == 0) & y, c] = np.nan
        values[(g == 1) & ~y, c] = np.nan
    return values, y, g, np.full(n, 3)


def test_a_nan_stratified_auroc_gets_a_nan_p_not_the_smallest_one():
    values, y, g, r = _no_jumper_has_both_classes(np.random.default_rng(0))
    res = separation(values, y, g, r, permutations=999, rng=np.random.default_rng(1))[3]
    assert np.isnan(res.auroc[2]) and np.isfinite(res.auroc[:2]).all()
    assert np.isnan(res.p_per_j[2])  # was 1/(P+1) = 0.001: nothing exceeds a NaN statistic
    assert np.isnan(res.p_per_j_holm[2])
    assert res.p_per_j_holm[1] == res.p_per_j[1]  # a family of one lookback: Holm changes nothing
    assert res.status == "ok" and res.best_j == 1 and res.p_value > 0.01
    # the family-wise p is that of the one testable lookback (the same shuffles)
    assert res.p_value == pytest.approx(res.p_per_j[1])


def test_a_stratum_with_no_testable_lookback_is_insufficient():
    values, y, g, r = _no_jumper_has_both_classes(np.random.default_rng(0), all_lookbacks=True)
    res = separation(values, y, g, r, permutations=999, rng=np.random.default_rng(1))[3]
    assert np.isnan(res.auroc[1:]).all()
    assert res.status == "insufficient" and res.p_value is None and res.best_j is None
    assert res.horizon is None and res.confident_horizon is None


# --------------------------------------------------------------------------------------------------
# b. rule_outcome is labelled only at passes that exist (pass k <= the event's r)


def _four_vertex_graph():
    """Complete directed graph on 4 vertices, blocks [0, 0, 1, 1]; jumper 0 -> block 1 in 1 step,
    jumper 2 -> block 0 in 3 steps."""
    from dcsbm_transformer.data.graph import Graph

    n = 4
    return Graph(
        indptr=np.arange(0, n * n + 1, n, dtype=np.int64),
        indices=np.tile(np.arange(n, dtype=np.int32), n),
        block=np.array([0, 0, 1, 1], np.int32),
        theta=np.ones(n),
        jumper_vertex=np.array([0, 2], np.int32),
        jumper_target_block=np.array([1, 0], np.int32),
        jumper_r=np.array([1, 3], np.int32),
        K=2,
    )


def test_b_no_rule_outcome_for_a_pass_that_does_not_exist():
    from dcsbm_transformer.analysis.measure.continuations import RULE_FOLLOWED, label_continuations

    graph = _four_vertex_graph()
    # event 0 (r = 1): the prompt's vertex 2 is a jumper whose deadline falls at pass 2, past the event's r
    # (its token there is the -1 padding, which indexed graph.block[-1]); event 1 (r = 3) has all its passes
    prompts = np.array([[2, 0], [1, 2]])
    generated = np.array([[3, 1, 1], [3, 3, 1]])
    labels = label_continuations(prompts, generated, np.array([1, 3]), np.array([1, 0]), graph)
    assert labels.edge_valid.tolist() == [[1, -1, -1], [1, 1, 1]]
    assert labels.rule_outcome.tolist() == [[RULE_FOLLOWED, 0, 0], [0, 0, RULE_FOLLOWED]]  # was [[1, 2, 0], ...]
    assert ((labels.rule_outcome == 0) | (labels.edge_valid >= 0)).all()  # never a label where no pass exists
    assert labels.violated.tolist() == [False, False]


# --------------------------------------------------------------------------------------------------
# c. condition_velocity keeps the order of the true change through the cap: the change of log10


def _velocity(before: float, after: float) -> float:
    """condition_velocity between two 2 × 2 spectra of condition numbers ``before`` -> ``after``."""
    import torch

    from dcsbm_transformer.analysis.measure.metrics import METRICS, Spectrum

    spec = lambda c: Spectrum(values=torch.tensor([[1.0, 1.0 / c]], dtype=torch.float64), vectors=None)  # noqa: E731
    value, _ = METRICS["condition_velocity"].function(spec(before), spec(after), False)
    return value.item()


def test_c_condition_velocity_order_survives_the_cap():
    from dcsbm_transformer.analysis.measure.metrics import CONDITION_CAP

    four_decades, one_decade = _velocity(10.0, 1e5), _velocity(1e5, 1e6)
    assert four_decades > one_decade  # was 99990 < 900000: the raw difference ranks by level, not by change
    assert four_decades == pytest.approx(4.0, rel=1e-5) and one_decade == pytest.approx(1.0, rel=1e-5)
    seven_decades_capped = _velocity(1e5, 1e12)  # the true change: 7 decades, the cap takes the end
    assert seven_decades_capped > one_decade  # (raw: 8.29e6)
    assert seven_decades_capped == pytest.approx(np.log10(CONDITION_CAP) - 5, rel=1e-5)  # the cap counted as the cap
    assert _velocity(1e3, 1e2) == pytest.approx(-1.0, rel=1e-5) and _velocity(10.0, 10.0) == 0.0
    assert _velocity(1e9, 1e17) == 0.0  # both beyond the cap: no change can be seen (and it is a guard hit)
    # scale-free: the same ratio scores the same at any level below the cap
    assert _velocity(1e2, 1e3) == pytest.approx(_velocity(1e4, 1e5), rel=1e-5)


def test_c_metric_versions_mark_the_changed_definition():
    from dcsbm_transformer.analysis.measure.metrics import METRICS

    assert METRICS["condition_velocity"].version == 2
    assert all(metric.version == 1 for name, metric in METRICS.items() if name != "condition_velocity")
    assert "log10" in METRICS["condition_velocity"].formula and "log10" in METRICS["condition_velocity"].function.__doc__


# --------------------------------------------------------------------------------------------------
# d. perfect separation: an honest interval, not [1, 1]; coverage elsewhere unchanged


def _binormal(rng, n_v, n_s, true_auroc, replicates):
    """[n_v + n_s, replicates] scores (violations first) with AUROC ``true_auroc``, and the labels."""
    from scipy.stats import norm

    shift = np.sqrt(2) * norm.ppf(true_auroc)
    x = np.concatenate([rng.normal(size=(n_v, replicates)) + shift, rng.normal(size=(n_s, replicates))])
    return x, np.r_[np.ones(n_v, bool), np.zeros(n_s, bool)]


def test_d_perfect_separation_gets_a_lower_bound_clearly_below_one():
    from dcsbm_transformer.analysis.stats.statistics import auroc_ci, delong, stratified_auroc

    x = np.r_[np.arange(10) + 100.0, np.arange(10.0)]  # 10 violations, all above 10 successes
    y = np.r_[np.ones(10, bool), np.zeros(10, bool)]
    a, var = delong(x, y)
    low, high = auroc_ci(a, var)
    assert a == 1.0 and high == 1.0
    assert 0.80 < low < 0.90  # was [1, 1]: zero width
    a0, var0 = delong(-x, y)  # the other direction mirrors it
    low0, high0 = auroc_ci(a0, var0)
    assert a0 == 0.0 and low0 == 0.0 and high0 == pytest.approx(1 - low)
    # stratified: two perfectly separated jumpers pool their evidence, the bound still below 1
    g = np.r_[np.arange(10) % 2, np.arange(10) % 2]
    st = stratified_auroc(x[:, None], y, g)
    low_st, _ = auroc_ci(st["auroc"], st["var"])
    assert st["auroc"][0] == 1.0 and 0.5 < low_st[0] < 1.0


def test_d_perfect_separation_bound_holds_its_level_in_simulation():
    """Binormal scores, 10 vs 10, true AUROC 0.90 and 0.95 (perfect separation in 5% and 18% of
    samples): the lower 95% bound exceeds the truth in at most 2.5% + Monte-Carlo error of them
    (before: 5.2% and 17.8%, every perfect sample)."""
    from dcsbm_transformer.analysis.stats.statistics import auroc_ci, delong

    rng = np.random.default_rng(5)
    replicates = 4000
    for true_auroc in (0.90, 0.95):
        x, y = _binormal(rng, 10, 10, true_auroc, replicates)
        low, _ = auroc_ci(*delong(x, y))
        miss = np.mean(low > true_auroc)
        assert miss <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / replicates), (true_auroc, miss)


def test_d_coverage_at_moderate_auroc_is_unchanged():
    """Away from 0 and 1 nothing changes: the interval is DeLong's on the logit scale, and it covers
    0.70 and 0.80 (40 vs 60) at 95% within Monte-Carlo error."""
    from scipy.stats import norm

    from dcsbm_transformer.analysis.stats.statistics import auroc_ci, delong

    rng = np.random.default_rng(6)
    replicates = 3000
    for true_auroc in (0.70, 0.80):
        x, y = _binormal(rng, 40, 60, true_auroc, replicates)
        a, var = delong(x, y)
        assert ((a > 0) & (a < 1)).all()
        low, high = auroc_ci(a, var)
        logit, h = np.log(a / (1 - a)), norm.ppf(0.975) * np.sqrt(var) / (a * (1 - a))
        np.testing.assert_allclose(low, 1 / (1 + np.exp(-(logit - h))), rtol=1e-12)  # the unchanged formula
        np.testing.assert_allclose(high, 1 / (1 + np.exp(-(logit + h))), rtol=1e-12)
        coverage = np.mean((low <= true_auroc) & (true_auroc <= high))
        assert abs(coverage - 0.95) <= 3 * np.sqrt(0.95 * 0.05 / replicates), (true_auroc, coverage)


# --------------------------------------------------------------------------------------------------
# e. guard_hits counts only kept values: passes k <= r of each event (context windows separately)


def test_e_guard_hits_count_only_the_values_kept():
    import dataclasses

    import torch
    from conftest import tiny_config

    from dcsbm_transformer.analysis.measure.batched import measure
    from dcsbm_transformer.analysis.measure.events import draw_analysis_events
    from dcsbm_transformer.analysis.measure.metrics import CONDITION_CAP, METRICS
    from dcsbm_transformer.data.dataset import build_data
    from dcsbm_transformer.model import TransformerLM

    config = tiny_config()  # w = 8: every 8 × 8 QKᵀ and 8 × 16 AVWₒ has m = 8, so gap_8 (σ8 − σ9) is a guard hit everywhere
    data = build_data(config)
    events = draw_analysis_events(config, data.graph, 12)
    r = events.r.copy()
    r[::2] = 2  # half the events end at pass 2: the passes after it are measured, then dropped
    events = dataclasses.replace(events, r=r)
    torch.manual_seed(0)
    model = TransformerLM.from_config(config).eval()
    measured = measure(model, data.graph, events, top_k=2, chunk_mb=100)
    kept_cells = int(r.sum())
    arrays = {name: [v for key, v in measured.metrics.items() if key.endswith(f".{name}")] for name in METRICS}
    assert len(arrays["gap_8"]) == 2  # qkt and avwo, one layer, one head
    assert measured.guard_hits["gap_8"] == 2 * kept_cells  # was 2 * (12 * 6 + 12): every pass and the context windows
    assert measured.context_guard_hits["gap_8"] == 2 * len(events)
    kept = np.arange(r.max())[None, :] < r[:, None]
    # the trajectory metrics are not measured (NaN, no guard hit) before pass 3, the first with
    # TRAJECTORY_WINDOW windows of history (measure's columns are passes 1, 2, ...: column c is pass c + 1)
    passes = np.arange(r.max())[None, :] + 1
    for name in METRICS:
        if name in ("condition_number", "condition_velocity"):
            continue  # also a guard hit when capped (checked below)
        measured_cells = kept & (passes >= 3) if "trajectory" in METRICS[name].needs else kept
        assert measured.guard_hits[name] == sum(int(np.isnan(v[measured_cells]).sum()) for v in arrays[name]), name
    capped = sum(int((np.isnan(v) | (v == np.float32(CONDITION_CAP)))[kept].sum()) for v in arrays["condition_number"])
    assert measured.guard_hits["condition_number"] == capped


# --------------------------------------------------------------------------------------------------
# f. constant arrays: a tolerance relative to the array's scale, not exact equality


def test_f_constant_arrays_within_rounding_of_their_scale():
    from dcsbm_transformer.analysis.stats.statistics import constant_arrays

    rng = np.random.default_rng(7)
    ulp_jitter = (1e6 + rng.integers(-2, 3, size=(50, 4)) * np.spacing(np.float32(1e6))).astype(np.float32)
    arrays = {
        "exact": np.full((50, 4), 2.5, np.float32),
        "rounding": ulp_jitter,  # one value up to float32 rounding (a few ulps): exact equality missed it
        "all_nan": np.full((50, 4), np.nan, np.float32),
        "zeros": np.zeros((50, 4), np.float32),  # all-zero: no scale, constant by the floor
        "zeros_and_nan": np.where(rng.random((50, 4)) < 0.5, 0.0, np.nan).astype(np.float32),
        "signal": rng.normal(size=(50, 4)).astype(np.float32),
        "small_but_real": (1e-6 * rng.normal(size=(50, 4))).astype(np.float32),  # tiny scale, relative spread large
        "offset_signal": (1e3 + 0.1 * rng.normal(size=(50, 4))).astype(np.float32),  # spread 1e-4 of the scale
    }
    finite = ulp_jitter[np.isfinite(ulp_jitter)]
    assert finite.min() != finite.max()  # the old exact test called it varying
    assert constant_arrays(arrays) == ["exact", "rounding", "all_nan", "zeros", "zeros_and_nan"]
    assert constant_arrays({"offset_signal": arrays["offset_signal"]}, rtol=1e-3) == ["offset_signal"]
    assert constant_arrays({}) == []


# --------------------------------------------------------------------------------------------------
# g. the Holm floor m / (P + 1), and the permutations that put it below alpha / 2


def test_g_holm_floor_and_permutations_needed():
    from dcsbm_transformer.analysis.stats.statistics import holm, holm_floor, permutations_needed

    # the floor is what Holm makes of m permutation p-values all at their smallest, 1/(P+1)
    m, P = 512, 10_000  # e.g. 4 layers x 4 heads x 2 targets x 16 metrics
    assert holm_floor(m, P) == pytest.approx(m / (P + 1)) == pytest.approx(holm(np.full(m, 1 / (P + 1))).min())
    assert holm_floor(m, P) > 0.05  # 0.0512: no array of the family can ever reach alpha = 0.05
    assert holm_floor(10**6, 10) == 1.0 and holm_floor(1, 9) == pytest.approx(0.1)
    needed = permutations_needed(m, 0.05, P)
    assert needed == 20_480 and m / (needed + 1) < 0.025 <= m / needed  # the smallest such P
    assert holm_floor(m, needed) < 0.025
    assert permutations_needed(500, 0.05, 10_000) == 20_000  # 500 / 20001 < 0.025 = 500 / 20000
    assert permutations_needed(4, 0.05, 10_000) == 10_000  # never fewer than requested
    assert permutations_needed(1, 0.05, 0) == 40
    for family in (1, 7, 33, 500, 1234):
        for alpha in (0.05, 0.01, 0.1):
            p = permutations_needed(family, alpha, 1)
            assert family / (p + 1) < alpha / 2 and (p == 1 or family / p >= alpha / 2), (family, alpha, p)
    assert permutations_needed(0, 0.05, 100) == 100 and holm_floor(0, 100) == 0.0  # an empty family
    with pytest.raises(ValueError):
        permutations_needed(-1, 0.05, 100)
    with pytest.raises(ValueError):
        permutations_needed(10, 1.5, 100)
