"""A sweep's SLURM jobs: the check before submission, their ids in the sweep folder, their states
from the controller, and the guard that stops a job's process once SLURM has moved on.

* **Before anything is written** ``check_submission`` asks ``sbatch --test-only`` with the sweep's
  partition, GPUs, CPUs, memory, time and array: a request the cluster refuses (no such
  partition, GPUs its nodes lack, a time over the partition's limit) is ``SubmissionRefused``
  quoting sbatch, and the command exits 2 with nothing written.
* **Job ids** go to ``sweeps/<name>/slurm-jobs.json`` (experiment id → job id, array task) as soon
  as sbatch answers. A rerun of the sweep (after its process was killed, say) asks the controller
  about them: a job still queued or running is *re-attached* (waited for, not submitted again);
  one that is gone or ended is submitted again (its run resumes from its newest checkpoint).
* **States** come from ``scontrol show job`` (the controller's memory; no accounting database
  needed), not from submitit's ``sacct`` calls, which fail on clusters without accounting
  ("Bypassing sacct error ... status may be inaccurate"). A point is over only when SLURM says
  its job ended — a requeued job is waited for — and each change of a job's state (pending,
  running on a node, requeued, ended) is one line on the console.
* **The guard** (``watch_step``, started in every SLURM job): with ``proctrack/linuxproc`` a
  process can outlive its step when SLURM requeues or cancels the job. Every ``WATCH_SECONDS``
  the job checks that its parent (the step's ``slurmstepd``) is still its parent and that the
  point's record still names this process; when the step is gone, or a newer incarnation of
  the point (the requeued job, or a rerun's job) has written the record, it exits at once
  (status ``STEP_GONE_EXIT``), releasing the run lock; the newer job resumes from the newest
  checkpoint. No point trains twice at once: the run lock refuses a second holder, and the
  guard makes the older one give way.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..storage import atomic_write_json
from .status import now, read_record

JOBS_FILE = "slurm-jobs.json"
JOBS_SCHEMA = 1
WATCH_SECONDS = 2.0
STEP_GONE_EXIT = 76  # a SLURM job whose step is gone, or whose point a newer job took over, stops with this status
# the states in which a job may still run (squeue(1), JOB STATE CODES); anything else has ended
LIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "CONFIGURING",
        "COMPLETING",
        "RESIZING",
        "SUSPENDED",
        "SIGNALING",
        "STAGE_OUT",
        "STOPPED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
        "POWER_UP_NODE",
        "UPDATE_DB",
    }
)
GONE = "GONE"  # not in the controller's memory: ended more than MinJobAge ago, or never known there


class SubmissionRefused(RuntimeError):
    """sbatch refused the sweep's jobs; the message quotes it."""


# ---- before submission ------------------------------------------------------------------------


def sbatch_options(slurm: Any, count: int, name: str) -> list[str]:
    """The resource options the sweep's array asks for (as submitit writes them into its script)."""
    options = [
        f"--job-name=dcsbm-{name}",
        f"--time={slurm.time_minutes}",
        f"--gpus-per-node={slurm.gpus}",
        f"--cpus-per-task={slurm.cpus_per_task}",
        "--ntasks-per-node=1",
        "--nodes=1",
        f"--array=0-{max(count, 1) - 1}%{min(slurm.array_parallelism, max(count, 1))}",
    ]
    if slurm.partition:
        options.append(f"--partition={slurm.partition}")
    if slurm.mem_gb:
        gb = slurm.mem_gb
        options.append(f"--mem={int(gb)}GB" if gb == int(gb) else f"--mem={int(gb * 1024)}MB")
    if slurm.account:
        options.append(f"--account={slurm.account}")
    return options


def _quote(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return " / ".join(dict.fromkeys(lines)) or "(no message)"


def describe_request(slurm: Any) -> str:
    parts = [f"partition {slurm.partition}" if slurm.partition else "the default partition"]
    parts += [f"{slurm.gpus} GPU(s) per job", f"{slurm.cpus_per_task} CPU(s) per job", f"{slurm.time_minutes} min"]
    if slurm.mem_gb:
        parts.append(f"{slurm.mem_gb:g} GB")
    if slurm.account:
        parts.append(f"account {slurm.account}")
    return ", ".join(parts)


def check_submission(slurm: Any, count: int, name: str) -> None:
    """``sbatch --test-only`` with the sweep's resources: validates them with the controller
    without submitting anything; SubmissionRefused quoting sbatch when it refuses."""
    command = ["sbatch", "--test-only", *sbatch_options(slurm, count, name), "--output=/dev/null", "--wrap=true"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SubmissionRefused(f"could not ask sbatch whether the cluster accepts the sweep's jobs: {error}") from None
    if done.returncode != 0:
        raise SubmissionRefused(
            f"sbatch refuses the sweep's jobs ({describe_request(slurm)}): {_quote(done.stderr + done.stdout)}; "
            "nothing was submitted or written"
        )


def refused(error: Exception, slurm: Any) -> SubmissionRefused:
    """A submission that failed at sbatch itself (after the check: the cluster changed meanwhile)."""
    return SubmissionRefused(f"sbatch refused the sweep's jobs ({describe_request(slurm)}): {_quote(str(error))}")


# ---- job ids in the sweep folder --------------------------------------------------------------


def read_jobs(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """experiment id → {"job_id", "point", "submitted"} of the jobs this sweep submitted (empty
    when the file is missing or not ours: the jobs are then submitted again, as before)."""
    try:
        content = json.loads((Path(sweep_dir) / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict) or content.get("schema") != JOBS_SCHEMA or not isinstance(content.get("jobs"), dict):
        return {}
    return {key: value for key, value in content["jobs"].items() if isinstance(value, dict) and isinstance(value.get("job_id"), str)}


def write_jobs(sweep_dir: Path, jobs: dict[str, dict[str, Any]]) -> None:
    atomic_write_json(Path(sweep_dir) / JOBS_FILE, {"schema": JOBS_SCHEMA, "jobs": jobs})


# ---- states from the controller ---------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    state: str  # PENDING, RUNNING, COMPLETED, CANCELLED, TIMEOUT, ... or GONE
    reason: str = "None"  # why it waits (BeginTime, JobArrayTaskLimit, ...), or how it ended
    node: str = ""
    restarts: int = 0

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def describe(self) -> str:
        if self.state == GONE:
            return "no longer known to the controller"
        text = self.state
        if self.state == "RUNNING" and self.node:
            text += f" on {self.node}"
        elif self.reason and self.reason != "None":
            text += f" ({self.reason})"
        if self.restarts:
            text += f", requeued {self.restarts}x"
        return text


_FIELD = re.compile(r"(\w+)=(\S*)")


def _task_ids(text: str) -> list[str]:
    """'3', '0-4%2', '1,3,5-7' → the task ids it names."""
    ids: list[str] = []
    for part in text.split("%")[0].split(","):
        if "-" in part:
            first, last = part.split("-", 1)
            ids += [str(i) for i in range(int(first), int(last) + 1)]
        elif part:
            ids.append(part)
    return ids


def parse_show_job(text: str) -> dict[str, JobState]:
    """``scontrol --oneliner show job`` output → job id (``123_4`` for an array task) → state."""
    states: dict[str, JobState] = {}
    for line in text.splitlines():
        fields = dict(_FIELD.findall(line))
        if "JobState" not in fields:
            continue
        state = JobState(
            state=fields["JobState"],
            reason=fields.get("Reason", "None"),
            node=fields.get("BatchHost") or fields.get("NodeList", ""),
            restarts=int(fields.get("Restarts", "0") or 0),
        )
        if fields.get("ArrayJobId") and fields.get("ArrayTaskId"):
            for task in _task_ids(fields["ArrayTaskId"]):
                states[f"{fields['ArrayJobId']}_{task}"] = state
        else:
            states[fields.get("JobId", "")] = state
    return states


class ControllerSilent(RuntimeError):
    """scontrol could not reach the controller; the message quotes it."""


def job_states(job_ids: Iterable[str]) -> dict[str, JobState]:
    """The controller's state of each job id (GONE where it knows none); one ``scontrol show job``
    per array. ControllerSilent when the controller does not answer."""
    job_ids = list(job_ids)
    states: dict[str, JobState] = {}
    for array in sorted({job_id.split("_")[0] for job_id in job_ids}):
        try:
            done = subprocess.run(["scontrol", "--oneliner", "show", "job", array], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ControllerSilent(str(error)) from None
        if done.returncode != 0:
            message = _quote(done.stderr + done.stdout)
            if "Invalid job id" in message:
                continue  # purged: every task of this array is gone
            raise ControllerSilent(message)
        states.update(parse_show_job(done.stdout))
    return {job_id: states.get(job_id, JobState(GONE)) for job_id in job_ids}


class SacctNotice(logging.Filter):
    """submitit's "Bypassing sacct error ..., status may be inaccurate" warning, said once per
    sweep with what it means, the repeats dropped."""

    def __init__(self, echo: Callable[[str], None]):
        super().__init__()
        self.echo, self.said = echo, False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if not self.said:
            self.said = True
            self.echo(
                "note: sacct does not answer here (SLURM accounting is off, as on many small clusters); submitit's job states "
                "would be guesses, so this sweep asks the controller (scontrol show job) instead. This note is not repeated."
            )
        return False


# ---- in the job: the guard --------------------------------------------------------------------


def restart_count() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def watch_step(record: Path, interval: float = WATCH_SECONDS) -> threading.Thread:
    """Stop this process when SLURM has moved on without it (see the module docstring): its parent
    changed (the step's slurmstepd is gone) or the point's record names another process."""
    me = (os.getpid(), socket.gethostname())
    parent = os.getppid()

    def why_stop() -> str | None:
        if os.getppid() != parent:
            return f"the SLURM step that started this process (parent {parent}) is gone: the job was requeued or cancelled"
        current = read_record(record)
        if current is not None and (current.get("pid"), current.get("host")) != me:
            return (
                f"point taken over by job {current.get('job_id')} (process {current.get('pid')} on {current.get('host')}, "
                f"restart {current.get('restarts', 0)})"
            )
        return None

    def watch() -> None:
        while (reason := why_stop()) is None:
            time.sleep(interval)
        print(f"{now()} stopping this process: {reason}; the run resumes from its newest checkpoint in the newer job", flush=True)
        os._exit(STEP_GONE_EXIT)

    thread = threading.Thread(target=watch, name="slurm-step-watch", daemon=True)
    thread.start()
    return thread
