"""Running a sweep through submitit: each point is one job, ``run_pipeline`` (train → gate →
analyze) in its own ``results/<experiment_id>/``, so every point resumes or is skipped for free.
A sweep file with ``"analyze": false`` stops every point after training and the gate.

Executors (all submitit's own):

* ``local`` — ``submitit.LocalExecutor``: one process per point on this machine, at most
  ``jobs`` at once (LocalExecutor starts every job it is given at once, so the sweep hands it the
  next point when one ends), each with ``max(1, cores // jobs)`` intra-op threads
  (``OMP_NUM_THREADS`` and ``torch.set_num_threads``): processes sharing the cores must not
  oversubscribe them. A local job stops within a second when the sweep process that started it
  is gone (killed), so a rerun never competes with orphans; its run resumes from its checkpoints.
* ``slurm`` — ``submitit.SlurmExecutor``: one job array (``--array=0-N%parallelism``) with the
  requested partition, GPUs, CPUs and time. On preemption or timeout SLURM signals the job
  (USR2, ``signal_delay_s`` before the end); submitit calls ``PointJob.checkpoint``, which
  resubmits the same point, and the job is requeued; the requeued job resumes training from the
  run's newest checkpoint (the training writes one every epoch). The job ids, their states from
  the controller, re-attaching after the sweep process died, the refusal of a request the
  cluster cannot meet, and the guard against a process outliving its step: ``sweep/slurm.py``.
* ``debug`` — ``submitit.DebugExecutor``: every point in this process, one after the other.

A point's failure (an exception: unbuildable data, a broken checkpoint, a full disk...) is its
job's result, recorded with the reason; a job that dies without a result (killed, out of memory)
is recorded by the sweep. Neither stops the other points.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import submitit
from submitit.slurm.slurm import SlurmJob

from ..config import ExperimentConfig, config_from_dict
from ..experiment import RunOptions
from ..storage import atomic_write_bytes, atomic_write_json, remove_stale_temporaries
from ..training.lock import RunLock, RunLockedError
from .plan import Point, SweepPlan, describe_point
from .slurm import (
    GONE,
    ControllerSilent,
    JobState,
    SacctNotice,
    SubmissionRefused,
    check_submission,
    job_states,
    read_jobs,
    refused,
    restart_count,
    watch_step,
    write_jobs,
)
from .status import (
    POINTS_DIR,
    Assessment,
    assess,
    now,
    plan_line,
    read_record,
    record_path,
    table_row,
    write_record,
    write_status,
)

if TYPE_CHECKING:  # for annotations only: both are imported where a sweep uses them
    from .budget import Budget
    from .cloud import SkyPilotExecutor

EXECUTORS = ("local", "slurm", "debug", "skypilot")  # skypilot: sweep/cloud.py
JOBS_DIR = "jobs"  # submitit's folder: each job's pickles and logs (<job id>_0_log.out, ...)
CONFIGS_DIR = "configs"
SWEEP_COPY = "sweep.json"
PLAN_FILE = "plan.json"
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # a local job is never timed out in practice
OWNER_GONE_EXIT = 75  # a local job whose sweep process died stops with this status


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SlurmSettings:
    partition: str | None = None
    gpus: int = 1
    time_minutes: int = 240
    array_parallelism: int = 32
    cpus_per_task: int = 4
    mem_gb: float | None = None
    account: str | None = None
    max_requeues: int = 3  # timeouts after which a point is not requeued again (preemptions do not count)
    signal_delay_s: int = 120


@dataclass(frozen=True)
class SweepSettings:
    executor: str = "local"
    jobs: int = 1  # local: points run at once
    results_root: Path = Path("results")
    sweeps_root: Path = Path("sweeps")
    cache_root: Path | None = None
    device: str = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    poll_seconds: float | None = None  # default: 0.5 s local and debug, 30 s on SLURM
    lock_wait_seconds: float = 60.0  # a results folder still held (by a job of a killed sweep) is waited for this long
    threads: int | None = None  # torch threads per job (dcsbm sweep --threads); default: SLURM's CPUs, or cores // jobs
    cloud: Any = None  # cloud.CloudSettings, for --executor skypilot

    def threads_per_job(self) -> int:
        if self.threads is not None:
            return self.threads
        if self.executor == "slurm":
            return self.slurm.cpus_per_task
        return max(1, usable_cores() // (self.jobs if self.executor == "local" else 1))


# ---- the job ----------------------------------------------------------------------------------


def _process_start(pid: int) -> str | None:
    """The start time of live process ``pid`` (clock ticks since boot, from /proc); None when it
    is gone, a zombie (dead, not yet reaped) or /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name: state is field 3, start time field 22
    return None if fields[0] in ("Z", "X", "x") else fields[19]


def owner_identity() -> tuple[int, str | None]:
    """This process, as a local job will recognise it (pid and start time: pids are reused)."""
    return os.getpid(), _process_start(os.getpid())


def owner_alive(owner: tuple[int, str | None]) -> bool:
    pid, started = owner
    if started is not None:
        return _process_start(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _watch_owner(owner: tuple[int, str | None], interval: float = 0.5) -> None:
    def watch() -> None:
        while owner_alive(owner):
            time.sleep(interval)
        print(f"the sweep process {owner[0]} is gone: stopping this job (a rerun of the sweep resumes it)", flush=True)
        os._exit(OWNER_GONE_EXIT)

    threading.Thread(target=watch, name="sweep-owner-watch", daemon=True).start()


def verdict(config: ExperimentConfig, result: dict[str, Any]) -> tuple[str, str | None]:
    """``(state, reason)`` of a point whose pipeline returned: done (the gate passed and the run was
    analysed, or it never passed in max_epochs: a result, excluded from analysis) or failed
    (training stopped without a verdict, e.g. a NaN loss)."""
    training = result["training"]
    if training["gate_passed"] or training["epochs_trained"] >= config.training.max_epochs:
        return "done", None
    return "failed", training["failure_reason"] or "training stopped without passing the gate"


class PointJob(submitit.helpers.Checkpointable):
    """One point of a sweep as a submitit job: ``run_pipeline`` of its config, its record written
    when it starts and ends. Returns the final record (state done/failed and why); it raises only
    when its process is being stopped (SystemExit, KeyboardInterrupt).

    ``checkpoint()`` (called by submitit when SLURM preempts or times out the job) resubmits the
    same point: the requeued job resumes training from the run's newest checkpoint."""

    def __init__(
        self,
        *,
        point: int,
        varied: dict[str, Any],
        config: dict[str, Any],
        results_root: str,
        cache_root: str | None,
        device: str,
        precision: Literal["fp32", "bf16"],
        threads: int | None,
        record: str,
        executor: str,
        owner: tuple[int, str | None] | None = None,
        lock_wait_seconds: float = 60.0,
        analyze: bool = True,
    ) -> None:
        self.point = point
        self.varied = varied
        self.config = config
        self.results_root = results_root
        self.cache_root = cache_root
        self.device = device
        self.precision = precision
        self.threads = threads
        self.record = record
        self.executor = executor
        self.owner = owner
        self.lock_wait_seconds = lock_wait_seconds
        self.analyze = analyze

    @property
    def label(self) -> str:
        return describe_point(self.point, self.varied)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        print(f"{self.label}: preempted or timed out; requeued, the rerun resumes from the newest checkpoint", flush=True)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self) -> dict[str, Any]:
        import torch  # here, so that the sweep process pickles this job without touching torch state

        if self.owner is not None:
            _watch_owner(self.owner)
        started, clock = now(), time.perf_counter()
        record: dict[str, Any] = {
            "experiment_id": None,
            "point": self.point,
            "varied": self.varied,
            "state": "running",
            "reason": None,
            "started": started,
            "finished": None,
            "wall_seconds": None,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "executor": self.executor,
            "job_id": _job_id(),
            "threads": self.threads,
        }
        if self.executor == "slurm":
            record["restarts"] = restart_count()  # which incarnation of a requeued job this is
        previous_threads = torch.get_num_threads()
        try:
            config = config_from_dict(self.config)
            record["experiment_id"] = config.experiment_id
            write_record(Path(self.record), record)
            if self.executor == "slurm":  # after the record names this process: a newer job's record stops it
                watch_step(Path(self.record))
            if self.threads:
                torch.set_num_threads(self.threads)
                os.environ["OMP_NUM_THREADS"] = str(self.threads)
            print(f"{self.label}: {config.experiment_id}, {torch.get_num_threads()} threads", flush=True)
            result = self._run(config)
            record["state"], record["reason"] = verdict(config, result)
        except Exception as error:  # a point's failure is its result: recorded, the sweep goes on
            record["state"], record["reason"] = "failed", f"{type(error).__name__}: {error}"
            record["traceback"] = traceback.format_exc()
            print(record["traceback"], flush=True)
        finally:
            torch.set_num_threads(previous_threads)
        record["finished"] = now()
        record["wall_seconds"] = round(time.perf_counter() - clock, 3)
        write_record(Path(self.record), record)
        return record

    def _run(self, config: ExperimentConfig) -> dict[str, Any]:
        from ..pipeline import run_pipeline
        from ..training.faults import hooks_from_environment

        options = RunOptions(
            results_root=Path(self.results_root),
            device=self.device,
            precision=self.precision,
            cache_root=Path(self.cache_root) if self.cache_root else None,
        )
        deadline = time.monotonic() + self.lock_wait_seconds
        while True:
            try:
                outcome = run_pipeline(
                    config,
                    options,
                    analyze=getattr(self, "analyze", True),
                    hooks=hooks_from_environment(),
                    echo=lambda line: print(line, flush=True),
                )
                return outcome.result
            except RunLockedError as error:  # e.g. the job of a killed sweep, still stopping
                if time.monotonic() >= deadline:
                    raise
                print(f"{error}; waiting", flush=True)
                time.sleep(1.0)


def _job_id() -> str | None:
    try:
        return str(submitit.JobEnvironment().job_id)
    except Exception:  # not inside a submitit job (called directly)
        return None


# ---- executors --------------------------------------------------------------------------------


class ExecutorUnavailable(RuntimeError):
    """The executor asked for cannot run here (no SLURM on this machine, or sbatch refuses the
    sweep's jobs: ``slurm.SubmissionRefused`` is one)."""


def _mem(gb: float) -> str:
    return f"{int(gb)}GB" if gb == int(gb) else f"{int(gb * 1024)}MB"


def _cuda_setup() -> list[str]:
    """LocalExecutor sets CUDA_VISIBLE_DEVICES from its own GPU count (empty by default): give the
    jobs exactly the devices this process sees instead."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ["unset CUDA_VISIBLE_DEVICES"] if visible is None else [f"export CUDA_VISIBLE_DEVICES={shlex.quote(visible)}"]


def executor_problem(settings: SweepSettings) -> str | None:
    """Why ``settings.executor`` cannot run on this machine, or None."""
    if settings.executor not in EXECUTORS:
        return f"unknown executor {settings.executor!r} (choose one of {', '.join(EXECUTORS)})"
    if settings.executor == "slurm" and shutil.which("srun") is None:
        return "--executor slurm: no `srun` on this machine's PATH; run the sweep on a SLURM login node"
    if settings.executor == "skypilot":
        from .cloud import sky_problem

        return sky_problem()
    return None


def make_executor(settings: SweepSettings, folder: Path, name: str) -> submitit.Executor | SkyPilotExecutor:
    """The submitit executor of ``settings.executor``, writing its pickles and logs under ``folder``."""
    threads = settings.threads_per_job()
    thread_setup = [f"export OMP_NUM_THREADS={threads}", f"export MKL_NUM_THREADS={threads}"]
    if settings.executor == "debug":
        return submitit.DebugExecutor(folder=folder)
    if settings.executor == "skypilot":
        from .cloud import SKYPILOT_DIR, CloudSettings, SkyPilotExecutor

        cloud = settings.cloud or CloudSettings()
        return SkyPilotExecutor(folder.parent / SKYPILOT_DIR, cloud, device=settings.device, precision=settings.precision)
    if settings.executor == "local":
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, setup=thread_setup + _cuda_setup())
        return local
    if (problem := executor_problem(settings)) is not None:
        raise ExecutorUnavailable(problem)
    slurm = settings.slurm
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=slurm.max_requeues)
    parameters: dict[str, Any] = {
        "job_name": f"dcsbm-{name}",
        "time": slurm.time_minutes,
        "gpus_per_node": slurm.gpus,
        "cpus_per_task": slurm.cpus_per_task,
        "array_parallelism": slurm.array_parallelism,
        "signal_delay_s": slurm.signal_delay_s,
        "setup": thread_setup,
    }
    if slurm.partition:
        parameters["partition"] = slurm.partition
    if slurm.mem_gb:
        parameters["mem"] = _mem(slurm.mem_gb)
    if slurm.account:
        parameters["account"] = slurm.account
    executor.update_parameters(**parameters)
    return executor


def point_job(point: Point, settings: SweepSettings, sweep_dir: Path, analyze: bool = True) -> PointJob:
    return PointJob(
        point=point.index,
        varied=point.varied,
        config=point.config.to_dict(),
        results_root=str(Path(settings.results_root).absolute()),
        cache_root=str(Path(settings.cache_root).absolute()) if settings.cache_root else None,
        device=settings.device,
        precision=settings.precision,
        threads=settings.threads_per_job(),
        record=str(record_path(sweep_dir, point.experiment_id)),
        executor=settings.executor,
        owner=owner_identity() if settings.executor == "local" else None,
        lock_wait_seconds=settings.lock_wait_seconds,
        analyze=analyze,
    )


# ---- the sweep --------------------------------------------------------------------------------


@dataclass
class SweepOutcome:
    sweep_dir: Path
    rows: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows that did not finish: failed, or cancelled (a SLURM job scancel'ed)."""
        return [row for row in self.rows if row["state"] in ("failed", "cancelled")]


def assess_all(plan: SweepPlan, settings: SweepSettings) -> dict[int, Assessment]:
    return {p.index: assess(p.config, Path(settings.results_root), settings.precision, plan.analyze) for p in plan.points}


def print_plan(plan: SweepPlan, assessments: dict[int, Assessment], echo: Callable[[str], None]) -> None:
    counts = {s: sum(a.state == s for a in assessments.values()) for s in ("done", "partial", "new", "failed")}
    echo(
        f"sweep {plan.name}: {len(plan.points)} points ({', '.join(f'{n} {s}' for s, n in counts.items() if n)}); "
        f"axes: {', '.join(f'{k} ({len(v)})' for k, v in plan.axes.items()) or 'none'}"
        + (f"; {len(plan.variants)} variants" if plan.variants else "")
        + ("" if plan.analyze else "; training only (analyze: false)")
    )
    for point in plan.points:
        echo(plan_line(point, assessments[point.index]))


def _write_sweep_files(plan: SweepPlan, sweep_dir: Path) -> None:
    """The sweep file's copy (an earlier, different copy is kept under history/), the expanded plan
    and one config per point."""
    text = plan.text
    copy = sweep_dir / SWEEP_COPY
    if text is not None:
        if copy.is_file() and copy.read_text() != text:
            stamp = now().replace(":", "").replace("+0000", "Z")
            history = sweep_dir / "history"
            history.mkdir(exist_ok=True)
            copy.replace(history / f"sweep-{stamp}.json")
        atomic_write_bytes(copy, text.encode())
    atomic_write_json(sweep_dir / PLAN_FILE, plan.to_dict())
    for point in plan.points:
        atomic_write_bytes(sweep_dir / CONFIGS_DIR / f"{point.experiment_id}.json", point.config.to_json().encode())


class _Table:
    """The sweep's states and assessments, and the status files they are written to. A point is
    assessed again only when its job ends: assessing reads and hashes its files (an anchor run's
    analysis is hundreds of MB), and the table is written at every start and end of a job."""

    def __init__(self, plan: SweepPlan, sweep_dir: Path, settings: SweepSettings, assessments: dict[int, Assessment]):
        self.plan, self.sweep_dir, self.settings = plan, sweep_dir, settings
        self.assessments = dict(assessments)
        self.states = {i: a.state if a.state in ("done", "failed") else "pending" for i, a in assessments.items()}

    def ended(self, point: Point, state: str) -> None:
        self.states[point.index] = state
        self.assessments[point.index] = assess(
            point.config, Path(self.settings.results_root), self.settings.precision, self.plan.analyze
        )

    def write(self) -> list[dict[str, Any]]:
        rows = [
            table_row(
                p,
                self.states[p.index],
                self.assessments[p.index],
                read_record(record_path(self.sweep_dir, p.experiment_id)),
                self.plan.analyze,
            )
            for p in self.plan.points
        ]
        write_status(
            self.sweep_dir, self.plan, rows, {"executor": self.settings.executor, "results_dir": str(self.settings.results_root)}
        )
        return rows


def _death_reason(job: submitit.Job, error: Exception) -> str:
    """One line saying how a job ended without a result (its log holds the rest)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    detail = next((line for line in reversed(lines) if "Error" in line or "error" in line), lines[0] if lines else "")
    return f"job {job.job_id} ended without a result ({type(error).__name__}: {detail}); log: {job.paths.stdout}"


def _finish_line(point: Point, record: dict[str, Any], row: dict[str, Any]) -> str:
    seconds = f" in {record['wall_seconds']:.1f}s" if record.get("wall_seconds") is not None else ""
    if record["state"] == "failed":
        return f"{point.describe()} FAILED{seconds}: {record['reason']}"
    if record["state"] == "cancelled":
        return f"{point.describe()} CANCELLED: {record['reason']}"
    if row["gate_passed"]:
        worst = "n/a" if row["worst_rule_compliance"] is None else f"{row['worst_rule_compliance']:.4f}"
        return f"{point.describe()} done{seconds}: gate passed at epoch {row['gate_epoch']} (worst rule {worst}), analysis {row['analysis']}"
    analysis = row["analysis"] if str(row["analysis"]).startswith("negative control") else "excluded from analysis"
    return f"{point.describe()} done{seconds}: gate not passed in {row['epochs_trained']} epochs ({analysis})"


def run_sweep(plan: SweepPlan, settings: SweepSettings, echo: Callable[[str], None] = print, budget=None) -> SweepOutcome:
    """Run every point of ``plan`` that is not done yet; returns the final status table.

    ``budget`` (a ``budget.BudgetRequest``, optional) holds back every point whose estimate would
    pass the budget, and records each point's actual time in ``budget.json`` (sweep/budget.py).

    Writes ``<sweeps_root>/<name>/`` (sweep.json, plan.json, configs/, points/, jobs/, status.json,
    status.tsv) and the points' results folders. Only one sweep process works in a sweep folder
    at a time (RunLockedError otherwise)."""
    if (problem := executor_problem(settings)) is not None:  # before anything is written
        raise ExecutorUnavailable(problem)
    if settings.executor == "slurm":  # sbatch --test-only: a request the cluster refuses stops here, nothing written
        try:
            check_submission(settings.slurm, len(plan.points), plan.name)
        except SubmissionRefused as error:
            raise ExecutorUnavailable(str(error)) from None
    sweep_dir = (Path(settings.sweeps_root) / plan.name).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(sweep_dir):
        for folder in (sweep_dir, sweep_dir / POINTS_DIR):
            remove_stale_temporaries(folder)
        _write_sweep_files(plan, sweep_dir)
        assessments = assess_all(plan, settings)
        print_plan(plan, assessments, echo)
        table = _Table(plan, sweep_dir, settings, assessments)
        table.write()
        todo = [p for p in plan.points if table.states[p.index] == "pending"]
        if not todo:
            echo(f"sweep {plan.name}: nothing to run")
        else:
            threads = settings.threads_per_job()
            how = {
                "local": f"{settings.jobs} at a time",
                "debug": "in this process",
                "slurm": f"a SLURM array, {settings.slurm.array_parallelism} at a time",
                "skypilot": f"as SkyPilot managed jobs, {settings.jobs} at a time",
            }
            echo(
                f"running {len(todo)} point(s) {how[settings.executor]}, {threads} thread(s) each; status: {sweep_dir / 'status.tsv'}"
            )
            executor = make_executor(settings, sweep_dir / JOBS_DIR, plan.name)
            runner = _Runner(plan, settings, sweep_dir, executor, table, echo)
            runner.budget = budget.open(plan, sweep_dir, assessments) if budget is not None else None
            try:
                runner.run(todo)
            except KeyboardInterrupt:
                runner.stop()
                table.write()
                raise
            if runner.budget is not None:
                echo(runner.budget.summary())
        rows = table.write()
    return SweepOutcome(sweep_dir, rows)


class _Runner:
    budget: Budget | None = None  # admits points, records their time (run_sweep's budget)

    def __init__(self, plan, settings: SweepSettings, sweep_dir: Path, executor, table: _Table, echo):
        self.plan, self.settings, self.sweep_dir = plan, settings, sweep_dir
        self.executor, self.table, self.echo = executor, table, echo
        self.running: dict[int, tuple[submitit.Job, Point]] = {}
        default_poll = 30.0 if settings.executor == "slurm" else 0.5
        self.poll = settings.poll_seconds if settings.poll_seconds is not None else default_poll

    def _job(self, point: Point) -> PointJob:
        job = point_job(point, self.settings, self.sweep_dir)
        job.analyze = self.plan.analyze  # set here: point_job's three-argument form is what tests patch
        return job

    def _started(self, point: Point, job: submitit.Job) -> None:
        self.running[point.index] = (job, point)
        self.table.states[point.index] = "running"
        self.echo(f"{point.describe()} submitted as job {job.job_id}")

    def _admitted(self, points: list[Point]) -> list[Point]:
        """The leading points the budget admits now (all of them without a budget)."""
        if self.budget is None:
            return points
        admitted = [p for p in points if self.budget.admit(p)]
        for point in points[len(admitted) :][:1]:
            self.echo(f"{point.describe()} not started: its estimate would pass the budget ({self.budget.summary()})")
        return admitted

    def run(self, todo: list[Point]) -> None:
        if self.settings.executor == "slurm":
            return self._run_slurm(todo)
        queue = deque(todo)
        limit = self.settings.jobs if self.settings.executor in ("local", "skypilot") else 1
        while queue or self.running:
            while queue and len(self.running) < limit:
                point = queue.popleft()
                if not self._admitted([point]):
                    assert self.budget is not None, "only a budget refuses a point"
                    self.budget.held.extend(queue)  # held by the budget, with every point after it
                    queue.clear()
                    break
                self._started(point, self.executor.submit(self._job(point)))
                self.table.write()
            ended = [index for index, (job, _) in self.running.items() if job.done()]
            if not ended:
                time.sleep(self.poll)
                continue
            for index in ended:
                self._collect(*self.running.pop(index))

    def _run_slurm(self, todo: list[Point]) -> None:
        """Re-attach to this sweep's live jobs (ids in slurm-jobs.json), submit one array of the
        other points, then follow every job's state from the controller until it has ended."""
        logger = logging.getLogger("submitit")
        notice = SacctNotice(self.echo)
        logger.addFilter(notice)
        try:
            jobs = read_jobs(self.sweep_dir)
            known = [jobs[p.experiment_id]["job_id"] for p in todo if p.experiment_id in jobs]
            states = job_states(known) if known else {}
            fresh: list[Point] = []
            said: dict[str, JobState] = {}
            for point in todo:
                job_id = jobs.get(point.experiment_id, {}).get("job_id")
                state = states.get(job_id) if job_id is not None else None
                if job_id is not None and state is not None and state.live:
                    self.running[point.index] = (SlurmJob(folder=self.sweep_dir / JOBS_DIR, job_id=job_id), point)
                    self.table.states[point.index] = "running"
                    if self.budget is not None:  # already running: it counts from now, whatever the budget says
                        self.budget.running[point.index] = (self.budget.clock(), point)
                    self.echo(f"{point.describe()} re-attached to its job {job_id} ({state.describe()}), not submitted again")
                    said[job_id] = state
                    continue
                if state is not None:
                    self.echo(f"{point.describe()}: its job {job_id} is {state.describe()}; submitting the point again")
                fresh.append(point)
            fresh = self._admitted(fresh)
            if fresh:
                try:
                    submitted = self.executor.submit_array([self._job(p) for p in fresh])
                except submitit.core.utils.FailedJobError as error:
                    raise ExecutorUnavailable(str(refused(error, self.settings.slurm))) from None
                for point, job in zip(fresh, submitted):
                    jobs[point.experiment_id] = {"job_id": job.job_id, "point": point.index, "submitted": now()}
                write_jobs(self.sweep_dir, jobs)  # at once: a rerun after this process dies re-attaches to them
                for point, job in zip(fresh, submitted):
                    self._started(point, job)
            self.table.write()
            self._follow_slurm(said)
        finally:
            logger.removeFilter(notice)

    def _follow_slurm(self, said: dict[str, JobState]) -> None:
        """Poll the controller until every job has ended: one line per change of a job's state
        (``said``: the states already on the console, those of the jobs re-attached to)."""
        seen = {job_id: (state.state, state.restarts) for job_id, state in said.items()}
        silent_since: float | None = None
        while self.running:
            try:
                states = job_states([job.job_id for job, _ in self.running.values()])
            except ControllerSilent as error:
                if silent_since is None:
                    silent_since = time.monotonic()
                    self.echo(f"the SLURM controller does not answer ({error}); the jobs' states are unknown until it does, waiting")
                time.sleep(self.poll)
                continue
            if silent_since is not None:
                self.echo(f"the SLURM controller answers again after {time.monotonic() - silent_since:.0f} s")
                silent_since = None
            for index, (job, point) in list(self.running.items()):
                state = states[job.job_id]
                if seen.get(job.job_id) != (state.state, state.restarts):
                    seen[job.job_id] = (state.state, state.restarts)
                    if state.live:
                        self.echo(f"{point.describe()} job {job.job_id}: {state.describe()}")
                if not state.live:
                    del self.running[index]
                    self._collect(job, point, state)
            if self.running:
                time.sleep(self.poll)

    def _slurm_record(self, job: submitit.Job, point: Point, state: JobState) -> dict[str, Any]:
        """The record of a SLURM job that SLURM says has ended: what it returned, else how it ended."""
        path = record_path(self.sweep_dir, point.experiment_id)
        result = job.paths.result_pickle
        for _ in range(10):  # a shared disk may show the result a moment after the controller says COMPLETED
            if result.exists() or state.state != "COMPLETED":
                break
            time.sleep(1.0)
        outcome, value = submitit.core.utils.pickle_load(result) if result.exists() else (None, None)
        if outcome == "success" and isinstance(value, dict) and state.state != "CANCELLED":
            return value
        record = {**(read_record(path) or {}), "experiment_id": point.experiment_id, "point": point.index, "varied": point.varied}
        if state.state == "CANCELLED":
            where = f" on {state.node}" if state.node and state.node != "None" else ""
            reason = f"job {job.job_id} was cancelled{where} (scancel, or an administrator"
            reason += f"; SLURM's reason: {state.reason})" if state.reason not in ("None", "") else ")"
            record.update(state="cancelled", reason=reason + "; a rerun of the sweep resumes it from its newest checkpoint")
        else:
            how = "is no longer known to the controller" if state.state == GONE else f"ended {state.state} (reason {state.reason})"
            detail = f": {str(value).strip().splitlines()[-1]}" if outcome == "error" and value else " without a result"
            record.update(state="failed", reason=f"job {job.job_id} {how}{detail}; log: {job.paths.stdout}")
        record.update(finished=now(), job_id=str(job.job_id))
        write_record(path, record)
        return record

    def _collect(self, job: submitit.Job, point: Point, state: JobState | None = None) -> None:
        path = record_path(self.sweep_dir, point.experiment_id)
        if self.settings.executor == "slurm":
            record = self._slurm_record(job, point, state or JobState(GONE))
            self._ended(point, record)
            return
        if self.settings.executor == "local":
            # a local job's result file is written before its process ends: when the process is gone
            # without one, there will be none (submitit's default waits 15 s for a slow shared disk)
            job._results_timeout_s = 1
        try:
            record = job.result()
        except Exception as error:  # the job died without a result: killed, out of memory, unpicklable...
            record = {**(read_record(path) or {}), "experiment_id": point.experiment_id, "point": point.index, "varied": point.varied}
            record.update(state="failed", reason=_death_reason(job, error), finished=now(), job_id=str(job.job_id))
            write_record(path, record)
        self._ended(point, record)

    def _ended(self, point: Point, record: dict[str, Any]) -> None:
        self.table.ended(point, record["state"])
        if self.budget is not None:
            self.budget.ended(point, record["state"])
        rows = self.table.write()
        self.echo(_finish_line(point, record, rows[point.index - 1]))

    def stop(self) -> None:
        """Ctrl-C: cancel the jobs in flight (their runs resume at the next sweep) and mark them pending."""
        if self.budget is not None:
            self.budget.interrupted()
        for job, point in self.running.values():
            try:
                job.cancel(check=False)
            except Exception:  # already gone
                pass
            self.table.states[point.index] = "pending"
        self.running.clear()
