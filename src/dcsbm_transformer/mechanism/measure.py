"""Causal measurements on the analysis events: rule compliance with the jumper taken away, or swapped.

For E analysis events (a jumper visit at step s, its w-token prompt ending at the jumper, deadline
s + r) the model continues every prompt greedily, exactly as the gate does (argmax, the last w
tokens visible, the window sliding one token per pass), under each *condition*:

* ``intact`` — the model as trained;
* ``knockout.layer_L`` / ``mean_ablation.layer_L`` — :class:`~.interventions.Knockout` /
  :class:`~.interventions.MeanAblation` of the jumper's position in layer L (every head), one layer
  at a time; ``….layer_L.head_H`` per head when a layer has several; ``….all`` every selected layer
  at once (when there are several). At pass k the jumper sits at window position w − k; once it
  has left the window (k > w) there is nothing to remove;
* ``patch`` — the intact model on prompts whose jumper is replaced by another jumper with a
  different target block (:func:`~.interventions.patch_jumpers`).

Every continuation is scored by the gate's scorer (``score_compliance``, one event per prompt, on
its own deadline; generated tokens past the event's r not scored): **rule compliance** per rule
and pooled — the share of events whose token at the deadline lies in the target block — and
**edge compliance**, the share of generated transitions that are edges (an intervention that
breaks every transition proves nothing about rules). For ``patch`` the deadline is the *patched*
jumper's (s + r'), and each continuation lands in the patched jumper's target block (the rule
was carried by the token), the original target block, or elsewhere.

Reference levels (``result.json``, per rule, computed by ``training.baselines`` from the training
walks' bigrams): the *sampling* chance — P(in the target block r steps after the jumper) for a
walker that samples successors by the bigram counts, the base rate of a rule-blind model — and
the *argmax* chance (0 or 1: whether the deterministic rule-blind bigram policy happens to reach
the target). Both depend on the jumper alone, not on the prompt, so the gate's values apply here.

**Intervals.** Every proportion k / n has its 95% Wilson score interval (Wilson 1927;
Brown, Cai & DasGupta 2001 recommend it over the Wald interval, which collapses at 0 and 1):
``(p̂ + z²/2n ± z √(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n)``, ``z = Φ⁻¹(0.975)``; at n = 0 it is
undefined (None). Means carry ``mean ± z·sd/√n``.

**Attention on the jumper** (from the intact continuations): at every pass k ≤ min(r, w), the
weight A[last position, jumper position] per layer and head, in lookback order (j = r − k,
``files.py`` of the analysis). Its mean ± CI for violations and successes, and the AUROC of
violation against it per r stratum (jumper-stratified, DeLong variance, logit-scale CI:
``analysis.stats.statistics``) — below 0.5 means *less* attention on the jumper before a violation.

Vectorised over events: the only Python loops are over conditions, passes and row slices.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import norm

from ..analysis.measure.behaviour import attention_to_jumper
from ..analysis.stats.statistics import auroc_ci, lookback_view, r_strata, stratified_auroc
from ..data.compliance import RuleEvents, score_compliance
from ..data.graph import Graph
from ..model import TransformerLM
from ..training.generation import CPU_TOKENS_PER_FORWARD
from .interventions import Knockout, MeanAblation, PatchPlan, intervene, mean_values, patch_jumpers

Z95 = float(norm.ppf(0.975))
OUTCOMES = ("patched_target", "original_target", "elsewhere")


# --------------------------------------------------------------------------------------------------
# statistics


def wilson(k, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval of the proportion k / n (elementwise; NaN where n = 0).

    ``centre = (p̂ + z²/2n) / (1 + z²/n)``, ``half = z √(p̂(1 − p̂)/n + z²/4n²) / (1 + z²/n)``
    (Wilson 1927). Stays inside [0, 1], and has width > 0 at k = 0 and k = n (0/50 → [0, 0.071]).
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denominator = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denominator
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def proportion(k: int, n: int) -> dict:
    """``{"k", "n", "share", "ci_low", "ci_high"}`` with the Wilson interval; share/CI None at n = 0."""
    if n == 0:
        return {"k": 0, "n": 0, "share": None, "ci_low": None, "ci_high": None}
    low, high = wilson(k, n)
    return {"k": int(k), "n": int(n), "share": k / n, "ci_low": float(low), "ci_high": float(high)}


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high, n) over the finite values along ``axis``: mean ± z·sd/√n (sd with ddof 1;
    NaN bounds for n < 2, NaN mean for n = 0)."""
    finite = np.isfinite(values)
    n = finite.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, values, 0.0).sum(axis=axis) / n
        squares = np.where(finite, (values - np.expand_dims(mean, axis)) ** 2, 0.0).sum(axis=axis)
        half = Z95 * np.sqrt(squares / (n - 1)) / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    return mean, mean - half, mean + half, n


# --------------------------------------------------------------------------------------------------
# conditions and greedy continuation


@dataclass(frozen=True)
class Condition:
    """One way of running the model: ``kind`` intact | knockout | mean_ablation | patch, on
    ``layers`` (empty for intact and patch) and ``heads`` (None = every head)."""

    name: str
    kind: str
    layers: tuple[int, ...] = ()
    heads: tuple[int, ...] | None = None

    def edits(self, position: int, means: torch.Tensor) -> dict[int, Knockout | MeanAblation]:
        """layer → edit for a pass whose jumper sits at window position ``position``."""
        if self.kind == "knockout":
            return {layer: Knockout(position, self.heads) for layer in self.layers}
        if self.kind == "mean_ablation":
            return {layer: MeanAblation(position, means[layer], self.heads) for layer in self.layers}
        return {}


def conditions_for(n_layers: int, n_heads: int, layers: list[int]) -> list[Condition]:
    """intact; knockout and mean-ablation per selected layer (per head too when heads > 1), then
    of every selected layer at once (when several); patch."""
    out = [Condition("intact", "intact")]
    for kind in ("knockout", "mean_ablation"):
        for layer in layers:
            out.append(Condition(f"{kind}.layer_{layer}", kind, (layer,)))
            if n_heads > 1:
                out += [Condition(f"{kind}.layer_{layer}.head_{h}", kind, (layer,), (h,)) for h in range(n_heads)]
        if len(layers) > 1:
            out.append(Condition(f"{kind}.all", kind, tuple(layers)))
    out.append(Condition("patch", "patch"))
    return out


@torch.no_grad()
def continue_greedy(
    model: TransformerLM,
    prompts: torch.Tensor,
    steps: int,
    edits: Callable[[int], dict] | None = None,
    rows_per_forward: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy continuation of full-window prompts [E, w] (each ending at its jumper) by ``steps``
    tokens, as the gate generates (argmax; the window slides one token per pass), with
    ``edits(position)`` (layer → edit) active at every pass, ``position = w − k`` the jumper's
    place in pass k's window (−1 once it has left). Returns (tokens int64 [E, steps], attention
    from the last position to the jumper float32 [E, steps, n_layers, n_heads], NaN out of the window).

    Every pass is ``TransformerLM.extract_last`` (logits of the last position and the attention of
    every layer in one forward pass), in slices of about CPU_TOKENS_PER_FORWARD tokens."""
    window = prompts.clone()
    total, w = window.shape
    rows = rows_per_forward or max(1, CPU_TOKENS_PER_FORWARD // w)
    tokens = torch.empty(total, steps, dtype=torch.long)
    attention = torch.full((total, steps, model.n_layers, model.n_heads), float("nan"))
    for step in range(steps):
        position = w - 1 - step
        active = edits(position if position >= 0 else -1) if edits is not None else {}
        nexts = []
        for begin in range(0, total, rows):
            part = window[begin : begin + rows]
            with intervene(model, active):
                out = model.extract_last(part, check_ids=False)
            nexts.append(out.logits[:, -1].argmax(dim=-1))
            # one definition of "attention on the jumper" for the analysis and the mechanism (NaN once it has left)
            assert out.attention is not None, "extract_last returns every layer's attention"
            attention[begin : begin + rows, step] = attention_to_jumper(out.attention[..., -1, :], step + 1).cpu()
        nxt = torch.cat(nexts)
        tokens[:, step] = nxt.cpu()
        window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
    return tokens.numpy(), attention.numpy()


# --------------------------------------------------------------------------------------------------
# scoring


@dataclass
class Scored:
    """One condition's continuations scored: per-event outcomes and the compliance report."""

    obeyed: np.ndarray  # bool [E]: token at the (scored) deadline in the (scored) target block
    landed_block: np.ndarray  # int64 [E]: block of the token at the deadline
    edge_hits: int
    edge_total: int
    edge_per_event: np.ndarray  # bool [E]: every scored generated transition is an edge


def score_condition(
    graph: Graph, first: np.ndarray, generated: np.ndarray, vertex: np.ndarray, target: np.ndarray, r: np.ndarray
) -> Scored:
    """Score continuations ``generated`` [E, steps] of prompts ending at ``first`` [E] (the jumper
    the model saw) against the rules (vertex, target block, r) [E], with the gate's scorer."""
    beyond = np.arange(generated.shape[1])[None, :] >= r[:, None]
    sequences = np.concatenate([first[:, None], np.where(beyond, -1, generated)], axis=1)
    rows = np.arange(len(first))
    events = RuleEvents(rows, np.zeros_like(r), vertex, target, r)
    report = score_compliance(sequences, graph, score_from=1, events=events)
    landed = graph.block[sequences[rows, r]]
    source, nxt = sequences[:, :-1], sequences[:, 1:]
    scored = (source >= 0) & (nxt >= 0)
    is_edge = graph.dense_adjacency[np.maximum(source, 0), np.maximum(nxt, 0)] | ~scored
    obeyed = landed == target
    assert report.rule_events == len(first) and int(obeyed.sum()) == round((report.rule_compliance or 0) * len(first))
    return Scored(
        obeyed,
        landed.astype(np.int64),
        0 if report.edge_compliance is None else int(round(report.edge_compliance * report.edge_transitions)),  # None: no transitions
        report.edge_transitions,
        is_edge.all(axis=1),
    )


# --------------------------------------------------------------------------------------------------
# the measurement


@dataclass
class MechanismEvents:
    """The events measured (all [E] but prompts): prompts [E, w] end at the jumper."""

    prompts: np.ndarray
    jumper: np.ndarray
    r: np.ndarray

    def __len__(self) -> int:
        return len(self.jumper)


@dataclass
class Measured:
    """Everything ``measure_mechanism`` computed, ready for mechanism.json."""

    conditions: list[dict]
    patch: dict
    attention: list[dict]
    intact_violated: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)


def _rule_rows(graph: Graph, jumper: np.ndarray, obeyed: np.ndarray) -> list[dict]:
    """Per rule: the Wilson proportion of obeyed events (counts by bincount: no loop over events)."""
    n = np.bincount(jumper, minlength=graph.n_jumpers)
    k = np.bincount(jumper, weights=obeyed.astype(np.float64), minlength=graph.n_jumpers)
    return [{"rule": j, **proportion(int(round(k[j])), int(n[j]))} for j in range(graph.n_jumpers)]


def _condition_row(
    condition: Condition,
    graph: Graph,
    events: MechanismEvents,
    scored: Scored,
    attention: np.ndarray,
    r: np.ndarray,
    intact: Scored | None,
) -> dict:
    """One condition's compliance: pooled and per rule (with the drop from the intact model), edges,
    and the mean attention from the last position to the jumper over passes 2..min(r, w) (``r`` [E]:
    the scored event's r; passes past it are not the event's)."""
    rules = _rule_rows(graph, events.jumper, scored.obeyed)
    if intact is not None and condition.kind != "patch":  # patched events obey another rule: no like-for-like drop
        base = _rule_rows(graph, events.jumper, intact.obeyed)
        for row, reference in zip(rules, base):
            row["drop"] = None if row["share"] is None else reference["share"] - row["share"]
    own = np.arange(attention.shape[1])[None, :] < r[:, None]  # [E, passes]
    passes = np.where(own[:, :, None, None], attention, np.nan)[:, 1:]  # pass 1's query is the jumper itself: not a read
    with np.errstate(invalid="ignore"):
        reads: np.ndarray = (
            np.nanmean(passes.reshape(-1, *passes.shape[2:]), axis=0) if passes.size else np.full(passes.shape[2:], np.nan)
        )
    return {
        "name": condition.name,
        "kind": condition.kind,
        "layers": list(condition.layers),
        "heads": None if condition.heads is None else list(condition.heads),
        "rule": proportion(int(scored.obeyed.sum()), len(scored.obeyed)),
        "rules": rules,
        "edge": proportion(scored.edge_hits, scored.edge_total),
        "edge_clean_events": proportion(int(scored.edge_per_event.sum()), len(scored.edge_per_event)),
        "attention_on_jumper": {
            f"layer_{layer}.head_{head}": (None if not np.isfinite(reads[layer, head]) else float(reads[layer, head]))
            for layer in range(reads.shape[0])
            for head in range(reads.shape[1])
        },
    }


def _patch_summary(
    graph: Graph, events: MechanismEvents, plan: PatchPlan, scored: Scored, chance_sampling: list[float | None]
) -> dict:
    """Where patched continuations land at the patched jumper's deadline, per original rule and pooled."""
    patched_target = graph.jumper_target_block[plan.patched]
    original_target = graph.jumper_target_block[events.jumper]
    outcome = np.where(scored.landed_block == patched_target, 0, np.where(scored.landed_block == original_target, 1, 2))

    def shares(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        counts = np.bincount(outcome[mask], minlength=3)
        return {name: proportion(int(counts[i]), n) for i, name in enumerate(OUTCOMES)}

    by_rule = []
    for j in range(graph.n_jumpers):  # a loop over rules, not events
        mine = events.jumper == j
        into = np.unique(plan.patched[mine]).tolist()
        chance = [chance_sampling[p] for p in into]
        by_rule.append(
            {
                "rule": j,
                "patched_with": into,
                "same_block": bool(plan.same_block[mine].all()) if mine.any() else None,
                "chance_patched_target": None if None in chance or not chance else float(np.mean(chance)),
                **shares(mine),
            }
        )
    return {
        "same_block": proportion(int(plan.same_block.sum()), len(plan.same_block)),
        "prompt_edge": proportion(int(plan.edge.sum()), len(plan.edge)),
        "note": (
            "every patch uses a jumper of the same block: the prompt stays in that block"
            if plan.same_block.all()
            else "some patches use another block's jumper (the graph has no same-block jumper with another target): "
            "then the prompt's last transition may not be an edge (prompt_edge counts those that are)"
        ),
        "pooled": shares(np.ones(len(outcome), dtype=bool)),
        "by_rule": by_rule,
        "edge": proportion(scored.edge_hits, scored.edge_total),
    }


def attention_statistics(
    attention: np.ndarray, violated: np.ndarray, jumper: np.ndarray, r: np.ndarray, min_events: int
) -> list[dict]:
    """Attention on the jumper (intact), [E, passes, L, H] in pass order, per layer and head and r
    stratum: mean ± CI per class and the jumper-stratified AUROC of violation with its CI, at every
    lookback j (list index j; None past the window)."""
    out = []
    none = lambda a: [None if not np.isfinite(v) else float(v) for v in a]  # noqa: E731 (JSON has no NaN)
    for layer in range(attention.shape[2]):
        for head in range(attention.shape[3]):
            by_lookback = lookback_view(attention[:, :, layer, head], r)  # [E, lookbacks]
            by_r = {}
            for r_value in r_strata(r):
                mine = r == r_value
                x, y, g = by_lookback[mine][:, :r_value], violated[mine], jumper[mine]
                nv, ns = int(y.sum()), int((~y).sum())
                v_mean, v_low, v_high, _ = mean_ci(x[y])
                s_mean, s_low, s_high, _ = mean_ci(x[~y])
                entry = {
                    "n_violations": nv,
                    "n_successes": ns,
                    "status": "ok" if min(nv, ns) >= min_events else "insufficient",
                    "violations_mean": none(v_mean),
                    "violations_ci_low": none(v_low),
                    "violations_ci_high": none(v_high),
                    "successes_mean": none(s_mean),
                    "successes_ci_low": none(s_low),
                    "successes_ci_high": none(s_high),
                    "auroc": [None] * r_value,
                    "auroc_ci_low": [None] * r_value,
                    "auroc_ci_high": [None] * r_value,
                }
                if entry["status"] == "ok":
                    stats = stratified_auroc(x, y, g)
                    low, high = auroc_ci(stats["auroc"], stats["var"])
                    entry.update({"auroc": none(stats["auroc"]), "auroc_ci_low": none(low), "auroc_ci_high": none(high)})
                by_r[str(r_value)] = entry
            out.append({"layer": layer, "head": head, "by_r": by_r})
    return out


def measure_mechanism(
    model: TransformerLM,
    graph: Graph,
    events: MechanismEvents,
    layers: list[int],
    *,
    chance_sampling: list[float | None],
    min_events: int,
    device: torch.device | str = "cpu",
    echo: Callable[[str], None] = print,
) -> Measured:
    """Continue every event's prompt greedily under every condition (``conditions_for``) and score it."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model = model.to(device).eval()
    prompts = torch.as_tensor(events.prompts, dtype=torch.long, device=device)
    steps = int(events.r.max())
    plan = patch_jumpers(graph, events.jumper, events.prompts[:, -2])
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        # As the analysis does (analysis.measure): one intra-op thread fewer. The passes are many
        # small ops; on the shared 2-core CPU (load 5-7) one condition on the quick preset's 16,000
        # events took 3.4 s with one thread and 70.6 s with two (16.3 s with 4,096-row slices).
        torch.set_num_threads(max(1, threads - 1))
    try:
        means = mean_values(model, prompts)
        rows, intact, intact_attention, patch = _run_conditions(
            model, graph, events, layers, prompts, means, plan, steps, chance_sampling, timings, device, echo
        )
    finally:
        torch.set_num_threads(threads)
    violated = ~intact.obeyed
    attention_rows = attention_statistics(intact_attention, violated, events.jumper, events.r, min_events)
    timings["total_seconds"] = round(time.perf_counter() - started, 3)
    return Measured(rows, patch, attention_rows, violated, timings)


def _run_conditions(model, graph, events, layers, prompts, means, plan, steps, chance_sampling, timings, device, echo):
    """Every condition of ``conditions_for``, continued and scored: (rows, intact Scored, intact attention, patch summary)."""
    vertex = graph.jumper_vertex[events.jumper].astype(np.int64)
    target = graph.jumper_target_block[events.jumper].astype(np.int64)
    patched_r = graph.jumper_r[plan.patched].astype(np.int64)
    rows, intact, intact_attention, patch = [], None, None, None
    for condition in conditions_for(model.n_layers, model.n_heads, layers):
        begun = time.perf_counter()
        if condition.kind == "patch":
            patched_prompts = torch.as_tensor(plan.prompts(events.prompts, graph), device=device)
            generated, attention = continue_greedy(model, patched_prompts, int(max(steps, patched_r.max())))
            patched_vertex = graph.jumper_vertex[plan.patched].astype(np.int64)
            scored = score_condition(
                graph, patched_vertex, generated, patched_vertex, graph.jumper_target_block[plan.patched].astype(np.int64), patched_r
            )
            patch = _patch_summary(graph, events, plan, scored, chance_sampling)
            scored_r = patched_r
        else:
            edits = None if condition.kind == "intact" else (lambda position, c=condition: c.edits(position, means.to(device)))
            generated, attention = continue_greedy(model, prompts, steps, edits)
            scored = score_condition(graph, vertex, generated, vertex, target, events.r)
            scored_r = events.r
        rows.append(_condition_row(condition, graph, events, scored, attention, scored_r, intact))
        if condition.kind == "intact":
            intact, intact_attention = scored, attention
        timings[condition.name] = round(time.perf_counter() - begun, 3)
        echo(
            f"  {condition.name}: rule compliance {rows[-1]['rule']['share']:.3f}, edge {rows[-1]['edge']['share']:.3f}"
            f" ({time.perf_counter() - begun:.1f}s)"
        )
    return rows, intact, intact_attention, patch
