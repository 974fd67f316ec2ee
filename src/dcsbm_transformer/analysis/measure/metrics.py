"""The metric registry: spectral, temporal and context metrics of the attention matrices, batched.

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
(``previous is None``), which are NaN by construction and not counted, and a context metric whose
``needs`` are missing (the same: not measured).

Adding a metric is one function (its docstring states the formula) and one ``Metric`` line in
``METRICS``; changing a metric's definition raises its ``version`` (an analysis records every
metric's name and version, so a changed metric is measured again). A spectral function takes the singular values ``[..., m]`` (descending, float64 here)
and returns the values ``[...]`` (NaN where undefined), or ``(values, extra_guard)``; a temporal
function takes ``(previous, current, shifted)`` Spectra; a *context* function takes ``(previous,
current, shifted, context)`` with a ``MetricContext`` — the sides that are window positions, pass 1's
spectrum, the token embeddings of the window and of the predicted token — and lists in
``Metric.needs`` what it cannot do without. ``spectrum`` returns both sides' top singular vectors
(its own side up to ``BASIS_K`` = 8 of them, for grassmannian_8), so every metric of one matrix
works from one decomposition.

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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch

CONDITION_EPS: float = torch.finfo(torch.float32).eps
CONDITION_CAP: float = 1.0 / CONDITION_EPS
GAP_KS: tuple[int, ...] = (1, 2, 4, 8)
RANK_ERROR_KS: tuple[int, ...] = (2, 4, 8)
# grassmannian_k: the per-step Grassmannian distance of the top-k subspaces at fixed k (beside the config's top_k)
SUBSPACE_KS: tuple[int, ...] = (2, 4, 8)
# sigma{i}_velocity for i = 2..4 beside sigma1_velocity: a fixed k = 4 (not the config's top_k, default 2), so
# the metric names and the arrays do not depend on a setting, and 4 needs no singular vectors (values only).
VELOCITY_KS: tuple[int, ...] = (2, 3, 4)
# spectrum() keeps this many singular vectors of its side (or top_k if larger; at most m): grassmannian_8 needs 8.
BASIS_K: int = max(SUBSPACE_KS)
# numerical_rank counts σᵢ > max(rows, cols)·RANK_EPS·σ₁ (numpy's matrix_rank default for float32 inputs; the
# matrices are float32, the float64 Gram spectrum resolves σ down to ≈1.5e-8·σ₁, far below the tolerance).
RANK_EPS: float = CONDITION_EPS
# dominant-subspace membership: index p is a member when its leverage ℓ_p = Σ_{i≤k} U_{p,i}² is at least the
# uniform share k/n (times 1 − MEMBERSHIP_RTOL, so an exactly uniform leverage counts as a member, not as rounding).
MEMBERSHIP_RTOL: float = 1e-9
# subspace_drift: principal-angle cosines above 1 − this count as 1 (θ < 1.4e-5 rad is float64 rounding), so the
# drift of pass 1's subspace from itself is exactly 0, not ~1e-8 noise that would rank events at random.
DRIFT_COS_TOL: float = 1e-10
# A position-restricted set of singular vectors whose QR diagonal (or norm) falls to this is
# treated as rank-deficient: the compared subspace is undefined (NaN + guard).
RESTRICTED_RANK_TOL: float = 1e-6
# spectrum trajectories (issue 26): the σ-trajectory is the curve of the top TRAJECTORY_K singular values over an
# event's windows (the two context windows, then the passes); its derivatives at a window are those of the
# least-squares polynomial of degree TRAJECTORY_ORDER through the last TRAJECTORY_WINDOW points (causal Savitzky–Golay).
TRAJECTORY_K: int = 4
TRAJECTORY_WINDOW: int = 5
TRAJECTORY_ORDER: int = 3
# the curve does not move (curvature undefined) when |r'| ≤ this × the window's largest σ, and does not bend (torsion
# undefined) when the part of r'' normal to r' is that small: below it a derivative is the matrices' float32 rounding
TRAJECTORY_TOL: float = 1e-6
SIDES: tuple[str, ...] = ("left", "right")
METHODS: tuple[str, ...] = ("gram", "svd")

_NAN = float("nan")


@dataclass(frozen=True)
class Spectrum:
    """Singular values of a batch of matrices and, if asked, top singular vectors of both sides.

    ``vectors`` are the top-k vectors of ``side`` (the side the temporal metrics compare); ``basis``
    the top max(k, BASIS_K) of the same side (at most m; ``vectors`` is its first k columns), for the
    fixed-k subspace metrics; ``other`` the top-k vectors of the other side. Hand-built spectra may
    leave ``basis``/``other``/``shape`` None: the metrics that need them then raise (or, for
    ``other``, are NaN without a guard hit, like a missing context).
    """

    values: torch.Tensor  # [..., m] singular values, descending
    vectors: torch.Tensor | None  # [..., n_side, k] top-k singular vectors (None if not asked)
    side: str | None = None  # "left" (rows) or "right" (columns): the side of ``vectors``
    basis: torch.Tensor | None = None  # [..., n_side, min(max(k, BASIS_K), m)]: vectors == basis[..., :k]
    other: torch.Tensor | None = None  # [..., n_other, k] top-k singular vectors of the other side
    shape: tuple[int, int] | None = None  # (rows, cols) of the matrices
    # work shared by the metrics of one spectrum (the QR of its restricted basis, used by every Grassmannian
    # distance and reused when this spectrum is the next pass's ``previous``); never part of the value
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    def side_vectors(self, side: str) -> torch.Tensor | None:
        """The top-k vectors of ``side`` ("left" or "right"), whichever field holds them."""
        if side not in SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        return self.vectors if side == self.side else self.other

    def subspace(self, k: int) -> torch.Tensor | None:
        """The top-k vectors of ``side`` [..., n_side, k]; None when k > m (the subspace does not exist)."""
        held = self.basis if self.basis is not None else self.vectors
        if held is None:
            raise ValueError("subspace metrics need singular vectors: spectrum(..., side='left'|'right')")
        if k > self.values.shape[-1]:
            return None
        if k > held.shape[-1]:
            raise ValueError(f"the spectrum holds {held.shape[-1]} singular vectors, {k} are needed: spectrum(..., top_k >= {k})")
        return held[..., :k]


@dataclass(frozen=True)
class MetricContext:
    """What the ``"context"`` metrics need beyond the spectra (``Metric.needs`` names the fields).

    Built by ``measure.py`` per target and pass; every tensor on the spectrum's device and
    broadcastable to its batch dims (``[E, 1, 1, ...]`` for spectra ``[E, L, H, ...]``). A metric whose
    needs are missing (None) is NaN with no guard hit: not measured, as the temporal metrics of the
    first pass.

    - ``positions``: side -> True when that side indexes the window's token positions. Such a side
      slides one position per pass (previous rows 1..n−1 are current rows 0..n−2), and its vectors are
      mapped into embedding space through the window's token embeddings; False: the d_model space.
      QKᵀ: both sides positions (queries, keys); AVWₒ: left positions, right d_model.
    - ``first`` and ``since_first``: pass 1's spectrum of the same matrices and how many passes
      (positions) the window has moved since (k − 1 at pass k), for ``subspace_drift``.
    - ``embeddings`` [vocab, d_model]: the token embedding matrix (``model.tok_emb.weight``).
    - ``window_embeddings`` [..., w, d_model]: e(token_p) of the window's w input tokens (token
      embeddings, no position embeddings); its last row is the current token's embedding.
    - ``next_embedding`` [..., d_model]: e(the token predicted at this pass) — the generated token at a
      generated pass, the logits' argmax at a context window.
    - ``trajectory`` [..., TRAJECTORY_WINDOW, K]: the top K ≤ TRAJECTORY_K singular values of the last
      TRAJECTORY_WINDOW windows of the same matrices, oldest first, the current window last (float64); None
      until that many windows exist (the trajectory metrics are then not measured).
    """

    positions: dict[str, bool] | None = None
    first: Spectrum | None = None
    since_first: int = 0
    embeddings: torch.Tensor | None = None
    window_embeddings: torch.Tensor | None = None
    next_embedding: torch.Tensor | None = None
    trajectory: torch.Tensor | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "spectral" (one Spectrum's values), "temporal" (prev, cur, shifted) or "context" (prev, cur, shifted, context)
    formula: str
    function: Callable
    # Raised whenever the metric's definition changes: an analysis records name + version of every
    # metric in its settings, so a changed metric is measured again, never read from an old analysis.
    version: int = 1
    # "context" metrics: what must be present, else NaN without a guard hit: "previous" and MetricContext field names
    needs: tuple[str, ...] = ()


# --------------------------------------------------------------------------- decomposition


def spectrum(matrices: torch.Tensor, top_k: int = 2, side: str | None = None, method: str = "gram") -> Spectrum:
    """Singular values and, with ``side``, top singular vectors of both sides of every matrix in a batch.

    Batched over all leading dims ``[..., rows, cols]`` in one call. ``method="gram"`` (default):
    the Gram matrix of the smaller side in float64, ``eigh``; σ = √max(λ, 0), reversed; values and
    vectors float64. The Gram side's vectors are eigenvectors; the other side's are Mᵀu/‖Mᵀu‖ (right)
    or Mv/‖Mv‖ (left), i.e. Mᵀu/σ, computed only for the columns kept: max(top_k, BASIS_K) (at most m)
    of ``side``, top_k of the other (NaN where σ = 0: that vector is undefined). ``method="svd"``:
    ``torch.linalg.svd``/``svdvals`` in the input's precision, both sides from the one call.
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
    keep = min(max(top_k, BASIS_K), m)  # columns of ``side`` kept (the basis)

    if not matrices.is_floating_point() or matrices.dtype in (torch.float16, torch.bfloat16):
        matrices = matrices.float()
    finite = torch.isfinite(matrices).all(-1).all(-1)  # [...]
    x = torch.where(finite[..., None, None], matrices, torch.zeros((), dtype=matrices.dtype, device=matrices.device))

    basis = other = None
    if method == "svd":
        if side is None:
            values = torch.linalg.svdvals(x)
        else:
            u, values, vh = torch.linalg.svd(x, full_matrices=False)
            left, right = u[..., :keep], vh[..., :keep, :].mT
            basis, other = (left, right[..., :top_k]) if side == "left" else (right, left[..., :top_k])
    else:
        x = x.double()
        gram_side = "left" if rows <= cols else "right"
        gram = x @ x.mT if gram_side == "left" else x.mT @ x  # [..., m, m]
        if side is None:
            eig = torch.linalg.eigvalsh(gram)
        else:
            eig, w = torch.linalg.eigh(gram)
            top = w[..., -keep:].flip(-1)  # eigenvectors of the largest, descending
            # ``side`` keeps ``keep`` columns, the other side top_k; the non-Gram side of the two is
            # Mᵀu = σv (right) or Mv = σu (left), normalised (‖Mᵀu‖ = σ), for the columns kept only
            to_map = top[..., :top_k] if side == gram_side else top
            mapped = x.mT @ to_map if gram_side == "left" else x @ to_map
            mapped = mapped / torch.linalg.vector_norm(mapped, dim=-2, keepdim=True)
            basis, other = (top, mapped) if side == gram_side else (mapped, top[..., :top_k])
        values = eig.clamp_min(0).sqrt().flip(-1)

    values = torch.where(finite[..., None], values, _NAN)
    if basis is not None and other is not None:  # set together
        basis = torch.where(finite[..., None, None], basis, _NAN)
        other = torch.where(finite[..., None, None], other, _NAN).contiguous()
    vectors = None if basis is None else basis[..., :top_k].contiguous()  # contiguous: the per-step metrics read it often
    return Spectrum(values=values, vectors=vectors, side=side, basis=basis, other=other, shape=(rows, cols))


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
    gap.__doc__ = f"{name} = (σ{k} − σ{k + 1}){' / σ₁' if relative else ''}  (1-based; NaN when {k + 1} > m" + (
        " or σ₁ = 0)." if relative else ")."
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


def _check_pair(previous: Spectrum, current: Spectrum) -> tuple[torch.Tensor, torch.Tensor]:
    """Two passes' spectra a temporal subspace metric can compare: vectors of the same side and top_k.
    Returns their vectors (previous, current)."""
    if previous.vectors is None or current.vectors is None:
        raise ValueError("temporal subspace metrics need singular vectors: spectrum(..., side='left'|'right')")
    if previous.side != current.side:
        raise ValueError(f"previous and current spectra are of different sides: {previous.side!r} vs {current.side!r}")
    if previous.vectors.shape[-1] != current.vectors.shape[-1]:
        raise ValueError("previous and current spectra have different top_k")
    return previous.vectors, current.vectors


def _aligned_vectors(previous: Spectrum, current: Spectrum, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The two passes' top-k vectors on the same positions, float64, non-finite sets zeroed.

    ``shifted``: the window moved by one token, so the previous pass's rows 1..n−1 and the current
    pass's rows 0..n−2 are the same tokens; keep only those.
    """
    vectors_p, vectors_c = _check_pair(previous, current)
    up, uc = vectors_p.double(), vectors_c.double()
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
    _, vectors = _check_pair(previous, current)
    # the first k columns of the QR of the whole basis (shared with grassmannian_2/4/8) span the top-k vectors
    return _step_grassmann(previous, current, vectors.shape[-1], shifted)


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


# --------------------------------------------------------------------------- the abstract's list, completed (issue 23)


def singular_value_variance(s: torch.Tensor) -> torch.Tensor:
    """singular_value_variance = (1/m) Σᵢ (σᵢ − σ̄)², σ̄ = (1/m) Σσᵢ: the population variance of the m singular values.

    Scale-dependent (σ² units), unlike stable_rank or participation_ratio; 0 for a matrix with equal
    singular values (a scaled orthogonal matrix, the zero matrix). NaN only for a non-finite matrix.
    """
    return (s - s.mean(-1, keepdim=True)).square().mean(-1)


def _sigma_velocity(i: int) -> Callable:
    """sigma{i}_velocity = σᵢ(current) − σᵢ(previous) (1-based; NaN when i > m)."""

    def velocity(previous: Spectrum, current: Spectrum, shifted: bool) -> torch.Tensor:
        cur, prev = current.values.double(), previous.values.double()
        if i > cur.shape[-1]:
            return torch.full(cur.shape[:-1], _NAN, dtype=cur.dtype, device=cur.device)
        return cur[..., i - 1] - prev[..., i - 1]

    velocity.__name__ = velocity.__qualname__ = f"sigma{i}_velocity"
    velocity.__doc__ = (
        f"sigma{i}_velocity = σ{i}(current) − σ{i}(previous): the change of the {i}-th largest singular value "
        f"between consecutive passes (NaN when {i} > m, a guard hit). sigma1_velocity is the same for σ₁."
    )
    return velocity


def numerical_rank(previous: Spectrum | None, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """numerical_rank = #{i : σᵢ > max(rows, cols) · eps · σ₁}, eps = float32 eps ≈ 1.19e-7.

    The tolerance is numpy's ``matrix_rank`` default for float32 inputs (the matrices are float32;
    their own rounding is eps relative). For QKᵀ this is the rank of the w × w causal score matrix of
    the window (entries above the diagonal 0); for AVWₒ of the w × d_model head output. 0 for the zero
    matrix; NaN only for a non-finite matrix. Needs ``Spectrum.shape`` (``spectrum()`` records it).
    """
    if current.shape is None:
        raise ValueError("numerical_rank needs Spectrum.shape (rows, cols): build the spectrum with spectrum()")
    s = current.values.double()
    tolerance = max(current.shape) * RANK_EPS * s[..., :1]
    rank = (s > tolerance).sum(-1).double()
    return torch.where(torch.isfinite(s).all(-1), rank, _NAN)


def _restricted(up: torch.Tensor, uc: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sets of vectors [..., n, k] on the indices they share, float64, a set with a non-finite entry zeroed.

    ``offset``: the window moved by that many positions from ``up`` to ``uc``, so ``up``'s rows
    offset..n−1 and ``uc``'s rows 0..n−1−offset are the same tokens (0: the same indices, d_model space).
    """
    up, uc = up.double(), uc.double()
    if offset:
        n = up.shape[-2]
        up, uc = up[..., offset:, :], uc[..., : n - offset, :]
    zero = torch.zeros((), dtype=up.dtype, device=up.device)
    up = torch.where(torch.isfinite(up).all(-1, keepdim=True).all(-2, keepdim=True), up, zero)
    uc = torch.where(torch.isfinite(uc).all(-1, keepdim=True).all(-2, keepdim=True), uc, zero)
    return up, uc


def _grassmann(up: torch.Tensor, uc: torch.Tensor, cos_tol: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """√Σθᵢ² between span(up) and span(uc) ([..., n, k] each) and whether both have rank k (QR diagonal > tol).

    Fewer shared indices than k (n < k) is rank-deficient by definition. Cosines above 1 − cos_tol count as 1.
    """
    n, k = up.shape[-2:]
    if n < k:
        nan = torch.full(up.shape[:-2], _NAN, dtype=up.dtype, device=up.device)
        return nan, torch.zeros(up.shape[:-2], dtype=torch.bool, device=up.device)
    qp, rp = torch.linalg.qr(up)
    qc, rc = torch.linalg.qr(uc)
    cosines = torch.linalg.svdvals(qp.mT @ qc)
    if cos_tol:
        cosines = torch.where(cosines > 1.0 - cos_tol, 1.0, cosines)
    distance = torch.arccos(cosines.clamp(0.0, 1.0)).square().sum(-1).sqrt()
    full_rank = (torch.diagonal(rp, dim1=-2, dim2=-1).abs().amin(-1) > RESTRICTED_RANK_TOL) & (
        torch.diagonal(rc, dim1=-2, dim2=-1).abs().amin(-1) > RESTRICTED_RANK_TOL
    )
    return distance, full_rank


def _restricted_qr(spec: Spectrum, offset: int, tail: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """QR of the spectrum's basis (all the vectors it holds of its side) on rows offset..n−1 (``tail``, the
    previous pass's view) or 0..n−1−offset, float64; a column with a non-finite entry is zeroed (so its
    R diagonal is 0: rank-deficient). Cached on the spectrum: QR's first k columns span the first k
    vectors, so grassmannian_2/4/8 and grassmannian_distance share one QR per spectrum and side of the shift."""
    key = ("qr", offset, tail and offset > 0)  # unshifted, both views are the whole basis
    if key not in spec.cache:
        held = spec.basis if spec.basis is not None else spec.vectors
        if held is None:
            raise ValueError("subspace metrics need singular vectors: spectrum(..., side='left'|'right')")
        n = held.shape[-2]
        rows = (held[..., offset:, :] if tail else held[..., : n - offset, :]).double()
        rows = torch.where(torch.isfinite(rows).all(-2, keepdim=True), rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
        spec.cache[key] = torch.linalg.qr(rows)
    return spec.cache[key]


def _step_grassmann(previous: Spectrum, current: Spectrum, k: int, shifted: bool) -> torch.Tensor:
    """√Σθᵢ² between the top-k subspaces of consecutive passes (shared positions when ``shifted``), NaN where undefined."""
    previous_k = previous.subspace(k)
    current_k = current.subspace(k) if previous_k is not None else None
    if current_k is None:  # k > m (raises when the vectors are missing)
        return torch.full(current.values.shape[:-1], _NAN, dtype=torch.float64, device=current.values.device)
    offset = int(shifted)
    if current_k.shape[-2] - offset < k:  # fewer shared indices than k: the restriction cannot have rank k
        return torch.full(current.values.shape[:-1], _NAN, dtype=torch.float64, device=current.values.device)
    qp, rp = _restricted_qr(previous, offset, tail=True)
    qc, rc = _restricted_qr(current, offset, tail=False)
    return _principal_distance(previous, qp, rp, current, qc, rc, k)


def _principal_distance(
    a: Spectrum, qa: torch.Tensor, ra: torch.Tensor, b: Spectrum, qb: torch.Tensor, rb: torch.Tensor, k: int, *, snap: float = 0.0
) -> torch.Tensor:
    """√(Σᵢ θᵢ²), θᵢ = arccos σᵢ(Q_aᵀ Q_b), between the top-k columns of two restricted bases (their
    QR factors), the geodesic Grassmannian distance; cosines above 1 − ``snap`` count as 1. NaN
    (float64) where either top-k subspace is not unique or a restriction lost rank."""
    cosines = torch.linalg.svdvals(qa[..., :k].mT @ qb[..., :k])
    if snap:
        cosines = torch.where(cosines > 1.0 - snap, 1.0, cosines)
    value = torch.arccos(cosines.clamp(0.0, 1.0)).square().sum(-1).sqrt()
    full_rank = (torch.diagonal(ra, dim1=-2, dim2=-1)[..., :k].abs().amin(-1) > RESTRICTED_RANK_TOL) & (
        torch.diagonal(rb, dim1=-2, dim2=-1)[..., :k].abs().amin(-1) > RESTRICTED_RANK_TOL
    )
    defined = _top_k_unique(a, k) & _top_k_unique(b, k) & full_rank
    return torch.where(defined, value, _NAN)


def _grassmannian_k(k: int) -> Callable:
    """grassmannian_{k}: the per-step Grassmannian distance of the top-k subspaces at a fixed k."""

    def distance(previous: Spectrum, current: Spectrum, shifted: bool) -> torch.Tensor:
        return _step_grassmann(previous, current, k, shifted)

    distance.__name__ = distance.__qualname__ = f"grassmannian_{k}"
    distance.__doc__ = (
        f"grassmannian_{k} = √(Σᵢ θᵢ²), θᵢ = arccos σᵢ(Q_prevᵀ Q_cur), over the top-{k} singular subspaces of the "
        f"spectrum's side, restricted to the shared positions when ``shifted`` (as grassmannian_distance, at k = {k} "
        f"whatever the config's top_k). NaN (guard) when {k} > m, either top-{k} subspace is not unique "
        f"(σ{k} − σ{k + 1} ≤ eps·σ₁) or a restriction loses rank (fewer than {k} shared positions included)."
    )
    return distance


def subspace_drift(previous: Spectrum | None, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """subspace_drift = √(Σᵢ θᵢ²) between pass 1's top-k subspace and the current one (k = the spectrum's top_k).

    Cumulative, where grassmannian_distance is per step: the Grassmannian distance from the
    subspace of *pass 1* (the window ending at the jumper, ``context.first``), not from the previous
    pass. The spectrum's own side (QKᵀ: query positions; AVWₒ: d_model). A sliding side (``shifted``)
    is compared on the positions shared with pass 1: pass 1's rows o..n−1 against the current rows
    0..n−1−o, o = ``context.since_first`` (= k − 1 at pass k); the d_model side directly. Principal-angle
    cosines above 1 − DRIFT_COS_TOL count as 1, so pass 1 itself has drift exactly 0. NaN (guard) when
    either top-k subspace is not unique, a restriction loses rank, or fewer than k positions are shared
    (o > n − k). Needs ``context.first``; without it (the context windows before pass 1) NaN, no guard.
    """
    first = _needed(context.first, "subspace_drift needs context.first")
    vectors = _needed(current.vectors, "subspace_drift needs singular vectors: spectrum(..., side='left'|'right')")
    k = vectors.shape[-1]
    first_vectors = first.vectors
    if first_vectors is None or first_vectors.shape[-1] != k:
        raise ValueError("subspace_drift: context.first must hold the same top_k singular vectors as the current spectrum")
    offset = context.since_first if shifted else 0
    n = vectors.shape[-2]
    if n - offset < k:  # fewer positions shared with pass 1 than k
        return torch.full(current.values.shape[:-1], _NAN, dtype=torch.float64, device=current.values.device)
    qc, rc = _restricted_qr(current, offset, tail=False)  # cached: at offsets 0 and 1 shared with the step distances
    if offset == 0:
        qf, rf = _restricted_qr(first, 0, tail=True)  # cached on pass 1's spectrum for the whole chunk
    else:  # pass 1's rows o..n−1: a new restriction at every pass, so not cached (only its k columns)
        qf, rf = torch.linalg.qr(_restricted(first_vectors, first_vectors, offset)[0])
    return _principal_distance(first, qf, rf, current, qc, rc, k, snap=DRIFT_COS_TOL)


_BOTH_SIDES = "this metric needs the singular vectors of both sides: spectrum(..., side='left'|'right')"
_T = TypeVar("_T")


def _needed(value: _T | None, message: str) -> _T:
    """``value``, which a metric cannot do without: a ``MetricContext`` field in its ``needs`` (the
    registry measures it only when they are there) or singular vectors of a spectrum; ValueError(message)
    when it is None (a direct call without it)."""
    if value is None:
        raise ValueError(message)
    return value


def _other_side(spec: Spectrum) -> str:
    if spec.side is None or spec.other is None:
        raise ValueError(_BOTH_SIDES)
    return "right" if spec.side == "left" else "left"


def top_vector_angle_other(previous: Spectrum, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """top_vector_angle_other = arccos(|v_prev · v_cur|) of the renormalised top singular vectors of the *other* side.

    top_vector_angle's counterpart on the side the spectrum does not compare: QKᵀ's right side (key
    positions), AVWₒ's left side (positions). Restricted to the shared positions when that side
    slides (``context.positions[side]``: previous rows 1..n−1 against current rows 0..n−2). Sign-free.
    NaN (guard) when either top vector is not unique (σ₁ − σ₂ ≤ eps·σ₁) or its restriction vanishes.
    """
    side = _other_side(current)
    positions = _needed(context.positions, "top_vector_angle_other needs context.positions")
    previous_vectors = _needed(previous.side_vectors(side), _BOTH_SIDES)
    current_vectors = _needed(current.side_vectors(side), _BOTH_SIDES)
    up, uc = _restricted(previous_vectors[..., :1], current_vectors[..., :1], int(positions[side]))
    up, uc = up[..., 0], uc[..., 0]
    norm_p, norm_c = torch.linalg.vector_norm(up, dim=-1), torch.linalg.vector_norm(uc, dim=-1)
    ok = (norm_p > RESTRICTED_RANK_TOL) & (norm_c > RESTRICTED_RANK_TOL)
    cosine = (up * uc).sum(-1).abs() / torch.where(ok, norm_p * norm_c, 1.0)
    angle = torch.arccos(cosine.clamp(0.0, 1.0))
    return torch.where(ok & _top_k_unique(previous, 1) & _top_k_unique(current, 1), angle, _NAN)


def _members(u: torch.Tensor) -> torch.Tensor:
    """Dominant-subspace membership of each index: [..., n, k] top-k vectors -> [..., n] bool, ℓ_p ≥ k/n."""
    n, k = u.shape[-2:]
    leverage = u.double().square().sum(-1)  # ℓ_p = Σᵢ U_{p,i}², Σ_p ℓ_p = k
    return leverage >= (k / n) * (1.0 - MEMBERSHIP_RTOL)


def _membership_change(up: torch.Tensor, uc: torch.Tensor, offset: int) -> torch.Tensor:
    """Jaccard distance 1 − |A ∩ B| / |A ∪ B| of the two membership sets on the shared indices (0 when both are empty)."""
    a, b = _members(up), _members(uc)
    if offset:
        n = a.shape[-1]
        a, b = a[..., offset:], b[..., : n - offset]
    union = (a | b).sum(-1)
    inter = (a & b).sum(-1)
    return torch.where(union > 0, 1.0 - inter.double() / union.clamp_min(1).double(), 0.0)


def membership_change(previous: Spectrum, current: Spectrum, shifted: bool) -> torch.Tensor:
    """membership_change = 1 − |A_prev ∩ A_cur| / |A_prev ∪ A_cur|: how the dominant-subspace membership changed.

    Membership: index p (a position, or a d_model coordinate) belongs to the dominant subspace when
    its leverage ℓ_p = Σ_{i≤k} U_{p,i}² — its share of the top-k singular vectors' squared mass
    (Σ_p ℓ_p = k) — is at least the uniform share k/n (n indices, k = the spectrum's top_k). The sets of
    two consecutive passes are compared (Jaccard distance) on the indices they share: with
    ``shifted``, previous positions 1..n−1 against current 0..n−2 (membership is decided on the whole
    window first). 0 when the sets agree, including both empty on the shared indices; 1 when disjoint.
    The spectrum's own side (QKᵀ: query positions; AVWₒ: d_model coordinates). NaN (guard) when either
    top-k subspace is not unique (σ_k − σ_{k+1} ≤ eps·σ₁) or a vector set is not finite.
    """
    up, uc = previous.vectors, current.vectors
    if up is None or uc is None:
        raise ValueError("membership_change needs singular vectors: spectrum(..., side='left'|'right')")
    k = uc.shape[-1]
    finite = torch.isfinite(up).all(-1).all(-1) & torch.isfinite(uc).all(-1).all(-1)
    defined = _top_k_unique(previous, k) & _top_k_unique(current, k) & finite
    return torch.where(defined, _membership_change(up, uc, int(shifted)), _NAN)


def membership_change_other(previous: Spectrum, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """membership_change_other: membership_change on the *other* side (QKᵀ key positions, AVWₒ positions).

    The same definition — index p is a member when ℓ_p = Σ_{i≤k} V_{p,i}² ≥ k/n, Jaccard distance
    of the consecutive sets on the shared indices (0 when both empty) — for the other side's top-k
    vectors (Mᵀu/σ), restricted by one position when that side slides (``context.positions``).
    NaN (guard) when either top-k subspace is not unique or a vector set is not finite.
    """
    side = _other_side(current)
    positions = _needed(context.positions, "membership_change_other needs context.positions")
    up, uc = _needed(previous.side_vectors(side), _BOTH_SIDES), _needed(current.side_vectors(side), _BOTH_SIDES)
    k = uc.shape[-1]
    finite = torch.isfinite(up).all(-1).all(-1) & torch.isfinite(uc).all(-1).all(-1)
    defined = _top_k_unique(previous, k) & _top_k_unique(current, k) & finite
    return torch.where(defined, _membership_change(up, uc, int(positions[side])), _NAN)


def _in_embedding_space(vectors: torch.Tensor, positions: bool, context: MetricContext) -> torch.Tensor:
    """Singular vectors [..., n, k] as vectors of the embedding space [..., d_model, k], float64.

    A position side: Σ_p u_p · e(token_p) over the window's token embeddings (``window_embeddings``
    [..., w, d]ᵀ @ u), i.e. the token-embedding mixture the vector weights the positions with.
    The d_model side: the vectors themselves.
    """
    if not positions:
        return vectors.double()
    window = _needed(
        context.window_embeddings, "context.window_embeddings"
    )  # float32: the mixture is formed in the embeddings' precision
    return (window.mT @ vectors.to(window.dtype)).double()


def _embedding_scale(context: MetricContext) -> torch.Tensor:
    """The largest token-embedding norm: the scale below which a mapped vector counts as vanished."""
    return torch.linalg.vector_norm(_needed(context.embeddings, "this metric needs context.embeddings").double(), dim=-1).amax()


def _alignment(vector: torch.Tensor, token: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """|cos| between [..., d] vectors and whether it is defined (both norms > RESTRICTED_RANK_TOL · scale)."""
    token = token.double()
    norm_v = torch.linalg.vector_norm(vector, dim=-1)
    norm_t = torch.linalg.vector_norm(token, dim=-1)
    ok = (norm_v > RESTRICTED_RANK_TOL * scale) & (norm_t > RESTRICTED_RANK_TOL * scale)
    cosine = (vector * token).sum(-1).abs() / torch.where(ok, norm_v * norm_t, 1.0)
    return cosine.clamp(0.0, 1.0), ok


def embedding_alignment_left(previous: Spectrum | None, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """embedding_alignment_left = |cos(ũ₁, e(x_t))|: the dominant left singular vector against the current token.

    x_t is the window's last token (the one the model predicts from), e its token embedding. ũ₁ is u₁
    in embedding space: for a position side (QKᵀ queries, AVWₒ positions) ũ₁ = Σ_p u₁,p · e(x_p) over
    the window's tokens (token embeddings only, no position embeddings); for a d_model side u₁ itself.
    Sign-free (|cos|), in [0, 1]. NaN (guard) when u₁ is not unique (σ₁ − σ₂ ≤ eps·σ₁) or ũ₁ or e(x_t)
    vanishes (norm ≤ 1e-6 × the largest token-embedding norm).
    """
    u1 = _needed(current.side_vectors("left"), _BOTH_SIDES)[..., :1]
    positions = _needed(context.positions, "embedding_alignment_left needs context.positions")
    mapped = _in_embedding_space(u1, positions["left"], context)[..., 0]
    window = _needed(context.window_embeddings, "embedding_alignment_left needs context.window_embeddings")
    cosine, ok = _alignment(mapped, window[..., -1, :], _embedding_scale(context))
    return torch.where(ok & _top_k_unique(current, 1), cosine, _NAN)


def embedding_alignment_right(previous: Spectrum | None, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """embedding_alignment_right = |cos(ṽ₁, e(x̂_{t+1}))|: the dominant right singular vector against the predicted token.

    x̂_{t+1} is the token predicted at this pass (the generated token; at a context window the logits'
    argmax). ṽ₁ is v₁ in embedding space: for QKᵀ (key positions) ṽ₁ = Σ_p v₁,p · e(x_p) over the
    window's token embeddings; for AVWₒ (d_model) v₁ itself — the direction the head writes most.
    Sign-free, in [0, 1]. NaN (guard) when v₁ is not unique or ṽ₁ or the embedding vanishes.
    """
    v1 = _needed(current.side_vectors("right"), _BOTH_SIDES)[..., :1]
    positions = _needed(context.positions, "embedding_alignment_right needs context.positions")
    mapped = _in_embedding_space(v1, positions["right"], context)[..., 0]
    predicted = _needed(context.next_embedding, "embedding_alignment_right needs context.next_embedding")
    cosine, ok = _alignment(mapped, predicted, _embedding_scale(context))
    return torch.where(ok & _top_k_unique(current, 1), cosine, _NAN)


def embedding_coherence(previous: Spectrum | None, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """embedding_coherence = max over vocabulary rows v of ‖Qᵀ ê_v‖, ê_v = e_v / ‖e_v‖, Q an orthonormal basis of Ṽ_k.

    The cosine of the smallest angle between any token's embedding and the dominant subspace: Ṽ_k is
    the right side's top-k singular vectors (k = the spectrum's top_k) in embedding space — QKᵀ's key
    positions mapped as Σ_p v_p · e(x_p), AVWₒ's d_model vectors directly — orthonormalised by QR.
    In [0, 1]; 1 when some token's embedding lies in the subspace (cf. the mutual coherence of
    compressed sensing, here between a subspace and the embedding rows). Rows with a zero embedding are
    skipped. NaN (guard) when the top-k subspace is not unique or its image loses rank (|R_ii| ≤ 1e-6 ×
    the largest token-embedding norm).
    """
    vk = _needed(current.side_vectors("right"), _BOTH_SIDES)
    k = vk.shape[-1]
    positions = _needed(context.positions, "embedding_coherence needs context.positions")
    mapped = _in_embedding_space(vk, positions["right"], context)  # [..., d, k]
    q, r = torch.linalg.qr(mapped)
    scale = _embedding_scale(context)
    full_rank = torch.diagonal(r, dim1=-2, dim2=-1).abs().amin(-1) > RESTRICTED_RANK_TOL * scale
    rows = _needed(context.embeddings, "embedding_coherence needs context.embeddings").double()
    norms = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    unit = torch.where(norms > 0, rows / torch.where(norms > 0, norms, 1.0), 0.0)  # [vocab, d]
    coherence = (unit @ q).square().sum(-1).sqrt().amax(-1)  # [..., vocab, k] -> [...]
    return torch.where(full_rank & _top_k_unique(current, k), coherence.clamp(0.0, 1.0), _NAN)


# --------------------------------------------------------------------------- spectrum trajectories (issue 26)


def _trajectory_weights(device: torch.device) -> torch.Tensor:
    """[3, TRAJECTORY_WINDOW] float64: row d − 1 dotted with a window's points gives the d-th derivative at its last point.

    ``scipy.signal.savgol_coeffs(TRAJECTORY_WINDOW, TRAJECTORY_ORDER, deriv=d, pos=TRAJECTORY_WINDOW − 1, use="dot")``:
    the derivatives of the least-squares polynomial of degree TRAJECTORY_ORDER through the points, evaluated at the
    last one (unit spacing: one window per pass). Exact for a polynomial curve of that degree.
    """
    from scipy.signal import savgol_coeffs

    rows = [savgol_coeffs(TRAJECTORY_WINDOW, TRAJECTORY_ORDER, deriv=d, pos=TRAJECTORY_WINDOW - 1, use="dot") for d in (1, 2, 3)]
    return torch.tensor(np.stack(rows), dtype=torch.float64, device=device)


def trajectory_frame(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gram–Schmidt lengths of the smoothed derivatives at the last point of σ-trajectories ``points`` [..., W, K].

    The derivatives d1, d2, d3 come from ``_trajectory_weights``; modified Gram–Schmidt gives R₁₁ = |d1|, R₂₂ = the
    length of d2 orthogonal to d1, R₃₃ = the length of d3 orthogonal to both (the R diagonal of the QR of
    [d1 d2 d3]), so the Gram determinants are D₁ = R₁₁², D₂ = (R₁₁R₂₂)², D₃ = (R₁₁R₂₂R₃₃)², without the cancellation
    of |a|²|b|² − (a·b)². Returns (R₁₁, R₂₂, R₃₃, moving, bending), float64: ``moving`` = R₁₁ > TRAJECTORY_TOL · s,
    ``bending`` = moving and R₂₂ > TRAJECTORY_TOL · s, s the largest |value| in the window (False where a point is
    not finite).
    """
    points = points.double()
    derivatives = torch.einsum("dw,...wk->...dk", _trajectory_weights(points.device), points)
    a, b, c = derivatives.unbind(-2)
    scale = points.abs().amax((-2, -1))
    r11 = torch.linalg.vector_norm(a, dim=-1)
    moving = r11 > TRAJECTORY_TOL * scale
    e1 = a / torch.where(moving, r11, 1.0)[..., None]
    b = b - (e1 * b).sum(-1, keepdim=True) * e1
    r22 = torch.linalg.vector_norm(b, dim=-1)
    bending = moving & (r22 > TRAJECTORY_TOL * scale)
    e2 = b / torch.where(bending, r22, 1.0)[..., None]
    c = c - (e1 * c).sum(-1, keepdim=True) * e1
    c = c - (e2 * c).sum(-1, keepdim=True) * e2
    r33 = torch.linalg.vector_norm(c, dim=-1)
    return r11, r22, r33, moving, bending


def trajectory_curvature(previous: Spectrum | None, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """trajectory_curvature κ = √D₂ / D₁^{3/2} = |r′×r″| / |r′|³ of the σ-trajectory at the current window.

    The σ-trajectory of an event is the curve k ↦ r(k) = (σ₁, …, σ_K)(k), K = TRAJECTORY_K = 4 (fewer when the
    matrices have fewer singular values), over its windows in time order: the two context windows (ending at
    s − 2 and s − 1), then passes 1, 2, …. Smoothing: r′ and r″ at the current window are those of the
    least-squares cubic through its last 5 points — a *causal* Savitzky–Golay filter (window 5, degree 3,
    evaluated at the window's end), so a value at lookback j uses no window after it. D_i is the Gram
    determinant of (r′, …, r⁽ⁱ⁾), the squared i-volume they span; κ = √D₂ / D₁^{3/2} is the n-dimensional
    form of |r′×r″| / |r′|³ (the first Frenet curvature; W. Kühnel, *Differential Geometry: Curves – Surfaces
    – Manifolds*, §2.B), computed as R₂₂ / R₁₁² (``trajectory_frame``). Units 1/σ.
    Edges: not measured (NaN, no guard hit) until 5 windows exist — from pass 3, with the two context
    windows; nothing is padded. NaN (guard) where a point is not finite or the curve does not move
    (|r′| ≤ TRAJECTORY_TOL = 1e-6 × the window's largest σ).
    """
    r11, r22, _, moving, _ = trajectory_frame(_needed(context.trajectory, "trajectory_curvature needs context.trajectory"))
    return torch.where(moving, r22 / torch.where(moving, r11, 1.0).square(), _NAN)


def trajectory_torsion(previous: Spectrum | None, current: Spectrum, shifted: bool, context: MetricContext) -> torch.Tensor:
    """trajectory_torsion τ = √D₃ / D₂ of the σ-trajectory at the current window: its second Frenet curvature, unsigned.

    The same curve, smoothing and edges as ``trajectory_curvature``, with r‴ from the same causal Savitzky–Golay
    cubic (window 5; not measured before 5 windows exist). In three
    dimensions √D₃ / D₂ = |det(r′, r″, r‴)| / |r′×r″|², the torsion up to its sign; in K dimensions it is the
    second generalised curvature χ₂ = √(D₃ D₁) / (D₂ √D₁) (Kühnel §2.B), computed as R₃₃ / (R₁₁ R₂₂). 0 for a
    curve in a plane; the helix (a cos t, a sin t, b t) has κ = a / (a² + b²) and τ = b / (a² + b²). Units 1/σ.
    NaN (guard) where κ is, and where the curve does not bend (the part of r″ normal to r′ ≤ 1e-6 × the
    window's largest σ; a straight line's torsion is 0/0).
    """
    r11, r22, r33, _, bending = trajectory_frame(_needed(context.trajectory, "trajectory_torsion needs context.trajectory"))
    return torch.where(bending, r33 / torch.where(bending, r11 * r22, 1.0), _NAN)


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
            "grassmannian_distance",
            "temporal",
            "√Σθᵢ², θᵢ = arccos σᵢ(Q_prevᵀ Q_cur) over the top-k singular subspaces (shared positions if shifted)",
            grassmannian_distance,
        ),
        Metric(
            "top_vector_angle", "temporal", "arccos |u₁,prev · u₁,cur| (renormalised, shared positions if shifted)", top_vector_angle
        ),
        Metric("sigma1_velocity", "temporal", "σ₁(cur) − σ₁(prev)", sigma1_velocity),
        Metric(
            "condition_velocity",
            "temporal",
            "log10 condition_number(cur) − log10 condition_number(prev), a capped side counted as the cap 1/eps (guard)",
            condition_velocity,
            version=2,
        ),
        # the research abstract's list, completed (issue 23)
        Metric("singular_value_variance", "spectral", "(1/m) Σ(σᵢ − σ̄)²", singular_value_variance),
        Metric("numerical_rank", "context", "#{i : σᵢ > max(rows, cols) · eps₃₂ · σ₁}", numerical_rank),
        *(
            Metric(f"sigma{i}_velocity", "temporal", f"σ{i}(cur) − σ{i}(prev) (NaN when {i} > m)", _sigma_velocity(i))
            for i in VELOCITY_KS
        ),
        *(
            Metric(
                f"grassmannian_{k}",
                "temporal",
                f"√Σθᵢ² over the top-{k} singular subspaces of consecutive passes (shared positions if shifted)",
                _grassmannian_k(k),
            )
            for k in SUBSPACE_KS
        ),
        Metric(
            "subspace_drift",
            "context",
            "√Σθᵢ² between pass 1's top-k subspace and the current one (positions shared with pass 1 if sliding)",
            subspace_drift,
            needs=("first",),
        ),
        Metric(
            "top_vector_angle_other",
            "context",
            "arccos |v₁,prev · v₁,cur| on the other side (QKᵀ keys, AVWₒ positions; shared positions)",
            top_vector_angle_other,
            needs=("previous", "positions"),
        ),
        Metric(
            "membership_change",
            "temporal",
            "Jaccard distance of {p : ℓ_p ≥ k/n}, ℓ_p = Σ_{i≤k} U_{p,i}², between consecutive passes (shared positions)",
            membership_change,
        ),
        Metric(
            "membership_change_other",
            "context",
            "membership_change on the other side (QKᵀ keys, AVWₒ positions)",
            membership_change_other,
            needs=("previous", "positions"),
        ),
        Metric(
            "embedding_alignment_left",
            "context",
            "|cos(ũ₁, e(x_t))|, ũ₁ = Σ_p u₁,p e(x_p) for positions, u₁ for d_model; x_t the current token",
            embedding_alignment_left,
            needs=("positions", "embeddings", "window_embeddings"),
        ),
        Metric(
            "embedding_alignment_right",
            "context",
            "|cos(ṽ₁, e(x̂_{t+1}))|, ṽ₁ = Σ_p v₁,p e(x_p) for positions, v₁ for d_model; x̂_{t+1} the predicted token",
            embedding_alignment_right,
            needs=("positions", "embeddings", "window_embeddings", "next_embedding"),
        ),
        Metric(
            "embedding_coherence",
            "context",
            "max_v ‖Qᵀ e_v‖/‖e_v‖, Q orthonormal basis of the right top-k vectors in embedding space",
            embedding_coherence,
            needs=("positions", "embeddings", "window_embeddings"),
        ),
        # spectrum trajectories (issue 26): exploratory geometry of the top-4 singular values over an event's windows
        Metric(
            "trajectory_curvature",
            "context",
            "κ = √det G₂ / (det G₁)^{3/2} (= |r′×r″|/|r′|³), r = (σ₁..σ₄) over windows, causal Savitzky–Golay (5, cubic)",
            trajectory_curvature,
            needs=("trajectory",),
        ),
        Metric(
            "trajectory_torsion",
            "context",
            "τ = √det G₃ / det G₂ (second Frenet curvature, unsigned), the same curve and smoothing",
            trajectory_torsion,
            needs=("trajectory",),
        ),
    ]
}


def compute_metrics(
    current: Spectrum,
    previous: Spectrum | None,
    *,
    shifted: bool,
    context: MetricContext | None = None,
    names: Iterable[str] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every registered metric for a batch (or those in ``names``): name -> (values [...] float32, guard_hits [...] bool).

    Spectral metrics are computed in float64 from ``current.values``. Temporal metrics compare
    ``previous`` → ``current`` (the same events one pass apart); they are NaN, with no guard hit,
    when ``previous`` is None (the first pass). Context metrics get ``(previous, current, shifted,
    context)``; they are NaN, with no guard hit, when something in their ``needs`` is missing
    ("previous", or a ``MetricContext`` field that is None; no context at all: every field missing).
    A NaN value is otherwise always a guard hit.
    """
    values = current.values.double()
    batch = values.shape[:-1]
    context = MetricContext() if context is None else context
    if context.positions is not None and current.side is not None and context.positions[current.side] != shifted:
        raise ValueError(f"shifted={shifted} disagrees with context.positions[{current.side!r}]={context.positions[current.side]}")
    results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def not_measured() -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.full(batch, _NAN, dtype=torch.float32, device=values.device),
            torch.zeros(batch, dtype=torch.bool, device=values.device),
        )

    for name in METRICS if names is None else names:
        metric = METRICS[name]
        if metric.kind == "spectral":
            out = metric.function(values)
        elif metric.kind == "temporal":
            if previous is None:
                results[name] = not_measured()
                continue
            out = metric.function(previous, current, shifted)
        elif metric.kind == "context":
            missing = [need for need in metric.needs if (previous if need == "previous" else getattr(context, need)) is None]
            if missing:
                results[name] = not_measured()
                continue
            out = metric.function(previous, current, shifted, context)
        else:
            raise ValueError(f"metric {name!r} has unknown kind {metric.kind!r}")
        value, extra_guard = out if isinstance(out, tuple) else (out, None)
        guard = torch.isnan(value)
        if extra_guard is not None:
            guard = guard | extra_guard
        results[name] = (value.float(), guard)
    return results
