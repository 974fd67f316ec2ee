"""Survive kills, broken files and hostile input with nothing lost — each fault done for real.

The kill tests run ``dcsbm run`` in a subprocess, stop it at an exact point through the
DCSBM_TEST_HOOKS pause hooks (mid-epoch, during gate evaluation, with a checkpoint half
written), SIGKILL it, run the same command again and compare with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from dcsbm_transformer.experiment import CHECKPOINT_DIR, RunOptions, run_directory, run_experiment
from dcsbm_transformer.training.checkpoint import CheckpointWriteError
from dcsbm_transformer.training.trainer import TrainingHooks

CONFIG = tiny_config(gate={"edge_threshold": 1.0, "rule_threshold": 1.0}, model={"dropout": 0.1}, training={"max_epochs": 3})


def launch(root: Path, config_file: Path, hooks: dict | None = None, *extra: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("DCSBM_TEST_HOOKS", None)
    if hooks:
        env["DCSBM_TEST_HOOKS"] = json.dumps({"signal_file": str(root / "paused"), **hooks})
    command = [
        sys.executable,
        "-m",
        "dcsbm_transformer.cli",
        "run",
        "--config",
        str(config_file),
        "--results-dir",
        str(root / "results"),
        "--cache-dir",
        str(root / "cache"),
        "--no-analyze",
        *extra,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def kill_when_paused(root: Path, process: subprocess.Popen, timeout: float = 300) -> str:
    signal_file = root / "paused"
    deadline = time.monotonic() + timeout
    while not signal_file.exists():
        if process.poll() is not None:
            raise AssertionError(f"process ended before pausing: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("process never reached its pause point")
        time.sleep(0.05)
    where = signal_file.read_text()
    process.kill()  # SIGKILL: no cleanup handlers run
    process.communicate()
    signal_file.unlink()
    return where


def pids(root: Path) -> list[str]:
    return [name.rsplit("-", 1)[1] for name in (p.name for p in temporaries(run_folder(root)))]


def run_folder(root: Path, config=CONFIG) -> Path:
    return run_directory(config, root / "results")


def outcome(root: Path, config=CONFIG) -> tuple[dict, dict]:
    folder = run_folder(root, config)
    result = json.loads((folder / "result.json").read_text())
    newest = folder / CHECKPOINT_DIR / f"checkpoint_epoch_{result['training']['epochs_trained']:04d}.pt"
    # everything but the clock: the timings block and the evaluation's seconds (README: what survives what)
    comparable = {key: value for key, value in result.items() if key != "timings"}
    comparable["evaluation"] = {k: v for k, v in result["evaluation"].items() if k != "seconds"}
    return comparable, torch.load(newest, weights_only=True)["model"]


def assert_same_run(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    assert a[0] == b[0]
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of CONFIG, and a config file for the subprocess runs."""
    root = tmp_path_factory.mktemp("reference")
    config_file = root / "config.json"
    config_file.write_text(CONFIG.to_json())
    done = finish(launch(root, config_file))
    assert done.returncode == 0, done.stderr
    return config_file, outcome(root), root


def fresh_root(tmp_path: Path, reference) -> Path:
    """A new results root sharing the reference's data cache (the data are not what is tested)."""
    shutil.copytree(reference[2] / "cache", tmp_path / "cache")
    return tmp_path


def test_killed_anywhere_the_rerun_finishes_identically(tmp_path, reference):
    config_file, expected, _ = reference
    root = fresh_root(tmp_path, reference)
    pauses = [
        {"pause_at_step": 150},  # in the middle of epoch 2
        {"pause_at_evaluation": 2},  # epoch 2 trained, gate evaluation under way
        {"pause_at_checkpoint_commit": 2},  # epoch 2's checkpoint in a temp file, not yet renamed
        {"pause_at_step": 250},  # in the middle of epoch 3
    ]
    for pause in pauses:
        kill_when_paused(root, launch(root, config_file, pause))
        if "pause_at_checkpoint_commit" in pause:  # killed mid-write: the temp file is there...
            assert [p.name for p in temporaries(run_folder(root))] == [f".checkpoint_epoch_0002.pt.tmp-{p}" for p in pids(root)]
    done = finish(launch(root, config_file))
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stdout
    assert temporaries(run_folder(root)) == []  # ...but the next run clears it
    assert_same_run(outcome(root), expected)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, reference):
    """A run killed during epoch 3's evaluation: checkpoints of epochs 1 and 2 on disk."""
    config_file = reference[0]
    root = tmp_path_factory.mktemp("interrupted")
    shutil.copytree(reference[2] / "cache", root / "cache")
    kill_when_paused(root, launch(root, config_file, {"pause_at_evaluation": 3}))
    names = sorted(p.name for p in (run_folder(root) / CHECKPOINT_DIR).iterdir())
    assert names == ["checkpoint_epoch_0001.pt", "checkpoint_epoch_0002.pt"]
    return root


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    elif how == "zero-length":
        path.write_bytes(b"")
    elif how == "random-bytes":
        path.write_bytes(os.urandom(4096))
    elif how == "other-config":
        state = torch.load(path, weights_only=True)
        state["config_hash"] = tiny_config(seed=99).config_hash
        torch.save(state, path)


@pytest.mark.parametrize("how", ["truncated", "zero-length", "random-bytes", "other-config"])
def test_broken_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, reference, interrupted, how):
    config_file, expected, _ = reference
    root = tmp_path / "run"
    shutil.copytree(interrupted, root)
    checkpoints = run_folder(root) / CHECKPOINT_DIR
    damage(checkpoints / "checkpoint_epoch_0002.pt", how)
    good = (checkpoints / "checkpoint_epoch_0001.pt").read_bytes()

    process = launch(root, config_file, {"pause_at_step": 101})  # stop right after resuming
    kill_when_paused(root, process)
    assert (checkpoints / "checkpoint_epoch_0001.pt").read_bytes() == good  # the good one is untouched

    done = finish(launch(root, config_file))
    assert done.returncode == 0, done.stderr
    assert "checkpoint_epoch_0002.pt" in done.stdout and "resuming" in done.stdout
    reason = {
        "truncated": "cannot be loaded",
        "zero-length": "cannot be loaded",
        "random-bytes": "cannot be loaded",
        "other-config": "different config",
    }[how]
    assert reason in done.stdout
    assert_same_run(outcome(root), expected)


def test_all_checkpoints_broken_is_an_error_that_deletes_nothing(tmp_path, reference, interrupted):
    config_file = reference[0]
    root = tmp_path / "run"
    shutil.copytree(interrupted, root)
    checkpoints = run_folder(root) / CHECKPOINT_DIR
    for path in checkpoints.iterdir():
        damage(path, "random-bytes")
    before = {p.name: p.read_bytes() for p in checkpoints.iterdir()}
    done = finish(launch(root, config_file))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "none of the 2 checkpoints" in done.stderr
    assert {p.name: p.read_bytes() for p in checkpoints.iterdir()} == before


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("alone", [False, True])
def test_hostile_checkpoint_is_refused_without_running_its_payload(tmp_path, reference, interrupted, alone):
    config_file, expected, _ = reference
    root = tmp_path / "run"
    shutil.copytree(interrupted, root)
    checkpoints = run_folder(root) / CHECKPOINT_DIR
    if alone:
        for path in checkpoints.iterdir():
            path.unlink()
    marker = tmp_path / "payload-ran"
    torch.save({"model": Payload(marker)}, checkpoints / "checkpoint_epoch_0009.pt")
    done = finish(launch(root, config_file))
    assert not marker.exists()
    assert "checkpoint_epoch_0009.pt" in done.stdout + done.stderr
    if alone:
        assert done.returncode == 1 and "none of the 1 checkpoints" in done.stderr
        assert (checkpoints / "checkpoint_epoch_0009.pt").exists()
    else:
        assert done.returncode == 0, done.stderr
        assert_same_run(outcome(root), expected)


@pytest.mark.parametrize(
    "content, args, expected",
    [
        ('{"graph": {"n": 64,,}}', [], "not valid JSON"),
        ('{"graph": {"n": "64"}, "training": {"lr": "fast"}}', [], "graph.n"),
        ('{"graph": {"n": 64, "wings": 2}}', [], "graph.wings"),
        ('{"graph": {"p_in": 1.5}, "gate": {"rule_threshold": 2}}', [], "gate.rule_threshold"),
        (None, [], "config file not found"),
        ("{}", ["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
        ("{}", ["--precision", "fp8"], "precision"),
    ],
)
def test_bad_config_or_arguments_exit_2_and_create_nothing(tmp_path, content, args, expected):
    config_file = tmp_path / "config.json"
    if content is not None:
        config_file.write_text(content)
    done = finish(launch(tmp_path, config_file, None, *args))
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()
    if "p_in" in content if content else False:
        assert "graph.p_in" in done.stderr  # every problem, in one message


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, reference):
    root = fresh_root(tmp_path, reference)

    def poison(trainer, step):
        if step == 150:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    options = RunOptions(results_root=root / "results", cache_root=root / "cache")
    result = run_experiment(CONFIG, options, hooks=TrainingHooks(after_step=poison), echo=lambda _: None)
    training = result["training"]
    assert result["status"] == "finished" and not training["gate_passed"] and training["excluded_from_analysis"]
    assert "training loss became nan" in training["failure_reason"] and "epoch 2" in training["failure_reason"]
    assert training["epochs_trained"] == 1 and len(result["curves"]["train_loss"]) == 100
    names = sorted(p.name for p in (run_folder(root) / CHECKPOINT_DIR).iterdir())
    assert names == ["checkpoint_epoch_0001.pt"]
    state = torch.load(run_folder(root) / CHECKPOINT_DIR / names[0], weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values())


def test_disk_full_during_a_checkpoint_keeps_everything_already_written(tmp_path, reference):
    _, expected, _ = reference
    root = fresh_root(tmp_path, reference)
    folder = run_folder(root)
    options = RunOptions(results_root=root / "results", cache_root=root / "cache")
    snapshot = {}

    def full_disk(path):
        if path.name == "checkpoint_epoch_0002.pt":
            snapshot.update({p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file() and ".tmp-" not in p.name})
            raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointWriteError, match="No space left on device.*re-run the same command"):
        run_experiment(CONFIG, options, hooks=TrainingHooks(before_checkpoint_commit=full_disk), echo=lambda _: None)
    assert {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"} == {
        k: v for k, v in snapshot.items() if k != ".lock"
    }
    assert temporaries(folder) == []
    assert json.loads((folder / "result.json").read_text())["training"]["epochs_trained"] == 1
    run_experiment(CONFIG, options, echo=lambda _: None)  # space freed: resumes and finishes
    assert_same_run(outcome(root), expected)


def test_a_second_run_of_the_same_config_is_refused_while_the_first_lives(tmp_path, reference):
    config_file, expected, _ = reference
    root = fresh_root(tmp_path, reference)
    first = launch(root, config_file, {"pause_at_step": 50})
    deadline = time.monotonic() + 300
    while not (root / "paused").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = finish(launch(root, config_file))
    assert second.returncode == 1
    assert f"in use by process {first.pid}" in second.stderr and "Traceback" not in second.stderr
    restart = finish(launch(root, config_file, None, "--restart"))  # nor set aside under its feet
    assert restart.returncode == 1 and f"in use by process {first.pid}" in restart.stderr
    assert run_folder(root).is_dir() and not list((root / "results").glob("*.restarted-*"))
    first.kill()
    first.communicate()
    (root / "paused").unlink()
    third = finish(launch(root, config_file))  # the dead owner's lock is stale: taken over
    assert third.returncode == 0, third.stderr
    assert_same_run(outcome(root), expected)
