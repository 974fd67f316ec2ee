"""The metric registry: spectral and temporal metrics of the attention matrices, batched.

At every generated token ("pass") the analysis takes, per layer and head, QKᵀ (w × w, lower
triangular) and AVWₒ (w × d_model) for a batch of events. ``spectrum`` decomposes a whole batch
``[..., rows, cols]`` in one call; ``compute_metrics`` turns a spectrum (and the previous pass's,
for the temporal metrics) into ``name -> (values [...] float32, guard_hits [...] bool)`` for every
metric in ``METRICS``. Everything is torch on the batch's own device: no host sync, no Python loop
over matrices.

Guards are never silent: a metric that is undefined for a matrix (σ₁ = 0, Σσ = 0, a non-finite
input, gap_k with k + 1 > m, a top-k subspace that is not unique) is NaN and counts as a guard hit,
and condition_number, when σ_m ≤ eps·σ₁, is capped at ``CONDITION_CAP`` = 1/eps and counts as a
guard hit. Every NaN value is a guard hit, except the temporal metrics of the first pass
(``previous is None``), which are NaN by construction and not counted.

Adding a metric is one function (its docstring states the formula) and one ``Metric`` line in
``METRICS``; changing a metric's definition raises its ``version`` (an analysis records every
metric's name and version, so a changed metric is measured again). A spectral function takes the singular values ``[..., m]`` (descending, float64 here)
and returns the values ``[...]`` (NaN where undefined), or ``(values, extra_guard)``; a temporal
function takes ``(previous, current, shifted)`` Spectra.

SVD choice (measured on this project's CPU, one thread, float32 batches of 2000, best of 3;
accuracy against float64 ``torch.linalg.svd`` of the same float32 input):

==========================  =============  =============  ===========  ========================
method                      64×64 (tril)   64×128         max|Δσ|/σ₁   cond. rel. err 1e3/1e5/1e6
==========================  =============  =============  ===========  ========================
linalg.svd (vectors)        682 ms         1084 ms        1e-6         as svdvals
linalg.svdvals              285 ms         607 ms         1e-6         6e-6 / 5e-4 / 4e-3
Gram, float32 eigvalsh      182 ms         206 ms         2e-4         3e-3 / inf / inf
Gram, float64 eigvalsh      297 ms         409 ms         5e-8         3e-8 / 5e-8 / 5e-6
Gram, float64 eigh (vecs)   661 ms         766 ms         5e-8         same
==========================  =============  =============  ===========  ========================

The Gram route squares the condition number: σ = √λ(MᵀM) loses relative accuracy in the small
singular values, and in float32 every σ below ≈ √eps₃₂·σ₁ ≈ 3e-4·σ₁ becomes noise or 0 (the "inf"
above: the condition number is lost beyond ~1e3). Formed and diagonalised in float64, the floor
is √eps₆₄·σ₁ ≈ 1.5e-8·σ₁, below float32's own resolution (eps₃₂ ≈ 1.2e-7), so the float64 Gram is
*more* accurate than float32 SVD, about as fast as ``svdvals`` without vectors and no slower than
``svd`` with them (the top-k vectors of the other side are Mᵀu/‖Mᵀu‖). It also decides the
condition-number guard correctly: on exactly rank-deficient float32 64×128 matrices float32
``svdvals`` puts σ_m at ≈ 1.0·eps·σ₁ and capped only 52%, the float64 Gram (like float64 SVD) 100%.
Default: ``method="gram"`` (float64 Gram + ``eigh``/``eigvalsh``); ``method="svd"`` (LAPACK /
cuSOLVER SVD in the input's precision) is kept for comparison. Random causal 64×64 matrices have
condition numbers ~1e17, so for QKᵀ the cap is hit often; that is a property of the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

CONDITION_EPS: float = torch.finfo(torch.float32).eps
CONDITION_CAP: float = 1.0 / CONDITION_EPS
GAP_KS: tuple[int, ...] = (1, 2, 4, 8)
RANK_ERROR_KS: tuple[int, ...] = (2, 4, 8)
# A position-restricted set of singular vectors whose QR diagonal (or norm) falls to this is
# treated as rank-deficient: the compared subspace is undefined (NaN + guard).
RESTRICTED_RANK_TOL: float = 1e-6
SIDES: tuple[str, ...] = ("left", "right")
METHODS: tuple[str, ...] = ("gram", "svd")

_NAN = float("nan")


@dataclass(frozen=True)
class Spectrum:
    """Singular values of a batch of matrices and, if asked, top-k singular vectors of one side."""

    values: torch.Tensor  # [..., m] singular values, descending
    vectors: torch.Tensor | None  # [..., n_side, k] top-k singular vectors (None if not asked)
    side: str | None = None  # "left" (rows) or "right" (columns): the side of ``vectors``


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "spectral" (a function of one Spectrum's values) or "temporal" (prev, cur)
    formula: str
    function: Callable
    # Raised whenever the metric's definition changes: an analysis records name + version of every
    # metric in its settings, so a changed metric is measured again, never read from an old analysis.
    version: int = 1


# --------------------------------------------------------------------------- decomposition


def spectrum(matrices: torch.Tensor, top_k: int = 2, side: str | None = None, method: str = "gram") -> Spectrum:
    """Singular values (and the top-k singular vectors of ``side``) of every matrix in a batch.

    Batched over all leading dims ``[..., rows, cols]`` in one call. ``method="gram"`` (default):
    the Gram matrix of the smaller side in float64, ``eigh``; σ = √max(λ, 0), reversed; values and
    vectors float64. ``method="svd"``: ``torch.linalg.svd``/``svdvals`` in the input's precision.
    A matrix with a non-finite entry gets NaN values and NaN vectors.
    """
    if side not in (None, *SIDES):
        raise ValueError(f"side must be None, 'left' or 'right', got {side!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if matrices.ndim < 2:
        raise ValueError(f"matrices must be [..., rows, cols], got shape {tuple(matrices.shape)}")
    rows, cols = matrices.shape[-2:]
    m = min(rows, cols)
    if side is not None and not 1 <= top_k <= m:
        raise ValueError(f"top_k must be in 1..{m} for {rows}×{cols} matrices, got {top_k}")

    if not matrices.is_floating_point() or matrices.dtype in (torch.float16, torch.bfloat16):
        matrices = matrices.float()
    finite = torch.isfinite(matrices).all(-1).all(-1)  # [...]
    x = torch.where(finite[..., None, None], matrices, torch.zeros((), dtype=matrices.dtype, device=matrices.device))

    vectors = None
    if method == "svd":
        if side is None:
            values = torch.linalg.svdvals(x)
        else:
            u, values, vh = torch.linalg.svd(x, full_matrices=False)
            vectors = u[..., :top_k] if side == "left" else vh[..., :top_k, :].mT
    else:
        x = x.double()
        gram_side = "left" if rows <= cols else "right"
        gram = x @ x.mT if gram_side == "left" else x.mT @ x  # [..., m, m]
        if side is None:
            eig = torch.linalg.eigvalsh(gram)
        else:
            eig, w = torch.linalg.eigh(gram)
            top = w[..., -top_k:].flip(-1)  # eigenvectors of the k largest, descending
            if side == gram_side:
                vectors = top
            else:
                other = x.mT @ top if side == "right" else x @ top  # Mᵀu = σv, or Mv = σu
                vectors = other / torch.linalg.vector_norm(other, dim=-2, keepdim=True)
        values = eig.clamp_min(0).sqrt().flip(-1)

    values = torch.where(finite[..., None], values, _NAN)
    if vectors is not None:
        vectors = torch.where(finite[..., None, None], vectors, _NAN)
    return Spectrum(values=values, vectors=vectors, side=side)


# --------------------------------------------------------------------------- spectral metrics


def _positive_or_nan(x: torch.Tensor) -> torch.Tensor:
    """x where x > 0, NaN where x ≤ 0 or NaN: the denominators that make a metric undefined."""
    return torch.where(x > 0, x, _NAN)


def stable_rank(s: torch.Tensor) -> torch.Tensor:
    """stable_rank = Σσᵢ² / σ₁²  (NaN when σ₁ = 0)."""
    return s.square().sum(-1) / _positive_or_nan(s[..., 0]).square()


def spectral_entropy(s: torch.Tensor) -> torch.Tensor:
    """spectral_entropy = −Σ pᵢ ln pᵢ with pᵢ = σᵢ / Σσ and 0·ln 0 = 0  (NaN when Σσ = 0)."""
    p = s / _positive_or_nan(s.sum(-1, keepdim=True))
    return -(p * torch.log(torch.where(p > 0, p, 1.0))).sum(-1)  # p = 0 adds 0; p NaN stays NaN


def _gap(k: int, relative: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """gap_k = σ_k − σ_{k+1} (1-based), optionally divided by σ₁."""

    def gap(s: torch.Tensor) -> torch.Tensor:
        if k + 1 > s.shape[-1]:
            return torch.full(s.shape[:-1], _NAN, dtype=s.dtype, device=s.device)
        g = s[..., k - 1] - s[..., k]
        return g / _positive_or_nan(s[..., 0]) if relative else g

    name = ("spectral_gap" if k == 1 else f"gap_{k}") + ("_rel" if relative else "")
    gap.__name__ = gap.__qualname__ = name
    gap.__doc__ = (
        f"{name} = (σ{k} − σ{k + 1}){' / σ₁' if relative else ''}  (1-based; NaN when {k + 1} > m"
        + (" or σ₁ = 0)." if relative else ").")
    )
    return gap


def condition_number(s: torch.Tensor, eps: float = CONDITION_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """condition_number = σ₁ / σ_m, capped at 1/eps (a guard hit) when σ_m ≤ eps·σ₁; NaN when σ₁ = 0.

    Returns (values, capped). No log scale is applied.
    """
    s1, sm = s[..., 0], s[..., -1]
    capped = (s1 > 0) & (sm <= eps * s1)
    value = torch.where(capped, 1.0 / eps, s1 / torch.where(capped, 1.0, sm))
    return torch.where(s1 > 0, value, _NAN), capped


def participation_ratio(s: torch.Tensor) -> torch.Tensor:
    """participation_ratio = (Σσᵢ)² / (m · Σσᵢ²)  (NaN when Σσ² = 0)."""
    return s.sum(-1).square() / (s.shape[-1] * _positive_or_nan(s.square().sum(-1)))


def _rank_error(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """rank_error_k = √(Σ_{i>k} σᵢ²) / ‖M‖_F: the relative Frobenius error of the best rank-k approximation."""

    def rank_error(s: torch.Tensor) -> torch.Tensor:
        tail = s[..., k:].square().sum(-1)  # empty (0) when k ≥ m: the rank-k approximation is exact
        return tail.sqrt() / _positive_or_nan(s.square().sum(-1)).sqrt()

    rank_error.__name__ = rank_error.__qualname__ = f"rank_error_{k}"
    rank_error.__doc__ = (
        f"rank_error_{k} = √(Σ_{{i>{k}}} σᵢ²) / ‖M‖_F with ‖M‖_F² = Σσᵢ²: the relative Frobenius error "
        f"of the best rank-{k} approximation (NaN when ‖M‖_F = 0)."
    )
    return rank_error


# --------------------------------------------------------------------------- temporal metrics


def _aligned_vectors(previous: Spectrum, current: Spectrum, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The two passes' top-k vectors on the same positions, float64, non-finite sets zeroed.

    ``shifted``: the window moved by one token, so the previous pass's rows 1..n−1 and the current
    pass's rows 0..n−2 are the same tokens; keep only those.
    """
    if previous.vectors is None or current.vectors is None:
        raise ValueError("temporal subspace metrics need singular vectors: spectrum(..., side='left'|'right')")
    if previous.side != current.side:
        raise ValueError(f"previous and current spectra are of different sides: {previous.side!r} vs {current.side!r}")
    if previous.vectors.shape[-1] != current.vectors.shape[-1]:
        raise ValueError("previous and current spectra have different top_k")
    up, uc = previous.vectors.double(), current.vectors.double()
    if shifted:
        up, uc = up[..., 1:, :], uc[..., :-1, :]
    zero = torch.zeros((), dtype=up.dtype, device=up.device)
    up = torch.where(torch.isfinite(up).all(-1, keepdim=True).all(-2, keepdim=True), up, zero)
    uc = torch.where(torch.isfinite(uc).all(-1, keepdim=True).all(-2, keepdim=True), uc, zero)
    return up, uc


def _top_k_unique(spec: Spectrum, k: int, eps: float = CONDITION_EPS) -> torch.Tensor:
    """The top-k singular subspace is unique: σ_k − σ_{k+1} > eps·σ₁ (σ_{m+1} = 0); False on NaN."""
    s = spec.values.double()
    next_value = s[..., k] if k < s.shape[-1] else torch.zeros_like(s[..., 0])
    return (s[..., k - 1] - next_value) > eps * s[..., 0]


def grassmannian_distance(previous: Spectrum, current: Spectrum, shifted: bool) -> torch.Tensor:
    """grassmannian_distance = √(Σᵢ θᵢ²), θᵢ = arccos(clamp(σᵢ(Q_prevᵀ Q_cur), 0, 1)).

    Q are the (batched-QR re-orthonormalised) top-k singular vectors of the two passes, restricted
    to the shared token positions when ``shifted``. NaN (guard) when either top-k subspace is not
    unique (σ_k − σ_{k+1} ≤ eps·σ₁, which includes σ₁ = 0) or a restriction loses rank.
    """
    up, uc = _aligned_vectors(previous, current, shifted)
    qp, rp = torch.linalg.qr(up)
    qc, rc = torch.linalg.qr(uc)
    cosines = torch.linalg.svdvals(qp.mT @ qc).clamp(0.0, 1.0)
    distance = torch.arccos(cosines).square().sum(-1).sqrt()
    full_rank = (torch.diagonal(rp, dim1=-2, dim2=-1).abs().amin(-1) > RESTRICTED_RANK_TOL) & (
        torch.diagonal(rc, dim1=-2, dim2=-1).abs().amin(-1) > RESTRICTED_RANK_TOL
    )
    k = up.shape[-1]
    defined = _top_k_unique(previous, k) & _top_k_unique(current, k) & full_rank
    return torch.where(defined, distance, _NAN)


def top_vector_angle(previous: Spectrum, current: Spectrum, shifted: bool) -> torch.Tensor:
    """top_vector_angle = arccos(|u_prev · u_cur|) of the renormalised top singular vectors (sign-free).

    Restricted to the shared token positions when ``shifted``. NaN (guard) when either top vector
    is not unique (σ₁ − σ₂ ≤ eps·σ₁, which includes σ₁ = 0) or its restriction vanishes.
    """
    up, uc = _aligned_vectors(previous, current, shifted)
    up, uc = up[..., 0], uc[..., 0]
    norm_p, norm_c = torch.linalg.vector_norm(up, dim=-1), torch.linalg.vector_norm(uc, dim=-1)
    ok = (norm_p > RESTRICTED_RANK_TOL) & (norm_c > RESTRICTED_RANK_TOL)
    cosine = (up * uc).sum(-1).abs() / torch.where(ok, norm_p * norm_c, 1.0)
    angle = torch.arccos(cosine.clamp(0.0, 1.0))
    return torch.where(ok & _top_k_unique(previous, 1) & _top_k_unique(current, 1), angle, _NAN)


def sigma1_velocity(previous: Spectrum, current: Spectrum, shifted: bool) -> torch.Tensor:
    """sigma1_velocity = σ₁(current) − σ₁(previous)."""
    return current.values[..., 0].double() - previous.values[..., 0].double()


def condition_velocity(previous: Spectrum, current: Spectrum, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """condition_velocity = log10 condition_number(current) − log10 condition_number(previous)  (version 2).

    The change in decades of the condition number, each side from :func:`condition_number`: a
    capped side (σ_m ≤ eps·σ₁) counts as the cap 1/eps (log10 ≈ 6.92), and a cap on either side is a
    guard hit. Why the log: condition numbers span many decades, and a raw difference ranks by level,
    not by change (version 1, ``cond(cur) − cond(prev)``, scored 10 → 1e5 at 1e5 but 1e5 → 1e6 at
    9e5, and 1e5 → 1e12 at 8.29e6 only because the cap stopped it); in decades the score is
    scale-free (any ×10 scores 1) and stays monotone in the true change up to the cap, since the
    capped end is counted at the cap. Beyond the cap nothing is seen: 1e9 → 1e17 scores 0 (both
    capped; a guard hit). NaN when σ₁ = 0 on either side.
    """
    c_prev, capped_prev = condition_number(previous.values.double())
    c_cur, capped_cur = condition_number(current.values.double())
    return torch.log10(c_cur) - torch.log10(c_prev), capped_prev | capped_cur


# --------------------------------------------------------------------------- registry


def _gap_metrics() -> list[Metric]:
    metrics = []
    for k in GAP_KS:
        for relative in (False, True):
            function = _gap(k, relative)
            formula = f"σ{k} − σ{k + 1}" + (" / σ₁" if relative else "") + f" (NaN when {k + 1} > m)"
            metrics.append(Metric(function.__name__, "spectral", formula, function))
    return metrics


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in [
        Metric("stable_rank", "spectral", "Σσᵢ² / σ₁²", stable_rank),
        Metric("spectral_entropy", "spectral", "−Σ pᵢ ln pᵢ, pᵢ = σᵢ / Σσ (0·ln 0 = 0)", spectral_entropy),
        *_gap_metrics(),
        Metric("condition_number", "spectral", "σ₁ / σ_m, capped at 1/eps when σ_m ≤ eps·σ₁ (guard)", condition_number),
        Metric("participation_ratio", "spectral", "(Σσᵢ)² / (m · Σσᵢ²)", participation_ratio),
        *(Metric(f"rank_error_{k}", "spectral", f"√(Σ_{{i>{k}}} σᵢ²) / ‖M‖_F", _rank_error(k)) for k in RANK_ERROR_KS),
        Metric(
            "grassmannian_distance", "temporal",
            "√Σθᵢ², θᵢ = arccos σᵢ(Q_prevᵀ Q_cur) over the top-k singular subspaces (shared positions if shifted)",
            grassmannian_distance,
        ),
        Metric("top_vector_angle", "temporal", "arccos |u₁,prev · u₁,cur| (renormalised, shared positions if shifted)",
               top_vector_angle),
        Metric("sigma1_velocity", "temporal", "σ₁(cur) − σ₁(prev)", sigma1_velocity),
        Metric("condition_velocity", "temporal",
               "log10 condition_number(cur) − log10 condition_number(prev), a capped side counted as the cap 1/eps (guard)",
               condition_velocity, version=2),
    ]
}


def compute_metrics(
    current: Spectrum, previous: Spectrum | None, *, shifted: bool
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every registered metric for a batch: name -> (values [...] float32, guard_hits [...] bool).

    Spectral metrics are computed in float64 from ``current.values``. Temporal metrics compare
    ``previous`` → ``current`` (the same events one pass apart); they are NaN, with no guard hit,
    when ``previous`` is None (the first pass). A NaN value is otherwise always a guard hit.
    """
    values = current.values.double()
    batch = values.shape[:-1]
    results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, metric in METRICS.items():
        if metric.kind == "spectral":
            out = metric.function(values)
        elif metric.kind == "temporal":
            if previous is None:
                results[name] = (
                    torch.full(batch, _NAN, dtype=torch.float32, device=values.device),
                    torch.zeros(batch, dtype=torch.bool, device=values.device),
                )
                continue
            out = metric.function(previous, current, shifted)
        else:
            raise ValueError(f"metric {name!r} has unknown kind {metric.kind!r}")
        value, extra_guard = out if isinstance(out, tuple) else (out, None)
        guard = torch.isnan(value)
        if extra_guard is not None:
            guard = guard | extra_guard
        results[name] = (value.float(), guard)
    return results
