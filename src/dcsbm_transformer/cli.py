"""The ``dcsbm`` command line: ``dcsbm run`` (the main job: train to the gate, analyse, report),
``dcsbm generate`` (write data), ``dcsbm analyze`` (SVD metrics of a trained run's attention at
every generated token, their predictive horizons, figures and report), ``dcsbm sweep`` (every
point of a sweep file, through submitit or SkyPilot, with estimates and a budget), ``dcsbm
calibrate`` (one run's costs timed on this machine) and ``dcsbm report`` (runs compared, or listed).

Exit status: 0 done (a run that finished without passing the gate is a result, flagged in
result.json); 2 a mistake in the request (missing file, invalid config, bad argument), reported
with every problem and before anything is written; 1 an expected failure of a well-formed
request (run folder locked, no usable checkpoint, disk full...), reported without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .analysis.measure.events import AnalysisEventsError
from .analysis.run import AnalysisNameError, AnalysisRefused, analyze_run
from .api import load_run
from .comparison import ComparisonError, add_report_parser
from .config import ConfigError, ExperimentConfig, load_config, parse_assignments, with_assignments
from .data.dataset import DataIntegrityError, load_or_build_data, write_data
from .data.dcsbm import GraphGenerationError
from .data.walks import WalkGenerationError
from .devices import resolve_device, threads_warning
from .experiment import RunOptions
from .mechanism.run import MechanismRequestError, mechanism_run
from .pipeline import run_pipeline
from .storage import atomic_write_bytes
from .training.checkpoint import CheckpointError, CheckpointWriteError
from .training.faults import hooks_from_environment
from .training.lock import RunLockedError
from .training.results import RESULT_FILE
from .training.trainer import CompileError

USAGE_ERROR = 2
RUNTIME_FAILURE = 1
RUNTIME_ERRORS = (
    AnalysisEventsError,
    AnalysisRefused,
    CheckpointError,
    CheckpointWriteError,
    CompileError,
    DataIntegrityError,
    GraphGenerationError,
    RunLockedError,
    WalkGenerationError,
)


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one message, exit status 2."""


def _read_config(path: str) -> ExperimentConfig:
    try:
        return load_config(path)
    except (FileNotFoundError, ConfigError) as error:
        raise UsageError(str(error)) from None


def _require_directory_path(option: str, folder: Path) -> None:
    """Refuse a folder option where the folder or a parent is an existing file (usage error).

    Checked before anything is written, so the user sees which path is in the way rather than
    a bare "[Errno 20] Not a directory" from deep inside the run.
    """
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UsageError(f"{option} {folder}: {blocker} exists and is not a directory")


def _with_sets(config: ExperimentConfig, items: list[str], sections: tuple[str, ...] | None = None) -> ExperimentConfig:
    """``config`` with the ``--set key=value`` items applied and validated (a usage error otherwise)."""
    if not items:
        return config
    try:
        return with_assignments(config, parse_assignments(items), sections=sections)
    except ConfigError as error:
        raise UsageError(str(error)) from None


def _set_threads(args: argparse.Namespace) -> None:
    """``--threads N`` sets torch's threads; without it, one warning (with the fix) when the cores are busy."""
    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    chosen = args.threads is not None or bool(os.environ.get("OMP_NUM_THREADS"))
    if (warning := threads_warning(torch.get_num_threads(), chosen)) is not None:
        print(f"dcsbm {args.command}: warning: {warning}", file=sys.stderr)


def command_run(args: argparse.Namespace) -> int:
    config = _with_sets(_read_config(args.config), args.set)
    _set_threads(args)
    try:
        resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    _require_directory_path("--results-dir", Path(args.results_dir))
    options = RunOptions(
        results_root=Path(args.results_dir),
        device=args.device,
        restart=args.restart,
        precision=args.precision,
        compile=args.compile,
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
    )
    run_pipeline(config, options, analyze=not args.no_analyze, mechanism=not args.no_mechanism, hooks=hooks_from_environment())
    return 0


def command_generate(args: argparse.Namespace) -> int:
    config = _read_config(args.config)
    out = Path(args.out)
    _require_directory_path("--out", out)
    data = load_or_build_data(config, args.cache_dir)
    write_data(data, out, config)
    atomic_write_bytes(out / "config.json", config.to_json().encode())
    print(
        f"wrote {out}/graph.npz, train.npz, eval.npz: n={data.graph.n}, {data.graph.n_edges} edges, "
        f"{len(data.graph.jumper_vertex)} jumpers; {len(data.train.walks)} train and {len(data.eval.walks)} eval walks"
    )
    return 0


def _run_folder_request(args: argparse.Namespace) -> Path:
    """The checks ``analyze`` and ``mechanism`` share: a run folder that exists and has finished an
    epoch, a positive ``--events``, a device that exists. Usage errors, before anything is written."""
    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such run folder (pass results/<experiment_id>)")
    if not ((folder / "config.json").is_file() and (folder / RESULT_FILE).is_file()):
        try:  # not a run folder (the results root?), or training never finished an epoch: load_run says which
            load_run(folder)
        except FileNotFoundError as error:
            raise UsageError(str(error)) from None
    if args.events is not None and args.events < 1:
        raise UsageError(f"--events must be a positive number of rule events, got {args.events}")
    try:
        resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return folder


def command_analyze(args: argparse.Namespace) -> int:
    folder = _run_folder_request(args)
    analysis, overrides = None, {}
    if args.set:
        try:
            overrides = parse_assignments(args.set)
        except ConfigError as error:
            raise UsageError(str(error)) from None
        if (folder / "config.json").is_file():
            analysis = _with_sets(_read_config(str(folder / "config.json")), args.set, sections=("analysis",)).analysis
    _set_threads(args)
    try:
        analyze_run(
            folder,
            events=args.events,
            analysis=analysis,
            name=args.name,
            overrides=overrides,
            device=args.device,
            precision=args.precision,
            include_failed=args.include_failed,
        )
    except AnalysisNameError as error:
        raise UsageError(str(error)) from None
    return 0


def command_mechanism(args: argparse.Namespace) -> int:
    folder = _run_folder_request(args)
    try:
        mechanism_run(
            folder,
            events=args.events,
            layers=args.layers,
            include_failed=args.include_failed,
            analysis=args.analysis,
            device=args.device,
        )
    except (MechanismRequestError, FileNotFoundError) as error:  # FileNotFoundError: not a run folder (load_run says why)
        raise UsageError(str(error)) from None
    return 0


SLURM_OPTIONS = (
    "slurm_partition",
    "slurm_gpus",
    "slurm_time",
    "slurm_array_parallelism",
    "slurm_cpus_per_task",
    "slurm_mem_gb",
    "slurm_account",
)


def _sweep_settings(args: argparse.Namespace):
    """SweepSettings from the command line; a combination that makes no sense is a usage error."""
    from .sweep import SlurmSettings, SweepSettings

    given = [f"--{name.replace('_', '-')}" for name in SLURM_OPTIONS if getattr(args, name) is not None]
    if args.executor != "slurm" and given:
        raise UsageError(f"{', '.join(given)} only apply to --executor slurm (this sweep runs with --executor {args.executor})")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    if args.jobs is not None:
        if args.executor == "slurm":
            raise UsageError("--jobs sets the local executor's parallel processes; on SLURM use --slurm-array-parallelism")
        if args.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
        if args.executor == "debug" and args.jobs != 1:
            raise UsageError("--executor debug runs the points one after the other in this process: --jobs must be 1")
    if args.slurm_gpus is not None and args.slurm_gpus < 0:
        raise UsageError(f"--slurm-gpus must be 0 or more, got {args.slurm_gpus}")
    for name in ("slurm_time", "slurm_array_parallelism", "slurm_cpus_per_task", "slurm_mem_gb"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    slurm = {
        key: value
        for key, value in {
            "partition": args.slurm_partition,
            "gpus": args.slurm_gpus,
            "time_minutes": args.slurm_time,
            "array_parallelism": args.slurm_array_parallelism,
            "cpus_per_task": args.slurm_cpus_per_task,
            "mem_gb": args.slurm_mem_gb,
            "account": args.slurm_account,
        }.items()
        if value is not None
    }
    return SweepSettings(
        executor=args.executor,
        jobs=args.jobs or 1,
        results_root=Path(args.results_dir),
        sweeps_root=Path(args.sweeps_dir),
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
        device=args.device,
        precision=args.precision,
        slurm=SlurmSettings(**slurm),
        threads=args.threads,
    )


def command_sweep(args: argparse.Namespace) -> int:
    from .sweep import ExecutorUnavailable, SweepError, assess_all, executor_problem, load_sweep, print_plan, run_sweep
    from .sweep.budget import BudgetError

    try:
        plan = load_sweep(args.sweep_file, overrides=parse_assignments(args.set) if args.set else None)
    except (FileNotFoundError, SweepError, ConfigError) as error:
        raise UsageError(str(error)) from None
    settings = _sweep_settings(args)
    cloud = _cloud_settings(args)
    if cloud is not None:
        from dataclasses import replace

        settings = replace(settings, cloud=cloud)
    requested = _budget_request(args, plan, settings)
    if settings.executor == "local" and not args.dry_run:
        warning = threads_warning(settings.threads_per_job(), args.threads is not None, jobs=settings.jobs)
        if warning is not None:
            print(f"dcsbm sweep: warning: {warning}", file=sys.stderr)
    try:
        resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    _require_directory_path("--results-dir", Path(args.results_dir))
    _require_directory_path("--sweeps-dir", Path(args.sweeps_dir))
    if not args.dry_run and (problem := executor_problem(settings)) is not None:
        raise UsageError(problem)
    if args.dry_run:
        assessments = assess_all(plan, settings)
        print_plan(plan, assessments, print)
        if requested is not None:
            from .sweep.budget import BUDGET_FILE, Budget, BudgetError, estimate_plan, print_estimates

            request, limit = requested
            try:
                ledger = Budget(0.0, {}, Path(args.sweeps_dir) / plan.name / BUDGET_FILE)
            except BudgetError as error:
                raise UsageError(str(error)) from None
            estimates = estimate_plan(plan, request.calibration, request.learned, assessments)
            print_estimates(estimates, request.calibration, print, args.price_per_hour, limit, ledger.spent)
        if cloud is not None:
            _print_first_task(plan, settings, cloud)
        todo = sum(a.state in ("new", "partial") for a in assessments.values())
        print(f"dry run: nothing was run or written; {todo} point(s) would run, into {settings.results_root}/<experiment_id>/")
        return 0
    budget = None
    if requested is not None and requested[1] is not None:
        budget = requested[0]
    try:
        outcome = run_sweep(plan, settings, budget=budget)
    except (ExecutorUnavailable, BudgetError) as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        print("dcsbm sweep: interrupted; rerun the same command to resume (finished points are kept)", file=sys.stderr)
        return 130
    counts = {
        state: sum(row["state"] == state for row in outcome.rows) for state in ("done", "failed", "cancelled", "pending", "running")
    }
    print(
        f"sweep {plan.name}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f"; status table: {outcome.sweep_dir / 'status.tsv'}"
    )
    if outcome.failed:
        lines = "\n".join(
            f"  - point {row['point']} {row['experiment_id']}{' (cancelled)' if row['state'] == 'cancelled' else ''}: {row['failure_reason']}"
            for row in outcome.failed
        )
        print(
            f"dcsbm sweep: {len(outcome.failed)} point(s) failed:\n{lines}\n"
            "Rerunning the same command retries every point that did not finish. A run that finished broken (a NaN loss) "
            f"is kept as it is; `dcsbm run --restart --config {outcome.sweep_dir / 'configs'}/<experiment_id>.json` trains it again.",
            file=sys.stderr,
        )
        return RUNTIME_FAILURE
    return 0


def command_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import GPUS, CalibrationError, calibrate, describe, project, read_calibration, write_calibration

    config = _with_sets(_read_config(args.config), args.set)
    out = Path(args.out)
    _require_directory_path("--out", out.parent)
    if args.project is not None:
        if args.source is None:
            raise UsageError(f"--project {args.project} needs --from CALIBRATION: the measured calibration to project")
        if args.project not in GPUS:
            raise UsageError(f"--project {args.project!r}: unknown GPU (known: {', '.join(GPUS)})")
        try:
            measured = read_calibration(args.source)
            if measured["experiment_id"] != config.experiment_id:
                raise CalibrationError(
                    f"--from {args.source} calibrates {measured['experiment_id']}, not {config.experiment_id} ({args.config})"
                )
            document = project(
                measured,
                args.project,
                host_step_seconds=args.host_step_ms / 1000 if args.host_step_ms is not None else None,
                analysis_seconds_per_event=args.analysis_ms_per_event / 1000 if args.analysis_ms_per_event is not None else None,
            )
        except CalibrationError as error:
            raise UsageError(str(error)) from None
        write_calibration(document, out)
        print(
            f"wrote {out}: {describe(document)}; epoch {document['training']['epoch_seconds']:.1f} s, gate {document['gate']['seconds']:.2f} s"
        )
        return 0
    for name in ("host_step_ms", "analysis_ms_per_event"):
        if getattr(args, name) is not None and args.project is None:
            raise UsageError(f"--{name.replace('_', '-')} only goes with --project GPU")
    if args.source is not None:
        raise UsageError("--from only goes with --project GPU")
    for name in ("target_seconds", "gate_sequences", "analysis_events", "max_steps"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    try:
        resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.precision == "bf16" and args.device == "cpu":
        print("dcsbm calibrate: note: bf16 on a CPU is emulated unless oneDNN has AVX512-BF16/AMX", file=sys.stderr)
    _set_threads(args)
    document = calibrate(
        config,
        device=args.device,
        precision=args.precision,
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
        target_seconds=args.target_seconds or 30.0,
        max_steps=args.max_steps,
        gate_sequences=args.gate_sequences,
        analysis_events=args.analysis_events,
        source=args.config,
    )
    write_calibration(document, out)
    print(f"wrote {out}: {describe(document)}")
    return 0


def _budget_request(args: argparse.Namespace, plan, settings):
    """The calibration, estimates and budget the sweep's flags ask for (usage errors before anything
    is written); None when no --calibration was given."""
    from .calibrate import CalibrationError, read_calibration
    from .sweep.budget import BudgetRequest, default_learnability_paths, learnability_index, shape_problems

    budgeted = args.budget_hours is not None or args.budget_usd is not None
    if args.budget_hours is not None and args.budget_usd is not None:
        raise UsageError("give one budget: --budget-hours or --budget-usd, not both")
    for name in ("budget_hours", "budget_usd", "price_per_hour"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.budget_usd is not None and args.price_per_hour is None:
        raise UsageError("--budget-usd needs --price-per-hour USD (the price of one machine an hour) to turn dollars into hours")
    if args.calibration is None:
        if budgeted or args.price_per_hour is not None or args.learnability:
            given = "a budget" if budgeted else ("--price-per-hour" if args.price_per_hour is not None else "--learnability")
            raise UsageError(f"{given} needs --calibration FILE (written by `dcsbm calibrate CONFIG`): the estimates come from it")
        return None
    if not (budgeted or args.dry_run):
        raise UsageError("--calibration is used by --dry-run (estimates) or a budget (--budget-hours/--budget-usd)")
    try:
        calibration = read_calibration(args.calibration)
    except CalibrationError as error:
        raise UsageError(str(error)) from None
    if problems := shape_problems(plan, calibration, args.calibration):
        raise UsageError("\n  ".join(problems))
    paths = [Path(p) for p in args.learnability] or default_learnability_paths(Path(args.sweeps_dir), exclude=plan.name)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"--learnability {', '.join(missing)}: no such sweep folder or status.json")
    limit = args.budget_hours * 3600 if args.budget_hours is not None else None
    if args.budget_usd is not None:
        limit = args.budget_usd / args.price_per_hour * 3600
    return BudgetRequest(limit or 0.0, calibration, learnability_index(paths), args.price_per_hour), limit


def _cloud_settings(args: argparse.Namespace):
    from .sweep.cloud import CloudSettings

    given = [
        f"--{name.replace('_', '-')}"
        for name in ("cloud_bucket", "cloud_store", "cloud_gpu", "cloud_name", "cloud_sync_command")
        if getattr(args, name) is not None
    ] + (["--no-spot"] if args.no_spot else [])
    if args.executor != "skypilot":
        if given:
            raise UsageError(f"{', '.join(given)} only apply to --executor skypilot (this sweep runs with --executor {args.executor})")
        return None
    if not args.cloud_bucket:
        raise UsageError("--executor skypilot needs --cloud-bucket NAME: the bucket the results are synced through")
    values = {
        "bucket": args.cloud_bucket,
        "store": args.cloud_store,
        "accelerator": args.cloud_gpu,
        "cloud": args.cloud_name,
        "sync_command": args.cloud_sync_command,
    }
    settings = CloudSettings(**{k: v for k, v in values.items() if v is not None}, use_spot=not args.no_spot)
    if not args.dry_run:  # the copy back runs after each point: its program must be here before anything is launched
        from .sweep.cloud import CloudError, sync_command

        try:
            program = sync_command(settings, "x", Path("x"))[0]
        except CloudError as error:
            raise UsageError(str(error)) from None
        if shutil.which(program) is None:
            raise UsageError(
                f"--executor skypilot copies each point's results back with `{program}`, which is not on PATH "
                "(install it, or give --cloud-sync-command)"
            )
    if settings.sync_command is None:
        from .sweep.cloud import SYNC_TEMPLATES

        if settings.store not in SYNC_TEMPLATES:
            raise UsageError(
                f"--cloud-store {settings.store}: no default command to copy results back; give --cloud-sync-command "
                "'... {bucket} {experiment_id} {local}'"
            )
    return settings


def _print_first_task(plan, settings, cloud) -> None:
    """--dry-run with --executor skypilot: the task SkyPilot would receive for the first point."""
    from .sweep.cloud import CloudError, task_config, task_yaml

    point = plan.points[0]
    config_file = Path(settings.sweeps_root) / plan.name / "configs" / f"{point.experiment_id}.json"
    try:
        task = task_config(
            point.experiment_id, config_file, cloud, device=settings.device, precision=settings.precision, analyze=plan.analyze
        )
    except CloudError as error:
        raise UsageError(str(error)) from None
    print(f"the SkyPilot task of {point.describe()} (one such task per point; `sky jobs launch` each):")
    print(task_yaml(task).rstrip())


def command_report(args: argparse.Namespace) -> int:
    from .comparison import command_report as compare

    try:
        return compare(args)
    except ComparisonError as error:  # a path that is not a run or results root, a bad --where, no match
        raise UsageError(str(error)) from None


def _version() -> str:
    try:
        return version("dcsbm-transformer")
    except PackageNotFoundError:  # run from src/ without installing
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcsbm", description="Train transformers on DCSBM walks with hidden jumper rules.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="the main job: train to the sufficiency gate, then analyse and report (each stage resumes or is skipped when done)"
    )
    run.add_argument("--config", default="configs/quick.json", help="experiment config (JSON); default: %(default)s")
    run.add_argument("--results-dir", default="results", help="results root; the run goes to <dir>/<experiment_id>")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = CUDA when present")
    run.add_argument("--restart", action="store_true", help="set the existing run folder aside and start over")
    run.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast (changes numerics)")
    run.add_argument("--compile", action="store_true", help="torch.compile the training forward pass")
    run.add_argument(
        "--cache-dir",
        default=None,
        help="data cache (default: $DCSBM_CACHE_DIR, else $XDG_CACHE_HOME/dcsbm-transformer or ~/.cache/dcsbm-transformer)",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: one per core; a warning says when the cores are busy)",
    )
    run.add_argument("--no-analyze", action="store_true", help="stop after training and the gate (no analysis, no report)")
    run.add_argument("--no-mechanism", action="store_true", help="skip the interventions (dcsbm mechanism) after the analysis")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a dotted config key (value as JSON), e.g. --set training.max_epochs=20; repeatable",
    )
    run.set_defaults(handler=command_run)

    generate = commands.add_parser("generate", help="write graph.npz, train.npz and eval.npz for a config")
    generate.add_argument("--config", required=True, help="experiment config (JSON)")
    generate.add_argument("--out", required=True, help="folder to write the data files into")
    generate.add_argument(
        "--cache-dir",
        default=None,
        help="data cache (default: $DCSBM_CACHE_DIR, else $XDG_CACHE_HOME/dcsbm-transformer or ~/.cache/dcsbm-transformer)",
    )
    generate.set_defaults(handler=command_generate)

    analyze = commands.add_parser("analyze", help="SVD metrics of the attention internals at every generated token")
    analyze.add_argument("results_dir", metavar="RESULTS_DIR", help="one run's folder: results/<experiment_id>")
    analyze.add_argument("--events", type=int, default=None, help="rule events to analyse (default: the config's analysis.events)")
    analyze.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = CUDA when present")
    analyze.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast for the forward passes")
    analyze.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: one per core; a warning says when the cores are busy)",
    )
    analyze.add_argument("--include-failed", action="store_true", help="analyse a run whose gate did not pass (labelled exploratory)")
    analyze.add_argument(
        "--name", default=None, help="label of this analysis: its folder analysis/<name>/ (default: named by its settings)"
    )
    analyze.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an analysis.* key for this analysis (value as JSON), e.g. --set analysis.temperature=1; repeatable. "
        "A new primary is exploratory: the registered one was fixed when the run was created",
    )
    analyze.set_defaults(handler=command_analyze)

    mechanism = commands.add_parser(
        "mechanism",
        help="interventions on an analysis's events: knock out / mean-ablate the jumper, patch it (mechanism.json, report section)",
    )
    mechanism.add_argument("results_dir", metavar="RESULTS_DIR", help="one run's folder: results/<experiment_id>, analysed")
    mechanism.add_argument("--events", type=int, default=None, help="events to measure (default: every event of the analysis)")
    mechanism.add_argument(
        "--layers",
        type=int,
        nargs="+",
        default=None,
        metavar="L",
        help="layers to intervene on, one at a time and then together (default: every layer)",
    )
    mechanism.add_argument(
        "--include-failed", action="store_true", help="measure a run whose gate did not pass (labelled exploratory)"
    )
    mechanism.add_argument(
        "--analysis", default=None, metavar="NAME", help="the analysis whose events to use (default: the run's default analysis)"
    )
    mechanism.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = CUDA when present")
    mechanism.set_defaults(handler=command_mechanism)

    sweep = commands.add_parser(
        "sweep",
        help="run every point of a sweep file (train, gate, analyze) through submitit; reruns skip done points and resume the rest",
    )
    sweep.add_argument("sweep_file", metavar="SWEEP_FILE", help="sweep file (JSON): base config, axes, order")
    sweep.add_argument(
        "--executor",
        default="local",
        choices=["local", "slurm", "debug", "skypilot"],
        help="local: processes on this machine; slurm: a job array; debug: one after the other in this process; "
        "skypilot: one SkyPilot managed job per point on a rented GPU (pip install 'dcsbm-transformer[cloud]')",
    )
    sweep.add_argument("--jobs", type=int, default=None, help="local: points run at once (default 1), each with cores // jobs threads")
    sweep.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads per point (default: local cores // jobs, SLURM --slurm-cpus-per-task)",
    )
    sweep.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a dotted config key for every point (value as JSON), e.g. --set training.max_epochs=20; "
        "repeatable; an axis cannot be set",
    )
    sweep.add_argument(
        "--dry-run", action="store_true", help="validate and print the plan (point, what varies, id, state); write nothing"
    )
    sweep.add_argument("--results-dir", default="results", help="results root; each point goes to <dir>/<experiment_id>")
    sweep.add_argument(
        "--sweeps-dir", default="sweeps", help="the sweep's configs, job logs and status table go to <dir>/<sweep name>"
    )
    sweep.add_argument(
        "--cache-dir",
        default=None,
        help="data cache (default: $DCSBM_CACHE_DIR, else $XDG_CACHE_HOME/dcsbm-transformer or ~/.cache/dcsbm-transformer)",
    )
    sweep.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = CUDA when present (on the machine that runs the job)"
    )
    sweep.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast (changes numerics)")
    sweep.add_argument("--slurm-partition", default=None, help="SLURM partition")
    sweep.add_argument("--slurm-gpus", type=int, default=None, help="GPUs per job (default 1)")
    sweep.add_argument(
        "--slurm-time",
        type=int,
        default=None,
        help="time limit per job in minutes (default 240); a job that hits it is requeued and resumes",
    )
    sweep.add_argument("--slurm-array-parallelism", type=int, default=None, help="array tasks running at once (default 32)")
    sweep.add_argument("--slurm-cpus-per-task", type=int, default=None, help="CPUs per job, and its torch threads (default 4)")
    sweep.add_argument("--slurm-mem-gb", type=float, default=None, help="memory per job in GB (default: the partition's)")
    sweep.add_argument("--slurm-account", default=None, help="SLURM account to charge")
    sweep.add_argument(
        "--calibration",
        default=None,
        metavar="FILE",
        help="a calibration of the sweep's shape (dcsbm calibrate): --dry-run prints each point's expected time; needed by a budget",
    )
    sweep.add_argument("--price-per-hour", type=float, default=None, metavar="USD", help="price of one machine an hour: costs in USD")
    sweep.add_argument(
        "--budget-hours", type=float, default=None, metavar="H", help="start no point whose estimate would pass H machine-hours in all"
    )
    sweep.add_argument("--budget-usd", type=float, default=None, metavar="X", help="the budget in USD (needs --price-per-hour)")
    sweep.add_argument(
        "--learnability",
        action="append",
        default=[],
        metavar="PATH",
        help="a sweep folder (or its status.json) whose finished points give epochs to the gate; repeatable "
        "(default: every other sweep folder under --sweeps-dir)",
    )
    sweep.add_argument("--cloud-bucket", default=None, help="skypilot: the bucket the results are synced through")
    sweep.add_argument("--cloud-store", default=None, help="skypilot: the bucket's store (s3, gcs; default s3)")
    sweep.add_argument("--cloud-gpu", default=None, help="skypilot: accelerators per point (default RTX4090:1)")
    sweep.add_argument("--cloud-name", default=None, help="skypilot: the cloud (e.g. runpod; default: the cheapest SkyPilot finds)")
    sweep.add_argument("--no-spot", action="store_true", help="skypilot: on-demand machines instead of spot/preemptible ones")
    sweep.add_argument(
        "--cloud-sync-command",
        default=None,
        help="skypilot: command copying a point's folder back, with {bucket} {experiment_id} {local} (default by store)",
    )
    sweep.set_defaults(handler=command_sweep)

    calibrate = commands.add_parser(
        "calibrate",
        help="time one run of a config on this machine (epoch, gate, analysis per event, memory) into a calibration file",
    )
    calibrate.add_argument("config", metavar="CONFIG", help="experiment config (JSON)")
    calibrate.add_argument("--out", default="calibration.json", help="the calibration file to write (default: %(default)s)")
    calibrate.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = CUDA when present")
    calibrate.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast")
    calibrate.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads (default: one per core)")
    calibrate.add_argument(
        "--cache-dir",
        default=None,
        help="data cache (default: $DCSBM_CACHE_DIR, else $XDG_CACHE_HOME/dcsbm-transformer or ~/.cache/dcsbm-transformer)",
    )
    calibrate.add_argument(
        "--target-seconds",
        type=float,
        default=None,
        help="time training steps for this long after the warm-up, then extrapolate the epoch (default 30; a whole epoch when shorter)",
    )
    calibrate.add_argument("--max-steps", type=int, default=None, help="time exactly this many steps (after the warm-up)")
    calibrate.add_argument(
        "--gate-sequences", type=int, default=None, help="time the gate on this many sequences and scale (default: all of them)"
    )
    calibrate.add_argument(
        "--analysis-events", type=int, default=None, help="analysis events to time (default: one chunk, at most 512)"
    )
    calibrate.add_argument(
        "--project",
        default=None,
        metavar="GPU",
        help="write an ESTIMATE for a GPU that is not here (rtx4090, rtx3090) from --from's GPU-free figures; runs nothing",
    )
    calibrate.add_argument("--from", dest="source", default=None, metavar="FILE", help="the measured calibration to project")
    calibrate.add_argument(
        "--host-step-ms",
        type=float,
        default=None,
        help="with --project: the host's cost of one training step (default: as --from measured it at tiny shapes)",
    )
    calibrate.add_argument(
        "--analysis-ms-per-event",
        type=float,
        default=None,
        help="with --project: the analysis's cost per event (default: as --from measured it; the analysis is not projected)",
    )
    calibrate.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a dotted config key (value as JSON); repeatable",
    )
    calibrate.set_defaults(handler=command_calibrate)

    add_report_parser(commands).set_defaults(handler=command_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"dcsbm {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except (*RUNTIME_ERRORS, OSError) as error:  # OSError: a folder not writable, a disk full...
        print(f"dcsbm {args.command}: error: {error}", file=sys.stderr)
        return RUNTIME_FAILURE


if __name__ == "__main__":
    sys.exit(main())
