"""The metric registry (analysis/measure/metrics.py) against independent numpy float64 references,
known answers, the window-shift restriction, guards, and batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dcsbm_transformer.analysis.measure.metrics import (
    CONDITION_CAP,
    CONDITION_EPS,
    METRICS,
    Spectrum,
    compute_metrics,
    spectrum,
)

SPECTRAL = [
    "stable_rank",
    "spectral_entropy",
    "spectral_gap",
    "gap_2",
    "gap_4",
    "gap_8",
    "spectral_gap_rel",
    "gap_2_rel",
    "gap_4_rel",
    "gap_8_rel",
    "condition_number",
    "participation_ratio",
    "rank_error_2",
    "rank_error_4",
    "rank_error_8",
]
TEMPORAL = ["grassmannian_distance", "top_vector_angle", "sigma1_velocity", "condition_velocity"]
EPS = CONDITION_EPS


# --------------------------------------------------------------------------- numpy reference


def ref_spectral(matrix: np.ndarray) -> dict[str, tuple[float, bool]]:
    """The spectral metrics of one matrix, float64, written from the definitions: name -> (value, guard)."""
    s = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
    m = len(s)
    out: dict[str, tuple[float, bool]] = {}
    total, total2, s1 = s.sum(), (s**2).sum(), s[0]
    nan = float("nan")
    out["stable_rank"] = (total2 / s1**2, False) if s1 > 0 else (nan, True)
    if total > 0:
        h = 0.0
        for value in s:
            p = value / total
            if p > 0:
                h -= p * math.log(p)
        out["spectral_entropy"] = (h, False)
    else:
        out["spectral_entropy"] = (nan, True)
    for k in (1, 2, 4, 8):
        name = "spectral_gap" if k == 1 else f"gap_{k}"
        if k + 1 > m:
            out[name] = out[name + "_rel"] = (nan, True)
            continue
        gap = s[k - 1] - s[k]
        out[name] = (gap, False)
        out[name + "_rel"] = (gap / s1, False) if s1 > 0 else (nan, True)
    if s1 == 0:
        out["condition_number"] = (nan, True)
    elif s[-1] <= EPS * s1:
        out["condition_number"] = (1 / EPS, True)
    else:
        out["condition_number"] = (s1 / s[-1], False)
    out["participation_ratio"] = (total**2 / (m * total2), False) if total2 > 0 else (nan, True)
    for k in (2, 4, 8):
        tail = sum(value**2 for value in s[k:])
        out[f"rank_error_{k}"] = (math.sqrt(tail) / math.sqrt(total2), False) if total2 > 0 else (nan, True)
    return out


def ref_temporal(prev: np.ndarray, cur: np.ndarray, side: str, shifted: bool, k: int) -> dict[str, float]:
    """The temporal metrics of one pair of matrices, float64, from full numpy SVDs."""

    def vectors(matrix):
        u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
        return (u[:, :k] if side == "left" else vt[:k].T), s

    up, sp = vectors(prev)
    uc, sc = vectors(cur)
    if shifted:
        up, uc = up[1:], uc[:-1]
    qp, _ = np.linalg.qr(up)
    qc, _ = np.linalg.qr(uc)
    cosines = np.clip(np.linalg.svd(qp.T @ qc, compute_uv=False), 0, 1)
    a, b = up[:, 0] / np.linalg.norm(up[:, 0]), uc[:, 0] / np.linalg.norm(uc[:, 0])
    cond = lambda s: 1 / EPS if s[-1] <= EPS * s[0] else s[0] / s[-1]  # noqa: E731
    return {
        "grassmannian_distance": float(np.sqrt(np.sum(np.arccos(cosines) ** 2))),
        "top_vector_angle": float(np.arccos(min(1.0, abs(a @ b)))),
        "sigma1_velocity": float(sc[0] - sp[0]),
        "condition_velocity": float(np.log10(cond(sc)) - np.log10(cond(sp))),  # version 2: decades, the cap counted
    }


def random_batches(seed: int = 0):
    """(name, previous [B, r, c], current [B, r, c], side, shifted): QKᵀ-like and AVWₒ-like batches."""
    g = torch.Generator().manual_seed(seed)
    w, d = 16, 24
    qk_prev = torch.tril(torch.randn(2, 3, w, w, generator=g)) + 3 * torch.eye(w)  # well conditioned
    qk_raw = torch.tril(torch.randn(2, 3, w, w, generator=g))  # condition numbers up to ~1e17: capped
    av_prev = torch.randn(2, 3, w, d, generator=g)
    # the next pass: a perturbation, so subspaces move by moderate angles
    nudge = lambda x: x + 0.3 * torch.randn(x.shape, generator=g) * (x != 0)  # noqa: E731
    return [
        ("qk_conditioned", qk_prev, nudge(qk_prev), "left", True),
        ("qk_raw", qk_raw, nudge(qk_raw), "left", False),
        ("av_right", av_prev, nudge(av_prev), "right", False),
        ("av_left_shifted", av_prev, nudge(av_prev), "left", True),
    ]


@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize("case", range(4))
def test_every_metric_matches_numpy_reference(method, case):
    name, prev, cur, side, shifted = random_batches()[case]
    k = 2
    result = compute_metrics(
        spectrum(cur, top_k=k, side=side, method=method),
        spectrum(prev, top_k=k, side=side, method=method),
        shifted=shifted,
    )
    assert set(result) == set(METRICS)
    flat_prev, flat_cur = prev.reshape(-1, *prev.shape[-2:]).numpy(), cur.reshape(-1, *cur.shape[-2:]).numpy()
    checked = 0
    for i in range(flat_cur.shape[0]):
        ref = ref_spectral(flat_cur[i])
        ref.update({key: (value, False) for key, value in ref_temporal(flat_prev[i], flat_cur[i], side, shifted, k).items()})
        s_ref = np.linalg.svd(flat_cur[i].astype(np.float64), compute_uv=False)
        s_prev = np.linalg.svd(flat_prev[i].astype(np.float64), compute_uv=False)
        ratios = (s_ref[-1] / s_ref[0], s_prev[-1] / s_prev[0])
        near_cap = any(EPS / 64 < r < 64 * EPS for r in ratios)  # either side of the cap is right there
        for metric, (expected, expected_guard) in ref.items():
            value = result[metric][0].reshape(-1)[i].item()
            guard = result[metric][1].reshape(-1)[i].item()
            if metric in ("condition_number", "condition_velocity"):
                if near_cap:
                    continue
                if metric == "condition_number":
                    assert guard == expected_guard, (name, metric, i)
                cond = max(s_ref[0] / max(s_ref[-1], 1e-300), s_prev[0] / max(s_prev[-1], 1e-300))
                capped = min(ratios) <= EPS
                if metric == "condition_velocity":  # decades: a relative error δ of a side is δ / ln 10 here
                    tol = 1e-3 if capped else 1e-4 + 20 * EPS * cond
                else:
                    tol = 1e-3 * abs(expected) + 1.0 if capped else (1e-4 + 20 * EPS * cond) * max(abs(expected), cond)
                assert abs(value - expected) <= tol, (name, metric, i, value, expected)
                continue
            if math.isnan(expected):
                assert math.isnan(value) and guard, (name, metric, i)
                continue
            assert guard == expected_guard, (name, metric, i)
            tol = (2e-5 if method == "gram" else 2e-4) * max(1.0, abs(expected))
            assert abs(value - expected) <= tol, (name, metric, i, value, expected)
            checked += 1
    assert checked > 100


# --------------------------------------------------------------------------- known answers


def metrics_of(matrix: torch.Tensor, **kwargs) -> dict[str, tuple[float, bool]]:
    result = compute_metrics(spectrum(matrix, side=kwargs.pop("side", "left"), **kwargs), None, shifted=False)
    return {name: (value.item(), guard.item()) for name, (value, guard) in result.items()}


def test_rank_one_matrix():
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(12, 1, generator=g), torch.randn(1, 20, generator=g)
    out = metrics_of(u @ v)
    assert out["stable_rank"][0] == pytest.approx(1.0, abs=1e-6)
    assert out["participation_ratio"][0] == pytest.approx(1 / 12, abs=1e-6)
    assert out["rank_error_2"][0] == pytest.approx(0.0, abs=1e-6)
    assert out["spectral_entropy"][0] == pytest.approx(0.0, abs=1e-5)
    assert out["spectral_gap_rel"][0] == pytest.approx(1.0, abs=1e-6)
    assert out["condition_number"] == (CONDITION_CAP, True)


def test_identity_matrix():
    m = 8
    out = metrics_of(torch.eye(m))
    assert out["spectral_entropy"][0] == pytest.approx(math.log(m), abs=1e-6)
    assert out["stable_rank"][0] == pytest.approx(m, abs=1e-5)
    assert out["condition_number"] == (pytest.approx(1.0, abs=1e-6), False)
    assert out["participation_ratio"][0] == pytest.approx(1.0, abs=1e-6)
    assert out["spectral_gap"] == (0.0, False)
    assert out["rank_error_2"][0] == pytest.approx(math.sqrt(6 / 8), abs=1e-6)


@pytest.mark.parametrize("cols", [10, 14])
def test_diagonal_matrix_exact_gaps_and_rank_errors(cols):
    sigma = [10.0, 7.0, 5.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5]
    order = [3, 9, 0, 6, 2, 8, 5, 1, 7, 4]  # scrambled positions, mixed signs: σ must be |d| sorted
    matrix = torch.zeros(10, cols)
    for position, index in enumerate(order):
        matrix[position, position] = sigma[index] * (-1) ** position
    out = metrics_of(matrix, side="right")
    expected_gaps = {"spectral_gap": 3.0, "gap_2": 2.0, "gap_4": 1.0, "gap_8": 0.5}
    for name, gap in expected_gaps.items():
        assert out[name] == (pytest.approx(gap, abs=1e-5), False)
        assert out[name + "_rel"] == (pytest.approx(gap / 10.0, abs=1e-6), False)
    total2 = sum(s * s for s in sigma)  # 213.75
    assert out["rank_error_2"][0] == pytest.approx(math.sqrt(total2 - 149.0) / math.sqrt(total2), abs=1e-6)
    assert out["rank_error_4"][0] == pytest.approx(math.sqrt(total2 - 190.0) / math.sqrt(total2), abs=1e-6)
    assert out["rank_error_8"][0] == pytest.approx(math.sqrt(1.25) / math.sqrt(total2), abs=1e-6)
    assert out["stable_rank"][0] == pytest.approx(total2 / 100.0, abs=1e-5)
    assert out["condition_number"] == (pytest.approx(20.0, rel=1e-6), False)


# --------------------------------------------------------------------------- the window shift
# A Toeplitz window M[i, j] = f(i − j) is the same matrix at every pass, so there the *unshifted*
# comparison is the one that is 0; content-based windows M_t[i, j] = q_{t+i} · k_{t+j} are the
# case the restriction is for: window t+1 is window t moved by one token.


def windows(queries: torch.Tensor, keys: torch.Tensor, starts: list[int], w: int, causal: bool) -> torch.Tensor:
    """M_t[i, j] = q_{t+i} · k_{t+j} (zero above the diagonal if causal): window t+1 is window t
    shifted by one position, by construction. Returns [len(starts), w, w]."""
    out = torch.stack([queries[t : t + w] @ keys[t : t + w].T for t in starts])
    return torch.tril(out) if causal else out


def ar1(n: int, dim: int, g: torch.Generator, rho: float = 0.9) -> torch.Tensor:
    """A stationary AR(1) sequence of vectors (started from its stationary distribution)."""
    x = torch.empty(n, dim, dtype=torch.float64)
    x[0] = torch.randn(dim, generator=g, dtype=torch.float64) / math.sqrt(1 - rho**2)
    for p in range(1, n):
        x[p] = rho * x[p - 1] + torch.randn(dim, generator=g, dtype=torch.float64)
    return x


def pass_pair(queries, keys, starts, w, causal, top_k=2, side="left"):
    prev = windows(queries, keys, starts, w, causal).float()
    cur = windows(queries, keys, [t + 1 for t in starts], w, causal).float()
    return spectrum(prev, top_k=top_k, side=side), spectrum(cur, top_k=top_k, side=side)


def test_shift_causal_anchor_keys_exact():
    """Causal (QKᵀ-like) windows over stationary AR(1) queries whose keys are non-zero at two
    anchor tokens only: the left singular subspace is spanned by the two anchor columns, which
    are the same tokens in both passes, so on the shared positions it matches exactly; without
    the restriction every row is compared with its neighbour and it does not."""
    g = torch.Generator().manual_seed(2)
    w, anchors = 16, (20, 23)
    queries = ar1(60, 3, g)
    keys = torch.zeros(60, 3, dtype=torch.float64)
    for p in anchors:
        keys[p] = torch.randn(3, generator=g, dtype=torch.float64) * 2
    starts = list(range(anchors[1] - w + 1, anchors[0]))  # both anchors in both windows' shared rows
    prev, cur = pass_pair(queries, keys, starts, w, causal=True)
    shifted = compute_metrics(cur, prev, shifted=True)
    plain = compute_metrics(cur, prev, shifted=False)
    distance, guard = shifted["grassmannian_distance"]
    assert not guard.any()
    assert distance.abs().max().item() < 1e-5
    assert plain["grassmannian_distance"][0].min().item() > 0.1

    # one anchor: rank one, so the top vector itself is the same on the shared positions
    keys[anchors[1]] = 0
    prev, cur = pass_pair(queries, keys, starts, w, causal=True, top_k=1)
    shifted = compute_metrics(cur, prev, shifted=True)
    plain = compute_metrics(cur, prev, shifted=False)
    for name in ("top_vector_angle", "grassmannian_distance"):
        assert not shifted[name][1].any()
        assert shifted[name][0].abs().max().item() < 1e-5, name
        assert plain[name][0].min().item() > 0.1, name


def test_shift_stationary_low_rank_exact():
    """Without the causal mask, M_t = Q_t K_tᵀ (rank 2 = top_k) over stationary AR(1) queries and
    keys: the left subspace is span(Q_t), and restricting it to the shared tokens is exact."""
    g = torch.Generator().manual_seed(3)
    w = 32
    queries, keys = ar1(120, 2, g), ar1(120, 2, g)
    prev, cur = pass_pair(queries, keys, list(range(80)), w, causal=False)
    shifted = compute_metrics(cur, prev, shifted=True)["grassmannian_distance"]
    plain = compute_metrics(cur, prev, shifted=False)["grassmannian_distance"]
    assert not shifted[1].any()
    assert shifted[0].abs().max().item() < 1e-5
    assert plain[0].median().item() > 0.3


def test_shift_causal_stationary_close():
    """Generic causal windows over an i.i.d. stationary sequence are not exactly shift-consistent
    (the mask changes with the window), but the restriction brings the subspaces close."""
    g = torch.Generator().manual_seed(4)
    w = 64
    queries = torch.randn(300, 2, generator=g, dtype=torch.float64)
    keys = torch.randn(300, 2, generator=g, dtype=torch.float64)
    prev, cur = pass_pair(queries, keys, list(range(0, 200, 2)), w, causal=True)
    shifted = compute_metrics(cur, prev, shifted=True)["grassmannian_distance"][0]
    plain = compute_metrics(cur, prev, shifted=False)["grassmannian_distance"][0]
    assert shifted.median().item() < 0.1
    assert plain.median().item() > 1.0
    assert (shifted < plain).float().mean().item() > 0.9


def test_right_side_needs_no_shift():
    """AVWₒ-like windows: values of whatever tokens times a fixed rank-2 output map. The right
    (d_model) singular subspace is the output map's row space in every pass: distance 0 unshifted."""
    g = torch.Generator().manual_seed(5)
    w, d = 16, 32
    wo = torch.randn(2, d, generator=g, dtype=torch.float64)
    values = torch.randn(40, 2, generator=g, dtype=torch.float64)
    prev = torch.stack([values[t : t + w] @ wo for t in range(20)]).float()
    cur = torch.stack([values[t + 1 : t + 1 + w] @ wo for t in range(20)]).float()
    out = compute_metrics(spectrum(cur, side="right"), spectrum(prev, side="right"), shifted=False)
    assert spectrum(cur, side="right").vectors.shape == (20, d, 2)
    assert out["grassmannian_distance"][0].abs().max().item() < 1e-5


# --------------------------------------------------------------------------- guards


@pytest.mark.parametrize("shape", [(16, 16), (8, 12)])
def test_zero_matrix_guards(shape):
    zero = spectrum(torch.zeros(shape), side="left")
    out = compute_metrics(zero, zero, shifted=False)
    defined = {"spectral_gap", "gap_2", "gap_4", "sigma1_velocity"} | ({"gap_8"} if min(shape) > 8 else set())
    # issue 23's additions defined (0) on the zero matrix; the context metrics without a context are not measured
    defined |= {"singular_value_variance", "numerical_rank", "sigma2_velocity", "sigma3_velocity", "sigma4_velocity"}
    not_measured = {name for name, metric in METRICS.items() if metric.kind == "context" and metric.needs}
    for name, (value, guard) in out.items():
        if name in not_measured:
            assert math.isnan(value.item()) and not guard.item(), name
        elif name in defined:
            assert value.item() == 0.0 and not guard.item(), name
        else:
            assert math.isnan(value.item()) and guard.item(), name


def test_singular_matrix_caps_condition_number():
    g = torch.Generator().manual_seed(6)
    tril = torch.tril(torch.randn(16, 16, generator=g)) + 4 * torch.eye(16)
    singular_tril = tril.clone()
    singular_tril[7, 7] = 0.0  # a triangular matrix with a zero on its diagonal is singular
    rank_deficient = torch.randn(64, 63, generator=g) @ torch.randn(63, 128, generator=g)
    batch = [tril, singular_tril]
    out = compute_metrics(spectrum(torch.stack(batch)), None, shifted=False)
    value, guard = out["condition_number"]
    assert not guard[0].item() and value[0].item() < 1e3
    assert guard[1].item() and value[1].item() == CONDITION_CAP
    value, guard = compute_metrics(spectrum(rank_deficient), None, shifted=False)["condition_number"]
    assert guard.item() and value.item() == CONDITION_CAP
    # a capped side, either one, counts in the velocity too; two regular ones do not
    regular, singular = spectrum(tril, side="left"), spectrum(singular_tril, side="left")
    assert compute_metrics(singular, regular, shifted=False)["condition_velocity"][1].item()
    assert compute_metrics(regular, singular, shifted=False)["condition_velocity"][1].item()
    assert not compute_metrics(regular, regular, shifted=False)["condition_velocity"][1].item()


def test_gaps_beyond_the_spectrum_are_guarded():
    g = torch.Generator().manual_seed(7)
    out = metrics_of(torch.randn(4, 4, generator=g))
    for name in ("gap_4", "gap_8", "gap_4_rel", "gap_8_rel"):
        value, guard = out[name]
        assert math.isnan(value) and guard, name
    for name in ("spectral_gap", "gap_2", "gap_2_rel"):
        value, guard = out[name]
        assert not math.isnan(value) and not guard, name


def test_non_finite_input_is_nan_and_guarded_only_there():
    g = torch.Generator().manual_seed(8)
    batch = torch.randn(3, 10, 10, generator=g)
    batch[1, 2, 3] = float("nan")
    batch[2, 0, 0] = float("inf")
    spec = spectrum(batch, side="left")
    assert torch.isnan(spec.vectors[1:]).all() and not torch.isnan(spec.vectors[0]).any()
    out = compute_metrics(spec, spectrum(torch.randn(3, 10, 10, generator=g), side="left"), shifted=True)
    for name, (value, guard) in out.items():
        if METRICS[name].kind == "context" and METRICS[name].needs:  # no context given: not measured (issue 23)
            assert torch.isnan(value).all() and not guard.any(), name
            continue
        assert torch.isnan(value[1:]).all() and guard[1:].all(), name
        assert not torch.isnan(value[0]), name


def test_first_pass_temporal_metrics_are_nan_without_guard():
    g = torch.Generator().manual_seed(9)
    out = compute_metrics(spectrum(torch.randn(5, 8, 8, generator=g), side="left"), None, shifted=True)
    for name in TEMPORAL:
        value, guard = out[name]
        assert torch.isnan(value).all() and not guard.any(), name


def test_temporal_metrics_need_vectors():
    g = torch.Generator().manual_seed(10)
    spec = spectrum(torch.randn(8, 8, generator=g))
    assert spec.vectors is None
    compute_metrics(spec, None, shifted=False)  # spectral only: fine
    with pytest.raises(ValueError, match="singular vectors"):
        compute_metrics(spec, spec, shifted=False)


# --------------------------------------------------------------------------- registry and batching


def test_registry_lists_every_metric_with_formula_and_docstring():
    for name in SPECTRAL + TEMPORAL:
        assert name in METRICS, name
        metric = METRICS[name]
        assert metric.name == name
        assert metric.kind == ("spectral" if name in SPECTRAL else "temporal")
        assert metric.formula.strip(), name
        assert (metric.function.__doc__ or "").strip(), name
    assert {metric.kind for metric in METRICS.values()} == {"spectral", "temporal", "context"}  # "context": issue 23


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_batched_over_leading_dims(method):
    g = torch.Generator().manual_seed(11)
    events, layers, heads, w, d = 5, 2, 3, 8, 16
    prev_qk, cur_qk = (torch.tril(torch.randn(events, layers, heads, w, w, generator=g)) for _ in range(2))
    prev_av, cur_av = (torch.randn(events, layers, heads, w, d, generator=g) for _ in range(2))
    for prev, cur, side, shifted in ((prev_qk, cur_qk, "left", True), (prev_av, cur_av, "right", False)):
        spec_prev, spec_cur = spectrum(prev, side=side, method=method), spectrum(cur, side=side, method=method)
        n_side = w if side == "left" else d
        assert spec_cur.values.shape == (events, layers, heads, w)
        assert spec_cur.vectors.shape == (events, layers, heads, n_side, 2)
        gram = spec_cur.vectors.mT @ spec_cur.vectors
        assert torch.allclose(gram, torch.eye(2, dtype=gram.dtype).expand_as(gram), atol=1e-5)
        out = compute_metrics(spec_cur, spec_prev, shifted=shifted)
        assert set(out) == set(METRICS)
        for name, (value, guard) in out.items():
            assert value.shape == (events, layers, heads) and value.dtype == torch.float32, name
            assert guard.shape == (events, layers, heads) and guard.dtype == torch.bool, name
        # one (event, layer, head) alone gives the same numbers as inside the batch
        one = compute_metrics(
            spectrum(cur[3, 1, 2], side=side, method=method),
            spectrum(prev[3, 1, 2], side=side, method=method),
            shifted=shifted,
        )
        for name, (value, _) in one.items():
            torch.testing.assert_close(value, out[name][0][3, 1, 2], rtol=1e-4, atol=1e-5, equal_nan=True)


def test_gram_and_svd_methods_agree_on_values():
    g = torch.Generator().manual_seed(12)
    batch = torch.randn(4, 16, 24, generator=g)
    gram, svd = spectrum(batch, method="gram").values, spectrum(batch, method="svd").values
    assert gram.dtype == torch.float64 and svd.dtype == torch.float32
    torch.testing.assert_close(gram.float(), svd, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        spectrum(batch, method="qr")
    with pytest.raises(ValueError):
        spectrum(batch, side="middle")
    with pytest.raises(ValueError):
        spectrum(batch, top_k=17, side="left")


def test_spectrum_type():
    spec = spectrum(torch.eye(4), side="left")
    assert isinstance(spec, Spectrum) and spec.side == "left"
