"""A random-matrix reference for the SVD targets: which singular values of QKᵀ and AVWₒ stand out of a
noise bulk, per layer and head? Written to ``analysis/<name>/random_matrix.json`` (its own small file,
schema ``RANDOM_MATRIX_SCHEMA_VERSION``), shown as a section of the report.

**The reference.** For an m × n matrix X with i.i.d. N(0, σ²) entries (N = max(m, n), M = min(m, n),
c = M/N), the eigenvalues of XXᵀ/N (M × M) follow the Marchenko–Pastur law as N → ∞ with c fixed
(Marchenko & Pastur 1967): density ``f(λ) = √((λ₊ − λ)(λ − λ₋)) / (2π σ² c λ)`` on
``[λ₋, λ₊] = σ²(1 ∓ √c)²``. For the singular values s = √(Nλ) the bulk lies in
``[σ(√N − √M), σ(√N + √M)]``; the upper edge is ``σ√N (1 + √c)`` (:func:`mp_singular_density`,
:func:`mp_edges`). The QKᵀ the analysis measures is masked causally (zero above the diagonal), and
a lower-triangular Gaussian matrix does not follow MP (its norm tends to √e·σ√N, not 2σ√N: Dykema &
Haagerup 2004), so its reference is the same-shape, same-support Gaussian matrix, simulated; the MP
density of a full matrix of the same shape is drawn beside it as the textbook reference. AVWₒ is a
dense w × d_model matrix and is compared with MP directly (and the simulation, which also carries the
finite size).

**The fitted variance.** σ̂ = median(s) / E[median(s) of the null at σ = 1] (the simulation's mean):
the bulk's median, robust to the few large singular values a structured matrix has (the Frobenius
estimate ``‖X‖_F / √(entries on the support)`` is inflated by exactly those; it is reported too).
When the matrix's rank is bounded below min(m, n) by construction (AVWₒ: rank ≤ d_head), the median
and the test use its top ρ = that bound singular values only, against the null's top ρ.

**Which values stand out (finite size).** Tracy–Widom describes the largest singular value of a full
Gaussian matrix (after centring and scaling) but not of the causally masked one, and at w = 16 the
asymptotics are rough; so the edge is simulated: the statistic ``t = s₁ / median(s₁..s_ρ)`` is free of
σ, its null distribution is simulated from ``NULL_DRAWS`` same-shape, same-support Gaussian matrices,
and a singular value sᵢ of a measured matrix is **flagged** when ``sᵢ / median(s) > q₁₋α`` (the null's
1 − α quantile of t). Under the null the chance that a matrix has any flagged value is α exactly (up
to the simulation's Monte-Carlo error, ±√(α(1−α)/NULL_DRAWS) on the quantile's level). A rank-one
spike θuvᵀ of a square matrix separates from the bulk when θ > σ√N (the BBP transition, Baik, Ben
Arous & Péché 2005; Benaych-Georges & Nadakuditi 2012: then s₁ → σ√N (θ' + 1/θ'), θ' = θ/(σ√N)).

References: Marchenko V. A., Pastur L. A. (1967), *Math. USSR-Sbornik* 1:457–483; Baik J., Ben Arous
G., Péché S. (2005), *Ann. Probab.* 33:1643–1697; Benaych-Georges F., Nadakuditi R. R. (2012), *J.
Multivariate Anal.* 111:120–135; Dykema K., Haagerup U. (2004), *Amer. J. Math.* 126:121–189.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ...storage import atomic_write_validated, sha256_file
from ..files import TOKEN_METRICS_FILE
from ..measure.continuations import forward_targets

RANDOM_MATRIX_FILE = "random_matrix.json"
RANDOM_MATRIX_SCHEMA_VERSION = 1
ALPHA = 0.05  # the per-matrix rate of flagging a pure-noise matrix
NULL_DRAWS = 2000
MAX_WINDOWS = 256
TOP_INDICES = 5  # flag counts reported for s₁..s₅
BINS = 40

__all__ = [
    "RANDOM_MATRIX_FILE",
    "flag_outliers",
    "mp_edges",
    "mp_singular_density",
    "null_singular_values",
    "random_matrix_for_run",
    "read_random_matrix",
    "reference_of",
]


# --------------------------------------------------------------------------------------------------
# the law and its null


def mp_edges(rows: int, cols: int, sigma: float = 1.0) -> tuple[float, float]:
    """The MP bulk of the singular values of a rows × cols N(0, σ²) matrix: σ(√N − √M), σ(√N + √M)."""
    big, small = max(rows, cols), min(rows, cols)
    return sigma * (np.sqrt(big) - np.sqrt(small)), sigma * (np.sqrt(big) + np.sqrt(small))


def mp_singular_density(s: np.ndarray, rows: int, cols: int, sigma: float = 1.0) -> np.ndarray:
    """The MP density of the singular values s of a rows × cols N(0, σ²) matrix (integrates to 1 over
    the bulk; 0 outside). From λ = s²/N: g(s) = f(λ) · 2s/N with f the MP eigenvalue density of ratio c = M/N."""
    big, small = max(rows, cols), min(rows, cols)
    c = small / big
    lam = np.asarray(s, dtype=np.float64) ** 2 / big
    low, high = sigma**2 * (1 - np.sqrt(c)) ** 2, sigma**2 * (1 + np.sqrt(c)) ** 2
    inside = (lam > low) & (lam < high)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(inside, np.sqrt(np.clip((high - lam) * (lam - low), 0, None)) / (2 * np.pi * sigma**2 * c * lam), 0.0)
    return f * 2 * np.asarray(s, dtype=np.float64) / big


def null_singular_values(rows: int, cols: int, *, causal: bool, draws: int, seed: int) -> np.ndarray:
    """Singular values (descending) of ``draws`` rows × cols N(0, 1) matrices, zero above the diagonal
    when ``causal``: [draws, min(rows, cols)]."""
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(draws, rows, cols, generator=generator, dtype=torch.float64)
    if causal:
        noise = noise.tril()
    return torch.linalg.svdvals(noise).numpy()


def flag_outliers(singular: np.ndarray, null: np.ndarray, rank: int, alpha: float = ALPHA) -> dict[str, np.ndarray]:
    """Flag the singular values that stand out of the bulk.

    singular [n, k] and null [draws, k] descending; the top ``rank`` of each row are used. Returns
    ``ratio`` [n, rank] = sᵢ / median(s₁..s_rank), ``threshold`` q₁₋α of the null's s₁ / median,
    ``flagged`` bool [n, rank] = ratio > threshold, ``sigma`` [n] = median(s) / mean null median (the
    fitted σ) and ``null_median`` (that mean)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    top, top_null = singular[:, :rank], null[:, :rank]
    median, null_median = np.median(top, axis=1), np.median(top_null, axis=1)
    threshold = float(np.quantile(top_null[:, 0] / null_median, 1 - alpha))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = top / median[:, None]
    return {
        "ratio": ratio,
        "threshold": np.float64(threshold),
        "flagged": ratio > threshold,
        "sigma": median / null_median.mean(),
        "null_median": np.float64(null_median.mean()),
    }


# --------------------------------------------------------------------------------------------------
# one (target, layer, head)


def _quartiles(values: np.ndarray) -> dict[str, float]:
    q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"median": float(q50), "q25": float(q25), "q75": float(q75)}


def reference_of(
    matrices: np.ndarray, *, causal: bool, rank: int, seed: int, draws: int = NULL_DRAWS, alpha: float = ALPHA
) -> dict[str, Any]:
    """The reference row of one set of matrices [n, rows, cols] (float): the fitted σ, the edges, the
    flags per index and the histograms of s / (σ̂√N) (measured, null, MP) for the figure."""
    n, rows, cols = matrices.shape
    big, small = max(rows, cols), min(rows, cols)
    rank = min(rank, small)
    singular = torch.linalg.svdvals(torch.as_tensor(matrices, dtype=torch.float64)).numpy()
    null = null_singular_values(rows, cols, causal=causal, draws=draws, seed=seed)
    flags = flag_outliers(singular, null, rank, alpha)
    support = rows * (rows + 1) // 2 if causal and rows == cols else rows * cols
    sigma = flags["sigma"]
    sigma_frobenius = np.sqrt((matrices.astype(np.float64) ** 2).sum(axis=(1, 2)) / support)
    flagged = flags["flagged"]
    edges = np.linspace(0.0, max(2.5, float(np.nanquantile(singular[:, 0] / (sigma * np.sqrt(big)), 0.99)) * 1.05), BINS + 1)
    x_measured = (singular[:, :rank] / (sigma[:, None] * np.sqrt(big))).ravel()
    null_sigma = np.median(null[:, :rank], axis=1) / flags["null_median"]
    x_null = (null[:, :rank] / (null_sigma[:, None] * np.sqrt(big))).ravel()
    centres = (edges[1:] + edges[:-1]) / 2
    _, mp_upper = mp_edges(rows, cols)
    return {
        "rows": rows,
        "cols": cols,
        "support": "causal (zero above the diagonal)" if causal else "full",
        "rank_used": rank,
        "matrices": n,
        "sigma_fit": _quartiles(sigma),
        "sigma_frobenius": _quartiles(sigma_frobenius),
        "mp_upper_edge": float(mp_upper * np.median(sigma)),
        "null_threshold_ratio": float(flags["threshold"]),
        "null_edge": float(flags["threshold"] * np.median(np.median(singular[:, :rank], axis=1))),
        "top_over_mp_edge": _quartiles(singular[:, 0] / (sigma * mp_upper)),
        "flagged_matrices": int(flagged.any(axis=1).sum()),
        "outliers_per_matrix": float(flagged.sum(axis=1).mean()),
        "flagged_by_index": [int(flagged[:, i].sum()) for i in range(min(TOP_INDICES, rank))],
        "histogram": {
            "edges": edges.tolist(),
            "measured": np.histogram(x_measured, bins=edges, density=True)[0].tolist(),
            "null": np.histogram(x_null, bins=edges, density=True)[0].tolist(),
            "mp": (mp_singular_density(centres * np.sqrt(big), rows, cols) * np.sqrt(big)).tolist(),
            "threshold_x": float(flags["threshold"] * flags["null_median"] / np.sqrt(big)),
        },
    }


# --------------------------------------------------------------------------------------------------
# the file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quartiles(_Strict):
    median: float
    q25: float
    q75: float


class Histogram(_Strict):
    edges: list[float]  # of x = s / (σ̂ √N)
    measured: list[float]  # densities
    null: list[float]
    mp: list[float]  # the MP density of a full matrix of the shape, at the bins' centres
    threshold_x: float  # the flagging threshold on the x axis, at the null's median


class ReferenceRow(_Strict):
    target: str  # qkt | avwo
    layer: int
    head: int
    rows: int
    cols: int
    support: str
    rank_used: int
    matrices: int
    sigma_fit: Quartiles  # σ̂ from the bulk's median, over the matrices
    sigma_frobenius: Quartiles  # ‖X‖_F / √(entries on the support)
    mp_upper_edge: float  # σ̂(√N + √M) at the median σ̂ (full-matrix MP)
    null_threshold_ratio: float  # q₁₋α of s₁ / median(s) under the simulated null
    null_edge: float  # that threshold times the median of the matrices' medians
    top_over_mp_edge: Quartiles  # s₁ / (σ̂(√N + √M))
    flagged_matrices: int = Field(ge=0)  # matrices with at least one flagged value
    outliers_per_matrix: float
    flagged_by_index: list[int]  # matrices in which sᵢ is flagged, i = 1..5
    histogram: Histogram


class RandomMatrix(_Strict):
    schema_version: int = RANDOM_MATRIX_SCHEMA_VERSION
    settings: dict[str, Any]
    rows: list[ReferenceRow]


def read_random_matrix(directory: Path) -> dict[str, Any] | None:
    """The parsed, validated random_matrix.json in ``directory``, or None (missing, invalid, other schema)."""
    try:
        raw = json.loads((Path(directory) / RANDOM_MATRIX_FILE).read_text())
        if raw.get("schema_version") != RANDOM_MATRIX_SCHEMA_VERSION:
            return None
        return RandomMatrix.model_validate(raw).model_dump(mode="json")
    except (OSError, ValueError, AttributeError):
        return None


def _windows(folder: Path, window: int) -> np.ndarray:
    """The analysis's event prompt windows [≤ MAX_WINDOWS, w], evenly spaced in file order."""
    with np.load(folder / TOKEN_METRICS_FILE, allow_pickle=False) as arrays:
        tokens = arrays["tokens"][:, :window].astype(np.int64)
    keep = np.unique(np.linspace(0, len(tokens) - 1, min(len(tokens), MAX_WINDOWS)).round().astype(np.int64))
    return tokens[keep]


@torch.no_grad()
def random_matrix_for_run(folder: Path, model, *, seed: int, echo: Callable[[str], None] = print) -> Path:
    """Write ``folder/random_matrix.json`` for the analysis in ``folder`` with its run's ``model``
    (reused when its settings — the token_metrics.npz digest, windows, draws, α, seed — are current)."""
    folder = Path(folder)
    settings = {
        "token_metrics_sha256": sha256_file(folder / TOKEN_METRICS_FILE),
        "max_windows": MAX_WINDOWS,
        "null_draws": NULL_DRAWS,
        "alpha": ALPHA,
        "seed": int(seed),
        "windows": "the analysis's event prompt windows (pass 1's window), at most max_windows, evenly spaced in file order",
        "variance_fit": "sigma = median singular value / the simulated null's mean median at sigma = 1 (the bulk's median)",
        "flagging": "s_i / median(s) above the null's (1 - alpha) quantile of s_1 / median(s), simulated from same-shape, same-support Gaussian matrices",
    }
    existing = read_random_matrix(folder)
    if existing is not None and existing["settings"] == settings:
        return folder / RANDOM_MATRIX_FILE
    device = next(model.parameters()).device
    windows = torch.as_tensor(_windows(folder, model.context_window), device=device)
    _, targets = forward_targets(model.eval(), windows)
    rows = []
    for target, causal, rank in (("qkt", True, model.context_window), ("avwo", False, model.d_head)):
        values = getattr(targets, target).cpu().numpy()  # [E, L, H, rows, cols]
        for layer in range(values.shape[1]):
            for head in range(values.shape[2]):
                row = reference_of(values[:, layer, head], causal=causal, rank=rank, seed=seed)
                rows.append({"target": target, "layer": layer, "head": head, **row})
    path = atomic_write_validated(folder / RANDOM_MATRIX_FILE, RandomMatrix, {"settings": settings, "rows": rows})
    flagged = ", ".join(f"{r['target']} L{r['layer']}H{r['head']} {r['flagged_matrices']}/{r['matrices']}" for r in rows)
    echo(f"random-matrix reference: matrices with a singular value above the null's edge: {flagged}")
    return path
