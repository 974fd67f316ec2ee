"""Incremental value: does a metric predict violations *beyond* what is already known without it?

A reviewer's question about any attention metric: the input context, the model's own output
distribution and one attention weight may already carry the signal. So the metric is judged by
nested logistic regressions within jumper (statsmodels ``Logit``), at one lookback j:

    reduced:  logit P(violation) = α_jumper + Σ_b β_b · base_b
    full:     logit P(violation) = α_jumper + Σ_b β_b · base_b + γ · metric

``α_jumper`` are jumper fixed effects (rules differ in violation rate); the bases are the
metric's own *context-only* value (the window before the jumper entered), the behavioural
predictors (target-block probability, rule-feasible mass, output entropy) and attention on the
jumper of the metric's layer and head, each at j (every column z-scored). Two answers:

* the **likelihood-ratio test** of γ = 0: ``LR = 2 (ℓ_full − ℓ_reduced) ~ χ²₁`` (Wilks 1938);
* the **cross-validated AUROC gain**: out-of-fold predictions of both models (``folds`` folds,
  stratified by jumper × class, seeded), their jumper-stratified AUROCs and the paired DeLong
  difference with its 95% CI (``statistics.auroc_difference``): how much better the full model
  ranks held-out events, which a significant but tiny γ cannot fake.

* the **calibration** of both models' out-of-fold probabilities (``calibration.reliability``: a
  reliability diagram in 10 equal-count bins and the expected calibration error with its
  consistency-resampling reference): whether the fitted model's probabilities mean what they say
  on events it was not fitted to.

A model that cannot be fitted (a class missing, perfect separation, a singular design) gives NaN,
never a number. The lookback is chosen before the test: on the held-out events for the
registered test (j* from the exploratory events), at the metric's best lookback for the
exploratory ones — there the LR p is pointwise at a chosen lookback, and the family is
Holm-adjusted; both are labelled so in horizon.json.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.stats import chi2

from .calibration import reliability
from .statistics import auroc_difference, stratified_auroc


def _design(bases: dict[str, np.ndarray], jumper: np.ndarray, metric: np.ndarray | None) -> np.ndarray:
    """[E, jumpers + bases (+ 1)]: one indicator column per jumper (no intercept) and the z-scored columns."""
    levels = np.unique(jumper)
    columns = [(jumper == level).astype(np.float64) for level in levels]
    for values in [*bases.values(), *([] if metric is None else [metric])]:
        v = np.asarray(values, dtype=np.float64)
        sd = v.std()
        columns.append((v - v.mean()) / sd if sd > 0 else np.zeros_like(v))
    return np.column_stack(columns)


def _fit(y: np.ndarray, design: np.ndarray):
    """A fitted statsmodels Logit, or None when it cannot be fitted honestly."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, PerfectSeparationError, PerfectSeparationWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PerfectSeparationWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)  # checked below: an unconverged fit is no fit
            fitted = sm.Logit(y.astype(np.float64), design).fit(disp=0, maxiter=200, method="newton")
    except (PerfectSeparationError, PerfectSeparationWarning, np.linalg.LinAlgError, ValueError):
        return None
    if not fitted.mle_retvals.get("converged", False) or not np.isfinite(fitted.llf):
        return None
    return fitted


def _folds(y: np.ndarray, jumper: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """int [E]: the fold of each event, dealt round-robin within each jumper × class after a shuffle."""
    fold = np.empty(len(y), dtype=np.int64)
    for level in np.unique(jumper):
        for cls in (False, True):
            members = np.flatnonzero((jumper == level) & (y == cls))
            fold[rng.permutation(members)] = np.arange(members.size) % folds
    return fold


def _out_of_fold(y: np.ndarray, design: np.ndarray, fold: np.ndarray, folds: int) -> np.ndarray:
    """Out-of-fold linear predictors [E] (NaN for events whose training folds could not be fitted)."""
    out = np.full(len(y), np.nan)
    for k in range(folds):
        test = fold == k
        fitted = _fit(y[~test], design[~test])
        if fitted is not None:
            out[test] = design[test] @ fitted.params
    return out


def incremental_value(
    metric: np.ndarray,
    bases: dict[str, np.ndarray],
    violated: np.ndarray,
    jumper: np.ndarray,
    *,
    rng: np.random.Generator,
    folds: int = 5,
) -> dict[str, Any]:
    """The nested-model test of ``metric`` [E] beyond ``bases`` (name -> [E]) within jumper.

    Only events where the metric and every base are finite are used. Returns ``events``,
    ``violations``, ``bases`` (names), ``lr_statistic``, ``p_value`` (χ²₁), ``coefficient`` (γ
    per standard deviation of the metric), ``auroc_reduced``, ``auroc_full`` (cross-validated,
    jumper-stratified), ``gain`` with ``gain_ci_low`` / ``gain_ci_high`` (paired DeLong 95%) —
    NaN (None in JSON) where a model cannot be fitted — and ``calibration`` (``{"full": ...,
    "reduced": ...}``, ``calibration.reliability`` of each model's out-of-fold probabilities; None
    where the cross-validated predictions could not be made).
    """
    y = np.asarray(violated, dtype=bool)
    g = np.asarray(jumper)
    x = np.asarray(metric, dtype=np.float64)
    keep = np.isfinite(x)
    for values in bases.values():
        keep &= np.isfinite(np.asarray(values, dtype=np.float64))
    y, g, x = y[keep], g[keep], x[keep]
    bases = {name: np.asarray(values, dtype=np.float64)[keep] for name, values in bases.items()}
    out: dict[str, Any] = {
        "events": int(keep.sum()),
        "violations": int(y.sum()),
        "bases": list(bases),
        "lr_statistic": float("nan"),
        "p_value": float("nan"),
        "coefficient": float("nan"),
        "auroc_reduced": float("nan"),
        "auroc_full": float("nan"),
        "gain": float("nan"),
        "gain_ci_low": float("nan"),
        "gain_ci_high": float("nan"),
        "calibration": None,
    }
    if y.sum() < folds or (~y).sum() < folds:
        return out
    reduced_design, full_design = _design(bases, g, None), _design(bases, g, x)
    reduced, full = _fit(y, reduced_design), _fit(y, full_design)
    if reduced is not None and full is not None:
        lr = max(0.0, 2.0 * (full.llf - reduced.llf))
        out.update(lr_statistic=lr, p_value=float(chi2.sf(lr, 1)), coefficient=float(full.params[-1]))
    fold = _folds(y, g, folds, rng)
    predicted_reduced = _out_of_fold(y, reduced_design, fold, folds)
    predicted_full = _out_of_fold(y, full_design, fold, folds)
    both = np.isfinite(predicted_reduced) & np.isfinite(predicted_full)
    if both.sum() and y[both].any() and (~y[both]).any():
        out["auroc_reduced"] = float(stratified_auroc(predicted_reduced[both], y[both], g[both])["auroc"][0])
        out["auroc_full"] = float(stratified_auroc(predicted_full[both], y[both], g[both])["auroc"][0])
        compared = auroc_difference(predicted_full[both], predicted_reduced[both], y[both], g[both])
        out.update(
            gain=float(compared["delta"][0]), gain_ci_low=float(compared["ci_low"][0]), gain_ci_high=float(compared["ci_high"][0])
        )
        probability = lambda eta: 1.0 / (1.0 + np.exp(-eta))  # noqa: E731 (the logistic link)
        out["calibration"] = {
            "full": reliability(probability(predicted_full[both]), y[both], rng=rng),
            "reduced": reliability(probability(predicted_reduced[both]), y[both], rng=rng),
        }
    return out
