"""``dcsbm sweep --executor skypilot``: each point of a sweep as one SkyPilot *managed job* on a
rented GPU (RunPod, Lambda, Vast, AWS, GCP... whatever SkyPilot is set up for), through SkyPilot's
own engine (the optional extra: ``pip install 'dcsbm-transformer[cloud]'``).

What SkyPilot receives for a point (``task_config``; the YAML is written to
``sweeps/<name>/skypilot/<experiment_id>.yaml`` and launched with ``sky jobs launch``):

* ``resources``: ``accelerators`` (e.g. ``RTX4090:1``), ``use_spot`` (spot/preemptible by
  default), optionally ``cloud``/``infra``, ``disk_size``; ``job_recovery``: on preemption the
  managed job relaunches the task on a new machine (``FAILOVER``), and restarts it on an error
  at most ``max_restarts`` times; ``autostop`` ``{idle_minutes, down: true}`` so that a machine
  that is left idle is torn down (a managed job's machine is torn down when its job ends anyway:
  when the queue is empty or the budget stops launching, nothing is left running);
* ``file_mounts``: the point's config file, and the results bucket (``name``, ``store`` s3/gcs/…,
  mode ``MOUNT_CACHED``) at ``/results``;
* ``workdir``: this package's source tree (synced by SkyPilot), ``setup``: ``pip install .``;
* ``run``: the run script (``RUN_SCRIPT``). It works in a local folder (``$DCSBM_LOCAL``: file
  locks and atomic renames work there, not on a bucket mount), restores the point's folder from
  the bucket first (after a preemption the new machine starts where the last copy left off),
  runs ``dcsbm run`` — which resumes training from the newest checkpoint (one per epoch) and skips
  finished stages — copies the folder to the bucket every ``sync_seconds`` while it runs and once
  at the end, and exits with dcsbm's status.

On this machine, when the point's job ends, its folder is copied back from the bucket into
``results/<experiment_id>/`` (``sync_command``: ``aws s3 sync`` or ``gsutil rsync`` by store, or
a template of your own) and the point's record and the status table are written as for the
other executors. The budget (sweep/budget.py) applies unchanged: a point is launched only when
it fits.

Tested here without a cloud: the task definitions, validated by SkyPilot's own ``Task`` and
``Resources`` objects (and so its schema) when the extra is installed; the run script's recovery
(killed mid-training, its local folder lost, rerun: restored from the "bucket" and resumed from
the checkpoint); and the executor end to end with a stand-in ``sky`` command that runs the task
locally. Not exercised: a real launch, a real preemption, a bucket mount, the cloud CLIs' sync.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_MOUNT = "/results"
CONFIG_MOUNT = "/dcsbm-config"
SKYPILOT_DIR = "skypilot"
SYNC_TEMPLATES = {
    "s3": "aws s3 sync s3://{bucket}/{experiment_id} {local}",
    "gcs": "gsutil -m rsync -r gs://{bucket}/{experiment_id} {local}",
}

# The copy between the machine's disk and the bucket, standard library only (the run script runs
# it every few minutes: importing this package, and torch with it, each time would cost seconds).
# Every file of SOURCE whose size or modification time differs is copied into TARGET through a
# temporary name, then renamed; files only in TARGET are kept; storage.py's temporaries (a write
# in progress) and the run's lock file are never copied; a missing SOURCE copies nothing (a
# first start has no bucket copy).
SYNC_CODE = r"""
import os, shutil, sys
from pathlib import Path

def sync_tree(source, target):
    source, target = Path(source), Path(target)
    if not source.is_dir():
        return 0
    copied = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or ".tmp-" in path.name or path.name.endswith(".sync-partial") or path.name == ".lock":
            continue
        destination = target / path.relative_to(source)
        stat = path.stat()
        if destination.is_file():
            there = destination.stat()
            if there.st_size == stat.st_size and int(there.st_mtime) == int(stat.st_mtime):
                continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".sync-partial")
        shutil.copy2(path, partial)
        os.replace(partial, destination)
        copied += 1
    return copied

if __name__ == "__main__":
    sync_tree(sys.argv[1], sys.argv[2])
"""

# The run script: $DCSBM_LOCAL (machine-local results root), $DCSBM_BUCKET (the mounted bucket),
# $DCSBM_ID, $DCSBM_CONFIG, $DCSBM_ARGS (extra dcsbm run options), $DCSBM_SYNC_SECONDS.
RUN_SCRIPT = (
    r"""set -u
mkdir -p "$DCSBM_LOCAL" "$DCSBM_BUCKET"
sync_py="${TMPDIR:-/tmp}/dcsbm-sync-$$.py"
cat > "$sync_py" <<'PY'"""
    + SYNC_CODE
    + r"""PY
python "$sync_py" "$DCSBM_BUCKET/$DCSBM_ID" "$DCSBM_LOCAL/$DCSBM_ID"
( while sleep "$DCSBM_SYNC_SECONDS"; do python "$sync_py" "$DCSBM_LOCAL/$DCSBM_ID" "$DCSBM_BUCKET/$DCSBM_ID"; done ) &
syncer=$!
dcsbm run --config "$DCSBM_CONFIG" --results-dir "$DCSBM_LOCAL" $DCSBM_ARGS
status=$?
kill "$syncer" 2>/dev/null
wait "$syncer" 2>/dev/null
python "$sync_py" "$DCSBM_LOCAL/$DCSBM_ID" "$DCSBM_BUCKET/$DCSBM_ID"
exit $status
"""
)


class CloudError(ValueError):
    """A cloud request that cannot be made (no SkyPilot, no bucket, an unknown store): usage error."""


@dataclass(frozen=True)
class CloudSettings:
    bucket: str | None = None  # the results bucket's name (created by SkyPilot when missing)
    store: str = "s3"  # s3, gcs, r2, azure, ibm, oci...: what SkyPilot's storage supports
    accelerator: str = "RTX4090:1"
    use_spot: bool = True
    cloud: str | None = None  # e.g. runpod; None: SkyPilot picks the cheapest that has the GPU
    disk_size: int = 64  # GB
    max_restarts: int = 3  # restarts on a user-code error (preemptions are always recovered)
    idle_minutes: int = 5  # autostop: an idle machine is torn down after this
    sync_seconds: int = 300  # the run script's copies to the bucket while training
    sync_command: str | None = None  # template with {bucket} {experiment_id} {local}; default by store
    workdir: Path | None = None  # the source tree to sync (default: this package's repository)


def sky_problem() -> str | None:
    """Why SkyPilot cannot be used from here, or None."""
    try:
        import sky  # noqa: F401
    except ImportError:
        return "--executor skypilot needs SkyPilot: pip install 'dcsbm-transformer[cloud]'"
    if shutil.which("sky") is None:
        return "--executor skypilot: SkyPilot is installed but its `sky` command is not on PATH"
    return None


def default_workdir() -> Path:
    """The repository holding this package (its pyproject.toml), which the machines install."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise CloudError("--executor skypilot: cannot find this package's source tree (pyproject.toml) to send to the machines")


def job_name(experiment_id: str) -> str:
    """A SkyPilot-safe name: lowercase letters, digits and '-', at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", experiment_id.lower()).strip("-")
    return name[:63].rstrip("-")


def run_options(device: str, precision: str, analyze: bool) -> str:
    options = ["--device", "cuda" if device == "auto" else device, "--precision", precision]
    if not analyze:
        options.append("--no-analyze")
    return " ".join(options)


def task_config(
    experiment_id: str,
    config_file: Path,
    cloud: CloudSettings,
    *,
    device: str = "auto",
    precision: str = "fp32",
    analyze: bool = True,
) -> dict[str, Any]:
    """The task SkyPilot receives for one point (see the module docstring), as the dict
    ``sky.Task.from_yaml_config`` reads."""
    if not cloud.bucket:
        raise CloudError("--executor skypilot needs --cloud-bucket NAME: the bucket the results are synced through")
    resources: dict[str, Any] = {
        "accelerators": cloud.accelerator,
        "use_spot": cloud.use_spot,
        "disk_size": cloud.disk_size,
        "job_recovery": {"strategy": "FAILOVER", "max_restarts_on_errors": cloud.max_restarts},
        "autostop": {"idle_minutes": cloud.idle_minutes, "down": True},
    }
    if cloud.cloud:
        resources["cloud"] = cloud.cloud
    config_path = f"{CONFIG_MOUNT}/{experiment_id}.json"
    return {
        "name": job_name(experiment_id),
        "workdir": str(cloud.workdir or default_workdir()),
        "resources": resources,
        "file_mounts": {
            config_path: str(Path(config_file).absolute()),
            RESULTS_MOUNT: {"name": cloud.bucket, "store": cloud.store, "mode": "MOUNT_CACHED"},
        },
        "envs": {
            "DCSBM_LOCAL": "/tmp/dcsbm-results",
            "DCSBM_BUCKET": RESULTS_MOUNT,
            "DCSBM_ID": experiment_id,
            "DCSBM_CONFIG": config_path,
            "DCSBM_ARGS": run_options(device, precision, analyze),
            "DCSBM_SYNC_SECONDS": str(cloud.sync_seconds),
            "DCSBM_CACHE_DIR": "/tmp/dcsbm-cache",
        },
        "setup": "pip install .",
        "run": RUN_SCRIPT,
    }


def sync_command(cloud: CloudSettings, experiment_id: str, local: Path) -> list[str]:
    """The command that copies a point's folder from the bucket into ``local``."""
    template = cloud.sync_command or SYNC_TEMPLATES.get(cloud.store)
    if template is None:
        raise CloudError(
            f"--cloud-store {cloud.store}: no default command to copy results back; give --cloud-sync-command "
            "'... {bucket} {experiment_id} {local}'"
        )
    return shlex.split(template.format(bucket=cloud.bucket, experiment_id=experiment_id, local=shlex.quote(str(local))))


def task_yaml(task: dict[str, Any]) -> str:
    """The task as YAML (JSON, which YAML reads too, where PyYAML is missing)."""
    try:
        import yaml
    except ImportError:
        import json

        return json.dumps(task, indent=2) + "\n"
    return yaml.safe_dump(task, sort_keys=False)


def write_yaml(task: dict[str, Any], path: Path) -> None:
    from ..storage import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, task_yaml(task).encode())


# ---- the executor: submitit's interface over `sky jobs launch` ---------------------------------


class _Paths:
    def __init__(self, stdout: Path) -> None:
        self.stdout = stdout


class SkyJob:
    """One point's managed job: ``sky jobs launch`` runs in the foreground (it returns when the job
    ends) as a child process of the sweep; ``done``/``result``/``cancel`` as submitit's jobs."""

    def __init__(self, point_job, process: subprocess.Popen, name: str, log: Path, executor: SkyPilotExecutor) -> None:
        self.point_job, self.process, self.job_id, self.executor = point_job, process, name, executor
        self.paths = _Paths(log)
        self.started, self.started_iso = time.perf_counter(), _now()

    def done(self) -> bool:
        return self.process.poll() is not None

    def result(self) -> dict[str, Any]:
        """Copy the point's folder back and return its record (written as PointJob writes it)."""
        from ..config import config_from_dict
        from ..training.results import read_result
        from .execute import verdict
        from .status import write_record

        code = self.process.wait()
        job = self.point_job
        config = config_from_dict(job.config)
        local = Path(job.results_root) / config.experiment_id
        record: dict[str, Any] = {
            "experiment_id": config.experiment_id,
            "point": job.point,
            "varied": job.varied,
            "state": "failed",
            "reason": None,
            "started": self.started_iso,
            "finished": _now(),
            "wall_seconds": round(time.perf_counter() - self.started, 3),
            "host": "skypilot",
            "pid": self.process.pid,
            "executor": "skypilot",
            "job_id": self.job_id,
            "threads": None,
        }
        copied = subprocess.run(self.executor.sync(config.experiment_id, local), capture_output=True, text=True)
        result = read_result(local)
        if copied.returncode != 0:
            record["reason"] = f"copying the results back failed ({copied.stderr.strip()[-300:]}); log: {self.paths.stdout}"
        elif result is None:
            record["reason"] = f"sky jobs launch exited {code} and no result.json came back; log: {self.paths.stdout}"
        else:
            record["state"], record["reason"] = verdict(config, result)
            if code != 0 and record["state"] == "done":
                record["reason"] = f"trained, but the job exited {code} (its analysis may be unfinished; a rerun resumes it)"
                record["state"] = "failed"
        write_record(Path(job.record), record)
        return record

    def cancel(self, check: bool = True) -> None:
        subprocess.run(["sky", "jobs", "cancel", "--yes", "--name", self.job_id], capture_output=True)
        self.process.terminate()


class SkyPilotExecutor:
    """Launches each point's task as a SkyPilot managed job (``sky jobs launch --yes``)."""

    def __init__(self, folder: Path, cloud: CloudSettings, *, device: str, precision: str) -> None:
        self.folder, self.cloud, self.device, self.precision = Path(folder), cloud, device, precision

    def sync(self, experiment_id: str, local: Path) -> list[str]:
        return sync_command(self.cloud, experiment_id, local)

    def submit(self, point_job) -> SkyJob:
        config_file = Path(point_job.record).parent.parent / "configs" / f"{_experiment_id(point_job)}.json"
        experiment_id = _experiment_id(point_job)
        task = task_config(
            experiment_id, config_file, self.cloud, device=self.device, precision=self.precision, analyze=point_job.analyze
        )
        path = self.folder / f"{experiment_id}.yaml"
        write_yaml(task, path)
        log = self.folder / f"{experiment_id}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["sky", "jobs", "launch", "--yes", "--name", task["name"], str(path)], stdout=out, stderr=subprocess.STDOUT
            )
        return SkyJob(point_job, process, task["name"], log, self)


def _experiment_id(point_job) -> str:
    return Path(point_job.record).stem


def _now() -> str:
    from .status import now

    return now()


# ---- the run script's copy between the machine's disk and the bucket --------------------------

_namespace: dict[str, Any] = {"__name__": "dcsbm_sync"}
exec(compile(SYNC_CODE, "<dcsbm sync>", "exec"), _namespace)  # one source for the run script and this module
sync_tree = _namespace["sync_tree"]
sync_tree.__doc__ = "Copy the new and changed files of ``source`` into ``target`` (SYNC_CODE); returns how many."
