"""The ``dcsbm`` command line: ``dcsbm run`` (the main job: train to the gate, analyse, report),
``dcsbm generate`` (write data), ``dcsbm analyze`` (SVD metrics of a trained run's attention at
every generated token, their predictive horizons, figures and report), ``dcsbm sweep`` (every
point of a sweep file, through submitit) and ``dcsbm report`` (runs compared, or listed).

Exit status: 0 done (a run that finished without passing the gate is a result, flagged in
result.json); 2 a mistake in the request (missing file, invalid config, bad argument), reported
with every problem and before anything is written; 1 an expected failure of a well-formed
request (run folder locked, no usable checkpoint, disk full...), reported without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
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

    try:
        plan = load_sweep(args.sweep_file, overrides=parse_assignments(args.set) if args.set else None)
    except (FileNotFoundError, SweepError, ConfigError) as error:
        raise UsageError(str(error)) from None
    settings = _sweep_settings(args)
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
        todo = sum(a.state in ("new", "partial") for a in assessments.values())
        print(f"dry run: nothing was run or written; {todo} point(s) would run, into {settings.results_root}/<experiment_id>/")
        return 0
    try:
        outcome = run_sweep(plan, settings)
    except ExecutorUnavailable as error:
        raise UsageError(str(error)) from None
    except KeyboardInterrupt:
        print("dcsbm sweep: interrupted; rerun the same command to resume (finished points are kept)", file=sys.stderr)
        return 130
    counts = {state: sum(row["state"] == state for row in outcome.rows) for state in ("done", "failed", "pending", "running")}
    print(
        f"sweep {plan.name}: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + f"; status table: {outcome.sweep_dir / 'status.tsv'}"
    )
    if outcome.failed:
        lines = "\n".join(f"  - point {row['point']} {row['experiment_id']}: {row['failure_reason']}" for row in outcome.failed)
        print(
            f"dcsbm sweep: {len(outcome.failed)} point(s) failed:\n{lines}\n"
            "Rerunning the same command retries every point that did not finish. A run that finished broken (a NaN loss) "
            f"is kept as it is; `dcsbm run --restart --config {outcome.sweep_dir / 'configs'}/<experiment_id>.json` trains it again.",
            file=sys.stderr,
        )
        return RUNTIME_FAILURE
    return 0


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
        choices=["local", "slurm", "debug"],
        help="local: processes on this machine; slurm: a job array; debug: one after the other in this process",
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
    sweep.set_defaults(handler=command_sweep)

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
