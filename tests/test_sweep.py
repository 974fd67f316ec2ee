"""dcsbm sweep: expansion and validation of sweep files, runs through submitit's local, debug and
(mocked) SLURM executors, skip and resume, failures recorded without stopping the others, and a
sweep SIGKILLed mid-run that a rerun finishes into the same table as an uninterrupted sweep.

Every grid here is tiny (n=32, one or two epochs, 40 analysis events): seconds per point.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
from conftest import REPO, run_cli
from submitit.core import job_environment, submission
from submitit.core.utils import DelayedSubmission
from submitit.slurm import slurm as submitit_slurm
from submitit.slurm.test_slurm import mock_requeue, mocked_slurm

from dcsbm_transformer.cli import main
from dcsbm_transformer.experiment import CHECKPOINT_DIR, RunOptions, run_directory, run_experiment
from dcsbm_transformer.sweep import (
    PointJob,
    SlurmSettings,
    SweepError,
    SweepSettings,
    execute,
    load_sweep,
    make_executor,
    point_job,
    run_sweep,
    sweep_from_dict,
)
from dcsbm_transformer.sweep.execute import owner_alive
from dcsbm_transformer.training.lock import RunLock
from dcsbm_transformer.training.trainer import TrainingHooks

TINY = {
    "seed": 3,
    "graph": {"n": 32, "K": 2, "p_in": 0.9, "p_out": 0.2, "jumpers_per_block": 1, "jump_scales": [0.75]},
    "walks": {"walk_length": 24, "train_walks": 3200, "eval_walks": 200},
    "model": {"context_window": 8, "d_model": 16, "n_layers": 1, "n_heads": 1},
    "training": {"batch_size": 64, "max_epochs": 2, "lr": 3e-3},
    "gate": {"eval_sequences": 64, "edge_threshold": 0.0, "rule_aggregate": "pooled"},
    "analysis": {"events": 40, "permutations": 200},
}
STEPS_PER_EPOCH = 100  # 3200 walks of 24 tokens, w = 8, batch 64
# gate.rule_threshold 0.0 passes at epoch 1 (pooled compliance > 0), then 40 events are analysed;
# 1.0 is unreachable (strict ">"): two epochs, excluded from analysis.
TWO_POINTS = {"base": TINY, "axes": {"gate.rule_threshold": [0.0, 1.0]}}
DETERMINISTIC = (
    "point",
    "varied",
    "experiment_id",
    "state",
    "gate_passed",
    "gate_epoch",
    "epochs_trained",
    "worst_rule_compliance",
    "analysis",
    "failure_reason",
)


def write_sweep(folder: Path, content: dict, name: str = "tiny") -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps(content))
    return path


def sweep_args(root: Path, sweep_file: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        str(sweep_file),
        "--results-dir",
        str(root / "results"),
        "--sweeps-dir",
        str(root / "sweeps"),
        "--cache-dir",
        str(root / "cache"),
        *extra,
    ]


def table(root: Path, name: str = "tiny") -> list[dict]:
    return json.loads((root / "sweeps" / name / "status.json").read_text())["rows"]


def deterministic(rows: list[dict]) -> list[dict]:
    return [{key: row[key] for key in DETERMINISTIC} for row in rows]


# ---- expansion and validation -----------------------------------------------------------------


def test_the_grid_is_the_product_of_the_axes_in_the_order_asked():
    plan = sweep_from_dict(
        {
            "name": "grid",
            "base": TINY,
            "set": {"training.max_epochs": 1, "analysis.primary.metric": "spectral_gap"},
            "axes": {"graph.jump_scales": [[0.5], [0.75], [0.5, 1.0]], "seed": [1, 2]},
            "order": {"seed": [2], "graph.jump_scales": [[0.5, 1.0]]},
        }
    )
    assert len(plan.points) == 6 and [p.index for p in plan.points] == [1, 2, 3, 4, 5, 6]
    # seed 2 first; within it [0.5, 1.0] first, then the rest in grid order
    assert [(p.varied["seed"], p.varied["graph.jump_scales"]) for p in plan.points] == [
        (2, [0.5, 1.0]),
        (2, [0.5]),
        (2, [0.75]),
        (1, [0.5, 1.0]),
        (1, [0.5]),
        (1, [0.75]),
    ]
    first = plan.points[0]
    assert first.config.seed == 2 and first.config.graph.jump_scales == (0.5, 1.0)
    assert first.config.jumper_r_values() == [4, 8]  # jumps spread over the jumpers: a mixed-r graph
    assert first.config.training.max_epochs == 1 and first.config.analysis.primary.metric == "spectral_gap"
    assert first.config.graph.n == 32  # the base, untouched where nothing varies
    assert first.label == "graph.jump_scales=[0.5,1.0], seed=2"
    assert len({p.experiment_id for p in plan.points}) == 6 and "-r4_8-" in first.experiment_id and "-s2-" in first.experiment_id


def test_the_presets_expand_to_the_r_vs_w_grid_core_points_first():
    quick = load_sweep(REPO / "configs" / "sweep-quick.json")
    assert quick.name == "sweep-quick" and len(quick.points) == 24
    assert [(p.varied["seed"], p.config.jumper_r_values()[0]) for p in quick.points[:5]] == [
        (1, 14),
        (1, 16),
        (1, 18),
        (1, 8),
        (1, 32),
    ]
    assert sorted({p.config.jumper_r_values()[0] for p in quick.points}) == [8, 11, 14, 16, 18, 21, 24, 32]
    assert all(p.config.graph.n == 64 and p.config.model.context_window == 16 for p in quick.points)
    assert all(p.config.training.max_epochs == 20 and p.config.analysis.events == 4000 for p in quick.points)
    anchor = load_sweep(REPO / "configs" / "sweep-anchor.json")
    assert len(anchor.points) == 24 and "BENCHMARKS.md" in anchor.description
    assert sorted({p.config.jumper_r_values()[0] for p in anchor.points}) == [32, 45, 58, 64, 70, 83, 96, 128]
    assert all(p.config.graph.n == 500 and p.config.model.context_window == 64 for p in anchor.points)


def test_every_problem_is_reported_at_once_each_naming_its_point(tmp_path, capsys):
    content = {
        "base": TINY,
        "colour": "blue",
        "axes": {"graph.jump_scales": [[0.5], [3.0]], "seed": [1, -1], "graph.foo": [1], "model": [{}]},
        "order": {"walks.walk_length": [24], "seed": [7]},
    }
    with pytest.raises(SweepError) as caught:
        sweep_from_dict(content, source=tmp_path / "bad.json")
    problems = caught.value.problems
    expected = [
        "colour: unknown key",
        "axes: 'graph.foo' is not a config key: graph has no 'foo'",
        "axes: 'model' is a whole section",
        "order: 'walks.walk_length' is not an axis of this sweep",
        "order.seed: 7 not among the axis values [1,-1]",
        "point 2 (graph.jump_scales=[0.5], seed=-1): seed: Input should be greater than or equal to 0",
        "point 3 (graph.jump_scales=[3.0], seed=1): graph.jump_scales.0: scale 3.0 gives r = 24, which does not fit in walk_length=24",
        "point 4 (graph.jump_scales=[3.0], seed=-1): seed:",
        "point 4 (graph.jump_scales=[3.0], seed=-1): graph.jump_scales.0:",
    ]
    for text in expected:
        assert any(text in problem for problem in problems), (text, problems)
    assert not any(problem.startswith("point 1 ") for problem in problems)

    # through the command line: exit 2, every problem in one message, nothing written
    sweep_file = write_sweep(tmp_path, content, "bad")
    assert main(sweep_args(tmp_path, sweep_file)) == 2
    err = capsys.readouterr().err
    assert all(
        text in err for text in ("graph.foo", "point 3 (graph.jump_scales=[3.0], seed=1)", "order.seed", "nothing was run or written")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


def test_a_problem_of_the_base_is_said_once_and_points_that_share_a_folder_are_refused(tmp_path):
    base = {**TINY, "model": {**TINY["model"], "d_model": 15, "n_heads": 2}}
    with pytest.raises(SweepError) as caught:
        sweep_from_dict({"name": "x", "base": base, "axes": {"seed": [1, 2, 3]}})
    assert caught.value.problems == ["every point (3): model.d_model: 15 is not divisible by n_heads=2"]
    with pytest.raises(SweepError, match=r"point 2 \(analysis.events=80\): same experiment id .* as point 1"):
        sweep_from_dict({"name": "x", "base": TINY, "axes": {"analysis.events": [40, 80]}})
    with pytest.raises(SweepError, match="base: config file not found: .*missing.json"):
        load_sweep(write_sweep(tmp_path, {"base": "missing.json", "axes": {"seed": [1]}}))
    (tmp_path / "base.json").write_text(json.dumps(TINY))  # a base path is read relative to the sweep file
    assert load_sweep(write_sweep(tmp_path, {"base": "base.json", "axes": {"seed": [1]}})).points[0].config.graph.n == 32


def test_executor_options_that_do_not_apply_are_usage_errors(tmp_path, capsys, monkeypatch):
    sweep_file = write_sweep(tmp_path, TWO_POINTS)
    # as on a machine without SLURM, whether or not this one has it (test_sweep_slurm.py: a refused sbatch)
    monkeypatch.setattr(execute.shutil, "which", lambda name: None)
    cases = [
        (["--slurm-partition", "gpu"], "--slurm-partition only apply to --executor slurm"),
        (["--executor", "slurm", "--jobs", "2"], "--slurm-array-parallelism"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time must be positive"),
        (["--executor", "slurm"], "no `srun`"),
    ]
    for extra, message in cases:
        assert main(sweep_args(tmp_path, sweep_file, *extra)) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]  # nothing written


def test_a_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    assert main(sweep_args(tmp_path, write_sweep(tmp_path, TWO_POINTS), "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "1  gate.rule_threshold=0.0  dcsbm-n32-K2-w8-r6-L1-d16-s3-" in out
    assert sum(line.endswith("  new") for line in out.splitlines()) == 2 and "2 point(s) would run" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"]


def test_a_second_sweep_process_on_the_same_sweep_is_refused(tmp_path, capsys):
    sweep_dir = tmp_path / "sweeps" / "tiny"
    sweep_dir.mkdir(parents=True)
    with RunLock(sweep_dir):  # as a live `dcsbm sweep` holds it
        assert main(sweep_args(tmp_path, write_sweep(tmp_path, TWO_POINTS))) == 1
    assert f"in use by process {os.getpid()}" in capsys.readouterr().err
    assert sorted(p.name for p in sweep_dir.iterdir()) == [".lock"] and not (tmp_path / "results").exists()


# ---- the local executor: runs, skips, resumes -------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted two-point sweep through submitit's LocalExecutor, two jobs at once."""
    root = tmp_path_factory.mktemp("reference")
    sweep_file = write_sweep(root, TWO_POINTS)
    done = run_cli(*sweep_args(root, sweep_file, "--jobs", "2"), cwd=root)
    assert done.returncode == 0, done.stderr
    return root, sweep_file, done


def test_a_local_sweep_runs_every_point_and_writes_its_table(reference):
    root, _, done = reference
    rows = table(root)
    assert [(r["point"], r["state"], r["gate_passed"], r["gate_epoch"], r["epochs_trained"], r["analysis"]) for r in rows] == [
        (1, "done", True, 1, 1, "done"),
        (2, "done", False, None, 2, "excluded (gate not passed)"),
    ]
    assert rows[1]["failure_reason"].startswith("gate not passed after 2 epochs") and rows[0]["failure_reason"] is None
    assert all(r["wall_seconds"] > 0 for r in rows) and rows[0]["worst_rule_compliance"] is not None
    sweep_dir = root / "sweeps" / "tiny"
    for row in rows:
        run_dir = root / "results" / row["experiment_id"]
        assert (run_dir / "result.json").is_file()
        assert (
            json.loads((sweep_dir / "configs" / f"{row['experiment_id']}.json").read_text())["gate"]["rule_threshold"]
            == row["varied"]["gate.rule_threshold"]
        )
        record = json.loads((sweep_dir / "points" / f"{row['experiment_id']}.json").read_text())
        assert (
            record["state"] == "done"
            and record["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)
            and record["executor"] == "local"
        )
    analyses = json.loads((root / "results" / rows[0]["experiment_id"] / "analysis" / "index.json").read_text())["analyses"]
    # the point's analysis, and the sampled second estimate dcsbm run adds (analysis.sensitivity_temperature)
    assert [a["name"].split("-")[1] for a in analyses] == ["greedy", "t1"]
    assert all((root / "results" / rows[0]["experiment_id"] / "analysis" / a["name"] / "horizon.json").is_file() for a in analyses)
    assert not (root / "results" / rows[1]["experiment_id"] / "analysis").exists()
    assert (sweep_dir / "sweep.json").read_text() == json.dumps(TWO_POINTS)
    tsv = (sweep_dir / "status.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[:4] == ["point", "gate.rule_threshold", "experiment_id", "state"]
    assert tsv[1].split("\t")[1:4] == ["0.0", rows[0]["experiment_id"], "done"]
    assert len(list((sweep_dir / "jobs").glob("*_0_log.out"))) == 2  # one submitit job per point
    assert "2 done" in done.stdout


def test_a_rerun_skips_finished_points_and_retrains_nothing(reference, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(reference[0], root)
    stamps = {p: p.stat().st_mtime_ns for p in (root / "results").rglob("*") if p.is_file() and p.name != ".lock"}
    jobs_before = sorted(p.name for p in (root / "sweeps" / "tiny" / "jobs").iterdir())
    assert main(sweep_args(root, root / "tiny.json", "--jobs", "2")) == 0
    out = capsys.readouterr().out
    assert "2 points (2 done)" in out.splitlines()[0] and "nothing to run" in out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained or reanalysed
    assert sorted(p.name for p in (root / "sweeps" / "tiny" / "jobs").iterdir()) == jobs_before  # no job started
    assert deterministic(table(root)) == deterministic(table(reference[0]))


def test_a_negative_control_sweep_analyses_the_failed_point_and_a_rerun_finds_both_done(reference, tmp_path, capsys):
    """analysis.include_failed: the same two runs (trained once, in the reference) analysed again, the
    gate-failed one as a negative control; the table says so, and a rerun finds nothing to do (the
    status looks each analysis up by the settings it was made with)."""
    root = tmp_path / "copy"
    shutil.copytree(reference[0], root)
    # the sampled second analysis off (its temperature is the main one's): not what is tested here
    settings = {"analysis.include_failed": True, "analysis.sensitivity_temperature": 0.0}
    controls = write_sweep(root, {**TWO_POINTS, "set": settings}, name="controls")
    assert main(sweep_args(root, controls, "--jobs", "2")) == 0
    rows = table(root, "controls")
    assert [r["experiment_id"] for r in rows] == [r["experiment_id"] for r in table(reference[0])]  # nothing retrained
    assert [(r["state"], r["analysis"]) for r in rows] == [("done", "done"), ("done", "negative control: done")]
    assert (root / "results" / rows[1]["experiment_id"] / "analysis" / "index.json").is_file()
    assert "gate not passed in 2 epochs (negative control: done)" in capsys.readouterr().out
    assert main(sweep_args(root, controls, "--jobs", "2")) == 0
    assert "nothing to run" in capsys.readouterr().out


def test_a_killed_sweep_rerun_finishes_with_the_same_table(reference, tmp_path):
    ref_root, sweep_file, _ = reference
    shutil.copytree(ref_root / "cache", tmp_path / "cache")  # the data are not what is tested
    signal_file = tmp_path / "paused"
    # -1: faults.py compares these with the epoch in a checkpoint's name, which the gate checkpoint
    # (point 1 passes) lacks (None == an absent key would pause or fail its commit)
    hooks = {
        "signal_file": str(signal_file),
        "pause_at_step": STEPS_PER_EPOCH + 10,
        "pause_at_checkpoint_commit": -1,
        "fail_checkpoint_commit": -1,
    }
    env = {**os.environ, "DCSBM_TEST_HOOKS": json.dumps(hooks)}
    command = [sys.executable, "-m", "dcsbm_transformer.cli", *sweep_args(tmp_path, sweep_file, "--jobs", "2")]
    sweep = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not signal_file.exists():  # point 2 pauses in its second epoch (point 1 stops after its first)
        assert sweep.poll() is None, sweep.communicate()
        assert time.monotonic() < deadline, "the sweep never reached its pause point"
        time.sleep(0.05)
    job_pid, where = signal_file.read_text().split(maxsplit=1)
    job_pid = int(job_pid)
    assert where == f"step {STEPS_PER_EPOCH + 10}"
    sweep.kill()  # SIGKILL: no handler runs
    sweep.communicate()
    deadline = time.monotonic() + 10
    while owner_alive((job_pid, None)) and time.monotonic() < deadline:  # the orphaned job stops by itself
        time.sleep(0.1)
    assert not owner_alive((job_pid, None)), "the job of the killed sweep is still running"
    states = {row["point"]: row["state"] for row in table(tmp_path)}
    assert states[2] == "running"  # what the table said when the sweep died

    done = run_cli(*sweep_args(tmp_path, sweep_file, "--jobs", "2"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "partial (1/2 epochs trained)" in done.stdout, done.stdout
    assert deterministic(table(tmp_path)) == deterministic(table(ref_root))
    logs = "".join(p.read_text() for p in (tmp_path / "sweeps" / "tiny" / "jobs").glob("*_0_log.out"))
    assert "from checkpoint_epoch_0001.pt (epoch 1)" in logs  # resumed, not started over


# ---- failures ---------------------------------------------------------------------------------


def test_a_failing_point_is_recorded_and_the_others_finish(tmp_path, monkeypatch, capsys):
    # p_out 0.0001: the blocks are never connected, every graph draw is rejected (GraphGenerationError);
    # a NaN loss at step 150 breaks the two-epoch point and spares the one-epoch point.
    monkeypatch.setenv("DCSBM_TEST_HOOKS", json.dumps({"nan_at_step": 150}))
    content = {
        "base": {**TINY, "gate": {**TINY["gate"], "rule_threshold": 1.0}},
        "axes": {"graph.p_out": [0.2, 0.0001], "training.max_epochs": [1, 2]},
    }
    sweep_file = write_sweep(tmp_path, content)
    assert main(sweep_args(tmp_path, sweep_file, "--executor", "debug")) == 1
    err = capsys.readouterr().err
    rows = table(tmp_path)
    assert [(r["point"], r["state"]) for r in rows] == [(1, "done"), (2, "failed"), (3, "failed"), (4, "failed")]
    assert "training loss became nan" in rows[1]["failure_reason"] and rows[1]["epochs_trained"] == 1
    assert all(r["failure_reason"].startswith("GraphGenerationError: ") for r in rows[2:])
    assert rows[0]["epochs_trained"] == 1 and rows[0]["gate_passed"] is False
    assert "3 point(s) failed" in err and all(f"point {i} " in err for i in (2, 3, 4)) and "dcsbm run --restart --config" in err
    record = json.loads((tmp_path / "sweeps" / "tiny" / "points" / f"{rows[2]['experiment_id']}.json").read_text())
    assert "GraphGenerationError" in record["traceback"]

    # a rerun retries what may now work (the graphs), not the finished broken run, nor the done point
    monkeypatch.delenv("DCSBM_TEST_HOOKS")
    assert main(sweep_args(tmp_path, sweep_file, "--executor", "debug")) == 1
    out = capsys.readouterr().out
    assert (
        "point 3 (graph.p_out=0.0001, training.max_epochs=1) submitted" in out
        and "point 2 (graph.p_out=0.2, training.max_epochs=2) submitted" not in out
    )
    assert deterministic(table(tmp_path)) == deterministic(rows)


def test_a_job_that_dies_without_a_result_is_recorded_as_failed(tmp_path, monkeypatch):
    plan = sweep_from_dict({"name": "dies", "base": TINY, "axes": {"seed": [1]}})
    settings = SweepSettings(
        executor="local", results_root=tmp_path / "results", sweeps_root=tmp_path / "sweeps", cache_root=tmp_path / "cache"
    )

    class Dies(PointJob):
        def __call__(self):
            os._exit(9)  # like the OOM killer: no exception, no result

    import dcsbm_transformer.sweep.execute as execute

    original = execute.point_job
    monkeypatch.setattr(execute, "point_job", lambda point, s, d: Dies(**vars(original(point, s, d))))
    outcome = run_sweep(plan, settings, echo=lambda _: None)
    (row,) = outcome.rows
    assert row["state"] == "failed" and "ended without a result" in row["failure_reason"] and "_0_log.out" in row["failure_reason"]


# ---- SLURM, through submitit's own mocks ------------------------------------------------------


def test_slurm_array_script_and_requeue_resume_the_same_point(tmp_path, capsys):
    # platform.processor() (called by torch/result environment code) runs a subprocess the first
    # time; under submitit's mock that subprocess is the fake sbatch, so fill its cache first
    # (the test then passes alone as well as after the file's other tests)
    platform.processor()
    plan = sweep_from_dict(
        {"name": "slurm", "base": {**TINY, "gate": {**TINY["gate"], "rule_threshold": 1.0}}, "axes": {"seed": [1, 2]}}
    )
    settings = SweepSettings(
        executor="slurm",
        results_root=tmp_path / "results",
        sweeps_root=tmp_path / "sweeps",
        cache_root=tmp_path / "cache",
        slurm=SlurmSettings(partition="gpu", gpus=2, time_minutes=90, array_parallelism=1, cpus_per_task=3, mem_gb=16),
    )
    sweep_dir = tmp_path / "sweeps" / "slurm"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR2)}
    try:
        with mocked_slurm() as mock:
            executor = make_executor(settings, sweep_dir / "jobs", plan.name)
            jobs = executor.submit_array([point_job(p, settings, sweep_dir) for p in plan.points])
            array_id = jobs[0].job_id.split("_")[0]
            assert [job.job_id for job in jobs] == [f"{array_id}_0", f"{array_id}_1"]
            sbatch = submitit.core.core.Job(sweep_dir / "jobs", job_id=array_id).paths.submission_file.read_text()
            for line in (
                "#SBATCH --partition=gpu",
                "#SBATCH --gpus-per-node=2",
                "#SBATCH --time=90",
                "#SBATCH --array=0-1%1",
                "#SBATCH --cpus-per-task=3",
                "#SBATCH --mem=16GB",
                "#SBATCH --job-name=dcsbm-slurm",
                "#SBATCH --signal=USR2@120",
                "export OMP_NUM_THREADS=3",
            ):
                assert line in sbatch.splitlines(), (line, sbatch)

            # preempted mid-training: the point's run has one of two epochs (as a killed job leaves it)
            job, point = jobs[1], plan.points[1]

            def stop(trainer, step):
                if step == STEPS_PER_EPOCH + 5:
                    raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                run_experiment(
                    point.config,
                    RunOptions(results_root=settings.results_root, cache_root=settings.cache_root),
                    hooks=TrainingHooks(after_step=stop),
                    echo=lambda _: None,
                )
            with mock.job_context(job.job_id):
                delayed = DelayedSubmission.load(job.paths.submitted_pickle)
                handler = job_environment.SignalHandler(submitit_slurm.SlurmJobEnvironment(), job.paths, delayed)
                with pytest.raises(SystemExit), mock_requeue(called_with=3):  # requeued, 3 timeouts still allowed
                    handler.checkpoint_and_try_requeue(signal.SIGUSR2)
            requeued = DelayedSubmission.load(job.paths.submitted_pickle)
            assert isinstance(requeued.function, PointJob) and requeued.function.point == 2
            assert requeued.function.config == point.config.to_dict() and requeued.function.threads == 3

            with mock.job_context(job.job_id):  # the requeued job runs
                submission.process_job(job.paths.folder)
            record = job.result()
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert record["state"] == "done" and record["point"] == 2 and record["job_id"] == job.job_id and record["threads"] == 3
    assert "resuming " in capsys.readouterr().out
    result = json.loads((run_directory(point.config, settings.results_root) / "result.json").read_text())
    assert result["training"]["epochs_trained"] == 2 and len(result["curves"]["train_loss"]) == 2 * STEPS_PER_EPOCH
    assert (run_directory(point.config, settings.results_root) / CHECKPOINT_DIR / "checkpoint_epoch_0001.pt").is_file()
