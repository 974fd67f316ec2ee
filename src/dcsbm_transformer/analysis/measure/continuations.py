"""Continuations with their attention internals: r generated tokens per event, and at every pass
the SVD targets of every layer and head, from the one forward pass that emits the token.

Pass k (k = 1..r) emits token s + k from the window of the w tokens ending at s + k − 1 (the
window slides one token per pass; the prompt is the w tokens up to and including the jumper).
Lookback j = r − k: j = 0 is the pass that emits the deadline token. At each pass the model runs
once on the whole batch of events (``TransformerLM.extract_last``: the SVD_TARGETS internals of every
position, logits of the last); from that output come the
next token (argmax of the last position's logits, as the gate's generator decides; sampled when
``temperature`` > 0), the behavioural predictor (the probability the model gives the target
block for that token), and the targets, per layer and head:

- ``qkt``  [E, L, H, w, w]      QKᵀ/√d_head with zeros above the diagonal (``ModelOutput.qkt``);
- ``avwo`` [E, L, H, w, d_model] A·V·W_o of the head: what it writes into the residual stream at
  each position (the value bias, constant across positions, is left out as in ``ov_circuits``).

``on_pass(k, targets)`` receives them while they are on the device, with the pass's input window and
the token it generated (the embedding metrics need both), so metrics are computed batched with no
copy to the host and nothing is kept beyond the pass.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch

from ...data.compliance import find_rule_events
from ...data.graph import Graph
from ...model import TransformerLM
from .behaviour import PassBehaviour

TARGETS = ("qkt", "avwo")

RULE_NONE, RULE_FOLLOWED, RULE_VIOLATED = 0, 1, 2


@dataclass(frozen=True)
class PassTargets:
    """The SVD targets of one pass for a batch of events (on the model's device)."""

    qkt: torch.Tensor  # [E, L, H, w, w]
    avwo: torch.Tensor  # [E, L, H, w, d_model]
    last_attention: torch.Tensor | None = None  # [E, L, H, w]: the last position's attention weights
    # set by ``continue_with_targets`` before ``on_pass``: the pass's input window and the token it generated
    window: torch.Tensor | None = None  # [E, w] int64
    token: torch.Tensor | None = None  # [E] int64

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, name)


@torch.no_grad()
def continue_with_targets(
    model: TransformerLM,
    prompts: torch.Tensor,
    target_members: torch.Tensor,
    passes: int,
    on_pass: Callable[[int, PassTargets], None] | None = None,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    behaviour: PassBehaviour | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``passes`` tokens after each full-window prompt [E, w] (int64, on the model's
    device). ``target_members`` [E, vocab] bool marks each event's target-block vertices.

    Returns (generated tokens int64 [E, passes], probability of the target block at each pass
    float32 [E, passes]); calls ``on_pass(k, targets)`` for k = 1..passes, and ``behaviour``
    records the other baselines of each pass (``analysis.measure.behaviour``).
    """
    w_o, _ = model.attention_output_weights()  # [L, H, d_head, d_model]
    window = prompts.clone()
    generated = torch.empty(len(prompts), passes, dtype=torch.long, device=prompts.device)
    target_probability = torch.empty(len(prompts), passes, dtype=torch.float32, device=prompts.device)
    for k in range(1, passes + 1):  # a loop over passes, batched across events
        logits, targets = forward_targets(model, window, w_o, autocast, with_targets=on_pass is not None)
        probabilities = torch.softmax(logits, dim=-1)
        target_probability[:, k - 1] = (probabilities * target_members).sum(dim=-1)
        if behaviour is not None:
            behaviour.record(k, probabilities, window[:, -1], None if targets is None else targets.last_attention)
        if temperature > 0:
            token = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)[:, 0]
        else:
            token = logits.argmax(dim=-1)
        generated[:, k - 1] = token
        if on_pass is not None and targets is not None:  # targets are extracted exactly when on_pass is given
            on_pass(k, replace(targets, window=window, token=token))
        window = torch.cat([window[:, 1:], token[:, None]], dim=1)
    return generated, target_probability


@torch.no_grad()
def forward_targets(
    model: TransformerLM,
    window: torch.Tensor,
    w_o: torch.Tensor | None = None,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    *,
    with_targets: bool = True,
) -> tuple[torch.Tensor, PassTargets | None]:
    """One pass over full windows [E, w]: the last position's logits (float32 [E, vocab]) and the
    SVD targets of every layer and head (None when ``with_targets`` is false)."""
    with autocast():
        out = model.extract_last(window, check_ids=False)
    logits = out.logits[:, -1].float()
    if not with_targets:
        return logits, None
    if w_o is None:
        w_o, _ = model.attention_output_weights()
    qkt, attention, values = out.qkt, out.attention, out.values
    assert qkt is not None and attention is not None and values is not None, "extract_last returns every layer's internals"
    avwo = attention.float() @ values.float() @ w_o  # [E, L, H, w, d_model]
    return logits, PassTargets(qkt=qkt.float(), avwo=avwo, last_attention=attention[..., -1, :].float())


@dataclass(frozen=True)
class Labels:
    """What happened in each continuation (numpy, on the host). Pass axis: index k − 1 for pass k."""

    tokens: np.ndarray  # int32 [E, w + max r]: the prompt window, then the generated tokens, -1 past r
    edge_valid: np.ndarray  # int8 [E, max r]: 1 the pass's token follows an edge, 0 it does not, -1 no such pass
    rule_outcome: (
        np.ndarray
    )  # int8 [E, max r]: 0 no rule due at that token (or no such pass), 1 every due rule followed, 2 one violated
    violated: np.ndarray  # bool [E]: the event's own rule broken at its deadline (pass r)
    first_bad_edge_pass: np.ndarray  # int16 [E]: first pass whose token is not an edge, 0 when every edge holds


def label_continuations(prompts: np.ndarray, generated: np.ndarray, r: np.ndarray, target_block: np.ndarray, graph: Graph) -> Labels:
    """Label generated tokens [E, max r] of prompts [E, w] for events with jump lengths r [E].

    ``rule_outcome`` counts every rule falling due at a pass — the event's own, one still
    pending from the prompt, one the model triggered itself — at passes that exist (k <= r of the
    event; later passes are 0, like ``edge_valid`` -1 there); ``violated`` is the event's own."""
    events, passes = generated.shape
    w = prompts.shape[1]
    exists = np.arange(passes)[None, :] < r[:, None]
    generated = np.where(exists, generated, -1)
    tokens = np.concatenate([prompts, generated], axis=1)

    previous = tokens[:, w - 1 : w - 1 + passes]
    is_edge = graph.dense_adjacency[np.maximum(previous, 0), np.maximum(generated, 0)]
    edge_valid = np.where(exists, is_edge, -1).astype(np.int8)
    bad = exists & ~is_edge
    first_bad = np.where(bad.any(axis=1), bad.argmax(axis=1) + 1, 0).astype(np.int16)

    due = find_rule_events(tokens, graph)
    due = due.select(due.deadline >= w)
    due = due.select(exists[due.row, due.deadline - w])  # a pass beyond the event's r does not exist: no label
    obeyed = graph.block[tokens[due.row, due.deadline]] == due.target_block
    rule_outcome = np.zeros((events, passes), dtype=np.int8)
    np.maximum.at(rule_outcome, (due.row, due.deadline - w), np.where(obeyed, RULE_FOLLOWED, RULE_VIOLATED).astype(np.int8))

    deadline_token = generated[np.arange(events), r - 1]
    violated = graph.block[deadline_token] != target_block
    return Labels(tokens.astype(np.int32), edge_valid, rule_outcome, violated, first_bad)


@dataclass(frozen=True)
class Continuation:
    """``generate_continuations``' answer for E prompts (numpy labels, targets on the CPU)."""

    tokens: np.ndarray  # int32 [E, w + max r], as token_metrics.npz's ``tokens``
    labels: Labels
    target_block_probability: np.ndarray  # float32 [E, max r]
    targets: list[PassTargets]  # targets[k - 1]: pass k's QKᵀ [E, L, H, w, w] and AVWₒ [E, L, H, w, d_model]


def generate_continuations(run, prompts: np.ndarray, *, temperature: float = 0.0, seed: int = 0) -> Continuation:
    """Continue full-window prompts [E, w] that end at a jumper, as ``dcsbm analyze`` does, and
    return the tokens, labels and every pass's SVD targets (kept on the CPU: meant for a few
    events; the analysis stage itself computes its metrics without keeping targets).

    Prompts are checked against ``run.graph``: every window full, every transition an edge,
    the last token a jumper — walks of another config are refused, never silently scored."""
    graph, model = run.graph, run.model
    prompts = np.asarray(prompts, dtype=np.int64)
    w = run.config.model.context_window
    if prompts.ndim != 2 or prompts.shape[1] != w:
        raise ValueError(f"prompts must be full windows [events, w = {w}], got shape {prompts.shape}")
    if prompts.min() < 0 or prompts.max() >= graph.n:
        raise ValueError(f"prompts hold tokens outside this run's vocabulary [0, {graph.n})")
    not_edges = int((~graph.dense_adjacency[prompts[:, :-1], prompts[:, 1:]]).sum())
    if not_edges:
        raise ValueError(
            f"the prompts hold {not_edges} transitions that are not edges of {run.directory / 'graph.npz'}: "
            "they are not walks on this run's graph (another config's data?); take them from run.eval_corpus"
        )
    jumper = graph.jumper_index[prompts[:, -1]]
    if (jumper < 0).any():
        raise ValueError(f"every prompt must end at a jumper; {int((jumper < 0).sum())} do not")
    r = graph.jumper_r[jumper].astype(np.int64)
    target_block = graph.jumper_target_block[jumper].astype(np.int64)
    targets: list[PassTargets] = []
    members = torch.from_numpy(graph.block[None, :] == target_block[:, None])
    generator = torch.Generator().manual_seed(seed) if temperature > 0 else None
    generated, on_device = continue_with_targets(
        model,
        torch.from_numpy(prompts),
        members,
        int(r.max()),
        lambda k, t: targets.append(PassTargets(qkt=t.qkt.cpu(), avwo=t.avwo.cpu())),
        temperature=temperature,
        generator=generator,
    )
    labels = label_continuations(prompts, generated.numpy(), r, target_block, graph)
    probability = on_device.numpy()
    probability[np.arange(probability.shape[1])[None, :] >= r[:, None]] = np.nan
    return Continuation(labels.tokens, labels, probability, targets)
