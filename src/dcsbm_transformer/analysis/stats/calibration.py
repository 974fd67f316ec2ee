"""Calibration of a fitted model's probabilities: a reliability diagram and the expected calibration error.

A metric is not a probability until a model maps it to one. The incremental-value models
(``incremental.py``: nested logistic regressions within jumper) do, so their predicted violation
probabilities are checked on **held-out folds** (the out-of-fold predictions the cross-validated
AUROC gain already uses — in-sample probabilities of a logistic fit with an intercept per jumper
are calibrated on average by construction, and would say nothing).

Binning: ``bins`` (default 10) **equal-count** bins of the predicted probability (sorted, split into
``bins`` groups of ``⌊N/bins⌋`` or ``⌈N/bins⌉`` events; ties may straddle a boundary). Equal-width
bins would leave almost every event in the first bin at a 2% violation rate. Per bin ``b``: the mean
prediction ``p̄_b``, the observed violation share ``ō_b`` and the count ``n_b`` — the reliability
diagram plots ``ō_b`` against ``p̄_b``. The expected calibration error (Naeini, Cooper & Hauskrecht
2015, *Obtaining well calibrated probabilities using Bayesian binning*, AAAI; Guo et al. 2017)::

    ECE = sum_b (n_b / N) |ō_b − p̄_b|

ECE is biased upwards in finite samples (a perfectly calibrated model has ``E[ECE] > 0``: each
``ō_b`` is a binomial share). So it is reported with its **consistency-resampling** reference
(Bröcker & Smith 2007, *Increasing the reliability of reliability diagrams*, Weather Forecast.
22:651): outcomes redrawn as ``Bernoulli(p_i)`` from the model's own predictions, ``resamples``
times, give the ECE a perfectly calibrated model would show on these predictions; its 95th
percentile and the p-value ``(1 + #{ECE* >= ECE}) / (1 + B)`` (small: miscalibrated beyond chance).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["BINS", "reliability"]

BINS = 10
RESAMPLES = 1000


def _bin_of(p: np.ndarray, bins: int) -> np.ndarray:
    """int [N]: the equal-count bin of every prediction (by rank, stable)."""
    order = np.argsort(p, kind="stable")
    of = np.empty(p.size, dtype=np.int64)
    of[order] = np.arange(p.size) * bins // p.size
    return of


def reliability(
    probability: np.ndarray, violated: np.ndarray, *, bins: int = BINS, rng: np.random.Generator, resamples: int = RESAMPLES
) -> dict[str, Any]:
    """Reliability diagram and ECE of predicted probabilities ``[N]`` against outcomes ``[N]`` (bool).

    Returns ``bins`` and ``binning`` (stated), ``events``, ``mean_predicted``, ``observed``, ``count``
    (one entry per bin), ``ece``, ``ece_calibrated_95`` (95th percentile of the ECE of outcomes drawn
    from the predictions themselves) and ``p_value`` (consistency resampling). Non-finite predictions
    are left out; fewer events than bins gives NaN numbers and empty lists.
    """
    p = np.asarray(probability, dtype=np.float64)
    y = np.asarray(violated, dtype=bool)
    keep = np.isfinite(p)
    p, y = np.clip(p[keep], 0.0, 1.0), y[keep]
    out: dict[str, Any] = {
        "bins": bins,
        "binning": f"{bins} equal-count bins of the predicted probability, out-of-fold predictions",
        "events": int(p.size),
        "mean_predicted": [],
        "observed": [],
        "count": [],
        "ece": float("nan"),
        "ece_calibrated_95": float("nan"),
        "p_value": float("nan"),
    }
    if p.size < bins:
        return out
    of = _bin_of(p, bins)
    count = np.bincount(of, minlength=bins).astype(np.float64)
    predicted = np.bincount(of, weights=p, minlength=bins) / count
    observed = np.bincount(of, weights=y.astype(np.float64), minlength=bins) / count
    ece = float(np.sum(count / p.size * np.abs(observed - predicted)))
    # consistency resampling: outcomes drawn from the predictions, binned the same way (bins depend on p only)
    order = np.argsort(of, kind="stable")  # events grouped by bin: per-bin sums are reduceat over columns
    starts = np.r_[0, np.cumsum(count)[:-1]].astype(np.int64)
    ece_star = np.empty(resamples)
    p32 = p.astype(np.float32)  # draws in float32: half the cost; a probability's rounding (< 1e-7) changes no share
    for begin in range(0, resamples, 250):  # chunks bound memory at 250 x N draws
        c = min(250, resamples - begin)
        drawn = (rng.random((c, p.size), dtype=np.float32) < p32[None, :])[:, order].astype(np.float32)
        observed_star = np.add.reduceat(drawn, starts, axis=1) / count[None, :]
        ece_star[begin : begin + c] = (count[None, :] / p.size * np.abs(observed_star - predicted[None, :])).sum(axis=1)
    out.update(
        mean_predicted=predicted.tolist(),
        observed=observed.tolist(),
        count=[int(c) for c in count],
        ece=ece,
        ece_calibrated_95=float(np.quantile(ece_star, 0.95)),
        p_value=float((1 + np.sum(ece_star >= ece - 1e-15)) / (1 + resamples)),
    )
    return out
