"""TransformerLM: extraction modes, causality, circuits, validation, generation helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcsbm_transformer.config import load_config
from dcsbm_transformer.model import ExtractionMode, KVCache, ModelOutput, TransformerLM

ROOT = Path(__file__).resolve().parents[1]
VOCAB, WINDOW, D_MODEL = 23, 12, 16
EXACT = dict(atol=1e-6, rtol=0.0)
CLOSE = dict(atol=1e-5, rtol=0.0)


def make_model(n_layers: int = 2, n_heads: int = 1, dropout: float = 0.0, seed: int = 0) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(VOCAB, WINDOW, D_MODEL, n_layers, n_heads, dropout).eval()


def random_tokens(batch: int = 3, length: int = WINDOW, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=[(2, 1), (2, 4)], ids=["2L1H", "2L4H"])
def model(request) -> TransformerLM:
    n_layers, n_heads = request.param
    return make_model(n_layers, n_heads)


# -- modes and layouts ---------------------------------------------------------------------
def test_logits_equal_in_every_mode(model):
    tokens = random_tokens()
    reference = model(tokens).logits
    for mode in ExtractionMode:
        out = model(tokens, mode)
        assert isinstance(out, ModelOutput)
        torch.testing.assert_close(out.logits, reference, **EXACT)


def test_extracted_shapes_per_mode(model):
    batch, length = 3, 9
    L, H, dh = model.n_layers, model.n_heads, D_MODEL // model.n_heads
    tokens = random_tokens(batch, length)
    expected = {
        "qkt": (batch, L, H, length, length),
        "attention": (batch, L, H, length, length),
        "values": (batch, L, H, length, dh),
        "ov_circuits": (L, H, D_MODEL, D_MODEL),
        "residual": (batch, L, length, D_MODEL),
    }
    wanted = {
        ExtractionMode.NONE: set(),
        ExtractionMode.SVD_TARGETS: {"qkt", "attention", "values", "ov_circuits"},
        ExtractionMode.RESIDUAL: {"residual"},
        ExtractionMode.FULL: {"qkt", "attention", "values", "ov_circuits", "residual"},
    }
    for mode, names in wanted.items():
        out = model(tokens, mode)
        assert out.logits.shape == (batch, length, VOCAB)
        for name, shape in expected.items():
            value = getattr(out, name)
            if name in names:
                assert value.shape == shape, (mode, name)
                assert value.dtype == torch.float32
            else:
                assert value is None, (mode, name)


def test_residual_is_stream_after_each_block(model):
    tokens = random_tokens()
    out = model(tokens, ExtractionMode.RESIDUAL)
    x = model.embed(tokens)
    for layer, block in enumerate(model.blocks):
        x = block(x)
        torch.testing.assert_close(out.residual[:, layer], x, **EXACT)
    torch.testing.assert_close(model.head(model.ln_f(out.residual[:, -1])), out.logits, **EXACT)


# -- causality and masks -------------------------------------------------------------------
@pytest.mark.parametrize("j", [0, 5, WINDOW - 1])
def test_changing_a_token_changes_no_earlier_logit(model, j):
    tokens = random_tokens()
    changed = tokens.clone()
    changed[:, j] = (changed[:, j] + 1) % VOCAB
    before, after = model(tokens).logits, model(changed).logits
    torch.testing.assert_close(after[:, :j], before[:, :j], **EXACT)
    assert not torch.allclose(after[:, j], before[:, j])


def test_qkt_and_attention_are_causal(model):
    out = model(random_tokens(), ExtractionMode.SVD_TARGETS)
    above = torch.ones(WINDOW, WINDOW, dtype=torch.bool).triu(1)
    assert (out.qkt[..., above] == 0).all()
    assert (out.attention[..., above] == 0).all()
    assert (out.qkt[..., ~above] != 0).any()
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(out.attention.shape[:-1]), **CLOSE)
    # A is the row softmax of the extracted scores over the allowed (causal) entries.
    torch.testing.assert_close(out.attention, torch.softmax(out.qkt.masked_fill(above, float("-inf")), -1), **CLOSE)


def test_qkt_is_scaled_query_key_product():
    model = make_model(n_layers=1, n_heads=2)
    tokens = random_tokens()
    out = model(tokens, ExtractionMode.SVD_TARGETS)
    attn, d, dh = model.blocks[0].attn, D_MODEL, D_MODEL // 2
    q, k, _ = attn.qkv(model.blocks[0].ln_1(model.embed(tokens))).split(d, dim=-1)
    q, k = (t.view(*t.shape[:2], 2, dh).transpose(1, 2) for t in (q, k))
    expected = (q @ k.transpose(-2, -1) / dh**0.5).tril()
    torch.testing.assert_close(out.qkt[:, 0], expected, **CLOSE)


# -- rebuilding the attention block from what is extracted ----------------------------------
def test_attention_output_rebuilt_from_a_v_and_w_o(model):
    tokens = random_tokens()
    out = model(tokens, ExtractionMode.FULL)
    w_o, b_o = model.attention_output_weights()
    assert w_o.shape == (model.n_layers, model.n_heads, D_MODEL // model.n_heads, D_MODEL)
    assert b_o.shape == (model.n_layers, D_MODEL)
    for layer, block in enumerate(model.blocks):
        block_input = model.embed(tokens) if layer == 0 else out.residual[:, layer - 1]
        actual = block.attn(block.ln_1(block_input))  # the block's own attention sublayer output
        rebuilt = torch.einsum("bhqk,bhkd,hde->bqe", out.attention[:, layer], out.values[:, layer], w_o[layer])
        torch.testing.assert_close(rebuilt + b_o[layer], actual, **CLOSE)


def test_ov_circuit_matches_values_and_output_projection(model):
    tokens = random_tokens()
    out = model(tokens, ExtractionMode.SVD_TARGETS)
    ov = model.ov_circuits()
    w_o, _ = model.attention_output_weights()
    L, H, dh = model.n_layers, model.n_heads, D_MODEL // model.n_heads
    assert ov.shape == (L, H, D_MODEL, D_MODEL)
    # Layer 0: x = LN(embedding); V_h - b_v_h = x @ W_v_h, so (V_h - b_v_h) @ W_o_h = x @ OV_h.
    block = model.blocks[0]
    x = block.ln_1(model.embed(tokens))
    b_v = block.attn.qkv.bias[2 * D_MODEL :].view(H, 1, dh)
    lhs = (out.values[:, 0] - b_v) @ w_o[0]  # [B, H, T, d_model]
    rhs = torch.einsum("btd,hde->bhte", x, ov[0])
    torch.testing.assert_close(lhs, rhs, **CLOSE)
    assert not ov.requires_grad
    assert torch.equal(out.ov_circuits, ov)  # the mode hands out the same matrices


# -- gradients -----------------------------------------------------------------------------
def test_gradients_reach_every_parameter_in_none_mode(model):
    model.train()
    tokens = random_tokens()
    F.cross_entropy(model(tokens).logits.reshape(-1, VOCAB), tokens.roll(-1, 1).reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_extracted_tensors_are_detached(model):
    model.train()
    out = model(random_tokens(), ExtractionMode.FULL)
    assert out.logits.requires_grad
    for name in ("qkt", "attention", "values", "residual"):
        assert not getattr(out, name).requires_grad, name


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tokens", "mode", "message"),
    [
        (torch.zeros(2, 4), ExtractionMode.NONE, "integer dtype"),
        (torch.zeros(2, 4, dtype=torch.bool), ExtractionMode.NONE, "integer dtype"),
        (torch.zeros(4, dtype=torch.long), ExtractionMode.NONE, "2-D"),
        (torch.zeros(1, 2, 4, dtype=torch.long), ExtractionMode.NONE, "2-D"),
        (torch.zeros(2, WINDOW + 1, dtype=torch.long), ExtractionMode.NONE, "context window is 12"),
        (torch.zeros(2, 0, dtype=torch.long), ExtractionMode.NONE, "empty"),
        (torch.full((2, 4), VOCAB, dtype=torch.long), ExtractionMode.NONE, r"id 23, outside the vocabulary \[0, 23\)"),
        (torch.full((2, 4), -1, dtype=torch.long), ExtractionMode.NONE, "id -1"),
        ([[1, 2, 3]], ExtractionMode.NONE, "torch.Tensor"),
        (torch.zeros(2, 4, dtype=torch.long), "full", "must be an ExtractionMode"),
        (torch.zeros(2, 4, dtype=torch.long), None, "must be an ExtractionMode"),
    ],
    ids=["float", "bool", "1-D", "3-D", "too-long", "empty", "id>=vocab", "negative", "list", "str-mode", "None-mode"],
)
def test_bad_inputs_raise_value_error(tokens, mode, message):
    with pytest.raises(ValueError, match=message):
        make_model(n_layers=1)(tokens, mode)


def test_small_integer_dtypes_and_unchecked_ids_give_the_same_logits():
    model, tokens = make_model(), random_tokens()
    reference = model(tokens).logits
    torch.testing.assert_close(model(tokens.to(torch.uint8)).logits, reference, **EXACT)
    torch.testing.assert_close(model(tokens.int(), check_ids=False).logits, reference, **EXACT)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="not divisible by n_heads"):
        TransformerLM(VOCAB, WINDOW, 10, 1, n_heads=3)
    with pytest.raises(ValueError, match="vocab_size must be a positive int"):
        TransformerLM(0, WINDOW, D_MODEL, 1)
    with pytest.raises(ValueError, match="dropout"):
        TransformerLM(VOCAB, WINDOW, D_MODEL, 1, dropout=1.0)


# -- optimiser groups ------------------------------------------------------------------------
def test_parameter_groups_decay_exactly_the_linear_weights(model):
    decay, no_decay = model.parameter_groups(0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in decay["params"]} == linear_weights
    assert len(decay["params"]) == 2 * model.n_layers * 2 + 1  # qkv, proj, fc, proj per block + head
    every = {id(p) for p in model.parameters()}
    assert {id(p) for p in no_decay["params"]} == every - linear_weights
    assert all(p.dim() == 2 for p in decay["params"])
    torch.optim.AdamW(model.parameter_groups(0.01), lr=1e-3)  # accepted as is


# -- generation helpers --------------------------------------------------------------------------
@pytest.mark.parametrize("length", [1, 7, WINDOW])
def test_logits_last_matches_forward(model, length):
    tokens = random_tokens(length=length)
    torch.testing.assert_close(model.logits_last(tokens), model(tokens).logits[:, -1], **CLOSE)


@pytest.mark.parametrize("length", [1, 7, WINDOW])
def test_extract_last_is_svd_targets_with_the_last_logits(model, length):
    tokens = random_tokens(length=length)
    full, last = model(tokens, mode=ExtractionMode.SVD_TARGETS), model.extract_last(tokens)
    for name in ("qkt", "attention", "values"):  # the same computation, position for position
        assert torch.equal(getattr(last, name), getattr(full, name)), name
    assert last.logits.shape == (tokens.shape[0], 1, model.vocab_size)
    torch.testing.assert_close(last.logits, full.logits[:, -1:], **CLOSE)


@pytest.fixture(params=[False, True], ids=["explicit", "sdpa"])
def model_per_kernel(model, request) -> TransformerLM:
    """The model with both attention kernels (the cached paths honour use_sdpa too)."""
    for block in model.blocks:
        block.attn.use_sdpa = request.param
    return model


def test_prefill_then_decode_matches_forward(model_per_kernel):
    tokens = random_tokens()
    full = model_per_kernel(tokens).logits
    prompt = 4
    logits, cache = model_per_kernel.prefill(tokens[:, :prompt])
    assert isinstance(cache, KVCache) and cache.lengths.tolist() == [prompt] * len(tokens)
    torch.testing.assert_close(logits, full[:, prompt - 1], **CLOSE)
    for t in range(prompt, WINDOW):
        logits, cache = model_per_kernel.decode(tokens[:, t], cache)
        torch.testing.assert_close(logits, full[:, t], **CLOSE)
    assert cache.lengths.tolist() == [WINDOW] * len(tokens)
    with pytest.raises(ValueError, match="context window"):
        model_per_kernel.decode(tokens[:, 0], cache)


def test_ragged_prefill_decodes_each_row_at_its_own_position(model_per_kernel):
    tokens = random_tokens(batch=4)
    full = model_per_kernel(tokens).logits
    lengths = torch.tensor([1, 3, 6, WINDOW - 1])
    junk = tokens.clone()
    junk[torch.arange(WINDOW)[None, :] >= lengths[:, None]] = 0  # beyond a row's length: ignored
    logits, cache = model_per_kernel.prefill(junk[:, : int(lengths.max())], lengths)
    rows = torch.arange(4)
    torch.testing.assert_close(logits, full[rows, lengths - 1], **CLOSE)
    for _ in range(2):  # row 3 reaches the window after one token
        live = torch.nonzero(cache.lengths < WINDOW).squeeze(1)
        cache, rows = cache.select(live), rows[live]
        logits, cache = model_per_kernel.decode(tokens[rows, cache.lengths], cache)
        torch.testing.assert_close(logits, full[rows, cache.lengths - 1], **CLOSE)
    assert cache.lengths.tolist() == [3, 5, 8]


def test_ragged_decode_under_bf16_autocast_tracks_fp32(model_per_kernel):
    """The cache stays in the weights' dtype while autocast computes keys in bf16."""
    tokens = random_tokens(batch=3)
    full = model_per_kernel(tokens).logits
    lengths = torch.tensor([2, 4, 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, cache = model_per_kernel.prefill(tokens[:, :5], lengths)
        logits, cache = model_per_kernel.decode(tokens[torch.arange(3), lengths], cache)
    assert cache.keys.dtype == torch.float32 and cache.lengths.tolist() == [3, 5, 6]
    torch.testing.assert_close(logits.float(), full[torch.arange(3), lengths], atol=0.1, rtol=0.0)


def test_prefill_rejects_bad_lengths(model):
    tokens = random_tokens(length=5)
    for lengths, message in [
        (torch.tensor([1, 2]), "shape"),
        (torch.tensor([0, 2, 5]), r"\[1, 5\]"),
        (torch.tensor([1, 6, 5]), r"\[1, 5\]"),
        (torch.tensor([1.0, 2.0, 3.0]), "int"),
    ]:
        with pytest.raises(ValueError, match=message):
            model.prefill(tokens, lengths)


def test_cache_select_keeps_chosen_rows():
    model, tokens = make_model(n_heads=2), random_tokens(batch=4)
    full = model(tokens).logits
    _, cache = model.prefill(tokens[:, :5])
    index = torch.tensor([2, 0, 2])
    subset = cache.select(index)
    assert subset.batch_size == 3 and cache.batch_size == 4 and subset.lengths.tolist() == [5, 5, 5]
    logits, _ = model.decode(tokens[index, 5], subset)
    torch.testing.assert_close(logits, full[index, 5], **CLOSE)
    with pytest.raises(ValueError, match="batch"):
        model.decode(tokens[:, 5], subset)


def test_decode_validates_tokens():
    model = make_model(n_layers=1)
    _, cache = model.prefill(random_tokens(length=3))
    with pytest.raises(ValueError, match="1-D"):
        model.decode(torch.zeros(3, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.decode(torch.full((3,), VOCAB), cache)


@pytest.mark.parametrize("n_heads", [1, 4])
def test_sdpa_training_path_matches_explicit(n_heads):
    tokens = random_tokens()
    explicit = make_model(n_heads=n_heads, seed=2)
    torch.manual_seed(2)
    sdpa = TransformerLM(VOCAB, WINDOW, D_MODEL, 2, n_heads, use_sdpa=True).eval()
    assert all(block.attn.use_sdpa for block in sdpa.blocks)
    torch.testing.assert_close(sdpa(tokens).logits, explicit(tokens).logits, **CLOSE)
    torch.testing.assert_close(sdpa(tokens, ExtractionMode.FULL).logits, explicit(tokens).logits, **CLOSE)
    torch.testing.assert_close(sdpa.logits_last(tokens), explicit(tokens).logits[:, -1], **CLOSE)


# -- construction ----------------------------------------------------------------------------------
def test_from_config_quick_preset():
    config = load_config(ROOT / "configs" / "quick.json")
    model = TransformerLM.from_config(config).eval()
    assert (model.vocab_size, model.context_window) == (config.graph.n, config.model.context_window)
    assert (model.d_model, model.n_layers, model.n_heads) == (
        config.model.d_model,
        config.model.n_layers,
        config.model.n_heads,
    )
    tokens = torch.randint(0, config.graph.n, (2, config.model.context_window))
    out = model(tokens, ExtractionMode.FULL)
    assert out.logits.shape == (2, config.model.context_window, config.graph.n)
    assert out.attention.shape[1:3] == (config.model.n_layers, config.model.n_heads)


def test_gpt2_initialisation():
    model = make_model(n_layers=2)
    block = model.blocks[0]
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, nn.Linear))
    assert (block.ln_1.weight == 1).all() and (block.ln_1.bias == 0).all()
    big = TransformerLM(64, 8, 256, 2)  # enough entries to estimate the standard deviations
    assert abs(big.blocks[0].mlp.fc.weight.std().item() - 0.02) < 1e-3
    assert abs(big.blocks[0].mlp.proj.weight.std().item() - 0.02 / 2) < 1e-3  # 0.02 / sqrt(2 * 2)


def test_same_seed_same_weights_and_outputs():
    a, b = make_model(seed=5), make_model(seed=5)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    tokens = random_tokens()
    assert torch.equal(a(tokens).logits, b(tokens).logits)
    assert not torch.equal(make_model(seed=6).head.weight, a.head.weight)


def test_explicit_generator_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    expected_next = torch.rand(1)
    torch.manual_seed(0)
    a = TransformerLM(VOCAB, WINDOW, D_MODEL, 1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.rand(1), expected_next)
    b = TransformerLM(VOCAB, WINDOW, D_MODEL, 1, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_dropout_is_active_in_training_only():
    model, tokens = make_model(dropout=0.5), random_tokens()
    assert torch.equal(model(tokens).logits, model(tokens).logits)
    model.train()
    assert not torch.equal(model(tokens).logits, model(tokens).logits)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    model, tokens = make_model(n_heads=2).to("cuda"), random_tokens().to("cuda")
    reference = model(tokens).logits
    for mode in ExtractionMode:
        torch.testing.assert_close(model(tokens, mode).logits, reference, **EXACT)
    logits, cache = model.prefill(tokens[:, :5])
    logits, cache = model.decode(tokens[:, 5], cache.select(torch.arange(3, device="cuda")))
    torch.testing.assert_close(logits, reference[:, 5], **CLOSE)
    assert model.ov_circuits().device.type == "cuda"
