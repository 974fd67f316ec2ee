"""Files: reproducible bytes, atomic writes, a cache that never trusts a damaged file, RNG state."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config

from dcsbm_transformer import cli
from dcsbm_transformer.data.dataset import (
    DATA_FILES,
    DataIntegrityError,
    cache_directory,
    load_or_build_data,
    read_data,
)
from dcsbm_transformer.reproducibility import capture_rng_state, restore_rng_state, torch_generator
from dcsbm_transformer.storage import atomic_write_bytes, read_npz, remove_stale_temporaries


def write_config(path, config):
    path.write_text(config.to_json())
    return path


def test_generate_twice_gives_byte_identical_files(tmp_path):
    config_file = write_config(tmp_path / "tiny.json", tiny_config())
    for out, cache in (("a", "cache-a"), ("b", "cache-b")):  # separate caches: really generated twice
        result = run_cli("generate", "--config", str(config_file), "--out", out, "--cache-dir", cache, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    for name in DATA_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    graph = read_npz(tmp_path / "a" / "graph.npz")
    assert {"indptr", "indices", "block", "theta", "jumper_vertex", "jumper_target_block", "jumper_r"} <= set(graph)
    train = read_npz(tmp_path / "a" / "train.npz")
    assert train["walks"].dtype == np.int32 and train["walks"].shape == (3200, 24)
    assert {"event_walk", "event_step", "event_vertex", "event_target_block", "event_deadline"} <= set(train)


def test_generate_with_a_bad_config_exits_2_lists_problems_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"graph": {"n": 10, "K": 3, "p_in": 3.0}, "training": {"lr": -1}}))
    result = run_cli("generate", "--config", str(bad), "--out", "out", "--cache-dir", "cache", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for field in ("graph.K", "graph.p_in", "training.lr"):
        assert field in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    missing = run_cli("generate", "--config", "nope.json", "--out", "out", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.json" in missing.stderr and "Traceback" not in missing.stderr


def test_generate_into_a_path_under_a_file_exits_2_before_generating(tmp_path):
    config_file = write_config(tmp_path / "tiny.json", tiny_config())
    (tmp_path / "taken").write_text("a file, not a folder")
    result = run_cli("generate", "--config", str(config_file), "--out", "taken/data", "--cache-dir", "cache", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--out taken/data" in result.stderr and "taken exists and is not a directory" in result.stderr
    assert (tmp_path / "taken").read_text() == "a file, not a folder" and not (tmp_path / "cache").exists()


def test_generate_that_cannot_write_exits_1_naming_the_file(tmp_path, monkeypatch, capsys):
    def disk_full(data, directory, config):
        raise OSError(28, "No space left on device", str(Path(directory) / "train.npz"))

    monkeypatch.setattr(cli, "write_data", disk_full)
    config_file = write_config(tmp_path / "tiny.json", tiny_config())
    status = cli.main(
        ["generate", "--config", str(config_file), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    )
    error = capsys.readouterr().err
    assert status == 1 and "No space left on device" in error and str(tmp_path / "out" / "train.npz") in error
    assert not (tmp_path / "out" / "config.json").exists()


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete", "manifest"])
def test_damaged_cache_is_detected_and_regenerated(tmp_path, damage):
    config = tiny_config()
    original = load_or_build_data(config, tmp_path)
    directory = cache_directory(config, tmp_path)
    target = directory / "train.npz"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "alter":
        raw = bytearray(target.read_bytes())
        raw[-10] ^= 0xFF  # one flipped byte inside the walks array: still a valid zip
        target.write_bytes(bytes(raw))
    elif damage == "delete":
        target.unlink()
    else:
        (directory / "manifest.json").write_text("{not json")
    with pytest.raises(DataIntegrityError):
        read_data(directory, config)
    rebuilt = load_or_build_data(config, tmp_path)
    assert np.array_equal(rebuilt.train.walks, original.train.walks)
    read_data(directory, config)  # intact again


def test_cache_of_another_config_is_not_used(tmp_path):
    config = tiny_config()
    load_or_build_data(config, tmp_path)
    other = tiny_config(seed=4)
    with pytest.raises(DataIntegrityError, match="another config"):
        read_data(cache_directory(config, tmp_path), other)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def failing_writer(handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    from dcsbm_transformer.storage import atomic_write

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, failing_writer)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".result.json.tmp-1234").write_text("half")
    (tmp_path / "result.json").write_text("{}")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".result.json.tmp-1234"]
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = capture_rng_state()
    path = tmp_path / "rng.pt"
    torch.save(state, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.rand(10), np.random.rand(10), random.random()  # move every stream on
    restore_rng_state(torch.load(path, weights_only=True))
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_named_streams_are_reproducible_and_distinct():
    a = torch.rand(4, generator=torch_generator(5, "epoch", 1))
    assert torch.equal(a, torch.rand(4, generator=torch_generator(5, "epoch", 1)))
    assert not torch.equal(a, torch.rand(4, generator=torch_generator(5, "epoch", 2)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU side of a GPU-to-CPU move")
def test_rng_state_from_a_gpu_machine_restores_on_a_cpu_one():
    torch.manual_seed(5)
    state = capture_rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as written on a machine with one GPU
    expected = torch.rand(2)
    restore_rng_state(state)  # CUDA states are skipped where there is no CUDA
    assert torch.equal(torch.rand(2), expected)
