"""The research abstract's metric list, completed (issue 23, item 6): the metrics added to the registry
against numpy float64 references written from their definitions, known answers, guards, and the
context ``measure`` gives them (pass 1's spectrum, the window's token embeddings)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dcsbm_transformer.analysis.measure.metrics import (
    BASIS_K,
    CONDITION_EPS,
    METRICS,
    RANK_EPS,
    MetricContext,
    compute_metrics,
    spectrum,
)

ADDED = [
    "singular_value_variance",
    "numerical_rank",
    "sigma2_velocity",
    "sigma3_velocity",
    "sigma4_velocity",
    "grassmannian_2",
    "grassmannian_4",
    "grassmannian_8",
    "subspace_drift",
    "top_vector_angle_other",
    "membership_change",
    "membership_change_other",
    "embedding_alignment_left",
    "embedding_alignment_right",
    "embedding_coherence",
]
QKT = {"left": True, "right": True}  # both sides positions
AVWO = {"left": True, "right": False}  # positions × d_model
EPS = CONDITION_EPS


# --------------------------------------------------------------------------- numpy references


def ref_svd(matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u, s, vh = np.linalg.svd(np.asarray(matrix, dtype=np.float64), full_matrices=False)
    return s, u, vh.T


def ref_unique(s: np.ndarray, k: int) -> bool:
    nxt = s[k] if k < len(s) else 0.0
    return bool(s[k - 1] - nxt > EPS * s[0])


def ref_grassmann(a: np.ndarray, b: np.ndarray) -> float:
    """√Σθ² between span(a) and span(b), from the principal angles of the orthonormalised bases."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    cos = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)
    return float(np.sqrt((np.arccos(cos) ** 2).sum()))


def ref_members(u: np.ndarray) -> set[int]:
    n, k = u.shape
    leverage = (u**2).sum(axis=1)
    return {p for p in range(n) if leverage[p] >= k / n * (1 - 1e-9)}


def ref_jaccard_distance(a: set[int], b: set[int]) -> float:
    return 0.0 if not (a | b) else 1.0 - len(a & b) / len(a | b)


def ref_shared(members: set[int], offset: int, n: int, previous: bool) -> set[int]:
    """Members on the shared positions, in the current pass's index: previous p -> p − offset."""
    if previous:
        return {p - offset for p in members if p >= offset}
    return {p for p in members if p < n - offset}


def ref_cos(x: np.ndarray, y: np.ndarray) -> float:
    return float(abs(x @ y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def to_embedding(vector: np.ndarray, positions: bool, window_embeddings: np.ndarray) -> np.ndarray:
    """A position-side vector as Σ_p u_p e(x_p); a d_model-side vector as itself."""
    return window_embeddings.T @ vector if positions else vector


def ref_coherence(basis: np.ndarray, embeddings: np.ndarray) -> float:
    q, _ = np.linalg.qr(basis)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return float(np.linalg.norm(unit @ q, axis=1).max())


def value(out, name):
    v, guard = out[name]
    return float(v.reshape(-1)[0]), bool(guard.reshape(-1)[0])


def rotation(n: int, i: int, j: int, theta: float) -> torch.Tensor:
    """The rotation by theta in the (e_i, e_j) plane, float64 [n, n]."""
    r = torch.eye(n, dtype=torch.float64)
    c, s = math.cos(theta), math.sin(theta)
    r[i, i], r[j, j], r[i, j], r[j, i] = c, c, -s, s
    return r


# --------------------------------------------------------------------------- the spectrum: both sides, top-8


@pytest.mark.parametrize("method", ["gram", "svd"])
@pytest.mark.parametrize(
    ("rows", "cols", "side"),
    [(12, 12, "left"), (12, 12, "right"), (10, 24, "right"), (10, 24, "left"), (24, 10, "left"), (24, 10, "right")],
)
def test_spectrum_carries_both_sides_and_a_top_8_basis(method, rows, cols, side):
    g = torch.Generator().manual_seed(1)
    batch = torch.randn(4, rows, cols, generator=g)
    top_k = 3
    spec = spectrum(batch, top_k=top_k, side=side, method=method)
    n_side, n_other = (rows, cols) if side == "left" else (cols, rows)
    keep = min(max(top_k, BASIS_K), min(rows, cols))
    assert spec.shape == (rows, cols)
    assert spec.basis.shape == (4, n_side, keep) and spec.other.shape == (4, n_other, top_k)
    assert torch.equal(spec.vectors, spec.basis[..., :top_k])
    assert spec.side_vectors(side) is spec.vectors and spec.side_vectors("right" if side == "left" else "left") is spec.other
    for e in range(4):
        s, u, v = ref_svd(batch[e])
        own, other = (u, v) if side == "left" else (v, u)
        for i in range(keep):  # the same vectors up to sign
            assert abs(abs(own[:, i] @ spec.basis[e, :, i].double().numpy()) - 1) < 1e-5, (e, i)
        for i in range(top_k):
            assert abs(abs(other[:, i] @ spec.other[e, :, i].double().numpy()) - 1) < 1e-5, (e, i)
        # the two sides belong together: M v_i = σ_i u_i
        left = spec.side_vectors("left")[e].double().numpy()
        right = spec.side_vectors("right")[e].double().numpy()
        m = batch[e].double().numpy()
        np.testing.assert_allclose(m @ right[:, :top_k], left[:, :top_k] * s[:top_k], rtol=1e-4, atol=1e-4)


def test_spectrum_basis_is_capped_at_m_and_subspace_beyond_m_is_none():
    spec = spectrum(torch.randn(2, 5, 6), top_k=2, side="left")
    assert spec.basis.shape[-1] == 5
    assert spec.subspace(5).shape[-1] == 5 and spec.subspace(6) is None
    with pytest.raises(ValueError, match="singular vectors"):
        spectrum(torch.randn(5, 6)).subspace(2)


# --------------------------------------------------------------------------- spectral: variance and rank


def test_singular_value_variance_known_answer_and_reference():
    out = compute_metrics(spectrum(torch.diag(torch.tensor([3.0, 1.0]))), None, shifted=False)
    assert value(out, "singular_value_variance") == (pytest.approx(1.0), False)  # mean 2, ((1)² + (−1)²) / 2
    g = torch.Generator().manual_seed(2)
    batch = torch.randn(6, 9, 13, generator=g)
    out = compute_metrics(spectrum(batch), None, shifted=False)["singular_value_variance"][0]
    for e in range(6):
        s, _, _ = ref_svd(batch[e])
        assert out[e].item() == pytest.approx(np.var(s), rel=1e-5)


def test_numerical_rank_tolerance_is_max_dim_times_eps_times_sigma1():
    # tolerance for 4 × 4: 4 · 1.19e-7 · σ₁ = 4.8e-7: σ = 1e-3 counts, 1e-8 and 0 do not
    out = compute_metrics(spectrum(torch.diag(torch.tensor([1.0, 1e-3, 1e-8, 0.0]))), None, shifted=False)
    assert value(out, "numerical_rank") == (2.0, False)
    # the tolerance uses max(rows, cols): a 2 × 40 matrix with σ = (1, 3e-6): 40·eps = 4.8e-6 > 3e-6, rank 1
    wide = torch.zeros(2, 40)
    wide[0, 0], wide[1, 1] = 1.0, 3e-6
    assert value(compute_metrics(spectrum(wide), None, shifted=False), "numerical_rank") == (1.0, False)
    assert value(compute_metrics(spectrum(torch.zeros(5, 5)), None, shifted=False), "numerical_rank") == (0.0, False)
    g = torch.Generator().manual_seed(3)
    low = (torch.randn(6, 12, 3, generator=g) @ torch.randn(6, 3, 12, generator=g)).double()  # rank 3
    causal = torch.tril(torch.randn(6, 12, 12, generator=g, dtype=torch.float64))
    for batch in (low, causal):
        out = compute_metrics(spectrum(batch), None, shifted=False)["numerical_rank"][0]
        for e in range(6):
            s, _, _ = ref_svd(batch[e])
            expected = np.linalg.matrix_rank(batch[e].numpy(), tol=12 * RANK_EPS * s[0])
            assert out[e].item() == expected
    assert compute_metrics(spectrum(low), None, shifted=False)["numerical_rank"][0].eq(3).all()


# --------------------------------------------------------------------------- velocities of σ₁..σ₄


def test_sigma_velocities_known_answer_and_undefined_beyond_m():
    prev = spectrum(torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0])), side="left")
    cur = spectrum(torch.diag(torch.tensor([5.0, 3.0, 1.0, 1.0])), side="left")
    out = compute_metrics(cur, prev, shifted=False)
    assert [value(out, f"sigma{i}_velocity")[0] for i in (1, 2, 3, 4)] == pytest.approx([1.0, 0.0, -1.0, 0.0], abs=1e-6)
    small = spectrum(torch.eye(3), side="left")
    out = compute_metrics(small, small, shifted=False)
    assert value(out, "sigma3_velocity") == (0.0, False)
    v, guard = value(out, "sigma4_velocity")
    assert math.isnan(v) and guard


# --------------------------------------------------------------------------- Grassmannian at k = 2, 4, 8


@pytest.mark.parametrize("k", [2, 4, 8])
def test_grassmannian_k_known_answer_one_rotated_direction(k):
    """Rotating the left singular vector e₁ towards e₁₀ by θ leaves the top-k subspace with one principal angle θ."""
    n, theta = 10, 0.3
    d = torch.diag(torch.arange(n, 0, -1, dtype=torch.float64))  # σ = 10..1, left vectors e_1..e_10
    prev, cur = spectrum(d, side="left"), spectrum(rotation(n, 0, n - 1, theta) @ d, side="left")
    out = compute_metrics(cur, prev, shifted=False)
    assert value(out, f"grassmannian_{k}")[0] == pytest.approx(theta, abs=1e-6)
    assert value(compute_metrics(prev, prev, shifted=False), f"grassmannian_{k}")[0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("shifted", [False, True])
def test_grassmannian_k_against_reference(shifted):
    g = torch.Generator().manual_seed(4)
    n = 14
    prev_m, cur_m = (torch.tril(torch.randn(5, n, n, generator=g, dtype=torch.float64)) for _ in range(2))
    out = compute_metrics(spectrum(cur_m, side="left"), spectrum(prev_m, side="left"), shifted=shifted)
    for k in (2, 4, 8):
        for e in range(5):
            sp, up, _ = ref_svd(prev_m[e])
            sc, uc, _ = ref_svd(cur_m[e])
            a, b = (up[1:, :k], uc[:-1, :k]) if shifted else (up[:, :k], uc[:, :k])
            assert out[f"grassmannian_{k}"][0][e].item() == pytest.approx(ref_grassmann(a, b), abs=1e-5)
    # at k = top_k it is grassmannian_distance
    torch.testing.assert_close(out["grassmannian_2"][0], out["grassmannian_distance"][0])


def test_grassmannian_k_guards():
    # m = 6 < 8: grassmannian_8 is undefined; shifted by one, 8 columns of 8×8 cannot have rank 8 on 7 rows
    g = torch.Generator().manual_seed(5)
    six = spectrum(torch.randn(6, 6, generator=g), side="left")
    assert math.isnan(value(compute_metrics(six, six, shifted=False), "grassmannian_8")[0])
    eight = spectrum(torch.randn(8, 8, generator=g), side="left")
    v, guard = value(compute_metrics(eight, eight, shifted=True), "grassmannian_8")
    assert math.isnan(v) and guard
    assert not value(compute_metrics(eight, eight, shifted=True), "grassmannian_4")[1]
    # a degenerate top-4 (σ4 = σ5): not unique
    flat = spectrum(torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 2.0, 1.0])), side="left")
    v, guard = value(compute_metrics(flat, flat, shifted=False), "grassmannian_4")
    assert math.isnan(v) and guard and not value(compute_metrics(flat, flat, shifted=False), "grassmannian_2")[1]


# --------------------------------------------------------------------------- subspace drift (cumulative, from pass 1)


def test_subspace_drift_is_the_distance_from_pass_1_not_the_step():
    """Three passes rotating by θ each (d_model side, no shift): the step distance stays θ, drift grows to 2θ."""
    n, theta = 8, 0.2
    d = torch.diag(torch.arange(n, 0, -1, dtype=torch.float64))
    passes = [spectrum(d.T @ rotation(n, 0, n - 1, i * theta), side="right") for i in range(3)]
    for i, cur in enumerate(passes):
        about = MetricContext(positions=AVWO, first=passes[0], since_first=i)
        out = compute_metrics(cur, passes[i - 1] if i else None, shifted=False, context=about)
        assert value(out, "subspace_drift") == (pytest.approx(i * theta, abs=1e-6), False)
        if i:
            assert value(out, "grassmannian_distance")[0] == pytest.approx(theta, abs=1e-6)
    # pass 1 against itself: exactly 0, not rounding noise
    out = compute_metrics(passes[0], None, shifted=False, context=MetricContext(positions=AVWO, first=passes[0]))
    assert value(out, "subspace_drift") == (0.0, False)


def test_subspace_drift_on_positions_shared_with_pass_1():
    g = torch.Generator().manual_seed(6)
    n, top_k = 12, 2
    first_m = torch.tril(torch.randn(4, n, n, generator=g, dtype=torch.float64))
    for offset in (0, 3, 10):
        cur_m = torch.tril(torch.randn(4, n, n, generator=g, dtype=torch.float64))
        about = MetricContext(positions=QKT, first=spectrum(first_m, top_k=top_k, side="left"), since_first=offset)
        out = compute_metrics(spectrum(cur_m, top_k=top_k, side="left"), None, shifted=True, context=about)["subspace_drift"]
        for e in range(4):
            _, uf, _ = ref_svd(first_m[e])
            _, uc, _ = ref_svd(cur_m[e])
            expected = ref_grassmann(uf[offset:, :top_k], uc[: n - offset, :top_k])
            assert out[0][e].item() == pytest.approx(expected, abs=1e-5) and not out[1][e]
    # fewer shared positions than k: undefined (guard); no pass 1 yet (a context window): not measured
    about = MetricContext(positions=QKT, first=spectrum(first_m, top_k=top_k, side="left"), since_first=n - 1)
    v, guard = compute_metrics(spectrum(first_m, top_k=top_k, side="left"), None, shifted=True, context=about)["subspace_drift"]
    assert torch.isnan(v).all() and guard.all()
    v, guard = compute_metrics(spectrum(first_m, side="left"), None, shifted=True, context=MetricContext(positions=QKT))[
        "subspace_drift"
    ]
    assert torch.isnan(v).all() and not guard.any()


# --------------------------------------------------------------------------- the other side's top vector


def test_top_vector_angle_other_known_answer_qkt_key_side():
    """Rotating QKᵀ's right (key) vectors by θ leaves the left (query) ones: angle θ on the other side, 0 on the own."""
    n, theta = 8, 0.4
    d = torch.diag(torch.arange(n, 0, -1, dtype=torch.float64))
    prev, cur = spectrum(d, side="left"), spectrum(d @ rotation(n, 0, 5, theta).T, side="left")
    out = compute_metrics(cur, prev, shifted=False, context=MetricContext(positions={"left": False, "right": False}))
    assert value(out, "top_vector_angle_other")[0] == pytest.approx(theta, abs=1e-6)
    assert value(out, "top_vector_angle")[0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("positions", "side", "rows", "cols"), [(QKT, "left", 10, 10), (AVWO, "right", 10, 24)])
def test_top_vector_angle_other_against_reference(positions, side, rows, cols):
    g = torch.Generator().manual_seed(7)
    prev_m, cur_m = (torch.randn(5, rows, cols, generator=g, dtype=torch.float64) for _ in range(2))
    other = "right" if side == "left" else "left"
    out = compute_metrics(
        spectrum(cur_m, side=side), spectrum(prev_m, side=side), shifted=positions[side], context=MetricContext(positions=positions)
    )["top_vector_angle_other"][0]
    for e in range(5):
        _, up, vp = ref_svd(prev_m[e])
        _, uc, vc = ref_svd(cur_m[e])
        a, b = (up[:, 0], uc[:, 0]) if other == "left" else (vp[:, 0], vc[:, 0])
        if positions[other]:  # shared positions: previous 1..n−1, current 0..n−2
            a, b = a[1:], b[:-1]
        assert out[e].item() == pytest.approx(math.acos(min(1.0, ref_cos(a, b))), abs=1e-5)


# --------------------------------------------------------------------------- dominant-subspace membership


def diag_on(n: int, positions: list[int], big=(9.0, 8.0)) -> torch.Tensor:
    """An n × n matrix whose top singular vectors (both sides) are e_p for the given positions."""
    values = torch.ones(n, dtype=torch.float64) * 0.5
    values[positions] = torch.tensor(big, dtype=torch.float64)
    return torch.diag(values)


def test_membership_change_known_answers():
    n = 8
    prev = spectrum(diag_on(n, [1, 2]), side="left")  # members {1, 2}: leverage 1 ≥ 2/8
    slid = spectrum(diag_on(n, [0, 1]), side="left")  # the same tokens one position earlier
    moved = spectrum(diag_on(n, [3, 4]), side="left")
    overlap = spectrum(diag_on(n, [2, 3]), side="left")
    assert value(compute_metrics(slid, prev, shifted=True), "membership_change") == (0.0, False)
    assert value(compute_metrics(slid, prev, shifted=False), "membership_change") == (pytest.approx(2 / 3), False)
    assert value(compute_metrics(moved, prev, shifted=False), "membership_change") == (1.0, False)
    assert value(compute_metrics(overlap, prev, shifted=False), "membership_change") == (pytest.approx(2 / 3), False)

    # both sets off the shared positions (previous's position 0, current's position n − 1): equal (empty), 0
    def spread_except(p: int) -> torch.Tensor:
        u = torch.ones(n, dtype=torch.float64)
        u[p] = 0.0
        return u / u.norm()

    e = torch.eye(n, dtype=torch.float64)
    first_only = 9.0 * torch.outer(e[0], e[0]) + 8.0 * torch.outer(spread_except(0), e[1])  # members {0}
    last_only = 9.0 * torch.outer(e[n - 1], e[0]) + 8.0 * torch.outer(spread_except(n - 1), e[1])  # members {n − 1}
    out = compute_metrics(spectrum(last_only, side="left"), spectrum(first_only, side="left"), shifted=True)
    assert value(out, "membership_change") == (0.0, False)
    out = compute_metrics(spectrum(last_only, side="left"), spectrum(first_only, side="left"), shifted=False)
    assert value(out, "membership_change") == (1.0, False)
    # not unique: undefined
    flat = spectrum(torch.eye(n), side="left")
    v, guard = value(compute_metrics(flat, prev, shifted=False), "membership_change")
    assert math.isnan(v) and guard


@pytest.mark.parametrize("shifted", [False, True])
def test_membership_change_against_reference(shifted):
    g = torch.Generator().manual_seed(8)
    n, top_k = 16, 3
    prev_m, cur_m = (torch.tril(torch.randn(6, n, n, generator=g, dtype=torch.float64)) for _ in range(2))
    context = MetricContext(positions=QKT if shifted else {"left": False, "right": False})
    out = compute_metrics(
        spectrum(cur_m, top_k=top_k, side="left"), spectrum(prev_m, top_k=top_k, side="left"), shifted=shifted, context=context
    )
    offset = int(shifted)
    for e in range(6):
        _, up, vp = ref_svd(prev_m[e])
        _, uc, vc = ref_svd(cur_m[e])
        for name, (a, b) in (("membership_change", (up, uc)), ("membership_change_other", (vp, vc))):
            expected = ref_jaccard_distance(
                ref_shared(ref_members(a[:, :top_k]), offset, n, True), ref_shared(ref_members(b[:, :top_k]), offset, n, False)
            )
            assert out[name][0][e].item() == pytest.approx(expected), (name, e)


def test_membership_change_other_on_the_avwo_position_side():
    n, d = 8, 12
    prev_m = torch.zeros(n, d, dtype=torch.float64)
    prev_m[2, 0], prev_m[3, 1] = 9.0, 8.0  # left (positions) members {2, 3}, right (d_model) members {0, 1}
    cur_m = torch.zeros(n, d, dtype=torch.float64)
    cur_m[1, 0], cur_m[2, 1] = 9.0, 8.0  # slid by one position: the same tokens; d_model members unchanged
    prev_m[:, 5] += 0.1  # keep σ₃ > 0 away from the top two
    cur_m[:, 5] += 0.1
    out = compute_metrics(
        spectrum(cur_m, side="right"), spectrum(prev_m, side="right"), shifted=False, context=MetricContext(positions=AVWO)
    )
    assert value(out, "membership_change_other")[0] == pytest.approx(0.0)
    assert value(out, "membership_change")[0] == pytest.approx(0.0)


# --------------------------------------------------------------------------- token-embedding alignment and coherence


def embedding_context(positions, embeddings, window, predicted) -> MetricContext:
    return MetricContext(
        positions=positions, embeddings=embeddings, window_embeddings=embeddings[window], next_embedding=embeddings[predicted]
    )


def test_embedding_alignment_known_answers_qkt():
    """Orthonormal embeddings: u₁ = v₁ = e_0 (position 0), so ũ₁ = ṽ₁ = e(x_0)."""
    vocab = 6
    embeddings = 2.0 * torch.eye(vocab)
    qkt = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
    spec = spectrum(qkt, side="left")
    same = compute_metrics(
        spec, None, shifted=True, context=embedding_context(QKT, embeddings, torch.tensor([5, 1, 2, 5]), torch.tensor(5))
    )
    other = compute_metrics(
        spec, None, shifted=True, context=embedding_context(QKT, embeddings, torch.tensor([0, 1, 2, 5]), torch.tensor(3))
    )
    assert value(same, "embedding_alignment_left") == (pytest.approx(1.0), False)  # x_0 = x_t = 5
    assert value(same, "embedding_alignment_right") == (pytest.approx(1.0), False)  # predicted 5 = x_0
    assert value(other, "embedding_alignment_left") == (pytest.approx(0.0), False)
    assert value(other, "embedding_alignment_right") == (pytest.approx(0.0), False)
    # the mixture: u₁ = (e_0 + e_1)/√2 over tokens (5, 1): ũ₁ ∝ e(5) + e(1), cos with e(5) = 1/√2
    mix = torch.zeros(4, 4, dtype=torch.float64)
    mix[0, 0] = mix[1, 0] = 3.0
    mix[2, 2] = 1.0
    half = compute_metrics(
        spectrum(mix, side="left"),
        None,
        shifted=True,
        context=embedding_context(QKT, embeddings.double(), torch.tensor([5, 1, 2, 5]), torch.tensor(0)),
    )
    assert value(half, "embedding_alignment_left")[0] == pytest.approx(1 / math.sqrt(2))


def test_embedding_alignment_avwo_right_is_in_d_model_space():
    vocab, d, w = 7, 5, 4
    g = torch.Generator().manual_seed(9)
    embeddings = torch.randn(vocab, d, generator=g, dtype=torch.float64)
    avwo = torch.zeros(w, d, dtype=torch.float64)
    avwo[1] = 3.0 * embeddings[4]  # the head writes e(4) at position 1: v₁ ∝ e(4), u₁ = e_1 (position 1)
    noise = torch.randn(d, generator=g, dtype=torch.float64)
    avwo[2] = 0.1 * (noise - (noise @ embeddings[4]) / (embeddings[4] @ embeddings[4]) * embeddings[4])  # ⟂ e(4)
    window = torch.tensor([0, 6, 2, 3])
    out = compute_metrics(
        spectrum(avwo, side="right"), None, shifted=False, context=embedding_context(AVWO, embeddings, window, torch.tensor(4))
    )
    assert value(out, "embedding_alignment_right")[0] == pytest.approx(1.0, abs=1e-6)
    # u₁ = e_1 maps to e(x_1) = e(6), compared with the current token e(x_t) = e(3)
    assert value(out, "embedding_alignment_left")[0] == pytest.approx(ref_cos(embeddings[6].numpy(), embeddings[3].numpy()), abs=1e-6)


@pytest.mark.parametrize(("positions", "side"), [(QKT, "left"), (AVWO, "right")])
def test_embedding_metrics_against_reference(positions, side):
    g = torch.Generator().manual_seed(10)
    vocab, d, w, events, top_k = 11, 6, 8, 5, 2
    embeddings = torch.randn(vocab, d, generator=g)
    cols = w if positions is QKT else d  # QKᵀ [w, w], AVWₒ [w, d_model]
    matrices = torch.randn(events, w, cols, generator=g, dtype=torch.float64)
    window = torch.randint(0, vocab, (events, w), generator=g)
    predicted = torch.randint(0, vocab, (events,), generator=g)
    about = embedding_context(positions, embeddings, window, predicted)
    out = compute_metrics(spectrum(matrices, top_k=top_k, side=side), None, shifted=positions[side], context=about)
    e_np = embeddings.double().numpy()
    for e in range(events):
        _, u, v = ref_svd(matrices[e])
        we = e_np[window[e].numpy()]
        left = to_embedding(u[:, 0], positions["left"], we)
        right = to_embedding(v[:, :top_k], positions["right"], we)
        assert out["embedding_alignment_left"][0][e].item() == pytest.approx(ref_cos(left, we[-1]), abs=1e-5)
        assert out["embedding_alignment_right"][0][e].item() == pytest.approx(ref_cos(right[:, 0], e_np[predicted[e]]), abs=1e-5)
        assert out["embedding_coherence"][0][e].item() == pytest.approx(ref_coherence(right, e_np), abs=1e-5)


def test_embedding_coherence_known_answers():
    d = 4
    eye = torch.eye(d, dtype=torch.float64)
    avwo = torch.zeros(3, d, dtype=torch.float64)
    avwo[0] = torch.tensor([1.0, 1.0, 0.0, 0.0])  # v₁ = (e_0 + e_1)/√2
    avwo[1, 2] = 0.5
    about = embedding_context(AVWO, eye, torch.tensor([0, 1, 2]), torch.tensor(0))
    out = compute_metrics(spectrum(avwo, top_k=1, side="right"), None, shifted=False, context=about)
    assert value(out, "embedding_coherence")[0] == pytest.approx(1 / math.sqrt(2))
    out = compute_metrics(spectrum(avwo, top_k=2, side="right"), None, shifted=False, context=about)
    assert value(out, "embedding_coherence")[0] == pytest.approx(1.0)  # e_2 lies in span(v₁, v₂)


def test_embedding_metrics_guards_and_missing_context():
    vocab = 5
    embeddings = torch.eye(vocab, dtype=torch.float64)
    flat = spectrum(torch.eye(4, dtype=torch.float64), side="left")  # σ₁ = σ₂: u₁ not unique
    out = compute_metrics(
        flat, None, shifted=True, context=embedding_context(QKT, embeddings, torch.tensor([0, 1, 2, 3]), torch.tensor(1))
    )
    for name in ("embedding_alignment_left", "embedding_alignment_right", "embedding_coherence"):
        v, guard = value(out, name)
        assert math.isnan(v) and guard, name
    # a vanishing image: every position holds the same token and u₁ sums to 0 over them
    cancel = torch.tensor([[3.0, -3.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64).T
    out = compute_metrics(
        spectrum(cancel, side="left"),
        None,
        shifted=True,
        context=embedding_context(QKT, embeddings, torch.tensor([2, 2, 2]), torch.tensor(2)),
    )
    v, guard = value(out, "embedding_alignment_left")
    assert math.isnan(v) and guard
    # no context: not measured (NaN, no guard), as a temporal metric at the first pass
    out = compute_metrics(spectrum(torch.randn(4, 4), side="left"), None, shifted=True)
    for name in ADDED:
        if METRICS[name].kind == "context" and METRICS[name].needs:
            v, guard = value(out, name)
            assert math.isnan(v) and not guard, name


# --------------------------------------------------------------------------- registry and measure


def test_every_added_metric_is_registered_version_1_with_formula_and_docstring():
    for name in ADDED:
        metric = METRICS[name]
        assert metric.version == 1 and metric.formula.strip() and (metric.function.__doc__ or "").strip(), name


def test_a_context_that_contradicts_shifted_is_refused():
    spec = spectrum(torch.randn(4, 4), side="left")
    with pytest.raises(ValueError, match="disagrees"):
        compute_metrics(spec, spec, shifted=False, context=MetricContext(positions=QKT))


def test_measure_fills_the_added_metrics_as_a_direct_recomputation_does():
    """Pass k's stored values equal the metrics recomputed from the window (prompt + generated tokens) with
    pass 1's spectrum and the token embeddings; drift is 0 at pass 1 and not measured at the context window."""
    from conftest import tiny_config

    from dcsbm_transformer.analysis.measure.batched import TARGET_POSITIONS, TARGET_SIDE, measure, metric_key
    from dcsbm_transformer.analysis.measure.continuations import forward_targets
    from dcsbm_transformer.analysis.measure.events import draw_analysis_events
    from dcsbm_transformer.data.dataset import build_data
    from dcsbm_transformer.model import TransformerLM

    config = tiny_config()
    data = build_data(config)
    events = draw_analysis_events(config, data.graph, 10)
    torch.manual_seed(0)
    model = TransformerLM.from_config(config).eval()
    measured = measure(model, data.graph, events, top_k=2, chunk_mb=100)
    w = config.model.context_window
    tokens = torch.from_numpy(measured.labels.tokens.astype(np.int64))
    embeddings = model.tok_emb.weight.detach().float()
    spectra = {}
    for k in (1, 2, 3):
        _, targets = forward_targets(model, tokens[:, k - 1 : k - 1 + w])
        for target in ("qkt", "avwo"):
            side, shifted = TARGET_SIDE[target]
            spectra[target, k] = current = spectrum(targets[target], top_k=2, side=side)
            about = MetricContext(
                positions=TARGET_POSITIONS[target],
                first=spectra[target, 1],
                since_first=k - 1,
                embeddings=embeddings,
                window_embeddings=embeddings[tokens[:, k - 1 : k - 1 + w]][:, None, None],
                next_embedding=embeddings[tokens[:, w + k - 1]][:, None, None],
            )
            again = compute_metrics(current, spectra.get((target, k - 1)), shifted=shifted, context=about)
            for name in ADDED:
                metric = METRICS[name]
                if k == 1 and (metric.kind == "temporal" or "previous" in metric.needs):
                    continue  # pass 1 compares with the context window, not recomputed here
                stored = measured.metrics[metric_key(target, 0, 0, name)][:, k - 1]
                np.testing.assert_allclose(
                    again[name][0][:, 0, 0].numpy(), stored, rtol=1e-4, atol=1e-5, err_msg=f"{target} {name} pass {k}"
                )
    for target in ("qkt", "avwo"):
        drift = measured.metrics[metric_key(target, 0, 0, "subspace_drift")]
        first_pass = drift[:, 0][~np.isnan(drift[:, 0])]
        assert len(first_pass) and (first_pass == 0).all()
        assert np.isnan(measured.context[metric_key(target, 0, 0, "subspace_drift")]).all()
        for name in ("embedding_alignment_left", "embedding_alignment_right", "embedding_coherence", "numerical_rank"):
            assert np.isfinite(measured.context[metric_key(target, 0, 0, name)]).any(), (target, name)
    for name in ADDED:
        assert name in measured.guard_hits
