"""``dcsbm sweep --executor skypilot`` (sweep/cloud.py, issue 28) without a cloud: the task
definitions SkyPilot would receive, validated by SkyPilot's own objects and schema when the
optional extra is installed (skipped otherwise); the run script's recovery after a preemption
(killed mid-training, its machine's folder lost, restored from the "bucket" and resumed from the
checkpoint by our resume); the executor end to end through a stand-in ``sky`` command that runs
each task on this machine; and the CLI's usage errors. Not exercised: a real launch, a real
preemption, a bucket mount, the cloud CLIs that copy results back.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dcsbm_transformer.sweep.cloud as cloud
from dcsbm_transformer.cli import main
from dcsbm_transformer.sweep import SweepSettings, run_sweep, sweep_from_dict
from dcsbm_transformer.sweep.cloud import RUN_SCRIPT, CloudError, CloudSettings, sync_tree, task_config, write_yaml

TINY = {
    "seed": 3,
    "graph": {"n": 32, "K": 2, "p_in": 0.9, "p_out": 0.2, "jumpers_per_block": 1, "jump_scales": [0.75]},
    "walks": {"walk_length": 24, "train_walks": 3200, "eval_walks": 200},
    "model": {"context_window": 8, "d_model": 16, "n_layers": 1, "n_heads": 1},
    "training": {"batch_size": 64, "max_epochs": 2, "lr": 3e-3},
    "gate": {"eval_sequences": 64, "rule_threshold": 1.0},  # never passes: both epochs are trained
}
EXPERIMENT = "dcsbm-n32-K2-w8-r6-L1-d16-s3-0123456789"
BIN = str(Path(sys.executable).parent)  # dcsbm and python of this environment, for the run script


def _task(tmp_path: Path, **settings) -> dict:
    config = tmp_path / "point.json"
    config.write_text(json.dumps(TINY))
    return task_config(EXPERIMENT, config, CloudSettings(bucket="dcsbm-results", **settings), analyze=False)


def test_the_task_definitions_are_valid_skypilot_tasks(tmp_path):
    sky = pytest.importorskip("sky", reason="SkyPilot (the optional [cloud] extra) is not installed")
    raw = _task(tmp_path, cloud="runpod")
    task = sky.Task.from_yaml_config(copy.deepcopy(raw))  # it consumes the dict it is given
    (resources,) = list(task.resources)
    assert isinstance(resources, sky.Resources)
    assert resources.accelerators == {"RTX4090": 1} and resources.use_spot and str(resources.cloud) == "RunPod"
    assert resources.job_recovery == {"strategy": "FAILOVER", "max_restarts_on_errors": 3}
    assert resources.autostop_config.enabled and resources.autostop_config.down and resources.autostop_config.idle_minutes == 5
    storage = task.storage_mounts["/results"]
    assert storage.name == "dcsbm-results" and storage.mode == sky.StorageMode.MOUNT_CACHED
    assert task.file_mounts[f"/dcsbm-config/{EXPERIMENT}.json"] == str((tmp_path / "point.json").absolute())
    assert task.run == RUN_SCRIPT and task.setup == "pip install ."
    assert task.envs["DCSBM_ARGS"] == "--device cuda --precision fp32 --no-analyze" and task.envs["DCSBM_ID"] == EXPERIMENT
    # the file the executor writes reads back as the same task
    write_yaml(raw, tmp_path / "task.yaml")
    (read_back,) = list(sky.Task.from_yaml(str(tmp_path / "task.yaml")).resources)
    assert read_back.to_yaml_config() == resources.to_yaml_config()
    # on-demand, another GPU: still valid; and SkyPilot's schema does refuse a wrong definition
    (other,) = list(sky.Task.from_yaml_config(_task(tmp_path, use_spot=False, accelerator="RTX3090:1")).resources)
    assert not other.use_spot and other.accelerators == {"RTX3090": 1}
    broken = _task(tmp_path)
    broken["resources"]["autostop"] = {"idle": 5}
    with pytest.raises(Exception, match="autostop"):
        sky.Task.from_yaml_config(broken)


def test_a_task_needs_a_bucket_and_copying_back_needs_a_known_store(tmp_path):
    with pytest.raises(CloudError, match="--cloud-bucket"):
        task_config(EXPERIMENT, tmp_path / "x.json", CloudSettings())
    with pytest.raises(CloudError, match="--cloud-sync-command"):
        cloud.sync_command(CloudSettings(bucket="b", store="azure"), EXPERIMENT, tmp_path)
    assert cloud.sync_command(CloudSettings(bucket="b"), "id", Path("/r/id")) == ["aws", "s3", "sync", "s3://b/id", "/r/id"]


def test_sync_copies_new_and_changed_files_but_no_temporaries(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    (source / "checkpoints").mkdir(parents=True)
    (source / "result.json").write_text("1")
    (source / "checkpoints" / "checkpoint_epoch_1.pt").write_bytes(b"x" * 10)
    (source / "checkpoints" / "x.pt.tmp-123").write_bytes(b"half")
    (source / ".lock").write_text("")
    assert sync_tree(source, target) == 2 and sync_tree(source, target) == 0
    assert sorted(p.name for p in target.rglob("*") if p.is_file()) == ["checkpoint_epoch_1.pt", "result.json"]
    (source / "result.json").write_text("22")
    assert sync_tree(source, target) == 1 and (target / "result.json").read_text() == "22"
    assert sync_tree(tmp_path / "missing", target) == 0


def _script_env(tmp_path: Path, config: Path, bucket: Path, machine: Path, experiment_id: str) -> dict:
    return {
        **os.environ,
        "PATH": BIN + os.pathsep + os.environ["PATH"],
        "DCSBM_LOCAL": str(machine),
        "DCSBM_BUCKET": str(bucket),
        "DCSBM_ID": experiment_id,
        "DCSBM_CONFIG": str(config),
        "DCSBM_ARGS": "--device cpu --no-analyze --no-mechanism",
        "DCSBM_SYNC_SECONDS": "1",
        "OMP_NUM_THREADS": "1",
    }


def test_the_run_script_resumes_a_preempted_point_from_the_bucket(tmp_path):
    from dcsbm_transformer.config import config_from_dict

    config = tmp_path / "point.json"
    config.write_text(json.dumps(TINY))
    experiment_id = config_from_dict(TINY).experiment_id
    bucket, machine = tmp_path / "bucket", tmp_path / "machine-1"
    signal_file = tmp_path / "paused"
    env = _script_env(tmp_path, config, bucket, machine, experiment_id)
    env["DCSBM_TEST_HOOKS"] = json.dumps({"pause_at_step": 150, "signal_file": str(signal_file)})  # mid epoch 2
    first = subprocess.Popen(
        ["bash", "-c", RUN_SCRIPT], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        copied = bucket / experiment_id / "checkpoints"
        while not (signal_file.exists() and any(copied.glob("checkpoint_epoch_0001.pt"))):
            assert time.monotonic() < deadline and first.poll() is None, (
                first.stdout.read().decode() if first.poll() is not None else ""
            )
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the spot machine is taken away
        first.wait()
    # a new machine: nothing local, the bucket's copy is all there is
    env = _script_env(tmp_path, config, bucket, tmp_path / "machine-2", experiment_id)
    second = subprocess.run(["bash", "-c", RUN_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"resuming {experiment_id} from checkpoint_epoch_0001.pt" in second.stdout + second.stderr
    result = json.loads((bucket / experiment_id / "result.json").read_text())
    assert result["status"] == "finished" and result["training"]["epochs_trained"] == 2


STAND_IN_SKY = """#!{python}
# A stand-in for SkyPilot's `sky` command: `sky jobs launch --yes --name N TASK.yaml` runs the
# task's run script on this machine (the bucket is a folder, file mounts are the local files).
import json, os, subprocess, sys
import yaml
args = sys.argv[1:]
if args[:2] == ["jobs", "cancel"]:
    sys.exit(0)
assert args[:2] == ["jobs", "launch"] and "--yes" in args, args
task = yaml.safe_load(open(args[-1]))
env = dict(os.environ, **task["envs"])
mounts = task["file_mounts"]
env["DCSBM_CONFIG"] = mounts[task["envs"]["DCSBM_CONFIG"]]
env["DCSBM_BUCKET"] = os.environ["STAND_IN_BUCKET"]
env["DCSBM_LOCAL"] = os.environ["STAND_IN_MACHINE"]
env["DCSBM_ARGS"] = task["envs"]["DCSBM_ARGS"].replace("--device cuda", "--device cpu")
json.dump(task, open(args[-1] + ".seen.json", "w"))
sys.exit(subprocess.run(["bash", "-c", task["run"]], env=env).returncode)
"""


def test_the_executor_runs_each_point_as_a_managed_job_and_copies_its_results_back(tmp_path, monkeypatch):
    pytest.importorskip("yaml", reason="PyYAML (a SkyPilot dependency) is not installed")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sky").write_text(STAND_IN_SKY.format(python=sys.executable))
    (fake_bin / "sky").chmod(0o755)
    bucket = tmp_path / "bucket"
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake_bin), BIN, os.environ["PATH"]]))
    monkeypatch.setenv("STAND_IN_BUCKET", str(bucket))
    monkeypatch.setenv("STAND_IN_MACHINE", str(tmp_path / "machine"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(cloud, "sky_problem", lambda: None)  # the stand-in is the `sky` on PATH, SkyPilot need not be installed
    plan = sweep_from_dict({"name": "cloudy", "base": TINY, "axes": {"seed": [1]}, "analyze": False})
    (tmp_path / "sync.py").write_text(cloud.SYNC_CODE)  # stands in for `aws s3 sync`: the bucket is a folder here
    sync = f"{sys.executable} {tmp_path / 'sync.py'} {bucket}/{{experiment_id}} {{local}}"
    settings = SweepSettings(
        executor="skypilot",
        results_root=tmp_path / "results",
        sweeps_root=tmp_path / "sweeps",
        cloud=CloudSettings(bucket="b", sync_command=sync),
    )
    outcome = run_sweep(plan, settings, echo=lambda _: None)
    (row,) = outcome.rows
    assert row["state"] == "done" and row["epochs_trained"] == 2 and row["gate_passed"] is False, row
    experiment_id = plan.points[0].experiment_id
    assert (tmp_path / "results" / experiment_id / "result.json").is_file()  # copied back from the bucket
    seen = json.loads((tmp_path / "sweeps" / "cloudy" / "skypilot" / f"{experiment_id}.yaml.seen.json").read_text())
    assert seen["resources"]["use_spot"] is True and seen["resources"]["autostop"]["down"] is True
    record = json.loads((tmp_path / "sweeps" / "cloudy" / "points" / f"{experiment_id}.json").read_text())
    assert record["executor"] == "skypilot" and record["job_id"] == cloud.job_name(experiment_id)


def _sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"base": TINY, "axes": {"seed": [1, 2]}}))
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cloud-bucket", "b"], "only apply to --executor skypilot"),
        (["--executor", "skypilot", "--dry-run"], "needs --cloud-bucket"),
        (["--executor", "skypilot", "--cloud-bucket", "b", "--cloud-store", "azure", "--dry-run"], "--cloud-sync-command"),
        (["--executor", "skypilot", "--cloud-bucket", "b", "--cloud-sync-command", "no-such-copier {bucket} {local}"], "not on PATH"),
    ],
)
def test_cloud_flags_that_make_no_sense_are_usage_errors(tmp_path, capsys, extra, message):
    args = ["sweep", str(_sweep_file(tmp_path)), "--sweeps-dir", str(tmp_path / "sweeps"), "--results-dir", str(tmp_path / "r")]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "sweeps").exists()


def test_a_dry_run_prints_the_task_skypilot_would_receive_and_writes_nothing(tmp_path, capsys):
    args = ["sweep", str(_sweep_file(tmp_path)), "--sweeps-dir", str(tmp_path / "sweeps"), "--results-dir", str(tmp_path / "r")]
    assert main([*args, "--executor", "skypilot", "--cloud-bucket", "b", "--cloud-gpu", "RTX3090:1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "the SkyPilot task of point 1 (seed=1)" in out and "RTX3090:1" in out and "use_spot" in out
    assert "dcsbm run --config" in out and not (tmp_path / "sweeps").exists()
