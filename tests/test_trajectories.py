"""Spectrum trajectories (issue 26, item 4): the curvature and torsion of the σ-trajectory against numpy
references and known answers (helix, twisted cubic, circle, line), their edges and guards, what ``measure``
gives them, and spectra.npz (written, read back, an old or missing file refused)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcsbm_transformer.analysis.files import SPECTRA_FILE, SPECTRA_SCHEMA_VERSION, read_spectra, write_spectra
from dcsbm_transformer.analysis.measure.batched import CONTEXT_WINDOWS, SPECTRA_K, measure, spectrum_key
from dcsbm_transformer.analysis.measure.events import draw_analysis_events
from dcsbm_transformer.analysis.measure.metrics import (
    METRICS,
    TRAJECTORY_K,
    TRAJECTORY_ORDER,
    TRAJECTORY_WINDOW,
    MetricContext,
    Spectrum,
    compute_metrics,
)
from dcsbm_transformer.analysis.results import Analysis
from dcsbm_transformer.model import TransformerLM
from dcsbm_transformer.storage import write_npz

NAMES = ["trajectory_curvature", "trajectory_torsion"]


def trajectory_metrics(points: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The registry's curvature and torsion of trajectories ``points`` [..., W, K] (values, float32 as stored, and guard hits)."""
    points = torch.as_tensor(points, dtype=torch.float64)
    current = Spectrum(values=points[..., -1, :], vectors=None)
    out = compute_metrics(current, None, shifted=False, context=MetricContext(trajectory=points), names=NAMES)
    return {name: (values.double().numpy(), hits.numpy()) for name, (values, hits) in out.items()}


def reference(points: np.ndarray) -> tuple[float, float]:
    """numpy, from the definitions: a least-squares cubic per coordinate through the W points (t = 0..W−1),
    its derivatives at the last point, Gram determinants D_i of (r′, …, r⁽ⁱ⁾); κ = √D₂/D₁^{3/2}, τ = √D₃/D₂."""
    t = np.arange(len(points), dtype=float)
    fits = [np.polyfit(t, points[:, i], TRAJECTORY_ORDER) for i in range(points.shape[1])]
    derivative = np.array([[np.polyval(np.polyder(fit, d), t[-1]) for fit in fits] for d in (1, 2, 3)])
    gram = derivative @ derivative.T
    d1, d2, d3 = (np.linalg.det(gram[:i, :i]) for i in (1, 2, 3))
    return float(np.sqrt(max(d2, 0.0)) / d1**1.5), float(np.sqrt(max(d3, 0.0)) / d2)


def windows(curve: np.ndarray) -> np.ndarray:
    """Every run of TRAJECTORY_WINDOW consecutive points of ``curve`` [T, K] -> [T − W + 1, W, K]."""
    return np.stack([curve[i : i + TRAJECTORY_WINDOW] for i in range(len(curve) - TRAJECTORY_WINDOW + 1)])


def test_registered_as_context_metrics_that_need_the_trajectory():
    for name in NAMES:
        assert METRICS[name].kind == "context" and METRICS[name].needs == ("trajectory",)
        assert "Savitzky" in METRICS[name].function.__doc__ and "NaN" in METRICS[name].function.__doc__
    assert TRAJECTORY_WINDOW == 5 and TRAJECTORY_ORDER == 3 and TRAJECTORY_K == 4


def test_against_the_numpy_reference():
    rng = np.random.default_rng(0)
    points = np.cumsum(rng.normal(size=(200, TRAJECTORY_WINDOW, TRAJECTORY_K)), axis=1) + 5.0  # random walks: every case generic
    ours = trajectory_metrics(points)
    expected = np.array([reference(p) for p in points])
    assert not ours["trajectory_curvature"][1].any() and not ours["trajectory_torsion"][1].any()
    np.testing.assert_allclose(ours["trajectory_curvature"][0], expected[:, 0], rtol=1e-6)  # float32 output
    np.testing.assert_allclose(ours["trajectory_torsion"][0], expected[:, 1], rtol=1e-6)  # float32 output


@pytest.mark.parametrize("dimensions", [3, 4])
def test_a_helix_has_constant_curvature_and_torsion(dimensions):
    """(a cos ωk, a sin ωk, b ωk): κ = a/(a² + b²), τ = b/(a² + b²), the same at every window, in R³ and rotated
    into R⁴. The smoothing's cubic only approximates the circle: the error is O(ω²) (0.4% at ω = 0.05 rad a
    window), so the known answer is approached as ω shrinks, while constancy holds at any ω."""
    a, b = 2.0, 0.5
    errors = []
    for omega in (0.02, 0.01):
        k = np.arange(40, dtype=float)
        curve = np.stack([a * np.cos(omega * k), a * np.sin(omega * k), b * omega * k], axis=1) + 10.0
        if dimensions == 4:
            rotation, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))
            curve = np.concatenate([curve, np.full((len(k), 1), 3.0)], axis=1) @ rotation.T
        ours = trajectory_metrics(windows(curve))
        kappa, tau = ours["trajectory_curvature"][0], ours["trajectory_torsion"][0]
        assert np.ptp(kappa) <= 1e-5 * kappa.mean() and np.ptp(tau) <= 1e-4 * tau.mean()  # constant (float32 output)
        errors.append([abs(kappa.mean() / (a / (a**2 + b**2)) - 1), abs(tau.mean() / (b / (a**2 + b**2)) - 1)])
    errors = np.array(errors)
    assert (errors[1] < 1e-3).all() and (errors[1] < errors[0] / 3).all()  # halving ω quarters the error


def test_a_twisted_cubic_is_exact():
    """r(t) = (t, t², t³), sampled at t = t₀ − 1, …, t₀ in steps of 0.25, is a cubic in the window index, so
    the smoothing's fit is exact and κ, τ at t₀ are the closed forms (both invariant to the parameter's speed):
    κ = |r′×r″|/|r′|³ with r′ = (1, 2t, 3t²), r′×r″ = (6t², −6t, 2), and τ = det(r′, r″, r‴)/|r′×r″|² = 12/|r′×r″|²."""
    for end in (0.5, 1.0, 2.0):
        t = end + np.arange(-(TRAJECTORY_WINDOW - 1), 1) * 0.25
        ours = trajectory_metrics(np.stack([t, t**2, t**3], axis=1)[None])
        speed = np.array([1.0, 2 * end, 3 * end**2])
        cross = np.array([6 * end**2, -6 * end, 2.0])
        assert ours["trajectory_curvature"][0][0] == pytest.approx(np.linalg.norm(cross) / np.linalg.norm(speed) ** 3, rel=1e-6)
        assert ours["trajectory_torsion"][0][0] == pytest.approx(12.0 / (cross @ cross), rel=1e-6)


def test_plane_line_and_scale():
    """A circle of radius ρ: κ ≈ 1/ρ, τ = 0 (a plane curve); a straight line: κ = 0 and τ undefined (a guard);
    κ and τ scale as 1/σ."""
    k = np.arange(TRAJECTORY_WINDOW, dtype=float)
    circle = np.stack([3 * np.cos(0.01 * k), 3 * np.sin(0.01 * k), np.zeros_like(k), np.ones_like(k)], axis=1)
    ours = trajectory_metrics(circle[None])
    assert ours["trajectory_curvature"][0][0] == pytest.approx(1 / 3, rel=1e-3)  # O(ω²) smoothing error
    assert ours["trajectory_torsion"][0][0] < 1e-9
    line = np.outer(k, [1.0, -2.0, 0.5, 0.0]) + 7.0
    ours = trajectory_metrics(line[None])
    assert ours["trajectory_curvature"][0][0] < 1e-12 and not ours["trajectory_curvature"][1][0]
    assert np.isnan(ours["trajectory_torsion"][0][0]) and ours["trajectory_torsion"][1][0]
    points = np.cumsum(np.random.default_rng(2).normal(size=(5, TRAJECTORY_WINDOW, TRAJECTORY_K)), axis=1)
    base, scaled = trajectory_metrics(points), trajectory_metrics(10.0 * points)
    for name in NAMES:
        np.testing.assert_allclose(scaled[name][0], base[name][0] / 10.0, rtol=1e-6)


def test_edges_and_guards():
    """Standing still or a non-finite point: NaN and a guard hit; no trajectory yet (the window does not fit):
    NaN without one, as every metric whose needs are missing."""
    still = np.full((1, TRAJECTORY_WINDOW, TRAJECTORY_K), 2.0)
    broken = np.cumsum(np.ones((1, TRAJECTORY_WINDOW, TRAJECTORY_K)), axis=1)
    broken[0, 2, 1] = np.nan
    for points in (still, broken):
        for values, hits in trajectory_metrics(points).values():
            assert np.isnan(values[0]) and hits[0]
    missing = compute_metrics(Spectrum(values=torch.ones(3, 4, dtype=torch.float64), vectors=None), None, shifted=False, names=NAMES)
    for values, hits in missing.values():
        assert torch.isnan(values).all() and not hits.any()


def test_measure_gives_the_trajectory_of_the_windows_and_stores_its_spectra(quick_config, quick_data):
    """In ``measure``: the trajectory metrics are not measured before pass 3 (the first with 5 windows: the two
    context windows and passes 1-3) nor at the context window, and equal the reference on the stored spectra
    (the two context windows, then the passes) from there; spectra keep the top min(8, m) values."""
    torch.manual_seed(0)
    model = TransformerLM.from_config(quick_config).eval()
    events = draw_analysis_events(quick_config, quick_data.graph, 24)
    measured = measure(model, quick_data.graph, events, top_k=2, chunk_mb=0.05)  # 10 events a chunk
    key = spectrum_key("qkt", 0, 0)
    passes = measured.spectra[key]
    assert passes.shape == (24, int(events.r.max()), SPECTRA_K) and measured.context_spectra[key].shape == (
        24,
        CONTEXT_WINDOWS,
        SPECTRA_K,
    )
    assert (np.diff(passes, axis=-1)[np.isfinite(passes[..., 1:])] <= 0).all()  # descending singular values
    curve = np.concatenate([measured.context_spectra[key], passes], axis=1)[..., :TRAJECTORY_K].astype(np.float64)
    for name, column in (("trajectory_curvature", 0), ("trajectory_torsion", 1)):
        values = measured.metrics[f"{key}.{name}"]
        assert np.isnan(values[:, :2]).all() and np.isnan(measured.context[f"{key}.{name}"]).all()
        for event in range(0, 24, 5):
            for k in range(3, int(events.r[event]) + 1):
                points = curve[event, k - 1 + CONTEXT_WINDOWS - TRAJECTORY_WINDOW + 1 : k + CONTEXT_WINDOWS]
                assert values[event, k - 1] == pytest.approx(reference(points)[column], rel=2e-3), (name, event, k)
    exists = np.arange(passes.shape[1])[None, :] < events.r[:, None]
    for name in NAMES:  # guard hits: the NaNs of passes 3..r (passes 1-2 are not measured, later ones do not exist)
        nans = sum(int((np.isnan(measured.metrics[f"{t}.layer_0.head_0.{name}"]) & exists)[:, 2:].sum()) for t in ("qkt", "avwo"))
        assert measured.guard_hits[name] == nans


def test_spectra_file_round_trip_and_refusals(tmp_path):
    r = np.array([3, 2])
    passes = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2) + 1.0
    passes[1, 2] = np.nan  # event 1 has no pass 3
    context = np.ones((2, 2, 2), dtype=np.float32)
    huge = passes * 1e5  # beyond float16's range: kept as float32
    write_spectra(
        tmp_path,
        r,
        {"qkt.layer_0.head_0": passes, "avwo.layer_0.head_0": huge},
        {"qkt.layer_0.head_0": context, "avwo.layer_0.head_0": context},
    )
    arrays = read_spectra(tmp_path)
    assert int(arrays["schema_version"]) == SPECTRA_SCHEMA_VERSION and arrays["event_r"].tolist() == [3, 2]
    assert arrays["qkt.layer_0.head_0"].dtype == np.float16 and arrays["avwo.layer_0.head_0"].dtype == np.float32
    # lookback order: column j holds pass r − j
    assert arrays["qkt.layer_0.head_0"][0].tolist() == [[5.0, 6.0], [3.0, 4.0], [1.0, 2.0]]
    assert (
        arrays["qkt.layer_0.head_0"][1, :2].tolist() == [[9.0, 10.0], [7.0, 8.0]]
        and np.isnan(arrays["qkt.layer_0.head_0"][1, 2]).all()
    )
    assert np.isfinite(arrays["avwo.layer_0.head_0"][0]).all()
    # the Analysis object gives the trajectory back in time order: the context windows, then passes 1..r
    analysis = Analysis("a", tmp_path, None, {}, {})
    trajectory = analysis.spectrum_trajectory("qkt.layer_0.head_0")
    assert trajectory.shape == (2, 2 + 3, 2) and trajectory.dtype == np.float32
    assert np.array_equal(trajectory[:, 2:], passes, equal_nan=True) and np.array_equal(trajectory[:, :2], context)
    with pytest.raises(KeyError, match="no spectra 'qkt.layer_1.head_0'; it has avwo.layer_0.head_0, qkt.layer_0.head_0"):
        analysis.spectrum_trajectory("qkt.layer_1.head_0")
    write_npz(tmp_path / SPECTRA_FILE, {**arrays, "schema_version": np.array(SPECTRA_SCHEMA_VERSION + 1)})
    with pytest.raises(FileNotFoundError, match="schema_version 2, this version reads 1"):
        read_spectra(tmp_path)
    (tmp_path / SPECTRA_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="before spectrum trajectories were stored"):
        read_spectra(tmp_path)
