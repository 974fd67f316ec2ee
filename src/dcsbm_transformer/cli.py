"""The ``dcsbm`` command line: ``dcsbm run`` (train to the gate) and ``dcsbm generate`` (write data).

User mistakes (a missing file, a bad config, bad arguments) exit with status 2 and a message
listing every problem, without a traceback and before anything is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .config import ConfigError, ExperimentConfig, load_config

USAGE_ERROR = 2


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one message, exit status 2."""


def _read_config(path: str) -> ExperimentConfig:
    try:
        return load_config(path)
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None
    except ConfigError as error:
        raise UsageError(str(error)) from None


def command_generate(args: argparse.Namespace) -> int:
    from .data.dataset import load_or_build_data, write_data

    config = _read_config(args.config)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    data = load_or_build_data(config, args.cache_dir)
    write_data(data, out, config)
    (out / "config.json").write_text(config.to_json())
    print(
        f"wrote {out}/graph.npz, train.npz, eval.npz: n={data.graph.n}, {data.graph.n_edges} edges, "
        f"{len(data.graph.jumper_vertex)} jumpers; {len(data.train.walks)} train and {len(data.eval.walks)} eval walks"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dcsbm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write graph.npz, train.npz and eval.npz for a config")
    generate.add_argument("--config", required=True, help="experiment config (JSON)")
    generate.add_argument("--out", required=True, help="folder to write the data files into")
    generate.add_argument("--cache-dir", default=None, help="data cache (default: $DCSBM_CACHE_DIR or ./.cache)")
    generate.set_defaults(handler=command_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"dcsbm {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
