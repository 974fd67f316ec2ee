"""dcsbm sweep on a real one-node SLURM (munge, slurmctld and slurmd started on this machine by
``tests/slurm/cluster.py``, proctrack/linuxproc, accounting off): a job array with a parallelism
limit; a job requeued mid-training (a preemption) that resumes from its newest checkpoint, its
old process gone; a time limit ending mid-training (submitit's USR2 → checkpoint → requeue); the
sweep process SIGKILLed while a job runs and a rerun that re-attaches to it; a job scancel'ed
(recorded as cancelled; the other point goes on; a rerun submits it again); requests sbatch
refuses. Each ends with the same status table and the same result.json (apart from the clock) as
the uninterrupted array, and the analysed point with the same horizon statistics.

Skipped, with the reason, where SLURM cannot start (not root, no packages and no apt-get). The
points are the tiny two-point grid of test_sweep.py; only its second point (two epochs, the gate
never passes) is interrupted, held after step 110 (in its second epoch) by a test hook until the
test releases it. A few seconds of training per point; the requeues wait cred_expire = 5 s.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_sweep import STEPS_PER_EPOCH, TINY, TWO_POINTS, deterministic, sweep_args, table, write_sweep

from dcsbm_transformer.cli import main
from dcsbm_transformer.sweep import SlurmSettings, SweepSettings, run_sweep, sweep_from_dict
from dcsbm_transformer.sweep.execute import _process_start
from dcsbm_transformer.sweep.slurm import GONE, JOBS_FILE, STEP_GONE_EXIT, JobState, SacctNotice, parse_show_job

SLURM_HELPERS = Path(__file__).with_name("slurm")
HOLD_STEP = STEPS_PER_EPOCH + 10
# the sampled second analysis (analysis.sensitivity_temperature) on 40 events too, not its default 4000
BASE = {**TINY, "analysis": {**TINY["analysis"], "sensitivity_events": 40}}
PLAN = sweep_from_dict({**TWO_POINTS, "base": BASE, "name": "tiny"})


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM for the session (installed if missing and possible), stopped afterwards."""
    sys.path.insert(0, str(SLURM_HELPERS))
    try:
        import cluster as helpers
    finally:
        sys.path.remove(str(SLURM_HELPERS))
    try:
        running = helpers.start(tmp_path_factory.mktemp("slurm"))
    except helpers.Unavailable as why:
        pytest.skip(f"no real SLURM here: {why}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(running.conf)  # sbatch, scontrol, scancel and the jobs find this cluster
    yield running
    running.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


def settings(root: Path, **slurm) -> SweepSettings:
    resources = {"partition": "debug", "gpus": 0, "cpus_per_task": 1, "time_minutes": 5, "array_parallelism": 2, **slurm}
    return SweepSettings(
        executor="slurm",
        results_root=root / "results",
        sweeps_root=root / "sweeps",
        cache_root=root / "cache",
        poll_seconds=0.5,
        lock_wait_seconds=30,
        slurm=SlurmSettings(**resources),
    )


class Sweep(threading.Thread):
    """run_sweep in a thread, its console lines collected, while the test acts on the cluster."""

    def __init__(self, root: Path, **slurm):
        super().__init__(daemon=True)
        self.root, self.settings, self.lines, self.outcome, self.error = root, settings(root, **slurm), [], None, None

    def run(self) -> None:
        try:
            self.outcome = run_sweep(PLAN, self.settings, echo=self.lines.append)
        except BaseException as error:  # reported by finish()
            self.error = error

    def finish(self, timeout: float = 240) -> list[dict]:
        self.join(timeout)
        assert not self.is_alive(), f"the sweep did not end in {timeout} s:\n" + "\n".join(self.lines)
        assert self.error is None, self.error
        return self.outcome.rows


def hold(monkeypatch, root: Path) -> tuple[Path, Path]:
    """Jobs submitted from now hold after step HOLD_STEP until the release file exists."""
    signal_file, release = root / "held", root / "release"
    spec = {"hold_at_step": HOLD_STEP, "signal_file": str(signal_file), "release_file": str(release)}
    monkeypatch.setenv("DCSBM_TEST_HOOKS", json.dumps(spec))
    return signal_file, release


def wait_for(condition, what: str, timeout: float = 60, sweep: Sweep | None = None):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if sweep is not None and not sweep.is_alive():
            raise AssertionError(f"the sweep ended while waiting for {what}: {sweep.error}\n" + "\n".join(sweep.lines))
        assert time.monotonic() < deadline, f"timed out waiting for {what}" + ("\n" + "\n".join(sweep.lines) if sweep else "")
        time.sleep(0.2)
    return value


def held_pid(signal_file: Path) -> int:
    pid, where = wait_for(lambda: signal_file.is_file() and signal_file.read_text(), "a job to hold").split(maxsplit=1)
    assert where == f"step {HOLD_STEP}"
    return int(pid)


def job_id(root: Path, point: int) -> str:
    jobs = json.loads((root / "sweeps" / "tiny" / JOBS_FILE).read_text())["jobs"]
    return next(entry["job_id"] for entry in jobs.values() if entry["point"] == point)


def slurm_text(cluster, *args: str) -> str:
    return cluster.command(*args).stdout


def comparable_result(root: Path, experiment_id: str) -> dict:
    """result.json apart from the clock (the timings block, the evaluation's seconds) and the code's
    commit (others may commit to the working tree while the suite runs)."""
    result = json.loads((root / "results" / experiment_id / "result.json").read_text())
    result = {key: value for key, value in result.items() if key != "timings"}
    result["evaluation"] = {key: value for key, value in result["evaluation"].items() if key != "seconds"}
    result["environment"] = {key: value for key, value in result["environment"].items() if key != "git_commit"}
    return result


def horizons(root: Path, experiment_id: str) -> dict[str, dict]:
    """Every analysis's horizon.json apart from the clock and the code's commit: its name's hash
    (which covers the checkpoint file), timings, versions, and timestamps (when the run registered)."""
    found = {}
    for path in sorted((root / "results" / experiment_id / "analysis").glob("*/horizon.json")):
        text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+\-:\dZ]*", "<time>", path.read_text())
        content = {key: value for key, value in json.loads(text).items() if key not in ("analysis_name", "timings", "versions")}
        found[path.parent.name.rsplit("-", 1)[0]] = content  # 40ev-greedy, 40ev-t1
    return found


def assert_same_as_reference(root: Path, reference: Path) -> None:
    assert deterministic(table(root)) == deterministic(table(reference))
    for row in table(reference):
        assert comparable_result(root, row["experiment_id"]) == comparable_result(reference, row["experiment_id"])
        assert horizons(root, row["experiment_id"]) == horizons(reference, row["experiment_id"])


def start_from(reference: Path, root: Path, with_point_one: bool = True) -> None:
    """The reference's data cache (the data are not what is tested) and, optionally, its finished
    point 1, so that only point 2 runs."""
    shutil.copytree(reference / "cache", root / "cache")
    if with_point_one:
        first = table(reference)[0]["experiment_id"]
        shutil.copytree(reference / "results" / first, root / "results" / first)


def queue_is_empty(cluster) -> bool:
    return slurm_text(cluster, "squeue", "--noheader").strip() == ""


def gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped by its parent counts as ended)."""
    return _process_start(pid) is None


@pytest.fixture(scope="module")
def reference(slurm_cluster, tmp_path_factory):
    """The uninterrupted sweep: one array of both points, one at a time (parallelism 1)."""
    root = tmp_path_factory.mktemp("slurm-reference")
    sweep = Sweep(root, array_parallelism=1)
    sweep.start()
    sweep.finish()
    return root, sweep.lines


# ---- the tests --------------------------------------------------------------------------------


@pytest.mark.slurm
def test_a_job_array_runs_every_point_at_most_parallelism_at_once(slurm_cluster, reference, capfd):
    root, lines = reference
    rows = table(root)
    assert [(r["point"], r["state"], r["gate_passed"], r["gate_epoch"], r["epochs_trained"], r["analysis"]) for r in rows] == [
        (1, "done", True, 1, 1, "done"),
        (2, "done", False, None, 2, "excluded (gate not passed)"),
    ]
    array = job_id(root, 1).split("_")[0]
    assert [job_id(root, 1), job_id(root, 2)] == [f"{array}_0", f"{array}_1"]
    script = (root / "sweeps" / "tiny" / "jobs" / f"{array}_submission.sh").read_text().splitlines()
    assert "#SBATCH --array=0-1%1" in script and "#SBATCH --partition=debug" in script and "#SBATCH --cpus-per-task=1" in script
    records = [json.loads((root / "sweeps" / "tiny" / "points" / f"{r['experiment_id']}.json").read_text()) for r in rows]
    assert records[1]["started"] >= records[0]["finished"]  # parallelism 1: the second task waited for the first
    assert all(r["executor"] == "slurm" and r["threads"] == 1 and r["restarts"] == 0 for r in records)
    # one line per change of a job's state, then the point's end
    point_two = [line for line in lines if line.startswith("point 2 ")]
    assert point_two[0] == f"point 2 (gate.rule_threshold=1.0) submitted as job {array}_1"
    assert f"point 2 (gate.rule_threshold=1.0) job {array}_1: RUNNING on {slurm_cluster.host}" in point_two
    assert point_two[-1].startswith("point 2 (gate.rule_threshold=1.0) done in ")
    assert len(point_two) == len(set(point_two))
    assert sum("Bypassing sacct error" in line for line in lines) == 0 and "Bypassing sacct error" not in capfd.readouterr().err
    assert queue_is_empty(slurm_cluster) and slurm_cluster.version.startswith("slurm")


@pytest.mark.slurm
def test_a_requeued_job_resumes_from_its_checkpoint_and_its_old_process_stops(slurm_cluster, reference, tmp_path, monkeypatch):
    start_from(reference[0], tmp_path)
    signal_file, release = hold(monkeypatch, tmp_path)
    sweep = Sweep(tmp_path)
    sweep.start()
    first = held_pid(signal_file)
    job = job_id(tmp_path, 2)
    slurm_cluster.command("scontrol", "requeue", job)  # what a preemption does
    wait_for(lambda: gone(first), "the requeued job's old process to stop", timeout=20)
    # PENDING (BeginTime) for the requeue's 5 s delay, or RUNNING again where a poll under load missed those
    # 5 s: either way the line that says the job was requeued
    said = f"point 2 (gate.rule_threshold=1.0) job {job}: "
    wait_for(lambda: any(l.startswith(said) and l.endswith("requeued 1x") for l in sweep.lines), "the requeue", sweep=sweep)
    assert sweep.is_alive() and not any(" done " in l or l.endswith(" done") for l in sweep.lines if l.startswith("point 2 "))
    release.touch()
    rows = sweep.finish()
    assert rows[1]["state"] == "done" and sweep.lines[-1].startswith("point 2 (gate.rule_threshold=1.0) done in ")
    record = json.loads((tmp_path / "sweeps" / "tiny" / "points" / f"{rows[1]['experiment_id']}.json").read_text())
    assert record["restarts"] == 1 and record["pid"] != first and record["job_id"] == job
    log = (tmp_path / "sweeps" / "tiny" / "jobs" / f"{job}_0_log.out").read_text()
    assert "from checkpoint_epoch_0001.pt (epoch 1)" in log
    assert_same_as_reference(tmp_path, reference[0])
    assert queue_is_empty(slurm_cluster)  # nothing left pending after the sweep


@pytest.mark.slurm
def test_a_time_limit_mid_training_checkpoints_requeues_and_completes(slurm_cluster, reference, tmp_path, monkeypatch):
    start_from(reference[0], tmp_path)
    signal_file, release = hold(monkeypatch, tmp_path)
    # a 1-minute limit; SLURM sends USR2 50 s before it (slurmctld checks limits every 30 s)
    sweep = Sweep(tmp_path, time_minutes=1, signal_delay_s=50)
    sweep.start()
    first = held_pid(signal_file)
    job = job_id(tmp_path, 2)
    wait_for(
        lambda: any(f"job {job}: PENDING" in l and "requeued 1x" in l for l in sweep.lines), "the time-limit requeue", sweep=sweep
    )
    wait_for(lambda: gone(first), "the timed-out job's old process to stop", timeout=20)
    release.touch()
    rows = sweep.finish()
    assert rows[1]["state"] == "done"
    log = (tmp_path / "sweeps" / "tiny" / "jobs" / f"{job}_0_log.out").read_text()
    assert "Caught signal SIGUSR2" in log + (tmp_path / "sweeps" / "tiny" / "jobs" / f"{job}_0_log.err").read_text()
    assert "preempted or timed out; requeued" in log and "from checkpoint_epoch_0001.pt (epoch 1)" in log
    assert_same_as_reference(tmp_path, reference[0])


@pytest.mark.slurm
def test_a_killed_sweep_reattaches_to_its_live_job_instead_of_resubmitting(slurm_cluster, reference, tmp_path, monkeypatch):
    start_from(reference[0], tmp_path)
    signal_file, release = hold(monkeypatch, tmp_path)
    driver = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from test_sweep_slurm import PLAN, settings; from dcsbm_transformer.sweep import run_sweep;"
        "run_sweep(PLAN, settings(Path(sys.argv[2])))"
    )
    process = subprocess.Popen([sys.executable, "-c", driver, str(Path(__file__).parent), str(tmp_path)], cwd=tmp_path)
    first = held_pid(signal_file)
    job = job_id(tmp_path, 2)
    process.kill()  # SIGKILL: no handler runs, the job is left running
    process.wait()
    assert "JobState=RUNNING" in slurm_text(slurm_cluster, "scontrol", "show", "job", job)
    sweep = Sweep(tmp_path)
    sweep.start()
    wait_for(lambda: any("re-attached" in line for line in sweep.lines), "the rerun to re-attach", sweep=sweep)
    assert (
        f"point 2 (gate.rule_threshold=1.0) re-attached to its job {job} (RUNNING on {slurm_cluster.host}), not submitted again"
        in (sweep.lines)
    )
    release.touch()
    rows = sweep.finish()
    assert rows[1]["state"] == "done" and job_id(tmp_path, 2) == job
    assert len(list((tmp_path / "sweeps" / "tiny" / "jobs").glob("*_submission.sh"))) == 1  # nothing submitted again
    record = json.loads((tmp_path / "sweeps" / "tiny" / "points" / f"{rows[1]['experiment_id']}.json").read_text())
    assert record["pid"] == first  # the one process that held it trained it to the end
    assert_same_as_reference(tmp_path, reference[0])


@pytest.mark.slurm
def test_a_cancelled_job_is_recorded_the_other_goes_on_and_a_rerun_submits_it_again(slurm_cluster, reference, tmp_path, monkeypatch):
    start_from(reference[0], tmp_path, with_point_one=False)
    signal_file, release = hold(monkeypatch, tmp_path)
    sweep = Sweep(tmp_path)
    sweep.start()
    held_pid(signal_file)
    cancelled = job_id(tmp_path, 2)
    slurm_cluster.command("scancel", cancelled)
    rows = sweep.finish()
    assert [r["state"] for r in rows] == ["done", "cancelled"]
    assert rows[1]["failure_reason"].startswith(f"job {cancelled} was cancelled on {slurm_cluster.host} (scancel, or an administrator")
    assert any(line.startswith("point 2 (gate.rule_threshold=1.0) CANCELLED: job ") for line in sweep.lines)
    assert [r["state"] for r in sweep.outcome.failed] == ["cancelled"]

    release.touch()  # the rerun: the cancelled job is ended, so the point is submitted again and resumes
    again = Sweep(tmp_path)
    again.start()
    again.finish()
    assert f"point 2 (gate.rule_threshold=1.0): its job {cancelled} is CANCELLED; submitting the point again" in again.lines
    assert job_id(tmp_path, 2) != cancelled
    assert_same_as_reference(tmp_path, reference[0])


@pytest.mark.slurm
@pytest.mark.parametrize(
    "extra, sbatch_says",
    [
        (["--slurm-partition", "nosuch"], "invalid partition specified: nosuch"),
        (["--slurm-gpus", "1"], "Invalid generic resource (gres) specification"),
        (["--slurm-time", "60"], "Requested time limit is invalid"),
    ],
)
def test_a_request_sbatch_refuses_is_a_clear_error_and_nothing_is_written(slurm_cluster, tmp_path, capsys, extra, sbatch_says):
    sweep_file = write_sweep(tmp_path, {"base": TINY, "axes": {"seed": [1]}})
    queue = slurm_text(slurm_cluster, "squeue", "--noheader")
    resources = {"--slurm-gpus": "0", "--slurm-cpus-per-task": "1", "--slurm-time": "5"}
    for flag, value in zip(extra[::2], extra[1::2]):
        resources[flag] = value
    options = [item for pair in resources.items() for item in pair]
    if "--slurm-partition" not in extra:
        options += ["--slurm-partition", "debug"]
    assert main(sweep_args(tmp_path, sweep_file, "--executor", "slurm", *options)) == 2
    err = capsys.readouterr().err
    assert "sbatch refuses the sweep's jobs" in err and sbatch_says in err and "nothing was submitted or written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]
    assert slurm_text(slurm_cluster, "squeue", "--noheader") == queue  # nothing submitted


# ---- without a cluster: the pieces the real tests rely on -------------------------------------


SHOW_JOB = """\
JobId=12 ArrayJobId=11 ArrayTaskId=1 JobName=dcsbm-tiny JobState=RUNNING Reason=None Requeue=1 Restarts=2 NodeList=vm BatchHost=vm
JobId=11 ArrayJobId=11 ArrayTaskId=2-4%2 JobName=dcsbm-tiny JobState=PENDING Reason=JobArrayTaskLimit Restarts=0 NodeList=(null)
JobId=10 ArrayJobId=11 ArrayTaskId=0 JobName=dcsbm-tiny JobState=CANCELLED Reason=None Restarts=0 NodeList=vm BatchHost=vm
"""


def test_the_controllers_job_states_are_read_task_by_task():
    states = parse_show_job(SHOW_JOB)
    assert sorted(states) == ["11_0", "11_1", "11_2", "11_3", "11_4"]
    assert states["11_1"] == JobState("RUNNING", "None", "vm", 2) and states["11_1"].describe() == "RUNNING on vm, requeued 2x"
    assert states["11_3"].describe() == "PENDING (JobArrayTaskLimit)" and states["11_3"].live
    assert not states["11_0"].live and JobState(GONE).describe() == "no longer known to the controller"


def test_submitits_sacct_warning_is_said_once_with_what_it_means():
    said = []
    notice = SacctNotice(said.append)
    records = [
        logging.LogRecord("submitit", logging.WARNING, __file__, 1, message, None, None)
        for message in [
            f"Call #{call} - Bypassing sacct error Command sacct returned 1, status may be inaccurate." for call in (1, 2, 3)
        ]
        + ["Bypassing signal SIGTERM"]
    ]
    assert [notice.filter(record) for record in records] == [False, False, False, True]  # submitit's own lines dropped
    assert len(said) == 1 and "SLURM accounting is off" in said[0] and "scontrol show job" in said[0]


def run_guarded(tmp_path: Path, extra: str = "") -> tuple[subprocess.Popen, Path]:
    """A process that writes a point's record naming itself and starts the SLURM step guard."""
    record = tmp_path / "record.json"
    code = (
        "import os, socket, sys, time; from pathlib import Path;"
        "from dcsbm_transformer.sweep.slurm import watch_step; from dcsbm_transformer.sweep.status import write_record;"
        "write_record(Path(sys.argv[1]), {'pid': os.getpid(), 'host': socket.gethostname()});"
        f"watch_step(Path(sys.argv[1]), interval=0.1); {extra}"
        "Path(sys.argv[1] + '.ready').touch(); time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(record)], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: Path(f"{record}.ready").exists(), "the guarded process to start", timeout=30)
    return process, record


def test_a_slurm_job_whose_point_a_newer_job_took_over_stops_at_once(tmp_path):
    process, record = run_guarded(tmp_path)
    time.sleep(0.3)
    assert process.poll() is None  # its own record: it goes on
    record.write_text(json.dumps({"pid": 1, "host": "elsewhere", "job_id": "7_1", "restarts": 1}))
    assert process.wait(timeout=10) == STEP_GONE_EXIT
    assert "point taken over by job 7_1 (process 1 on elsewhere, restart 1)" in process.stdout.read()


def test_a_slurm_job_whose_step_is_gone_stops_at_once(tmp_path):
    # the guarded process's parent (standing in for slurmstepd) exits once the guard runs: the
    # process is reparented, as when SLURM ends a step whose process escaped it
    launcher = (
        "import subprocess, sys, time; from pathlib import Path;"
        "out = open(sys.argv[2] + '.out', 'w');"
        "child = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], stdout=out, stderr=out);"
        "print(child.pid, flush=True);"
        "[time.sleep(0.05) for _ in range(600) if not Path(sys.argv[2] + '.ready').exists()]"
    )
    record = tmp_path / "record.json"
    code = (
        "import os, socket, sys, time; from pathlib import Path;"
        "from dcsbm_transformer.sweep.slurm import watch_step; from dcsbm_transformer.sweep.status import write_record;"
        "write_record(Path(sys.argv[1]), {'pid': os.getpid(), 'host': socket.gethostname()});"
        "watch_step(Path(sys.argv[1]), interval=0.1); Path(sys.argv[1] + '.ready').touch(); time.sleep(60)"
    )
    done = subprocess.run([sys.executable, "-c", launcher, code, str(record)], stdout=subprocess.PIPE, text=True, timeout=60)
    child = int(done.stdout.split()[0])
    wait_for(lambda: gone(child), "the orphan to stop", timeout=20)
    assert "the SLURM step that started this process" in Path(f"{record}.out").read_text()


def test_a_refused_submission_quotes_sbatch_and_writes_nothing_without_a_real_slurm(tmp_path, capsys, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    sweep_file = write_sweep(tmp_path, {"base": TINY, "axes": {"seed": [1]}})
    assert main(sweep_args(tmp_path, sweep_file, "--executor", "slurm", "--slurm-partition", "gpu")) == 2
    err = capsys.readouterr().err
    assert "sbatch refuses the sweep's jobs (partition gpu, 1 GPU(s) per job, 4 CPU(s) per job, 240 min)" in err
    assert "invalid partition specified: gpu" in err and "nothing was submitted or written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "tiny.json"]
