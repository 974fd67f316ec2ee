"""Statistics core: how well, and how far ahead, does a metric separate violations from successes?

Pure numpy/scipy; no file I/O, no plotting. Public: a researcher tests a metric of their own
with the same machinery (``separation`` / ``separation_family`` for the whole test,
``stratified_auroc``, ``delong``, ``auroc_ci``, ``auroc_difference``, ``permuted_labels``, ``holm``,
``horizons`` for the pieces). Inputs are the analysis stage's per-metric arrays
``values [events, lookbacks]`` in **lookback order** — column ``j`` is lookback ``j``, as in
``token_metrics.npz`` and ``horizon.json`` (``lookback_view`` converts pass-ordered arrays) —
(float, NaN where undefined) with per-event labels ``violated [E]`` (bool), ``event_jumper [E]``
(which rule) and ``event_r [E]``. Pass ``k = 1..r``; the lookback is ``j = r - k``: ``j = 0`` is the
pass that emits the deadline token (simultaneous with the outcome, never counted as prediction),
``j = r - 1`` the pass whose input ends at the jumper.

Choices, and why
----------------
* **Strata by r, never pooled across r.** Lookback ``j`` means a different position in the walk for
  different ``r``; every statistic is computed inside one ``r`` stratum (:func:`r_strata`,
  :func:`stratum_mask`, :func:`lookback_view`).
* **AUROC by midranks, not folded.** ``AUROC = P(X_v > X_s) + 1/2 P(X_v = X_s)`` for a violation
  ``X_v`` and a success ``X_s``, computed from midranks (``scipy.stats.rankdata(method="average")``)
  as ``(R_v - n_v (n_v + 1) / 2) / (n_v n_s)`` (Mann-Whitney U / (n_v n_s)), which counts ties one
  half exactly. It is *not* folded to ``max(A, 1 - A)``: a metric that is lower before violations
  gives ``A < 0.5``; folding would bias every null AUROC upwards and hide the direction.
* **Stratified by jumper.** Rules differ in violation rate and may differ in metric level; pooling
  them lets rule identity masquerade as a signal (Simpson's paradox). The headline AUROC is the
  within-jumper AUROCs combined with weights ``w_s = n_v,s n_s,s / sum_t n_v,t n_s,t`` — equivalently
  ``sum_s U_s / sum_s n_v,s n_s,s``, the probability over within-jumper (violation, success) pairs.
  The pooled AUROC is reported beside it, labelled pooled, as a diagnostic only.
* **DeLong CI at every j.** The confidence interval is reported at every lookback, not at one ``j``
  picked after looking at the curve (that would be a selected, over-optimistic interval).
  Within a jumper, DeLong's variance from structural components (placements) obtained from midranks;
  strata are independent so ``Var(A_strat) = sum_s w_s^2 Var(A_s)``. The interval is built on the
  logit scale and mapped back (:func:`auroc_ci`), so it stays inside ``(0, 1)`` and is asymmetric
  near the bounds, where the plain Wald interval under-covers (measured with 60 vs 60 normal
  scores, 4000 replicates: true AUROC 0.76 Wald 93.7% / logit 95.3%; 0.92 Wald 92.3% / logit 95.1%;
  30 vs 30 at 0.92 Wald 90.6% / logit 95.4%) — and the confident horizon is exactly a statement
  about the lower bound at high AUROC. At a *perfect* separation (A = 1 or 0) DeLong's variance is
  0; it is floored there so that the bound is an exact lower bound under the Lehmann model
  (:func:`perfect_separation_bound`: 10 vs 10 perfect gives ``[0.855, 1]``, not ``[1, 1]``).
* **Permutation test with the max-over-j statistic.** ``T = max_{j >= 1} |A_strat(j) - 0.5|``;
  labels are shuffled *within jumper* (each jumper keeps its number of violations, so the null
  keeps the rule-identity structure). Taking the max over the lookback family controls the
  family-wise error over ``j`` without assuming independence between lookbacks (they are strongly
  correlated). ``p = (1 + #{T_perm >= T_obs}) / (1 + P)``: the ``+1`` counts the observed labelling
  as one of the permutations, which makes the test exact (valid) and never reports ``p = 0``.
  Ranks are computed once per (column, jumper) and reused for every permutation: rank sums of all
  permutations are one matrix product ``L @ ranks``.
* **Holm.** Per-j permutation p-values (same shuffles) are also returned, with the Holm-Bonferroni
  step-down adjustment (:func:`holm`) as a second, less powerful but per-j family-wise control.
* **AUPRC beside every AUROC** (:mod:`.precision`): the jumper-stratified average precision in the
  metric's direction (declared for a one-sided test, observed at the best lookback otherwise), its
  no-skill line (the stratified violation prevalence) and a logit interval at every j; tested on
  the *same* within-jumper shuffles as the AUROC (the first ``auprc_permutations`` of them), with
  ``T = max_{j >= 1} (AP(j) − prevalence(j))``. A two-sided (exploratory) metric's AP is oriented
  by its AUROC's direction, chosen on these data, so its one-sided AP p is doubled (Bonferroni over
  the two orientations: valid whichever was chosen).
* **Insufficient data.** If either class has fewer than ``min_events`` events in the stratum, no
  AUROC and no p-value are produced (status ``"insufficient"``); likewise at a single lookback
  where fewer than ``min_events`` finite values per class remain, the AUROC there is NaN. A lookback
  whose stratified AUROC is NaN (no single jumper has both classes finite there, although the
  stratum as a whole has enough of each) is not testable either: its per-j p is NaN, it is left out
  of the max-over-j statistic and out of Holm's family; a stratum with no testable ``j >= 1`` is
  ``"insufficient"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TypedDict

import numpy as np
from scipy.special import betaln
from scipy.stats import norm, rankdata

from .precision import ap_keys, ap_numerators, auprc_ci, stratified_auprc

__all__ = [
    "ALTERNATIVES",
    "SeparationResult",
    "auroc",
    "auroc_ci",
    "auroc_difference",
    "delong",
    "holm",
    "horizons",
    "lookback_view",
    "perfect_separation_bound",
    "permuted_labels",
    "r_strata",
    "separation",
    "separation_family",
    "stratified_auroc",
    "stratum_mask",
    "constant_arrays",
    "holm_floor",
    "permutations_needed",
    "simultaneous_difference",
]

ALTERNATIVES = ("two-sided", "greater", "less")
_TOL = 1e-12  # float tolerance when comparing permutation statistics with the observed one
_AP_TOL = 1e-9  # the same for the AUPRC's, summed in float32 alike for the observed labelling and the shuffles


# --------------------------------------------------------------------------------------------------
# layout helpers


def lookback_view(values: np.ndarray, r: np.ndarray, fill=np.nan) -> np.ndarray:
    """Re-index pass-ordered ``values [E, passes]`` by lookback: ``out[e, j] = values[e, r_e - 1 - j]`` (pass ``r_e - j``).

    The one conversion from the order passes are generated in to the lookback order of every file
    and function of the analysis (``token_metrics.npz`` is written through it). Returns
    ``[E, max_r]`` of the input's dtype, ``fill`` where ``j >= r_e`` (no such pass). Column ``j = 0``
    is the pass emitting the deadline token; column ``r_e - 1`` is pass 1.
    """
    values = np.asarray(values)
    r = np.asarray(r, dtype=np.int64)
    if values.ndim != 2 or r.shape != (values.shape[0],):
        raise ValueError("values must be [E, passes] and r [E]")
    if r.size and (r.min() < 1 or r.max() > values.shape[1]):
        raise ValueError("every r must be in 1..passes")
    max_r = int(r.max()) if r.size else 0
    j = np.arange(max_r)
    col = r[:, None] - 1 - j[None, :]
    valid = col >= 0
    out = np.take_along_axis(values, np.where(valid, col, 0), axis=1)
    out[~valid] = fill
    return out


def r_strata(r: np.ndarray) -> list[int]:
    """The distinct ``r`` values, sorted: one stratum each (statistics are never pooled across r)."""
    return [int(v) for v in np.unique(np.asarray(r))]


def stratum_mask(r: np.ndarray, r_value: int) -> np.ndarray:
    """Boolean ``[E]`` mask of the events in the ``r == r_value`` stratum."""
    return np.asarray(r) == r_value


# --------------------------------------------------------------------------------------------------
# ranks and AUROC


def _as_2d(scores: np.ndarray) -> tuple[np.ndarray, bool]:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        return x[:, None], True
    if x.ndim != 2:
        raise ValueError("scores must be [n] or [n, columns]")
    return x, False


def _column_ranks(x: np.ndarray, include: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Midranks per column over the finite (and included) entries; 0 elsewhere. Returns (ranks, mask)."""
    mask = np.isfinite(x)
    if include is not None:
        mask &= include
    ranks = rankdata(np.where(mask, x, np.inf), method="average", axis=0)  # excluded rank after all kept
    ranks[~mask] = 0.0
    return ranks, mask


def auroc(scores: np.ndarray, violated: np.ndarray) -> float | np.ndarray:
    """Unfolded midrank AUROC per column: ``P(X_v > X_s) + 1/2 P(X_v = X_s)``.

    ``A = (R_v - n_v (n_v + 1) / 2) / (n_v n_s)`` with ``R_v`` the sum of the violations' midranks
    among the column's finite values (NaN rows excluded per column). NaN where a class is empty.
    ``scores`` ``[n]`` or ``[n, columns]``; returns a float or ``[columns]``.
    """
    x, flat = _as_2d(scores)
    y = np.asarray(violated, dtype=bool)
    ranks, fin = _column_ranks(x)
    yf = y.astype(np.float64)
    nv = yf @ fin
    ns = fin.sum(axis=0) - nv
    with np.errstate(invalid="ignore", divide="ignore"):
        a = (yf @ ranks - nv * (nv + 1) / 2) / (nv * ns)
    return float(a[0]) if flat else a


def _placements(x: np.ndarray, y: np.ndarray):
    """DeLong's structural components of every column of ``x [n, columns]`` (see :func:`delong`):
    ``(V10, V01, violation mask, success mask, n_v, n_s)``, components 0 outside their class."""
    y = y[:, None]
    r_all, _ = _column_ranks(x)
    r_v, mv = _column_ranks(x, y)
    r_s, ms = _column_ranks(x, ~y)
    nv = mv.sum(axis=0).astype(np.float64)
    ns = ms.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        v10 = np.where(mv, (r_all - r_v) / ns, 0.0)
        v01 = np.where(ms, 1.0 - (r_all - r_s) / nv, 0.0)
    return v10, v01, mv, ms, nv, ns


def delong(scores: np.ndarray, violated: np.ndarray) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """AUROC and DeLong's variance per column (DeLong, DeLong & Clarke-Pearson 1988).

    Structural components (placements) from midranks, with ``R`` the midrank among all finite
    values of the column and ``R^v``/``R^s`` the midrank within violations/successes::

        V10_i = (R_i - R^v_i) / n_s      (violation i: share of successes below it, ties 1/2)
        V01_k = 1 - (R_k - R^s_k) / n_v  (success k: share of violations above it, ties 1/2)
        A     = mean(V10) = mean(V01)
        Var(A) = S10 / n_v + S01 / n_s,  S10, S01 the sample variances (ddof=1) of V10, V01.

    A class of size 1 has no sample variance; its ``S`` is then set to ``1/4``, the largest possible
    variance of a placement in [0, 1] (conservative). NaN where a class is empty.

    **Perfect separation** (``A = 1`` or ``0``): every placement is 1 (or 0), so DeLong's variance is
    0 and any interval built on it is ``[1, 1]`` — a certainty no finite sample gives. There the
    variance is floored at ``((1 - L) / z)^2``, ``z = Phi^-1(0.975)``, with ``L`` the exact 95% lower
    bound of :func:`perfect_separation_bound` (for ``A = 0`` the same with the classes' roles
    swapped), so that the interval of :func:`auroc_ci` at the bound, ``1 - z sqrt(Var)``, is ``L``
    (for one stratum; strata pool their evidence through the usual ``sum_s w_s^2 Var_s``). Every
    other column keeps DeLong's variance unchanged.
    Returns ``(auroc, variance)``, each a float or ``[columns]``.
    """
    x, flat = _as_2d(scores)
    a, var = _delong_columns(x, np.asarray(violated, dtype=bool))
    if flat:
        return float(a[0]), float(var[0])
    return a, var


def _delong_columns(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`delong` of every column of ``x [n, columns]`` (float64) against ``y [n]`` (bool): ``(auroc, variance)``."""
    v10, v01, mv, ms, nv, ns = _placements(x, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = v10.sum(axis=0) / nv
        s10 = (np.where(mv, (v10 - a) ** 2, 0.0).sum(axis=0)) / (nv - 1)
        s01 = (np.where(ms, (v01 - a) ** 2, 0.0).sum(axis=0)) / (ns - 1)
        s10 = np.where(nv == 1, 0.25, s10)
        s01 = np.where(ns == 1, 0.25, s01)
        empty = (nv == 0) | (ns == 0)
        a = np.where(empty, np.nan, a)
        var = np.where(empty, np.nan, s10 / nv + s01 / ns)
    top, bottom = ~empty & (a == 1.0), ~empty & (a == 0.0)
    if top.any() or bottom.any():
        z = float(norm.ppf(0.975))
        bound = np.ones_like(a)
        bound[top] = perfect_separation_bound(nv[top], ns[top])
        bound[bottom] = perfect_separation_bound(ns[bottom], nv[bottom])  # successes all above violations
        var = np.where(top | bottom, np.maximum(var, ((1.0 - bound) / z) ** 2), var)
    return a, var


def perfect_separation_bound(n_pos, n_neg, alpha: float = 0.025) -> np.ndarray:
    """One-sided ``1 - alpha`` lower confidence bound ``L`` for the AUROC after a *perfect* separation
    of ``n_pos`` positives above ``n_neg`` negatives (elementwise over arrays of counts).

    Under the Lehmann (proportional-hazards) model that underlies Hanley & McNeil's (1982) variance
    — positives' scores distributed as ``G = F^k`` for negatives ``~ F``, so ``A = k / (k + 1)`` —
    the chance that all ``n_pos`` positives exceed all ``n_neg`` negatives is exactly::

        P(perfect | A) = E[(1 - V^k)^n_pos],  V = F(max negative) ~ Beta(n_neg, 1)
                       = (n_neg / k) B(n_neg / k, n_pos + 1),   k = A / (1 - A),

    increasing in ``A``; ``L`` solves ``P(perfect | L) = alpha`` (the exact test inversion: every
    ``A < L`` makes the observed perfection rarer than ``alpha``), found by bisection on ``log k``.
    Examples: 10 vs 10 -> 0.855, 20 vs 20 -> 0.941, 40 vs 40 -> 0.976. The Lehmann model has
    heavier tails of discordance than the binormal (at 10 vs 10 and true AUROC 0.90, perfect
    separation has probability 0.073 under it, 0.052 binormally), so for binormal scores ``L`` is
    conservative. See also Obuchowski & Lieber (2002), *Confidence bounds when the estimated ROC
    area is 1.0*, Acad. Radiol. 9:526-530, on why asymptotic intervals fail there.
    """
    n_pos = np.asarray(n_pos, dtype=np.float64)
    n_neg = np.asarray(n_neg, dtype=np.float64)
    lo = np.full(np.broadcast(n_pos, n_neg).shape, -30.0)  # log k: A from ~1e-13 ...
    hi = np.full(lo.shape, 40.0)  # ... to 1 - 4e-18
    for _ in range(100):
        mid = (lo + hi) / 2
        ratio = n_neg / np.exp(mid)
        p = np.exp(np.log(ratio) + betaln(ratio, n_pos + 1))
        above = p > alpha
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    k = np.exp((lo + hi) / 2)
    return k / (k + 1)


def stratified_auroc(scores: np.ndarray, violated: np.ndarray, jumper: np.ndarray) -> dict:
    """Within-jumper AUROCs combined with weights ``n_v,s n_s,s`` (normalised), with DeLong variance.

    ``A = sum_s w_s A_s``, ``w_s = n_v,s n_s,s / sum_t n_v,t n_s,t`` (per column: counts of finite
    values); a jumper with an empty class has weight 0. ``Var(A) = sum_s w_s^2 Var_DeLong(A_s)``
    (jumpers are independent samples). Returns a dict with ``auroc``, ``var``, ``per_jumper``
    (jumper -> AUROC ``[columns]``), ``counts`` (jumper -> (n_v, n_s) over finite values per column).
    """
    x, _ = _as_2d(scores)
    y = np.asarray(violated, dtype=bool)
    g = np.asarray(jumper)
    num = np.zeros(x.shape[1])
    den = np.zeros(x.shape[1])
    parts = []
    per_jumper, counts = {}, {}
    for s in np.unique(g):
        sel = g == s
        xs, ys = x[sel], y[sel]
        a_s, v_s = _delong_columns(xs, ys)
        fin = np.isfinite(xs)
        nv = (fin & ys[:, None]).sum(axis=0)
        ns = (fin & ~ys[:, None]).sum(axis=0)
        w = (nv * ns).astype(np.float64)
        num += np.where(w > 0, w * np.nan_to_num(a_s), 0.0)
        den += w
        parts.append((w, v_s))
        per_jumper[int(s)] = a_s
        counts[int(s)] = (nv, ns)
    a, var = _combine_strata(num, den, parts)
    return {"auroc": a, "var": var, "per_jumper": per_jumper, "counts": counts}


def _combine_strata(num: np.ndarray, den: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean ``num / den`` of per-stratum estimates and its variance ``sum_s (w_s / den)^2 Var_s``
    (independent strata), from ``parts = [(w_s, Var_s)]``; NaN where no stratum has weight."""
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = np.where(den > 0, num / den, np.nan)
        var = np.zeros(num.shape)
        for weight, v in parts:
            var += np.where(weight > 0, (weight / den) ** 2 * v, 0.0)
    return estimate, np.where(den > 0, var, np.nan)


def auroc_difference(first: np.ndarray, second: np.ndarray, violated: np.ndarray, jumper: np.ndarray) -> dict:
    """Paired comparison of two predictors on the same events: the jumper-stratified
    ``A(first) - A(second)`` per column with its DeLong variance (DeLong et al. 1988, the covariance
    of two correlated AUROCs from their structural components), and a 95% Wald CI and two-sided
    normal p-value for the difference.

    Both ``[n, columns]``; per column only events where both are finite count. Within a jumper
    ``Var(A1 - A2) = (S10_11 + S10_22 - 2 S10_12) / n_v + (S01_11 + S01_22 - 2 S01_12) / n_s``;
    strata combine with the weights of :func:`stratified_auroc` (``n_v n_s``), and independent
    strata add variances with squared weights. To compare predictors that work in opposite
    directions, negate one (``A(-x) = 1 - A(x)``) before calling.
    """
    x1, _ = _as_2d(first)
    x2, _ = _as_2d(second)
    if x1.shape != x2.shape:
        raise ValueError(f"the two predictors must have the same shape, got {x1.shape} and {x2.shape}")
    both = np.isfinite(x1) & np.isfinite(x2)
    x1, x2 = np.where(both, x1, np.nan), np.where(both, x2, np.nan)
    y = np.asarray(violated, dtype=bool)
    g = np.asarray(jumper)
    num = np.zeros(x1.shape[1])
    den = np.zeros(x1.shape[1])
    parts = []
    for stratum in np.unique(g):
        sel = g == stratum
        a10, a01, mv, ms, nv, ns = _placements(x1[sel], y[sel])
        b10, b01, _, _, _, _ = _placements(x2[sel], y[sel])
        with np.errstate(invalid="ignore", divide="ignore"):
            d10 = np.where(mv, a10 - b10, 0.0)  # V10 of the difference: the components subtract
            d01 = np.where(ms, a01 - b01, 0.0)
            delta = d10.sum(axis=0) / nv
            s10 = np.where(mv, (d10 - delta) ** 2, 0.0).sum(axis=0) / (nv - 1)
            s01 = np.where(ms, (d01 - delta) ** 2, 0.0).sum(axis=0) / (ns - 1)
            var = np.where((nv > 1) & (ns > 1), s10 / nv + s01 / ns, np.nan)
        weight = nv * ns
        num += np.where(weight > 0, weight * np.nan_to_num(delta), 0.0)
        den += weight
        parts.append((weight, var))
    delta, var = _combine_strata(num, den, parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(var)
        z = float(norm.ppf(0.975))
        p = np.where(se > 0, 2 * norm.sf(np.abs(delta) / se), np.where(delta == 0, 1.0, 0.0))
    p = np.where(np.isnan(delta) | np.isnan(var), np.nan, p)
    return {"delta": delta, "var": var, "ci_low": delta - z * se, "ci_high": delta + z * se, "p_value": p}


def simultaneous_difference(
    first: np.ndarray,
    second: np.ndarray,
    violated: np.ndarray,
    jumper: np.ndarray,
    *,
    rng: np.random.Generator,
    level: float = 0.95,
    draws: int = 20_000,
) -> dict:
    """Paired AUROC differences ``D_j = A(first_j) − A(second_j)`` at every column j with a
    *simultaneous* band: its error rate holds whichever column is looked at afterwards.

    The within-jumper DeLong structural components give the whole covariance of ``D`` across
    columns, not only each variance: in jumper ``s`` with placements ``d10 = V10(first) − V10(second)``
    [n_v, C] and ``d01`` [n_s, C], ``Cov_s(D) = cov(d10)/n_v + cov(d01)/n_s`` (DeLong et al. 1988,
    their covariance of correlated AUROCs, here between lookbacks as well as predictors), and
    strata combine as in :func:`stratified_auroc` (``D = sum_s w_s D_s``, ``Cov = sum_s w_s² Cov_s``).
    With ``T_j = D_j / se_j``, the critical value ``c`` is the ``level`` quantile of
    ``max_j |Z_j|`` for ``Z ~ N(0, corr(D))`` (``draws`` Monte-Carlo draws from ``rng``): the band
    ``D_j ± c·se_j`` covers every true difference at once with probability ``level`` (asymptotically;
    the max-|t| construction of Hothorn, Bretz & Westfall 2008), and the adjusted p of column j is
    ``P(max_k |Z_k| >= |T_j|)``. Only events finite in every column of both predictors are used
    (so the covariance is of one sample). Returns ``delta``, ``se``, ``low``, ``high``, ``p_adjusted``
    ``[C]``, ``critical`` and ``events`` (the count used).
    """
    x1, _ = _as_2d(first)
    x2, _ = _as_2d(second)
    if x1.shape != x2.shape:
        raise ValueError(f"the two predictors must have the same shape, got {x1.shape} and {x2.shape}")
    keep = np.isfinite(x1).all(axis=1) & np.isfinite(x2).all(axis=1)
    x1, x2 = x1[keep], x2[keep]
    y, g = np.asarray(violated, dtype=bool)[keep], np.asarray(jumper)[keep]
    columns = x1.shape[1]
    num, den = np.zeros(columns), 0.0
    cov_parts = []
    for stratum in np.unique(g):
        sel = g == stratum
        ys = y[sel]
        nv, ns = int(ys.sum()), int((~ys).sum())
        if nv < 2 or ns < 2:
            continue
        a10, a01, _, _, _, _ = _placements(x1[sel], ys)
        b10, b01, _, _, _, _ = _placements(x2[sel], ys)
        d10, d01 = (a10 - b10)[ys], (a01 - b01)[~ys]
        num += nv * ns * d10.mean(axis=0)
        den += nv * ns
        cov_parts.append((nv * ns, np.atleast_2d(np.cov(d10, rowvar=False)) / nv + np.atleast_2d(np.cov(d01, rowvar=False)) / ns))
    nan = np.full(columns, np.nan)
    if den == 0:
        return {
            "delta": nan,
            "se": nan,
            "low": nan,
            "high": nan,
            "p_adjusted": nan,
            "critical": float("nan"),
            "events": int(keep.sum()),
        }
    delta = num / den
    cov = sum((weight / den) ** 2 * part for weight, part in cov_parts)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(se, se)
    corr = np.where(np.isfinite(corr), corr, 0.0)
    np.fill_diagonal(corr, 1.0)
    # max |Z| over columns under the null: Z = L e, L a square root of corr (eigh: corr may be singular)
    values, vectors = np.linalg.eigh(corr)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    maxima = np.abs(rng.standard_normal((draws, columns)) @ root.T).max(axis=1)
    critical = float(np.quantile(maxima, level))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(delta) / se
        p_adjusted = np.where(se > 0, (1 + (maxima[None, :] >= t[:, None]).sum(axis=1)) / (1 + draws), np.nan)
    return {
        "delta": delta,
        "se": se,
        "low": delta - critical * se,
        "high": delta + critical * se,
        "p_adjusted": p_adjusted,
        "critical": critical,
        "events": int(keep.sum()),
    }


def auroc_ci(a: np.ndarray, var: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Confidence interval for an AUROC from its (DeLong) variance, on the logit scale.

    ``logit(A) +- z sqrt(Var) / (A (1 - A))`` (delta method: ``d logit(A)/dA = 1/(A(1-A))``),
    mapped back with the logistic function; ``z = Phi^-1((1 + level) / 2)``. Why logit: the AUROC
    is bounded and its sampling distribution is skewed near 0 and 1, where the symmetric Wald
    interval ``A +- z sqrt(Var)`` spills over the bound and under-covers; the logit interval
    respects ``[0, 1]`` by construction and covers closer to nominal (see the module docstring).
    Where ``A`` is exactly 0 or 1 (logit undefined) the Wald interval clipped to ``[0, 1]`` is
    returned; there :func:`delong`'s variance carries the perfect-separation floor, so the bound
    away from 0/1 is the exact one of :func:`perfect_separation_bound` (for one stratum at 95%), not
    a zero-width ``[1, 1]``. NaN where ``A`` or ``Var`` is NaN.
    """
    a = np.asarray(a, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    z = float(norm.ppf((1 + level) / 2))
    se = np.sqrt(var)
    inner = (a > 0) & (a < 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        lg = np.log(a / (1 - a))
        h = z * se / (a * (1 - a))
        lo = np.where(inner, 1 / (1 + np.exp(-(lg - h))), np.clip(a - z * se, 0.0, 1.0))
        hi = np.where(inner, 1 / (1 + np.exp(-(lg + h))), np.clip(a + z * se, 0.0, 1.0))
    bad = np.isnan(a) | np.isnan(var)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


# --------------------------------------------------------------------------------------------------
# permutations, multiplicity, horizons


def permuted_labels(violated: np.ndarray, jumper: np.ndarray, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_perm, E]`` bool: labels shuffled independently within each jumper (counts preserved)."""
    y = np.asarray(violated, dtype=bool)
    g = np.asarray(jumper)
    out = np.empty((n_perm, y.size), dtype=bool)
    for s in np.unique(g):
        idx = np.flatnonzero(g == s)
        out[:, idx] = rng.permuted(np.broadcast_to(y[idx], (n_perm, idx.size)), axis=1)
    return out


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values.

    With the ``m`` finite p-values sorted ``p_(1) <= ... <= p_(m)``:
    ``p~_(i) = min(1, max_{k <= i} (m - k + 1) p_(k))`` (monotone, capped at 1). NaN entries are
    left out of the family (they do not count in ``m``) and returned as NaN.
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def horizons(auroc_j: np.ndarray, ci_low_j: np.ndarray, threshold: float = 0.75) -> tuple[int, int]:
    """``(horizon, confident_horizon)`` from per-lookback AUROC and CI lower bounds (index = j).

    * horizon: the furthest ``j >= 1`` with ``AUROC(j) > threshold`` (0 if none) — the spec's
      predictive horizon.
    * confident horizon: the largest ``J`` with ``ci_low(j) > threshold`` for every ``j`` in
      ``1..J`` (0 if none): it stops at the first lookback whose lower bound fails (NaN fails).
    ``j = 0`` (simultaneous with the outcome) never counts.
    """
    a = np.asarray(auroc_j, dtype=np.float64)
    lo = np.asarray(ci_low_j, dtype=np.float64)
    above = np.flatnonzero(np.nan_to_num(a[1:], nan=-np.inf) > threshold)
    horizon = int(above[-1] + 1) if above.size else 0
    ok = np.nan_to_num(lo[1:], nan=-np.inf) > threshold
    fails = np.flatnonzero(~ok)
    confident = int(fails[0]) if fails.size else int(ok.size)
    return horizon, confident


# --------------------------------------------------------------------------------------------------
# what is worth testing


CONSTANT_RTOL = 1e-5  # ~100 float32 ulps: a spread below this share of the array's scale is rounding
CONSTANT_FLOOR = float(np.finfo(np.float32).tiny)  # the smallest normal float32: all-zero arrays are constant


def constant_arrays(arrays: dict[str, np.ndarray], rtol: float = CONSTANT_RTOL, *, atol: float = CONSTANT_FLOOR) -> list[str]:
    """Names of the arrays that are constant up to rounding (NaN aside), in the order given.

    An array is constant when it has no finite value, or when its finite values satisfy::

        max - min <= max(rtol * max|v|, atol)

    — a spread within ``rtol`` of the array's own scale ``max|v|``, so one value stored with
    float32 rounding (a few ulps apart: ``1e6 +- 0.125``, two ulps) counts as constant where exact equality
    called it varying, whatever the metric's unit. ``rtol`` (default ``1e-5``, about 100 float32
    ulps) is far below any spread a metric can carry as signal in float32 (with a relative spread of
    1e-5 the stored values have only ~100 distinct levels). ``atol`` is a floor for arrays with no
    scale: an all-zero array has ``max|v| = 0`` and counts as constant (default: the smallest
    normal float32, so only zeros and subnormal noise fall under it); pass a larger ``atol`` when
    the metric's unit is known. A constant array is reported as such, never fed to the statistics
    (every AUROC would be 0.5 by ties, and its permutation p 1).
    """
    constant = []
    for name, values in arrays.items():
        v = np.asarray(values, dtype=np.float64)
        finite = v[np.isfinite(v)]
        if finite.size == 0:
            constant.append(name)
            continue
        low, high = float(finite.min()), float(finite.max())
        scale = max(abs(low), abs(high))
        if high - low <= max(rtol * scale, atol):
            constant.append(name)
    return constant


def holm_floor(family_size: int, permutations: int) -> float:
    """The smallest Holm-adjusted p a family of ``family_size`` permutation tests can reach:
    ``min(1, m / (P + 1))``.

    With ``P`` permutations the smallest permutation p is ``1 / (P + 1)`` (the observed labelling
    beats every shuffle), and Holm multiplies the smallest p of ``m`` by ``m``. Nothing in the family
    can be significant at ``alpha`` unless this is below ``alpha``: with 10,000 permutations a family
    of 500 arrays has floor 0.05 and can never pass ``alpha = 0.05``. 0 for an empty family.
    """
    if family_size < 0 or permutations < 0:
        raise ValueError(f"family_size and permutations must be >= 0, got {family_size} and {permutations}")
    return min(1.0, family_size / (permutations + 1))


def permutations_needed(family_size: int, alpha: float, requested: int) -> int:
    """The smallest ``P >= requested`` with ``family_size / (P + 1) < alpha / 2``: the permutations
    whose Holm floor (:func:`holm_floor`) is below half the significance level.

    Why half, not ``alpha`` itself (a margin): at a floor just below ``alpha`` only an array that
    beats *every* shuffle could pass, so a real but finite effect (a shuffle as extreme now and
    then) would fail on the resolution of the permutation p alone. With ``m / (P + 1) < alpha / 2``
    the family's smallest p still passes Holm (``m (1 + c) / (P + 1) < alpha``) when ``c >= 1``
    shuffles are as extreme as the observed labelling (up to ``c < alpha (P + 1) / m - 1``).
    ``P = max(requested, floor(2 m / alpha))`` up to float rounding (checked exactly); e.g.
    ``m = 500, alpha = 0.05``: 20,000. An empty family needs nothing beyond ``requested``.
    """
    if family_size < 0 or requested < 0:
        raise ValueError(f"family_size and requested must be >= 0, got {family_size} and {requested}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if family_size == 0:
        return int(requested)
    below = lambda p: family_size / (p + 1) < alpha / 2  # noqa: E731
    p = max(int(requested), int(np.floor(2 * family_size / alpha)) - 2)
    while not below(p):
        p += 1
    while p > requested and below(p - 1):
        p -= 1
    return p


# --------------------------------------------------------------------------------------------------
# entry point


@dataclass
class SeparationResult:
    """Separation of violations from successes by one metric in one ``r`` stratum (index = lookback j).

    ``auroc`` is the jumper-stratified AUROC; ``auroc_pooled`` pools all events of the stratum
    (diagnostic, confounded by rule identity). ``auroc_per_jumper`` is reported only for jumpers
    with at least ``min_events`` in both classes (NaN otherwise), although every jumper contributes
    to ``auroc`` with its weight. ``p_value`` is the family-wise permutation p over ``j >= 1``;
    ``p_per_j`` the per-lookback permutation p (same shuffles), ``p_per_j_holm`` its Holm adjustment
    over ``j >= 1`` (j = 0 NaN). ``horizon``/``confident_horizon`` count lookbacks with AUROC (its
    CI's lower bound) above ``threshold`` — the spec's horizon, for a metric higher before
    violations; ``horizon_lower``/``confident_horizon_lower`` the same in the other direction
    (AUROC, its CI's upper bound, below ``1 - threshold``). ``alternative``: the test's side (see
    :func:`separation`). Status ``"insufficient"``: fewer than ``min_events`` of a class in the
    stratum (all numbers NaN/None, counts only), or no lookback ``j >= 1`` is testable — none has
    ``min_events`` finite values of each class *and* a finite stratified AUROC (some jumper with both
    classes finite) — so no p-value and no horizon; the simultaneous ``j = 0`` AUROC, if defined, is kept.
    """

    def horizon_in(self, direction: str) -> tuple[int | None, int | None]:
        """(horizon, confident horizon) for a metric ``"higher"`` or ``"lower"`` before violations."""
        if direction == "higher":
            return self.horizon, self.confident_horizon
        return self.horizon_lower, self.confident_horizon_lower

    r: int
    status: str
    n_violations: int
    n_successes: int
    counts_per_jumper: dict[int, tuple[int, int]]
    auroc: np.ndarray
    auroc_pooled: np.ndarray
    auroc_per_jumper: dict[int, np.ndarray]
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: float | None = None
    p_per_j: np.ndarray | None = None
    p_per_j_holm: np.ndarray | None = None
    shuffled_95: float | None = None
    horizon: int | None = None
    confident_horizon: int | None = None
    horizon_lower: int | None = None
    confident_horizon_lower: int | None = None
    direction: str | None = None
    best_j: int | None = None
    permutations: int = 0
    alternative: str = "two-sided"
    threshold: float = 0.75
    min_events: int = 20
    extra: dict = field(default_factory=dict)
    # AUPRC beside the AUROC (index = lookback j; see .precision): oriented as ``auprc_orientation``
    auprc: np.ndarray | None = None
    auprc_ci_low: np.ndarray | None = None
    auprc_ci_high: np.ndarray | None = None
    prevalence: np.ndarray | None = None  # the stratified no-skill line
    auprc_orientation: str | None = None  # "higher" | "lower": which side of the metric predicts a violation
    auprc_p_value: float | None = None  # max over j >= 1 of AP - prevalence, same shuffles; doubled when two-sided
    auprc_p_per_j: np.ndarray | None = None
    auprc_permutations: int = 0

    def to_dict(self) -> dict:
        """Plain dict (arrays as lists, NaN kept as float NaN)."""

        def conv(v):
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, dict):
                return {k: conv(w) for k, w in v.items()}
            if isinstance(v, tuple):
                return [conv(w) for w in v]
            return v

        return {k: conv(v) for k, v in asdict(self).items()}


def _permutation_deviations(x: np.ndarray, y: np.ndarray, g: np.ndarray, permutations: int, rng: np.random.Generator, chunk: int):
    """Yield, chunk by chunk, the stratified ``A_perm - 0.5`` ``[C, columns]`` of within-jumper shuffles
    and the shuffled labels ``[C, n]`` themselves (the AUPRC's test uses the same ones).

    Per jumper, ranks are computed once for every column; for a chunk of label matrices ``L [C, n_s]``
    (the same shuffles for every column): ``U_s = L @ ranks_s - n_v (n_v + 1) / 2`` with
    ``n_v = L @ finite_s`` (only for columns with NaNs; elsewhere the row sums of ``L``), and
    ``A = sum_s U_s / sum_s n_v,s n_s,s``.
    """
    groups = []
    for s in np.unique(g):
        idx = np.flatnonzero(g == s)
        ranks, fin = _column_ranks(x[idx])
        partial = np.flatnonzero(~fin.all(axis=0))
        groups.append((idx, ranks, fin[:, partial].astype(np.float64), partial, fin.sum(axis=0).astype(np.float64)))
    done = 0
    while done < permutations:
        c = min(chunk, permutations - done)
        num = np.zeros((c, x.shape[1]))
        den = np.zeros((c, x.shape[1]))
        shuffled = permuted_labels(y, g, c, rng)  # the same within-jumper shuffles for every column
        for idx, ranks, fin_partial, partial, nfin in groups:
            lab = shuffled[:, idx].astype(np.float64)
            nv = np.repeat(lab.sum(axis=1, keepdims=True), x.shape[1], axis=1)
            if partial.size:
                nv[:, partial] = lab @ fin_partial
            num += lab @ ranks - nv * (nv + 1) / 2
            den += nv * (nfin - nv)
        with np.errstate(invalid="ignore", divide="ignore"):
            yield num / den - 0.5, shuffled
        done += c


def _statistic(deviation: np.ndarray, alternative: str) -> np.ndarray:
    """The test's per-lookback statistic from ``A - 0.5``: its size for a two-sided test, else signed."""
    if alternative == "two-sided":
        return np.abs(deviation)
    return deviation if alternative == "greater" else -deviation


def _family_max(stat: np.ndarray) -> np.ndarray:
    """``max_{j >= 1}`` over the last axis, NaN where no lookback ``j >= 1`` is defined."""
    fam = stat[..., 1:]
    defined = np.isfinite(fam).any(axis=-1)
    return np.where(defined, np.nanmax(np.where(np.isfinite(fam), fam, -np.inf), axis=-1), np.nan)


class _Common(TypedDict):
    """The fields of a ``SeparationResult`` that every status has (``_observed`` passes them as ``**base``)."""

    r: int
    n_violations: int
    n_successes: int
    counts_per_jumper: dict[int, tuple[int, int]]
    permutations: int
    threshold: float
    min_events: int
    alternative: str


def _observed(
    x: np.ndarray,
    y: np.ndarray,
    g: np.ndarray,
    r_value: int,
    *,
    permutations: int,
    min_events: int,
    threshold: float,
    alternative: str,
) -> tuple[SeparationResult, np.ndarray, np.ndarray]:
    """Everything but the permutation test for one metric in one stratum: (result, valid lookbacks,
    observed per-lookback statistic)."""
    nv_tot, ns_tot = int(y.sum()), int((~y).sum())
    counts = {int(s): (int((y & (g == s)).sum()), int((~y & (g == s)).sum())) for s in np.unique(g)}
    ncol = x.shape[1]
    nan = np.full(ncol, np.nan)
    base = _Common(
        r=r_value,
        n_violations=nv_tot,
        n_successes=ns_tot,
        counts_per_jumper=counts,
        permutations=permutations,
        threshold=threshold,
        min_events=min_events,
        alternative=alternative,
    )
    if nv_tot < min_events or ns_tot < min_events:
        result = SeparationResult(
            status="insufficient",
            auroc=nan.copy(),
            auroc_pooled=nan.copy(),
            auroc_per_jumper={s: nan.copy() for s in counts},
            ci_low=nan.copy(),
            ci_high=nan.copy(),
            **base,
        )
        return result, np.zeros(ncol, dtype=bool), nan.copy()
    fin = np.isfinite(x)
    valid = ((fin & y[:, None]).sum(axis=0) >= min_events) & ((fin & ~y[:, None]).sum(axis=0) >= min_events)
    st = stratified_auroc(x, y, g)
    # Enough of each class in the stratum is not enough: the stratified AUROC is NaN where no single
    # jumper has both classes finite. Such a lookback is not testable: it gets no p (a NaN statistic
    # would be exceeded by no shuffle, p = 1/(P+1)) and stays out of the max-over-j family.
    valid &= np.isfinite(st["auroc"])
    if not valid[1:].any():  # nothing testable (no lookback j >= 1): counts and the j = 0 AUROC only
        a = np.where(valid, st["auroc"], np.nan)
        lo, hi = auroc_ci(a, st["var"])
        result = SeparationResult(
            status="insufficient",
            auroc=a,
            auroc_pooled=np.where(valid, auroc(x, y), np.nan),
            auroc_per_jumper={s: nan.copy() for s in counts},
            ci_low=np.where(valid, lo, np.nan),
            ci_high=np.where(valid, hi, np.nan),
            **base,
        )
        return result, np.zeros(ncol, dtype=bool), nan.copy()
    a = np.where(valid, st["auroc"], np.nan)
    lo, hi = auroc_ci(a, st["var"])
    ci_low = np.where(valid, lo, np.nan)
    ci_high = np.where(valid, hi, np.nan)
    pooled = np.where(valid, auroc(x, y), np.nan)
    per_jumper = {}
    for s, a_s in st["per_jumper"].items():
        nv_s, ns_s = st["counts"][s]
        per_jumper[s] = np.where((nv_s >= min_events) & (ns_s >= min_events), a_s, np.nan)
    horizon, confident = horizons(a, ci_low, threshold)
    horizon_lower, confident_lower = horizons(1 - a, 1 - ci_high, threshold)
    obs = _statistic(a - 0.5, alternative)
    best_j = None if not np.isfinite(obs[1:]).any() else int(np.nanargmax(obs[1:]) + 1)
    direction = None if best_j is None else ("higher before violations" if a[best_j] > 0.5 else "lower before violations")
    orientation = _auprc_orientation(alternative, a, best_j)
    pr = stratified_auprc(np.where(valid[None, :], x, np.nan), y, g, orientation=orientation)
    pr_low, pr_high = auprc_ci(pr["auprc"], pr["var"])
    result = SeparationResult(
        status="ok",
        auprc=pr["auprc"],
        auprc_ci_low=pr_low,
        auprc_ci_high=pr_high,
        prevalence=pr["prevalence"],
        auprc_orientation=orientation,
        auroc=a,
        auroc_pooled=pooled,
        auroc_per_jumper=per_jumper,
        ci_low=ci_low,
        ci_high=ci_high,
        horizon=horizon,
        confident_horizon=confident,
        horizon_lower=horizon_lower,
        confident_horizon_lower=confident_lower,
        direction=direction,
        best_j=best_j,
        **base,
    )
    return result, valid, obs


def _auprc_orientation(alternative: str, a: np.ndarray, best_j: int | None) -> str:
    """The side of a metric that predicts a violation, for its AUPRC: the declared one of a one-sided
    test, else the side its AUROC takes at the best lookback (``"higher"`` when undefined)."""
    if alternative != "two-sided":
        return "higher" if alternative == "greater" else "lower"
    return "lower" if best_j is not None and a[best_j] < 0.5 else "higher"


class _PrecisionPermutations:
    """The AUPRC's permutation test on the AUROC's shuffles (see :mod:`.precision`): per jumper the
    label-free keys ``D`` of every tested column (each metric in its own orientation) are computed
    once; each shuffle's AP needs only its violations' keys, sorted."""

    BLOCK = 4_000_000  # keys gathered at once (columns x shuffles x violations): bounds memory

    def __init__(self, tested, y: np.ndarray, g: np.ndarray, permutations: int):
        self.tested, self.permutations = tested, permutations
        self.groups = []
        for s in np.unique(g):
            idx = np.flatnonzero(g == s)
            parts = [ap_keys(x[idx], result.auprc_orientation) for result, x, _, _ in tested]
            keys = np.concatenate([p[0] for p in parts], axis=0)
            self.groups.append((idx, keys, idx.size + 1, np.concatenate([p[2] for p in parts])))  # one sentinel: n + 1
        self.bounds = np.cumsum([0] + [x.shape[1] for _, x, _, _ in tested])
        self.prevalence = np.concatenate([np.nan_to_num(result.prevalence, nan=0.0) for result, _, _, _ in tested])
        # the observed statistic through the same (float32) sums as the shuffles, so a shuffle that
        # reproduces the observed labelling ties with it exactly
        self.observed = []
        observed = self._deviation(y[None, :])[0]
        for i, (_, _, valid, _) in enumerate(tested):
            self.observed.append(np.where(valid, observed[self.bounds[i] : self.bounds[i + 1]], np.nan))
        self.t_perm = [np.empty(permutations) for _ in tested]
        self.exceed = [np.zeros(x.shape[1]) for _, x, _, _ in tested]
        self.done = 0

    def add(self, shuffled: np.ndarray) -> None:
        """Count the shuffles ``shuffled [C, n]`` (the first ``permutations`` overall are used)."""
        c = min(shuffled.shape[0], self.permutations - self.done)
        if c <= 0:
            return
        deviation = self._deviation(shuffled[:c])
        for i, (_, _, valid, _) in enumerate(self.tested):
            stat = deviation[:, self.bounds[i] : self.bounds[i + 1]]
            stat[:, ~valid] = np.nan
            self.t_perm[i][self.done : self.done + c] = _family_max(stat)
            with np.errstate(invalid="ignore"):
                self.exceed[i] += np.sum(stat >= self.observed[i][None, :] - _AP_TOL, axis=0)
        self.done += c

    def _deviation(self, shuffled: np.ndarray) -> np.ndarray:
        """``AP - prevalence`` ``[C, columns]`` of the label sets ``shuffled [C, n]``."""
        c = shuffled.shape[0]
        columns = self.bounds[-1]
        num = np.zeros((c, columns))
        count = np.zeros((c, columns))
        for idx, keys, sentinel, ties in self.groups:
            lab = shuffled[:, idx]
            nv = int(lab[0].sum())
            if nv == 0:
                continue
            positives = np.nonzero(lab)[1].reshape(c, nv)
            step = max(1, self.BLOCK // (c * nv))
            for begin in range(0, columns, step):
                part = slice(begin, min(begin + step, columns))
                n_part, v_part = ap_numerators(keys[part], positives, sentinel, ties[part], exact=False)
                num[:, part] += n_part
                count[:, part] += v_part
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / count - self.prevalence[None, :]

    def finish(self) -> None:
        for i, (result, _, valid, _) in enumerate(self.tested):
            obs = self.observed[i]
            result.auprc_permutations = self.done
            if self.done == 0 or not np.isfinite(obs[1:]).any():
                continue
            t_obs = float(np.nanmax(obs[1:]))
            sides = 2.0 if result.alternative == "two-sided" else 1.0
            p = (1 + np.sum(self.t_perm[i][: self.done] >= t_obs - _AP_TOL)) / (1 + self.done)
            result.auprc_p_value = float(min(1.0, sides * p))
            result.auprc_p_per_j = np.where(valid, np.minimum(1.0, sides * (1 + self.exceed[i]) / (1 + self.done)), np.nan)
            result.auprc_p_per_j[0] = np.nan


def _permutation_test(
    tested: list[tuple[SeparationResult, np.ndarray, np.ndarray, np.ndarray]],
    y: np.ndarray,
    g: np.ndarray,
    permutations: int,
    rng: np.random.Generator,
    chunk: int,
    auprc_permutations: int | None = None,
) -> None:
    """Fill in the permutation p-values of every (result, x, valid, observed statistic) in ``tested``,
    all from the same within-jumper shuffles (one wide rank-sum product per chunk); the AUPRC's from
    the first ``auprc_permutations`` of the same shuffles (default: all of them)."""
    if not tested:
        return
    precision = _PrecisionPermutations(
        tested, y, g, permutations if auprc_permutations is None else min(permutations, auprc_permutations)
    )
    wide = np.concatenate([x for _, x, _, _ in tested], axis=1)
    bounds = np.cumsum([0] + [x.shape[1] for _, x, _, _ in tested])
    t_perm = [np.empty(permutations) for _ in tested]
    exceed = [np.zeros(x.shape[1]) for _, x, _, _ in tested]
    done = 0
    for deviation, shuffled in _permutation_deviations(wide, y, g, permutations, rng, chunk):
        precision.add(shuffled)
        c = deviation.shape[0]
        for i, (result, _, valid, obs) in enumerate(tested):
            part = deviation[:, bounds[i] : bounds[i + 1]]
            part[:, ~valid] = np.nan
            stat = _statistic(part, result.alternative)
            t_perm[i][done : done + c] = _family_max(stat)
            with np.errstate(invalid="ignore"):
                exceed[i] += np.sum(stat >= obs[None, :] - _TOL, axis=0)
        done += c
    for i, (result, _, valid, obs) in enumerate(tested):
        t_obs = float(obs[result.best_j])
        result.p_value = float((1 + np.sum(t_perm[i] >= t_obs - _TOL)) / (1 + permutations))
        result.p_per_j = np.where(valid, (1 + exceed[i]) / (1 + permutations), np.nan)
        result.p_per_j_holm = np.full(len(obs), np.nan)
        result.p_per_j_holm[1:] = holm(result.p_per_j[1:])
        result.shuffled_95 = float(np.quantile(t_perm[i], 0.95))
    precision.finish()


def separation_family(
    arrays: dict[str, np.ndarray],
    violated: np.ndarray,
    jumper: np.ndarray,
    r: np.ndarray,
    *,
    permutations: int = 10_000,
    rng: np.random.Generator,
    min_events: int = 20,
    threshold: float = 0.75,
    chunk: int = 250,
    alternatives: dict[str, str] | None = None,
    auprc_permutations: int | None = None,
) -> dict[str, dict[int, SeparationResult]]:
    """:func:`separation` of many metrics on the same events: ``{name: {r: result}}``.

    Every metric is tested on the *same* within-jumper shuffles (drawn once per chunk and ``r``
    stratum, applied to all metrics in one wide rank-sum product), so the cost of drawing
    permutations is paid once, and each metric's p-value is exactly what :func:`separation` would
    give it alone with the same generator state. ``alternatives``: name -> side (default two-sided).
    ``auprc_permutations``: how many of those shuffles (the first ones) test the AUPRC (default all).
    """
    alternatives = alternatives or {}
    for name, side in alternatives.items():
        if side not in ALTERNATIVES:
            raise ValueError(f"{name}: alternative must be one of {ALTERNATIVES}, got {side!r}")
    y = np.asarray(violated, dtype=bool)
    g = np.asarray(jumper)
    r = np.asarray(r, dtype=np.int64)
    for name, values in arrays.items():
        if np.shape(values)[0] != y.shape[0] or np.ndim(values) != 2:
            raise ValueError(f"{name}: values must be [E = {y.shape[0]}, lookbacks], got shape {np.shape(values)}")
    if not (y.shape == g.shape == r.shape):
        raise ValueError("violated, jumper and r must all be [E]")
    out: dict[str, dict[int, SeparationResult]] = {name: {} for name in arrays}
    for rv in r_strata(r):
        m = stratum_mask(r, rv)
        tested = []
        for name, values in arrays.items():
            x = np.asarray(values, dtype=np.float64)[m, :rv]  # lookback order: column j = lookback j
            result, valid, obs = _observed(
                x,
                y[m],
                g[m],
                rv,
                permutations=permutations,
                min_events=min_events,
                threshold=threshold,
                alternative=alternatives.get(name, "two-sided"),
            )
            out[name][rv] = result
            if permutations > 0 and result.best_j is not None:
                tested.append((result, x, valid, obs))
        _permutation_test(tested, y[m], g[m], permutations, rng, chunk, auprc_permutations)
    return out


def separation(
    values: np.ndarray,
    violated: np.ndarray,
    jumper: np.ndarray,
    r: np.ndarray,
    *,
    permutations: int = 10_000,
    rng: np.random.Generator,
    min_events: int = 20,
    threshold: float = 0.75,
    chunk: int = 250,
    alternative: str = "two-sided",
) -> dict[int, SeparationResult]:
    """Separation of violations from successes by one metric, per ``r`` stratum.

    ``values [E, lookbacks]`` (NaN where undefined; lookback ``j`` in column ``j``, as in
    token_metrics.npz), ``violated [E]`` bool, ``jumper [E]`` int, ``r [E]`` int. For each ``r`` the
    events of that stratum are read at lookbacks ``j = 0..r-1``, and the result holds the stratified AUROC at
    every ``j`` with its DeLong 95% CI (logit scale, :func:`auroc_ci`), the pooled and per-jumper AUROCs, the family-wise
    permutation p over ``j >= 1`` with statistic ``T = max_{j>=1} |A(j) - 0.5|`` (labels shuffled
    within jumper, ``p = (1 + #{T_perm >= T_obs}) / (1 + P)``), the 95th percentile of ``T_perm``
    (``shuffled_95``, the shuffled-label baseline), horizons (:func:`horizons`) and the direction at
    the best ``j``. ``permutations=0`` skips the test (p None). ``rng`` makes it reproducible;
    strata are processed in increasing ``r`` from the same generator.

    ``alternative``: ``"two-sided"`` (exploratory metrics: ``T = max |A - 0.5|``), ``"greater"``
    (a metric pre-registered as higher before violations: ``T = max (A - 0.5)``) or ``"less"``
    (``T = max (0.5 - A)``); the per-j p-values use the same side.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    values = np.asarray(values, dtype=np.float64)
    if not (np.shape(violated) == np.shape(jumper) == np.shape(r) == (values.shape[0],)):
        raise ValueError("violated, jumper and r must be [E] matching values [E, lookbacks]")
    return separation_family(
        {"values": values},
        violated,
        jumper,
        r,
        permutations=permutations,
        rng=rng,
        min_events=min_events,
        threshold=threshold,
        chunk=chunk,
        alternatives={"values": alternative},
    )["values"]
