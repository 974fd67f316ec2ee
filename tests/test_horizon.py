"""horizon.json: the primary hypothesis, the exploratory family, the baselines — on synthetic
token_metrics with planted signals (known answers), and recomputed independently by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config

from dcsbm_transformer.analysis.files import Horizon, read_horizon, write_horizon
from dcsbm_transformer.analysis.stats.horizon import compute_horizon, primary_key
from dcsbm_transformer.analysis.stats.statistics import auroc_difference, holm, separation
from dcsbm_transformer.registration import RegistrationCheck, registration_payload

R, K_PLANTED, EVENTS, JUMPERS = 6, 3, 600, 3
PRIMARY = "qkt.layer_0.head_0.grassmannian_distance"
RISES = "avwo.layer_0.head_0.stable_rank"  # higher before violations at lookbacks 0..K_PLANTED
DROPS = "qkt.layer_0.head_0.spectral_entropy"  # lower before violations at every lookback, and in the input
NOISE = "avwo.layer_0.head_0.gap_2"
CONSTANT = "qkt.layer_0.head_0.gap_8"


def synthetic_arrays(seed: int = 0, *, primary_signal: float = 0.0, rare_r: int | None = None):
    """token_metrics-shaped arrays: EVENTS events of r = R over JUMPERS rules (plus, with ``rare_r``,
    a second stratum with too few violations), a violation rate that differs between rules."""
    rng = np.random.default_rng(seed)
    jumper = np.repeat(np.arange(JUMPERS), EVENTS // JUMPERS)
    rate = np.array([0.15, 0.3, 0.45])[jumper]
    violated = rng.random(EVENTS) < rate
    r = np.full(EVENTS, R)
    if rare_r is not None:
        r[jumper == 0] = rare_r
        violated[jumper == 0] = False
        violated[np.flatnonzero(jumper == 0)[:3]] = True
    passes = int(r.max())
    lookback = np.broadcast_to(np.arange(passes)[None, :], (EVENTS, passes))  # lookback order: column j is lookback j
    exists = lookback < r[:, None]  # j >= r: no such pass

    def metric(shift_at):  # N(0, 1) noise plus ``shift_at(j)`` on violations
        values = rng.normal(size=(EVENTS, passes)) + violated[:, None] * shift_at(lookback)
        return np.where(exists, values, np.nan).astype(np.float32)

    arrays = {
        PRIMARY: metric(lambda j: primary_signal * (j >= 1)),
        RISES: metric(lambda j: 3.0 * (j <= K_PLANTED)),
        DROPS: metric(lambda j: -2.0 * np.ones_like(j)),
        NOISE: metric(lambda j: 0.0 * j),
        CONSTANT: np.where(exists, 1.0, np.nan).astype(np.float32),
        "target_block_probability": metric(lambda j: -0.8 * (j <= 1)),
        "violated": violated,
        "event_jumper": jumper,
        "event_r": r,
    }
    for key in (PRIMARY, RISES, NOISE, CONSTANT):
        arrays[f"context.{key}"] = rng.normal(size=EVENTS).astype(np.float32)
    arrays[f"context.{DROPS}"] = (rng.normal(size=EVENTS) - 1.0 * violated).astype(np.float32)
    return arrays


def summary_for(arrays):
    return {
        "experiment_id": "synthetic",
        "exploratory": False,
        "exploratory_reason": None,
        "token_metrics_sha256": "0" * 64,
        "constant_metrics": [CONSTANT],
    }


CONFIG = tiny_config(analysis={"permutations": 999, "min_events": 20, "confirmatory_fraction": 0.0})  # every event explored
REGISTERED = RegistrationCheck(True, [], registration_payload(CONFIG))  # the run's registered analysis


def horizon_of(arrays, config=CONFIG, check=REGISTERED):
    return compute_horizon(arrays, config, summary_for(arrays), check=check)


@pytest.fixture(scope="module")
def horizon(tmp_path_factory):
    arrays = synthetic_arrays(primary_signal=1.2)
    payload = horizon_of(arrays)
    folder = tmp_path_factory.mktemp("horizon")
    write_horizon(folder, payload)  # validated against the schema before it is written
    return arrays, read_horizon(folder)


def test_planted_rise_gives_its_horizon_a_covering_ci_and_a_small_p(horizon):
    _, h = horizon
    entry = h["metrics"][RISES]["by_r"][str(R)]
    assert entry["status"] == "ok" and entry["direction"] == "higher before violations"
    assert entry["horizon"] == K_PLANTED and entry["confident_horizon"] == K_PLANTED and entry["horizon_lower"] == 0
    truth = 0.983  # P(N(3, 1) > N(0, 1)) = Phi(3 / sqrt 2)
    for j in range(1, K_PLANTED + 1):
        assert entry["ci_low"][j] < truth < entry["ci_high"][j]
    for j in range(K_PLANTED + 1, R):
        assert abs(entry["auroc"][j] - 0.5) < 0.1
    assert entry["p_value"] == pytest.approx(1 / 1000) and entry["significant"]


def test_a_metric_lower_before_violations_keeps_its_direction_and_its_own_horizon(horizon):
    _, h = horizon
    entry = h["metrics"][DROPS]["by_r"][str(R)]
    assert entry["direction"] == "lower before violations" and all(a < 0.5 for a in entry["auroc"])
    assert entry["horizon"] == 0  # the spec's horizon counts AUROC > threshold only
    # P(N(-2, 1) > N(0, 1)) = 0.079 at every lookback: its horizon in its own direction is the furthest j
    assert entry["horizon_lower"] == R - 1 and entry["confident_horizon_lower"] == R - 1
    assert entry["context_only"]["ci_high"] < 0.4  # and the signal was already in the input window


def test_noise_is_not_significant_and_constant_arrays_are_not_tested(horizon):
    _, h = horizon
    entry = h["metrics"][NOISE]["by_r"][str(R)]
    assert entry["horizon"] == 0 and entry["confident_horizon"] == 0 and not entry["significant"]
    assert h["constant"] == [CONSTANT] and CONSTANT not in h["metrics"]


def test_the_primary_is_tested_alone_one_sided_and_said_in_one_sentence(horizon):
    arrays, h = horizon
    primary = h["primary"]
    assert primary["key"] == primary_key(CONFIG) == PRIMARY and primary["direction"] == "higher"
    entry = primary["by_r"][str(R)]
    assert entry["alternative"] == "greater" and entry["p_adjusted"] == entry["p_value"] < 0.01
    assert primary["registered"] and primary["summary"].startswith("Registered hypothesis")
    assert f"AUROC {entry['auroc'][entry['best_j']]:.3f}" in primary["summary"] and "chosen after looking" in primary["summary"]
    assert PRIMARY not in h["top"][str(R)]  # not part of the exploratory family
    # one-sided: the same values negated give p near 1, not a "significant" drop
    flipped = dict(arrays, **{PRIMARY: -arrays[PRIMARY]})
    against = horizon_of(flipped)["primary"]["by_r"][str(R)]
    assert against["p_value"] > 0.5


def test_holm_runs_over_the_exploratory_family_of_each_r(horizon):
    _, h = horizon
    family = [k for k in h["metrics"] if k != PRIMARY]
    raw = np.array([h["metrics"][k]["by_r"][str(R)]["p_value"] for k in family])
    adjusted = [h["metrics"][k]["by_r"][str(R)]["p_adjusted"] for k in family]
    np.testing.assert_allclose(adjusted, holm(raw))
    assert h["top"][str(R)][0] in (RISES, DROPS)


def test_baselines_sit_in_the_same_tables(horizon):
    _, h = horizon
    entry = h["metrics"][RISES]["by_r"][str(R)]
    assert 0 < entry["shuffled_95"] < 0.15  # max over lookbacks of |AUROC - 0.5| under shuffled labels
    versus = entry["versus_behaviour"]
    assert versus["verdict"] == "better than the logits" and versus["j"] in versus["better_at"] and versus["ci_low"] > 0
    assert set(versus["better_at"]) <= set(range(1, K_PLANTED + 1))  # the band is above 0 only where the rise was planted
    behavioural = h["behavioural"]["by_r"][str(R)]
    assert behavioural["alternative"] == "less" and behavioural["auroc"][0] < 0.4 and behavioural["auroc"][1] < 0.4


def test_too_few_violations_in_a_stratum_is_insufficient_with_counts():
    arrays = synthetic_arrays(1, rare_r=4)
    h = horizon_of(arrays)
    rare = h["metrics"][RISES]["by_r"]["4"]
    assert rare["status"] == "insufficient" and rare["n_violations"] == 3 and rare["horizon"] is None
    assert rare["p_value"] is None and rare["significant"] is None
    assert "r = 4: insufficient data (3 violations" in h["primary"]["summary"]
    assert h["metrics"][RISES]["by_r"][str(R)]["status"] == "ok"
    Horizon.model_validate(h)


def test_paired_difference_of_a_predictor_with_itself_is_zero_and_matches_brute_force():
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.3
    g = rng.integers(0, 2, 300)
    a = rng.normal(size=300) + y
    b = rng.normal(size=300) + 0.3 * y
    same = auroc_difference(a, a, y, g)
    assert same["delta"][0] == 0 and same["var"][0] == pytest.approx(0, abs=1e-15)
    diff = auroc_difference(a, b, y, g)

    def brute(x):  # within-jumper pair counts, weighted by pairs
        wins = pairs = 0.0
        for s in (0, 1):
            v, u = x[(g == s) & y], x[(g == s) & ~y]
            wins += (v[:, None] > u[None, :]).sum() + 0.5 * (v[:, None] == u[None, :]).sum()
            pairs += v.size * u.size
        return wins / pairs

    assert diff["delta"][0] == pytest.approx(brute(a) - brute(b), abs=1e-12)
    assert diff["ci_low"][0] < diff["delta"][0] < diff["ci_high"][0]


def test_shared_shuffles_give_each_metric_the_p_it_would_get_alone():
    arrays = synthetic_arrays(2)
    h = horizon_of(arrays)
    from dcsbm_transformer.reproducibility import numpy_rng

    alone = separation(
        arrays[NOISE],
        arrays["violated"],
        arrays["event_jumper"],
        arrays["event_r"],
        permutations=999,
        rng=numpy_rng(CONFIG.seed, CONFIG.analysis.stream, "permutations"),
    )[R]
    assert alone.p_value == h["metrics"][NOISE]["by_r"][str(R)]["p_value"]
