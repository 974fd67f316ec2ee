"""Gate evaluation speed: our greedy generator vs the plain full-recompute one, same prompts.

Both prompt modes of the anchor experiment (1000 sequences): ``jumper_prefix`` (the walk up to
a jumper visit, then r tokens) and ``first_token`` (free-running walks of walk_length tokens).
The model is the anchor model after a short training (``--train-steps`` optimiser steps), so
that its greedy walks look like walks; both generators run on the same model and prompts and
must return identical tokens (checked). ``plain`` recomputes the full logits of every visible
window at every step (``plain_greedy_continue``); ours skips unneeded logits, uses a KV cache
while the context grows and generates merged sequences once (``greedy_continue``).

The limit beside ours: the FLOPs our generator executes (counted by torch's FlopCounterMode in
a separate, untimed pass) at the forward GEMM rate of the model's Linear layers measured in the
same run (``bench.gemm.forward_ceiling``, at the row count the generator feeds the device).
``gemm_floor_s`` is the time those FLOPs would take if everything ran at that rate, and
``vs_floor`` = gemm_floor_s / ours_s the fraction of it we reach.

Run: python -m bench.gate_eval [--config configs/anchor.json] [--train-steps 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import print_table, record
from bench.gemm import forward_ceiling
from dcsbm_transformer.config import config_from_dict, load_config
from dcsbm_transformer.data.dataset import load_or_build_data
from dcsbm_transformer.devices import autocast_factory, synchronize
from dcsbm_transformer.experiment import build_model
from dcsbm_transformer.model import TransformerLM
from dcsbm_transformer.training.evaluation import GateEvaluator
from dcsbm_transformer.training.generation import CPU_TOKENS_PER_FORWARD, greedy_continue, plain_greedy_continue
from dcsbm_transformer.training.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent


def briefly_trained_model(config, data, device: torch.device, steps: int) -> TransformerLM:
    """The config's model after ``steps`` optimiser steps of the real training loop."""
    model = build_model(config, device)
    walks = torch.from_numpy(data.train.walks).to(device)
    Trainer(config, model, walks, evaluator=None, checkpoint_dir=Path("/nonexistent")).train_epoch(1, max_steps=steps)
    return model.eval()


def timed(fn) -> tuple[torch.Tensor, float]:
    synchronize()
    started = time.perf_counter()
    out = fn()
    synchronize()
    return out, time.perf_counter() - started


def executed_flops(fn) -> float:
    """FLOPs of the matrix multiplies (Linear, attention) that ``fn()`` runs."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def compare(model, evaluator: GateEvaluator, device: torch.device, ceiling_gflops: float) -> dict:
    context = torch.from_numpy(evaluator.prompts).to(device)
    lengths = torch.from_numpy(evaluator.prompt_lengths).to(device)
    ours, ours_s = timed(lambda: greedy_continue(model, context, lengths, evaluator.steps))
    plain, plain_s = timed(lambda: plain_greedy_continue(model, context, lengths, evaluator.steps))
    assert torch.equal(ours, plain), "fast and plain generation disagree"
    flops = executed_flops(lambda: greedy_continue(model, context, lengths, evaluator.steps))
    floor_s = flops / (ceiling_gflops * 1e9)
    return {
        "prompt": evaluator.mode,
        "sequences": evaluator.sequence_count,
        "steps": evaluator.steps,
        "ours_s": ours_s,
        "plain_s": plain_s,
        "speedup": plain_s / ours_s,
        "ours_TFLOP": flops / 1e12,
        "gemm_GFLOPs": ceiling_gflops,
        "gemm_floor_s": floor_s,
        "vs_floor": floor_s / ours_s,
        "distinct_outputs": len(torch.unique(ours, dim=0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "anchor.json"))
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast for both generators")
    parser.add_argument("--prompts", nargs="+", default=["jumper_prefix", "first_token"], choices=["jumper_prefix", "first_token"])
    args = parser.parse_args()
    device = torch.device(args.device)
    autocast = autocast_factory(args.precision, device)
    config = load_config(args.config)
    data = load_or_build_data(config)
    started = time.perf_counter()
    model = briefly_trained_model(config, data, device, args.train_steps)
    train_s = time.perf_counter() - started

    gemm_rows = config.gate.eval_sequences if device.type != "cpu" else CPU_TOKENS_PER_FORWARD // config.model.context_window
    ceiling = forward_ceiling(
        rows=gemm_rows,
        context_window=config.model.context_window,
        d_model=config.model.d_model,
        n_layers=config.model.n_layers,
        vocab=config.graph.n,
        dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32,
        device=device,
    )
    rows = []
    for prompt in args.prompts:
        raw = config.to_dict()
        raw["gate"]["prompt"] = prompt
        evaluator = GateEvaluator(config_from_dict(raw), data.graph, data.eval)
        with torch.no_grad(), autocast():
            rows.append({**compare(model, evaluator, device, ceiling), "precision": args.precision})
    title = f"gate evaluation, {Path(args.config).name}, model trained {args.train_steps} steps ({train_s:.0f} s), {device}"
    print_table(title, rows)
    name = "gate_eval" if args.precision == "fp32" else f"gate_eval_{args.precision}"
    record(name, {"config": Path(args.config).name, "train_steps": args.train_steps, "rows": rows}, device)


if __name__ == "__main__":
    main()
