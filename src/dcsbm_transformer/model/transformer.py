"""TransformerLM: a GPT-2-style decoder whose forward pass can expose its attention internals."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast, overload

import torch
from torch import nn

from .block import Block
from .cache import KVCache
from .inputs import check_tokens

if TYPE_CHECKING:
    from ..config import ExperimentConfig


class ExtractionMode(enum.Enum):
    """What `TransformerLM.forward` returns besides the logits."""

    NONE = "none"  # logits only: the fast path used in training
    SVD_TARGETS = "svd_targets"  # + qkt, attention, values per layer and head; W_v·W_o from the weights
    RESIDUAL = "residual"  # + the residual stream after each block
    FULL = "full"  # all of the above

    @property
    def wants_attention(self) -> bool:
        return self in (ExtractionMode.SVD_TARGETS, ExtractionMode.FULL)

    @property
    def wants_residual(self) -> bool:
        return self in (ExtractionMode.RESIDUAL, ExtractionMode.FULL)


@dataclass
class ModelOutput:
    """Result of `TransformerLM.forward`. Extracted tensors are detached; None unless requested.

    logits    [B, T, vocab]                          always
    qkt       [B, n_layers, n_heads, T, T]           QKᵀ/√d_head, entries above the diagonal = 0
    attention [B, n_layers, n_heads, T, T]           softmax weights (before dropout); rows sum
                                                     to 1, zero above the diagonal
    values    [B, n_layers, n_heads, T, d_head]      V = LN(x) W_v + b_v of each head
    ov_circuits [n_layers, n_heads, d_model, d_model] W_v·W_o of each head, from the weights
                                                     (no batch axis; see TransformerLM.ov_circuits)
    residual  [B, n_layers, T, d_model]              residual stream after each block
    """

    logits: torch.Tensor
    qkt: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    values: torch.Tensor | None = None
    ov_circuits: torch.Tensor | None = None
    residual: torch.Tensor | None = None


class BlockStack(Protocol):
    """``TransformerLM.blocks`` as the type checker sees it: an ``nn.ModuleList`` that holds only
    ``Block``s, in order (torch types a ModuleList's items as any ``nn.Module``, whose every
    attribute is then ``Tensor | Module``). Only for annotations; at run time it is the ModuleList."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Block]: ...

    @overload
    def __getitem__(self, index: int) -> Block: ...

    @overload
    def __getitem__(self, index: slice) -> BlockStack: ...


class TransformerLM(nn.Module):
    """GPT-2-style decoder: token + learned absolute position embeddings, pre-norm blocks
    (causal self-attention, GELU MLP with 4·d_model hidden units), final LayerNorm and an
    untied output projection (with bias) to the vocabulary. float32.

    Initialisation (GPT-2): weights of Linear and Embedding layers ~ N(0, 0.02²), the two
    residual output projections of every block ~ N(0, (0.02/√(2·n_layers))²), biases 0,
    LayerNorm weight 1 / bias 0. Draws come from `generator` when given (the global torch RNG
    is then left untouched), else from the global torch RNG. Dropout (`dropout`) is applied to
    the attention weights, to each block's two residual branches and to the embeddings.

    `use_sdpa` picks the attention kernel of the NONE (training) path: False (default) runs the
    same explicit softmax(QKᵀ/√d_head)·V as the extraction modes, so logits agree bitwise in
    every mode, and it measured ~3% faster than torch's scaled_dot_product_attention for an
    anchor training step on the 2-core CPU (bench/training_step.py). On a GPU the fused SDPA
    kernel is likely faster; logits then agree with the extraction path to ~1e-7.
    """

    def __init__(
        self,
        vocab_size: int,
        context_window: int,
        d_model: int,
        n_layers: int,
        n_heads: int = 1,
        dropout: float = 0.0,
        *,
        use_sdpa: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        _check_shape_args(vocab_size, context_window, d_model, n_layers, n_heads, dropout)
        self.vocab_size, self.context_window = vocab_size, context_window
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.d_head = d_model // n_heads
        # The layers' default initialisation is overwritten below; with an explicit generator
        # it must not consume the caller's global RNG either.
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self.tok_emb = nn.Embedding(vocab_size, d_model)
            self.pos_emb = nn.Embedding(context_window, d_model)
            self.emb_dropout = nn.Dropout(dropout)
            self.blocks = cast(
                BlockStack, nn.ModuleList(Block(d_model, n_heads, context_window, dropout, use_sdpa=use_sdpa) for _ in range(n_layers))
            )
            self.ln_f = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab_size)
        self._init_weights(generator)

    @classmethod
    def from_config(
        cls, config: ExperimentConfig, *, use_sdpa: bool = False, generator: torch.Generator | None = None
    ) -> TransformerLM:
        """A fresh model for `config`: vocabulary = the graph's n vertex ids, no special tokens."""
        m = config.model
        return cls(
            config.graph.n,
            m.context_window,
            m.d_model,
            m.n_layers,
            m.n_heads,
            m.dropout,
            use_sdpa=use_sdpa,
            generator=generator,
        )

    def _init_weights(self, generator: torch.Generator | None) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02, generator=generator)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        # Each block adds two branches to the residual stream; scaling keeps its variance flat in depth.
        residual_std = 0.02 / math.sqrt(2 * self.n_layers)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, 0.0, residual_std, generator=generator)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay on Linear weight matrices only; embeddings, LayerNorm
        parameters and biases go in a second group with weight_decay 0."""
        decay = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        decay_ids = {id(p) for p in decay}
        no_decay = [p for p in self.parameters() if id(p) not in decay_ids]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    # -- forward -------------------------------------------------------------------------
    def _check(self, tokens: object, check_ids: bool, ndim: int = 2, name: str = "tokens") -> torch.Tensor:
        return check_tokens(tokens, vocab_size=self.vocab_size, max_len=self.context_window, ndim=ndim, check_ids=check_ids, name=name)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Residual stream entering block 0: token + position embedding of already-valid ids
        tokens [B, T] at absolute ``positions`` (broadcastable to [B, T]; default 0..T-1)
        -> [B, T, d_model]."""
        if positions is None:
            positions = torch.arange(tokens.shape[1], device=tokens.device)
        return self.emb_dropout(self.tok_emb(tokens) + self.pos_emb(positions))

    def forward(self, tokens: torch.Tensor, mode: ExtractionMode = ExtractionMode.NONE, *, check_ids: bool = True) -> ModelOutput:
        """tokens [B, T] integer ids, 1 <= T <= context_window -> ModelOutput (see its layouts).

        `check_ids=False` skips the id-range check, which costs a host sync on a GPU; only for
        data known to be valid. Internals are meant to be extracted in eval mode (with dropout
        active they describe that one stochastic pass).
        """
        if not isinstance(mode, ExtractionMode):
            names = ", ".join(f"ExtractionMode.{m.name}" for m in ExtractionMode)
            raise ValueError(f"mode must be an ExtractionMode ({names}), got {mode!r}")
        x = self.embed(self._check(tokens, check_ids))
        if mode is ExtractionMode.NONE:
            for block in self.blocks:
                x = block(x)
            return ModelOutput(logits=self.head(self.ln_f(x)))
        return self._forward_extracting(x, mode)

    def _forward_extracting(self, x: torch.Tensor, mode: ExtractionMode) -> ModelOutput:
        qkt, attention, values, residual = [], [], [], []
        for block in self.blocks:
            if mode.wants_attention:
                x, layer_qkt, layer_attention, layer_values = block.forward_explicit(x)
                qkt.append(layer_qkt.detach())
                attention.append(layer_attention.detach())
                values.append(layer_values.detach())
            else:
                x = block(x)
            if mode.wants_residual:
                residual.append(x.detach())
        # Stack the per-layer [B, H, ...] / [B, T, d] tensors along a new layer axis (dim 1).
        stack = lambda tensors: torch.stack(tensors, dim=1) if tensors else None  # noqa: E731
        return ModelOutput(
            logits=self.head(self.ln_f(x)),
            qkt=stack(qkt),
            attention=stack(attention),
            values=stack(values),
            ov_circuits=self.ov_circuits() if mode.wants_attention else None,
            residual=stack(residual),
        )

    @torch.no_grad()
    def extract_last(self, tokens: torch.Tensor, *, check_ids: bool = True) -> ModelOutput:
        """One forward pass that both decides the next token and exposes what decided it: the
        logits of the last position only, [B, 1, vocab] (``forward(tokens).logits[:, -1:]`` up to
        float rounding), with ``qkt``, ``attention`` and ``values`` of every layer and position
        exactly as ``ExtractionMode.SVD_TARGETS`` gives them. The last block's MLP, the head and
        the final LayerNorm run for the last position alone (the analysis stage's per-pass call:
        the MLP is most of a small model's FLOPs). No ``ov_circuits``: they do not change per pass."""
        x = self.embed(self._check(tokens, check_ids))
        qkt, attention, values = [], [], []
        for layer, block in enumerate(self.blocks):
            step = block.forward_explicit_last if layer == self.n_layers - 1 else block.forward_explicit
            x, layer_qkt, layer_attention, layer_values = step(x)
            qkt.append(layer_qkt)
            attention.append(layer_attention)
            values.append(layer_values)
        stack = lambda tensors: torch.stack(tensors, dim=1)  # noqa: E731
        return ModelOutput(logits=self.head(self.ln_f(x)), qkt=stack(qkt), attention=stack(attention), values=stack(values))

    # -- generation ----------------------------------------------------------------------
    def logits_last(self, tokens: torch.Tensor, *, check_ids: bool = True) -> torch.Tensor:
        """Logits of the last position, [B, vocab]; equal to forward(tokens).logits[:, -1] up to
        float rounding, but the final block computes queries, MLP and head for that position only."""
        x = self.embed(self._check(tokens, check_ids))
        for block in self.blocks[:-1]:
            x = block(x)
        x = self.blocks[-1].forward_last(x)
        return self.head(self.ln_f(x))[:, 0]

    @torch.no_grad()
    def prefill(
        self, tokens: torch.Tensor, lengths: torch.Tensor | None = None, *, check_ids: bool = True
    ) -> tuple[torch.Tensor, KVCache]:
        """Start incremental decoding: tokens [B, T] at positions 0..T-1 ->
        (next-token logits [B, vocab], cache).

        ``lengths`` [B] (1 <= lengths[i] <= T) lets rows hold prompts of different lengths,
        left-aligned: row i's prompt is tokens[i, :lengths[i]], its logits are those of position
        lengths[i] - 1, and decoding continues it at position lengths[i]. What lies beyond a
        row's length is ignored (causal attention) and overwritten as the row grows.
        """
        tokens = self._check(tokens, check_ids)
        batch, length = tokens.shape
        lengths = self._check_lengths(lengths, batch, length)
        first = self.tok_emb.weight
        cache = KVCache.empty(
            self.n_layers, batch, self.n_heads, self.context_window, self.d_head, device=first.device, dtype=first.dtype
        )
        x = self.embed(tokens)
        for layer, block in enumerate(self.blocks):
            x = block.forward_prefill(x, cache.keys[layer], cache.values[layer])
        cache.lengths = lengths.clone()
        last = x[torch.arange(batch, device=x.device), lengths - 1]
        return self.head(self.ln_f(last)), cache

    def _check_lengths(self, lengths: object, batch: int, length: int) -> torch.Tensor:
        device = self.tok_emb.weight.device
        if lengths is None:
            return torch.full((batch,), length, dtype=torch.long, device=device)
        if not isinstance(lengths, torch.Tensor) or lengths.dtype not in (torch.int32, torch.int64):
            got = lengths.dtype if isinstance(lengths, torch.Tensor) else type(lengths).__name__
            raise ValueError(f"lengths must be an int32/int64 torch.Tensor, got {got}")
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape [{batch}] (one per row of tokens), got {tuple(lengths.shape)}")
        low, high = (int(v) for v in torch.aminmax(lengths))
        if low < 1 or high > length:
            raise ValueError(f"lengths must lie in [1, {length}] (the tokens' T), got values in [{low}, {high}]")
        return lengths.to(device=device, dtype=torch.long)

    @torch.no_grad()
    def decode(self, next_tokens: torch.Tensor, cache: KVCache, *, check_ids: bool = True) -> tuple[torch.Tensor, KVCache]:
        """Append one token per sequence: next_tokens[i] at position cache.lengths[i] ->
        (their logits [B, vocab], cache). The cache is updated in place and returned.

        Absolute positions end at context_window - 1: a full row raises ValueError (start
        again with prefill on the last tokens, as a sliding window must)."""
        next_tokens = self._check(next_tokens, check_ids, ndim=1, name="next_tokens")
        if next_tokens.shape[0] != cache.batch_size:
            raise ValueError(f"next_tokens has batch {next_tokens.shape[0]} but the cache holds {cache.batch_size} sequences")
        positions = cache.lengths
        if bool((positions >= self.context_window).any()):
            raise ValueError(
                f"a cache row already holds {self.context_window} positions = the context window; "
                "prefill the last context_window - 1 tokens to continue"
            )
        x = self.embed(next_tokens[:, None], positions[:, None])
        for layer, block in enumerate(self.blocks):
            x = block.forward_decode(x, cache.keys[layer], cache.values[layer], positions)
        cache.lengths = positions + 1
        return self.head(self.ln_f(x[:, 0])), cache

    # -- weight-only circuits --------------------------------------------------------------
    @torch.no_grad()
    def attention_output_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head slices of each layer's attention output projection.

        Returns (W_o [n_layers, n_heads, d_head, d_model], b_o [n_layers, d_model]), row-vector
        convention: the attention block output is Σ_h A_h V_h W_o[l, h] + b_o[l].
        """
        w_o = torch.stack([b.attn.proj.weight.t().reshape(self.n_heads, self.d_head, self.d_model) for b in self.blocks])
        b_o = torch.stack([b.attn.proj.bias for b in self.blocks])
        return w_o.clone(), b_o.clone()

    @torch.no_grad()
    def ov_circuits(self) -> torch.Tensor:
        """W_v·W_o per layer and head from the weights: [n_layers, n_heads, d_model, d_model].

        Row-vector convention: a residual row x moved by head h contributes x @ W_v_h @ W_o_h
        (before the attention weighting), W_v_h [d_model, d_head], W_o_h [d_head, d_model]. The
        value bias b_v is not included; since attention rows sum to 1 it adds b_v_h @ W_o_h.
        """
        d, heads, d_head = self.d_model, self.n_heads, self.d_head
        w_o, _ = self.attention_output_weights()
        w_v = torch.stack(
            [  # rows 2d:3d of the fused weight produce v; transpose to x @ W_v
                b.attn.qkv.weight[2 * d :].t().reshape(d, heads, d_head).permute(1, 0, 2) for b in self.blocks
            ]
        )  # [L, H, d_model, d_head]
        return w_v @ w_o


def _check_shape_args(vocab_size: int, context_window: int, d_model: int, n_layers: int, n_heads: int, dropout: float) -> None:
    """Raise one ValueError naming every bad constructor argument."""
    problems = [
        f"{name} must be a positive int, got {value!r}"
        for name, value in [
            ("vocab_size", vocab_size),
            ("context_window", context_window),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
        ]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1
    ]
    if not problems and d_model % n_heads:
        problems.append(f"d_model={d_model} is not divisible by n_heads={n_heads}")
    if not 0.0 <= dropout < 1.0:
        problems.append(f"dropout must be in [0, 1), got {dropout!r}")
    if problems:
        raise ValueError("invalid TransformerLM arguments: " + "; ".join(problems))
