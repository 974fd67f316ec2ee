"""Matrix-multiply rate (GFLOP/s) at the GEMM shapes of one training step of the model.

A Linear layer y = x Wᵀ with x [M, K], W [N, K] (M = batch·T) costs three GEMMs per step:
forward  x [M, K] · Wᵀ       -> [M, N]
grad in  g [M, N] · W        -> [M, K]
grad W   gᵀ [N, M] · x       -> [N, K]
each 2·M·K·N FLOPs. They are timed with these exact operand layouts. `gemm_ceiling` is the rate
at which a step's Linear GEMMs run back to back: Σ FLOPs / Σ seconds over all of them, each
layer counted as often as the model has it. Model-FLOP utilisation in the other benchmarks is
measured against it.

Run: python -m bench.gemm
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench.common import median_seconds, print_table, record
from dcsbm_transformer.devices import bf16_supported

ANCHOR = dict(batch=64, context_window=64, d_model=128, n_layers=4, vocab=500)


def linear_shapes(batch: int, context_window: int, d_model: int, n_layers: int, vocab: int) -> list[tuple[str, int, int, int, int]]:
    """(name, M, K, N, count per step) of the model's Linear layers, M = batch·T."""
    m, d = batch * context_window, d_model
    return [
        ("qkv", m, d, 3 * d, n_layers),
        ("attn_out", m, d, d, n_layers),
        ("mlp_fc", m, d, 4 * d, n_layers),
        ("mlp_proj", m, 4 * d, d, n_layers),
        ("head", m, d, vocab, 1),
    ]


def _timed_passes(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, repeat: int) -> dict[str, float]:
    """Seconds of each of the three GEMMs of one Linear layer (see the module docstring)."""
    x = torch.randn(m, k, device=device, dtype=dtype)
    w = torch.randn(n, k, device=device, dtype=dtype)
    g = torch.randn(m, n, device=device, dtype=dtype)
    return {
        "forward": median_seconds(lambda: F.linear(x, w), warmup=2, repeat=repeat),
        "grad_input": median_seconds(lambda: g @ w, warmup=2, repeat=repeat),
        "grad_weight": median_seconds(lambda: g.t() @ x, warmup=2, repeat=repeat),
    }


def measure(
    *,
    batch: int,
    context_window: int,
    d_model: int,
    n_layers: int,
    vocab: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    repeat: int = 10,
) -> tuple[list[dict], float]:
    """Per-shape rates and the step ceiling (GFLOP/s) for the model's Linear GEMMs."""
    device = torch.device(device)
    rows, total_flops, total_seconds = [], 0.0, 0.0
    for name, m, k, n, count in linear_shapes(batch, context_window, d_model, n_layers, vocab):
        flops = 2.0 * m * k * n
        seconds = _timed_passes(m, k, n, dtype, device, repeat)
        rows.append(
            {
                "layer": name,
                "M": m,
                "K": k,
                "N": n,
                "dtype": str(dtype).removeprefix("torch."),
                **{f"{p}_GFLOPs": flops / s / 1e9 for p, s in seconds.items()},
            }
        )
        total_flops += 3 * flops * count
        total_seconds += sum(seconds.values()) * count
    return rows, total_flops / total_seconds / 1e9


def gemm_ceiling(
    *,
    batch: int = 64,
    context_window: int = 64,
    d_model: int = 128,
    n_layers: int = 4,
    vocab: int = 500,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    repeat: int = 10,
) -> float:
    """GFLOP/s of one training step's Linear GEMMs at these model shapes (defaults: anchor)."""
    return measure(
        batch=batch,
        context_window=context_window,
        d_model=d_model,
        n_layers=n_layers,
        vocab=vocab,
        dtype=dtype,
        device=device,
        repeat=repeat,
    )[1]


def forward_ceiling(
    *,
    rows: int,
    context_window: int = 64,
    d_model: int = 128,
    n_layers: int = 4,
    vocab: int = 500,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    repeat: int = 10,
) -> float:
    """GFLOP/s of the model's forward Linear GEMMs alone (inference: no gradients) with M =
    rows · context_window, each layer counted as often as the model has it."""
    device = torch.device(device)
    total_flops, total_seconds = 0.0, 0.0
    for _, m, k, n, count in linear_shapes(rows, context_window, d_model, n_layers, vocab):
        x = torch.randn(m, k, device=device, dtype=dtype)
        w = torch.randn(n, k, device=device, dtype=dtype)
        b = torch.randn(n, device=device, dtype=dtype)
        total_flops += 2.0 * m * k * n * count
        total_seconds += median_seconds(lambda: F.linear(x, w, b), warmup=2, repeat=repeat) * count  # noqa: B023 (called at once)
    return total_flops / total_seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    dtypes = [torch.float32] + ([torch.bfloat16] if bf16_supported(args.device) else [])
    payload: dict = {"shapes": ANCHOR, "ceiling_GFLOPs": {}}
    for dtype in dtypes:
        rows, ceiling = measure(**ANCHOR, dtype=dtype, device=args.device, repeat=args.repeat)
        name = str(dtype).removeprefix("torch.")
        print_table(f"GEMM rate at the anchor model's shapes, {name} (step ceiling {ceiling:.1f} GFLOP/s)", rows)
        payload["ceiling_GFLOPs"][name] = ceiling
        payload[f"rows_{name}"] = rows
    path = record("gemm", payload, args.device)
    print(f"\nrecorded in {path}")


if __name__ == "__main__":
    main()
