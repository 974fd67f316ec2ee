"""Training windows (training/windows.py): back-to-back by default, overlapping with
``training.window_stride``; with a stride of at most w + 1 - r every rule lies whole in a window
of every epoch, and a config that leaves the stride unset keeps the id it had before the key
existed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config

from dcsbm_transformer.config import ExperimentConfig
from dcsbm_transformer.training.windows import epoch_windows, steps_per_epoch, windows_per_walk


def test_default_windows_are_back_to_back_from_one_phase():
    walk, start = epoch_windows(50, 96, 31, seed=3, epoch=1)
    assert windows_per_walk(96, 31) == 3 and len(walk) == 150
    for w in range(50):
        starts = np.sort(start[walk == w].numpy())
        assert np.all(np.diff(starts) == 32) and starts[0] >= 0 and starts[-1] + 32 <= 96


@pytest.mark.parametrize("stride", [1, 4, 7, 32])
def test_strided_windows_stay_inside_the_walk_and_start_every_stride(stride):
    walks, length, w = 40, 96, 31
    walk, start = epoch_windows(walks, length, w, seed=5, epoch=2, stride=stride)
    k = windows_per_walk(length, w, stride)
    assert k == (length - (w + 1)) // stride + 1 and len(walk) == walks * k
    assert steps_per_epoch(walks, length, w, 64, stride) == -(-walks * k // 64)
    for v in range(walks):
        starts = np.sort(start[walk == v].numpy())
        assert len(starts) == k and np.all(np.diff(starts) == stride)
        assert starts[0] >= 0 and starts[-1] + w + 1 <= length


def test_a_stride_of_at_most_w_plus_1_minus_r_holds_every_rule_whole_every_epoch():
    """A jumper at walk position p with jump r is learnable from a window [t, t + w] when
    t <= p and p + r <= t + w: with stride s <= w + 1 - r some window of every walk covers every
    p that has room; with back-to-back windows (s = w + 1) many do not."""
    length, w, r = 96, 31, 28
    positions = np.arange(length - r)  # every jumper position whose deadline is inside the walk

    def covered_share(stride):
        walk, start = epoch_windows(30, length, w, seed=1, epoch=4, stride=stride)
        starts = start.numpy()[walk.numpy() == 0]
        first_start, last_start = starts.min(), starts.max()
        inside = (positions >= first_start) & (positions + r <= last_start + w)  # positions the epoch's windows span
        whole = ((starts[None, :] <= positions[:, None]) & (positions[:, None] + r <= starts[None, :] + w)).any(axis=1)
        return whole[inside].mean()

    assert covered_share(w + 1 - r) == 1.0
    assert covered_share(None) < 0.25  # (w + 1 - r)/(w + 1) = 4/32 of the alignments


def test_strided_epochs_are_reproducible_and_differ_by_epoch():
    a = epoch_windows(20, 64, 15, seed=9, epoch=3, stride=5)
    b = epoch_windows(20, 64, 15, seed=9, epoch=3, stride=5)
    c = epoch_windows(20, 64, 15, seed=9, epoch=4, stride=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[1], c[1])


def test_the_unset_stride_keeps_every_earlier_run_id_and_a_set_one_changes_it():
    config = ExperimentConfig()
    payload = config.to_dict()
    payload["training"]["window_stride"] = 4
    strided = ExperimentConfig.model_validate(payload)
    assert strided.config_hash != config.config_hash and strided.data_hash == config.data_hash
    # the id of the default config was fixed before window_stride existed (tests/test_config.py pins ids too)
    without_key = {key: value for key, value in config.to_dict().items() if key != "analysis"}
    del without_key["training"]["window_stride"]
    from dcsbm_transformer.config import DATA_FORMAT_VERSION, _sha256_of

    assert config.config_hash == _sha256_of({"format": DATA_FORMAT_VERSION, **without_key})


def test_a_stride_wider_than_a_window_is_a_usage_error(tmp_path):
    from conftest import REPO

    done = run_cli(
        "run", "--config", str(REPO / "configs" / "quick.json"), "--set", "training.window_stride=40",
        "--results-dir", str(tmp_path / "results"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "training.window_stride: 40 is more than w + 1 = 17" in done.stderr
    assert not (tmp_path / "results").exists()


def test_training_with_a_stride_runs_more_steps_per_epoch(tmp_path):
    from dcsbm_transformer.experiment import RunOptions, run_experiment

    config = tiny_config(gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, training={"max_epochs": 1, "window_stride": 4})
    plain = tiny_config(gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, training={"max_epochs": 1})
    result = run_experiment(config, RunOptions(results_root=tmp_path, cache_root=tmp_path / "c"), echo=lambda _: None)
    w, length = config.model.context_window, config.walks.walk_length
    expected = steps_per_epoch(config.walks.train_walks, length, w, config.training.batch_size, 4)
    assert result["training"]["steps_per_epoch"] == expected
    assert expected > steps_per_epoch(plain.walks.train_walks, length, w, plain.training.batch_size)
