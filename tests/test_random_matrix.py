"""The random-matrix reference (analysis.stats.random_matrix): the Marchenko–Pastur law as written, pure
noise flagged at the stated rate α, a planted rank-one spike above the BBP threshold flagged, one below
it not; and the file written from a model, reused when current, shown in the report's section."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from dcsbm_transformer.analysis.report.random_matrix import random_matrix_section
from dcsbm_transformer.analysis.stats.random_matrix import (
    ALPHA,
    RANDOM_MATRIX_FILE,
    mp_edges,
    mp_singular_density,
    random_matrix_for_run,
    read_random_matrix,
    reference_of,
)
from dcsbm_transformer.model import TransformerLM


@pytest.mark.parametrize("shape", [(16, 16), (16, 64), (40, 10)])
def test_the_mp_density_integrates_to_one_on_its_bulk(shape):
    low, high = mp_edges(*shape)
    assert high == pytest.approx(np.sqrt(max(shape)) * (1 + np.sqrt(min(shape) / max(shape))))
    assert quad(lambda s: mp_singular_density(np.array([s]), *shape)[0], low, high, limit=200)[0] == pytest.approx(1, abs=1e-6)
    assert mp_singular_density(np.array([low * 0.9, high * 1.1]), *shape).tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("shape", "causal"), [((16, 16), True), ((16, 64), False)])
def test_pure_noise_is_flagged_at_the_stated_rate_and_its_variance_is_recovered(shape, causal):
    rng = np.random.default_rng(7)
    n = 600
    noise = rng.normal(0.0, 1.7, (n, *shape))
    if causal:
        noise = np.tril(noise)
    row = reference_of(noise, causal=causal, rank=min(shape), seed=11)
    # P(a noise matrix is flagged) = alpha; 3 binomial standard errors plus the null quantile's own MC error
    assert row["flagged_matrices"] / n <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / n) + 0.01
    assert row["flagged_matrices"] / n >= ALPHA - 3 * np.sqrt(ALPHA * (1 - ALPHA) / n) - 0.01  # not conservative to nothing
    assert row["sigma_fit"]["median"] == pytest.approx(1.7, rel=0.03)


def test_a_rank_one_spike_above_the_bbp_threshold_is_flagged_and_one_below_is_not():
    rng = np.random.default_rng(3)
    n, size = 200, 32
    u = rng.normal(size=(n, size, 1))
    v = rng.normal(size=(n, 1, size))
    spike = (u / np.linalg.norm(u, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=2, keepdims=True))
    noise = rng.normal(size=(n, size, size))
    above = reference_of(noise + 3.0 * np.sqrt(size) * spike, causal=False, rank=size, seed=5)  # θ = 3 σ√N > σ√N
    below = reference_of(noise + 0.5 * np.sqrt(size) * spike, causal=False, rank=size, seed=5)  # θ = 0.5 σ√N: inside the bulk
    assert above["flagged_by_index"][0] >= 0.97 * n and above["flagged_by_index"][1] <= 0.1 * n  # s₁ stands out, s₂ does not
    assert below["flagged_matrices"] <= (ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / n) + 0.02) * n


def test_the_file_is_written_from_a_model_reused_and_drawn(tmp_path):
    model = TransformerLM(20, 8, 16, 2, 2, generator=torch.Generator().manual_seed(0)).eval()
    tokens = np.random.default_rng(0).integers(0, 20, (30, 12)).astype(np.int32)
    np.savez(tmp_path / "token_metrics.npz", tokens=tokens)
    path = random_matrix_for_run(tmp_path, model, seed=1, echo=lambda _: None)
    written = read_random_matrix(tmp_path)
    assert path.name == RANDOM_MATRIX_FILE and written is not None
    assert [(r["target"], r["layer"], r["head"]) for r in written["rows"]] == [
        (t, layer, head) for t in ("qkt", "avwo") for layer in range(2) for head in range(2)
    ]
    assert {(r["rows"], r["cols"], r["rank_used"]) for r in written["rows"]} == {(8, 8, 8), (8, 16, 8)}
    mtime = path.stat().st_mtime_ns
    random_matrix_for_run(tmp_path, model, seed=1, echo=lambda _: None)
    assert path.stat().st_mtime_ns == mtime  # current: reused
    section = random_matrix_section(tmp_path)
    assert len(section["rows"]) == 8 and (tmp_path / "figures" / "random_matrix.png").is_file()
    (tmp_path / RANDOM_MATRIX_FILE).write_text('{"schema_version": 99}')
    assert read_random_matrix(tmp_path) is None and random_matrix_section(tmp_path) is None  # another schema: not misread
