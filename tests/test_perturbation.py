"""The perturbation bound of mechanism.perturbation (docs/maths.md): the softmax is ½-Lipschitz in ℓ2
and no better; a perturbation of QKᵀ goes through the model's own kernel exactly; and the composed
bound holds on a model for random and top-singular-direction perturbations of 1-25% of ‖QKᵀ‖."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcsbm_transformer.mechanism.interventions import ScorePerturbation, intervene
from dcsbm_transformer.mechanism.perturbation import KINDS, STAGES, measure_perturbation
from dcsbm_transformer.mechanism.report import perturbation_figure, perturbation_finding
from dcsbm_transformer.model import ExtractionMode, TransformerLM


def random_model(n_layers=2, n_heads=2, d_model=16, window=8, seed=0) -> TransformerLM:
    return TransformerLM(20, window, d_model, n_layers, n_heads, generator=torch.Generator().manual_seed(seed)).eval()


def test_the_softmax_is_half_lipschitz_and_the_half_is_attained():
    generator = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(20000, 6, generator=generator, dtype=torch.float64)
    e = torch.randn(20000, 6, generator=generator, dtype=torch.float64) * torch.logspace(-3, 1, 20000, dtype=torch.float64)[:, None]
    ratio = (torch.softmax(x + e, -1) - torch.softmax(x, -1)).norm(dim=-1) / e.norm(dim=-1)
    assert ratio.max() <= 0.5
    # two equal scores and e = t(1, -1): the Jacobian's top eigenvalue ½ is reached, so no smaller constant is a bound
    x, e = torch.zeros(1, 2, dtype=torch.float64), 1e-4 * torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    tight = (torch.softmax(x + e, -1) - torch.softmax(x, -1)).norm() / e.norm()
    assert tight == pytest.approx(0.5, rel=1e-6)


def test_a_score_perturbation_runs_through_the_models_kernel_exactly():
    model = random_model().double()
    tokens = torch.randint(0, 20, (3, 8), generator=torch.Generator().manual_seed(1))
    plain = model(tokens, ExtractionMode.SVD_TARGETS)
    with intervene(model, {1: ScorePerturbation(torch.zeros(3, 2, 8, 8, dtype=torch.float64))}):
        assert torch.equal(model(tokens, ExtractionMode.SVD_TARGETS).logits, plain.logits)  # zero perturbation: the plain model
    delta = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with intervene(model, {1: ScorePerturbation(delta)}):
        edited = model(tokens, ExtractionMode.SVD_TARGETS)
        last = model.logits_last(tokens)  # one query at the last position: delta's last row
    scale = model.blocks[1].attn.scale
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    expected = torch.softmax((plain.qkt[:, 1] + scale * delta).masked_fill(~mask, float("-inf")), dim=-1)
    assert torch.allclose(edited.attention[:, 1], expected, atol=1e-12)
    assert torch.equal(edited.attention[:, 0], plain.attention[:, 0])  # layer 0 untouched
    assert torch.allclose(last, edited.logits[:, -1], atol=1e-10)
    with pytest.raises(ValueError, match="delta has shape"), intervene(model, {0: ScorePerturbation(delta[:, :, :4, :4])}):
        model(tokens)


@pytest.mark.parametrize("n_heads", [1, 2])
def test_the_bound_holds_for_random_and_top_singular_perturbations(n_heads):
    model = random_model(n_heads=n_heads)
    with torch.no_grad():  # sharpen the attention so rows are far from uniform, as in a trained model
        for block in model.blocks:
            block.attn.qkv.weight[:32] *= 4.0
    tokens = torch.randint(0, 20, (48, 8), generator=torch.Generator().manual_seed(3))
    result = measure_perturbation(model, tokens, [0, 1], seed=5)
    rows = result["rows"]
    assert {(r["kind"], r["stage"]) for r in rows} == {(k, s) for k in KINDS for s in STAGES}
    assert result["overall_exceed"]["k"] == 0 and result["overall_exceed"]["n"] == 2 * 5 * 2 * (3 * 48 * n_heads + 48)
    assert all(0 < r["tightness_median"] <= r["tightness_max"] <= 1 for r in rows)
    # not vacuous: the attention stage reaches beyond 1/√d_head of the bound, so a bound ‖E‖/(2 d_head) would fail
    d_head = 16 // n_heads
    assert max(r["tightness_max"] for r in rows if r["stage"] == "attention") > 1 / np.sqrt(d_head)
    assert all(block.attn.edit is None for block in model.blocks) and next(model.parameters()).dtype == torch.float32
    figure = perturbation_figure({"perturbation": result})
    assert len(figure.axes) == len(STAGES) and f"(0/{result['overall_exceed']['n']})" in perturbation_finding(result)
