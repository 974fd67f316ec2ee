"""How far can a perturbation of QKᵀ move the attention block? A bound, and its test on the model.

**The bound** (derived step by step in docs/maths.md, "A perturbation bound"). One head of one layer,
a window of T positions; scores ``S = QKᵀ/√d`` (d = d_head), the causal mask M (key k ≤ query i),
weights ``A = softmax_M(S)`` row by row over the allowed keys, values V [T, d], the head's slice of the
output projection W_o [d, d_model]. A perturbation E [T, T] of QKᵀ changes the scores by E/√d; only
its entries on the mask matter, ``E_M = E ⊙ M``. With ``C = I − 11ᵀ/T`` (centring over positions):

* attention: ``‖ΔA‖_F ≤ ‖E_M‖_F / (2√d)`` — each row's softmax is ½-Lipschitz in ℓ2 (its Jacobian
  diag(a) − aaᵀ is a covariance matrix of a variable with Σx² = 1, so its largest eigenvalue is at
  most ½ by Popoviciu's inequality), rows squared and summed;
* A·V: ``‖ΔA V‖_F ≤ ‖ΔA‖_F ‖C V‖_2`` — every row of ΔA sums to 0, so ΔA V = ΔA (C V);
* AVWₒ: ``‖ΔA V W_o‖_F ≤ ‖E_M‖_F ‖C V W_o‖_2 / (2√d)``;
* the block (every head of the layer perturbed at once, the bias cancels):
  ``‖Σ_h ΔA_h V_h W_o,h‖_F ≤ Σ_h ‖E_M,h‖_F ‖C V_h W_o,h‖_2 / (2√d)``.

Global, not first-order: it holds for a perturbation of any size (the mean-value theorem in integral
form over the segment S → S + E/√d). It stops at the block's output; the layers above (layer norm,
MLP, further attention) are not bounded here.

**The test** (:func:`measure_perturbation`). For windows of the analysis's events and each layer:
perturbations of QKᵀ with ``‖E_M‖_F = ε ‖(QKᵀ)_M‖_F`` for ε in ``FRACTIONS`` (1–25%), every head of
the layer at once, in two directions per (window, head): ``random`` (i.i.d. Gaussian on the causal
support, scaled) and ``top_singular`` (the top singular pair of the head's masked QKᵀ, u₁v₁ᵀ on the
causal support, scaled: the direction in which QKᵀ is largest). Each runs through the model's own
kernel (``interventions.ScorePerturbation`` inside ``intervene``), in a float64 copy of the model so that
rounding cannot fake an exceedance. Per stage: the share of (window, head) cases whose observed change
exceeds the bound (a true bound: 0; tolerance ``TOLERANCE`` relative) with its Wilson interval, and the
tightness observed / bound (median, 90th percentile, maximum).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..model import ExtractionMode, TransformerLM
from .interventions import ScorePerturbation, intervene
from .measure import proportion

__all__ = ["FRACTIONS", "KINDS", "STAGES", "block_bound", "head_bounds", "measure_perturbation", "perturbation_directions"]

FRACTIONS = (0.01, 0.025, 0.05, 0.1, 0.25)
KINDS = ("random", "top_singular")
STAGES = ("attention", "av", "avwo", "block")
STAGE_TEXT = {
    "attention": "‖ΔA‖_F ≤ ‖E_M‖_F / (2√d_head), per head",
    "av": "‖ΔA·V‖_F ≤ ‖ΔA bound‖ · ‖C V‖_2, per head",
    "avwo": "‖ΔA·V·W_o‖_F ≤ ‖E_M‖_F ‖C V W_o‖_2 / (2√d_head), per head",
    "block": "‖Σ_h ΔA_h V_h W_o,h‖_F ≤ Σ_h of the heads' AVWₒ bounds, every head of the layer perturbed at once",
}
TOLERANCE = 1e-9  # relative: observed > bound · (1 + TOLERANCE) counts as an exceedance (float64)
MAX_WINDOWS = 256


def _centred_norm(matrix: torch.Tensor) -> torch.Tensor:
    """‖C X‖_2 for X [..., T, n], C = I − 11ᵀ/T (the rows' mean subtracted): [...]."""
    return torch.linalg.matrix_norm(matrix - matrix.mean(dim=-2, keepdim=True), ord=2)


def head_bounds(
    delta: torch.Tensor, mask: torch.Tensor, values: torch.Tensor, w_o: torch.Tensor, d_head: int
) -> dict[str, torch.Tensor]:
    """The bounds of one layer's heads for a perturbation ``delta`` [B, H, T, T] of QKᵀ.

    mask bool [T, T] (causal); values [B, H, T, d_head]; w_o [H, d_head, d_model]. Returns
    ``attention``, ``av``, ``avwo``, each [B, H] (see the module docstring for the formulas)."""
    attention = torch.linalg.matrix_norm(delta * mask, ord="fro") / (2.0 * np.sqrt(d_head))
    return {
        "attention": attention,
        "av": attention * _centred_norm(values),
        "avwo": attention * _centred_norm(values @ w_o[None]),
    }


def block_bound(bounds: dict[str, torch.Tensor]) -> torch.Tensor:
    """The layer's block bound [B]: the heads' AVWₒ bounds summed (triangle inequality)."""
    return bounds["avwo"].sum(dim=1)


def perturbation_directions(qkt: torch.Tensor, mask: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Unit-Frobenius directions on the causal support, [B, H, T, T], for QKᵀ [B, H, T, T] (masked).

    ``random``: i.i.d. standard normal entries on the mask, normalised. ``top_singular``: u₁v₁ᵀ of the
    masked QKᵀ, restricted to the mask and normalised."""
    if kind == "random":
        direction = torch.randn(qkt.shape, generator=generator, dtype=torch.float64).to(qkt.device) * mask
    elif kind == "top_singular":
        u, _, vh = torch.linalg.svd(qkt, full_matrices=False)
        direction = (u[..., :, :1] @ vh[..., :1, :]) * mask
    else:
        raise ValueError(f"perturbation kind {kind!r}: expected one of {KINDS}")
    norm = torch.linalg.matrix_norm(direction, ord="fro")[..., None, None]
    return direction / norm.clamp_min(torch.finfo(direction.dtype).tiny)


def _summary(observed: np.ndarray, bound: np.ndarray) -> dict[str, Any]:
    """The exceed share (Wilson 95%) and the tightness observed / bound of some cases."""
    ratio = observed / bound
    exceed = int((observed > bound * (1 + TOLERANCE)).sum())
    return {
        "exceed": proportion(exceed, ratio.size),
        "tightness_q10": float(np.quantile(ratio, 0.1)),
        "tightness_median": float(np.median(ratio)),
        "tightness_q90": float(np.quantile(ratio, 0.9)),
        "tightness_max": float(ratio.max()),
    }


@torch.no_grad()
def measure_perturbation(
    model: TransformerLM,
    prompts: torch.Tensor,
    layers: list[int],
    *,
    seed: int,
    fractions: tuple[float, ...] = FRACTIONS,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    """Test the bound on windows ``prompts`` [E, w] (int64) at ``layers``; returns the ``perturbation``
    section of mechanism.json: ``settings``, ``rows`` (one per kind, fraction, stage and layer, and one
    with layer None pooling the layers: the exceed share and the tightness) and ``overall_exceed``. Runs on a float64 copy of the model (the model is untouched)."""
    if not fractions or any(not 0 < f for f in fractions):
        raise ValueError(f"fractions must be positive, got {fractions}")
    model64 = copy.deepcopy(model).double().eval()
    prompts = prompts.to(next(model64.parameters()).device)
    intact = model64(prompts, ExtractionMode.SVD_TARGETS, check_ids=False)
    w_o, _ = model64.attention_output_weights()  # [L, H, d_head, d_model]
    d_head, window = model64.d_head, prompts.shape[1]
    mask = torch.ones(window, window, dtype=torch.bool, device=prompts.device).tril()
    generator = torch.Generator().manual_seed(int(seed))
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        pooled: dict[str, list[list[np.ndarray]]] = {stage: [[] for _ in fractions] for stage in STAGES}
        for layer in layers:
            qkt = intact.qkt[:, layer] / model64.blocks[layer].attn.scale  # raw QKᵀ, masked: [E, H, T, T]
            size = torch.linalg.matrix_norm(qkt, ord="fro")[..., None, None]
            direction = perturbation_directions(qkt, mask, kind, generator)
            values, weights = intact.values[:, layer], intact.attention[:, layer]
            for f_index, fraction in enumerate(fractions):
                delta = fraction * size * direction
                with intervene(model64, {layer: ScorePerturbation(delta)}):
                    edited = model64(prompts, ExtractionMode.SVD_TARGETS, check_ids=False)
                change = edited.attention[:, layer] - weights  # [E, H, T, T]
                per_head = change @ values  # [E, H, T, d_head]
                per_head_out = per_head @ w_o[layer][None]  # [E, H, T, d_model]
                observed = {
                    "attention": torch.linalg.matrix_norm(change, ord="fro"),
                    "av": torch.linalg.matrix_norm(per_head, ord="fro"),
                    "avwo": torch.linalg.matrix_norm(per_head_out, ord="fro"),
                    "block": torch.linalg.matrix_norm(per_head_out.sum(dim=1), ord="fro"),
                }
                bounds = head_bounds(delta, mask, values, w_o[layer], d_head)
                bounds["block"] = block_bound(bounds)
                for stage in STAGES:
                    got, bound = observed[stage].cpu().numpy().ravel(), bounds[stage].cpu().numpy().ravel()
                    pooled[stage][f_index].append(np.stack([got, bound]))
                    rows.append({"kind": kind, "fraction": fraction, "stage": stage, "layer": layer, **_summary(got, bound)})
        for stage in STAGES:
            for f_index, fraction in enumerate(fractions):
                got, bound = np.concatenate(pooled[stage][f_index], axis=1)
                rows.append({"kind": kind, "fraction": fraction, "stage": stage, "layer": None, **_summary(got, bound)})
    everything = [row["exceed"] for row in rows if row["layer"] is not None]
    return {
        "settings": {
            "windows": int(prompts.shape[0]),
            "layers": list(layers),
            "fractions": list(fractions),
            "kinds": list(kinds),
            "norm": "Frobenius norm on the causal support: ‖E_M‖_F = fraction · ‖(QKᵀ)_M‖_F per window and head (QKᵀ before the 1/√d_head scale)",
            "precision": "float64 copy of the model",
            "tolerance": TOLERANCE,
            "seed": int(seed),
            "stages": STAGE_TEXT,
        },
        "overall_exceed": proportion(sum(p["k"] for p in everything), sum(p["n"] for p in everything)),
        "rows": rows,
    }
