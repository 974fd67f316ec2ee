"""Whole-epoch time of a config, extrapolated to the 50-epoch budget.

Runs the real training loop (``Trainer.train_step`` over the epoch's shuffled windows) for
``--steps`` optimiser steps (default: the whole epoch), then one real gate evaluation, and
reports seconds per step, the epoch time (measured, or extrapolated from the steps run) and
max_epochs × (epoch + evaluation) — the time a run that never passes the gate would take.

With ``--compile`` the forward and backward are compiled first, as ``dcsbm run --compile`` does
it (``Trainer.compile_ahead``), reported as ``compile_s``; then one untimed warm-up step
(allocator, kernel selection), reported as ``warmup_s``. So a compiled epoch is compared with an
eager one on equal terms and the compile cost is still in the table.

``--compile-mode reduce-overhead`` (with --compile) replays forward and backward as CUDA graphs
on a GPU, where a step of the anchor model is bound by launch overhead (bench.training_step's
host-overhead table); on a CPU it is the same as the default mode. The dcsbm CLI's --compile
uses the default mode.

Run: python -m bench.epoch [--config configs/anchor.json] [--steps N] [--device cpu|cuda] [--precision bf16]
     [--compile [--compile-mode default|reduce-overhead|max-autotune-no-cudagraphs]]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import print_table, record
from dcsbm_transformer.config import load_config
from dcsbm_transformer.data.dataset import load_or_build_data
from dcsbm_transformer.devices import autocast_factory, synchronize
from dcsbm_transformer.experiment import build_model
from dcsbm_transformer.training.evaluation import GateEvaluator
from dcsbm_transformer.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "anchor.json"))
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps to time (default: a whole epoch)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="train through torch.compile(model)")
    parser.add_argument(
        "--compile-mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="torch.compile's mode, with --compile",
    )
    args = parser.parse_args()
    if args.compile_mode != "default" and not args.compile:
        parser.error("--compile-mode needs --compile")
    device = torch.device(args.device)
    config = load_config(args.config)
    data = load_or_build_data(config)
    autocast = autocast_factory(args.precision, device)
    model = build_model(config, device)
    walks = torch.from_numpy(data.train.walks).to(device)
    evaluator = GateEvaluator(config, data.graph, data.eval)
    compiled = torch.compile(model, mode=args.compile_mode) if args.compile else None
    trainer = Trainer(config, model, walks, evaluator, Path("/nonexistent"), autocast=autocast, compiled=compiled)
    steps = min(args.steps or trainer.steps_per_epoch, trainer.steps_per_epoch)

    w, batch = config.model.context_window, config.training.batch_size
    compile_s = trainer.compile_ahead() if args.compile else None
    synchronize()
    started = time.perf_counter()
    trainer.train_epoch(1, max_steps=1)
    synchronize()
    warmup_s = time.perf_counter() - started
    started = time.perf_counter()
    trainer.train_epoch(1, max_steps=steps)
    synchronize()
    train_s = time.perf_counter() - started
    evaluation = evaluator.evaluate(model, autocast())

    epoch_s = train_s / steps * trainer.steps_per_epoch
    row = {
        "config": Path(args.config).name,
        "device": str(device),
        "precision": args.precision,
        "compile": args.compile,
        "compile_mode": args.compile_mode if args.compile else None,
        "compile_s": compile_s,
        "warmup_s": warmup_s,
        "steps_timed": steps,
        "steps_per_epoch": trainer.steps_per_epoch,
        "ms_per_step": 1000 * train_s / steps,
        "tokens_per_s": steps * batch * w / train_s,
        "epoch_s": epoch_s,
        "epoch_measured": steps == trainer.steps_per_epoch,
        "gate_eval_s": evaluation.seconds,
        "max_epochs_h": config.training.max_epochs * (epoch_s + evaluation.seconds) / 3600,
    }
    print_table("epoch time", [row])
    variant = args.precision
    if args.compile:
        variant += "_compiled" if args.compile_mode == "default" else f"_compiled_{args.compile_mode.replace('-', '_')}"
    record(f"epoch_{Path(args.config).stem}_{variant}", row, device)


if __name__ == "__main__":
    main()
