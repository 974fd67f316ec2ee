"""The ``dcsbm`` command line: ``dcsbm run`` (the main job: train to the gate, analyse, report),
``dcsbm generate`` (write data) and ``dcsbm analyze`` (SVD metrics of a trained run's attention at
every generated token, their predictive horizons, figures and report).

Exit status: 0 done (a run that finished without passing the gate is a result, flagged in
result.json); 2 a mistake in the request (missing file, invalid config, bad argument), reported
with every problem and before anything is written; 1 an expected failure of a well-formed
request (run folder locked, no usable checkpoint, disk full...), reported without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ConfigError, ExperimentConfig, load_config
from .data.dataset import DataIntegrityError, load_or_build_data, write_data
from .data.dcsbm import GraphGenerationError
from .data.walks import WalkGenerationError
from .devices import resolve_device
from .experiment import RunOptions
from .pipeline import run_pipeline
from .storage import atomic_write_bytes
from .training.checkpoint import CheckpointError, CheckpointWriteError
from .training.faults import hooks_from_environment
from .analysis.events import AnalysisEventsError
from .analysis.run import AnalysisRefused, analyze_run
from .training.lock import RunLockedError
from .training.trainer import CompileError

USAGE_ERROR = 2
RUNTIME_FAILURE = 1
RUNTIME_ERRORS = (
    AnalysisEventsError, AnalysisRefused, CheckpointError, CheckpointWriteError, CompileError, DataIntegrityError,
    GraphGenerationError, RunLockedError, WalkGenerationError,
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


def command_run(args: argparse.Namespace) -> int:
    config = _read_config(args.config)
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
    run_pipeline(config, options, analyze=not args.no_analyze, hooks=hooks_from_environment())
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


def command_analyze(args: argparse.Namespace) -> int:
    folder = Path(args.results_dir)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such run folder (pass results/<experiment_id>)")
    if args.events is not None and args.events < 1:
        raise UsageError(f"--events must be a positive number of rule events, got {args.events}")
    try:
        resolve_device(args.device)
    except ValueError as error:
        raise UsageError(str(error)) from None
    analyze_run(folder, events=args.events, device=args.device, precision=args.precision, include_failed=args.include_failed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcsbm", description="Train transformers on DCSBM walks with hidden jumper rules.")
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
    run.add_argument("--cache-dir", default=None, help="data cache (default: $DCSBM_CACHE_DIR or ./.cache)")
    run.add_argument("--no-analyze", action="store_true", help="stop after training and the gate (no analysis, no report)")
    run.set_defaults(handler=command_run)

    generate = commands.add_parser("generate", help="write graph.npz, train.npz and eval.npz for a config")
    generate.add_argument("--config", required=True, help="experiment config (JSON)")
    generate.add_argument("--out", required=True, help="folder to write the data files into")
    generate.add_argument("--cache-dir", default=None, help="data cache (default: $DCSBM_CACHE_DIR or ./.cache)")
    generate.set_defaults(handler=command_generate)

    analyze = commands.add_parser("analyze", help="SVD metrics of the attention internals at every generated token")
    analyze.add_argument("results_dir", metavar="RESULTS_DIR", help="one run's folder: results/<experiment_id>")
    analyze.add_argument("--events", type=int, default=None, help="rule events to analyse (default: the config's analysis.events)")
    analyze.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto = CUDA when present")
    analyze.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast for the forward passes")
    analyze.add_argument("--include-failed", action="store_true", help="analyse a run whose gate did not pass (labelled exploratory)")
    analyze.set_defaults(handler=command_analyze)
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
