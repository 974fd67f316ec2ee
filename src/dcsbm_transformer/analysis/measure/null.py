"""The jumper-free null: continuations of walks that are under no rule at the measured positions.

Is the signal a response to rule events at all, or the normal dynamics of attention along a walk?
Every analysis event is a jumper visit; to answer, the same model continues walks at positions
where *no* rule is pending, and the same metrics are measured there by the same code
(``batched.measure``: continuations, batched spectra and metrics, context windows).

**Matching.** Each null event copies one violation of the analysis: the same walk step ``s`` (so the
prompt window covers the same positions of a walk of the same length) and the same number of passes
``r`` (so lookback ``j`` is the same pass). ``analysis.null_multiple`` null events per violation
(default 3), at most ``analysis.null_max_events`` in all (default 1,000: the quick preset's 316
violations give 948; a sampled sensitivity analysis with thousands of violations stays bounded); when
the cap binds, the matched violations are a seeded random subset of the multiset. Each null event
carries the rule of its violation as its stratum (``event_jumper``), so violations and their null are
compared within rule, as every statistic of the analysis is.

**Rule-free.** The prompt ends at walk step ``s``; the passes emit ``s + 1 .. s + r``. A rule is
pending there when the walk visited a jumper at ``t <= s`` with deadline ``t + r_t > s`` (the visit at
``s`` itself included): such positions are never drawn. The walks come from their own random
stream (``<analysis.stream>-null-<round>``), one null event per walk (independent samples), in rounds
until every null event has a rule-free walk; where rules cover most positions (r near w) the events
left after ``MAX_ROUNDS`` rounds share pooled rounds of walks (``_rule_free_walks``), and an event
that still finds none is left out and counted (``unmatched``: the null is then smaller than
``null_multiple`` per violation, and says so). The model may itself emit a jumper during the
continuation, which starts a rule: the passes after such a token are set to NaN (not rule-free any
more) and counted (``first_jumper_pass``, ``generated_jumpers`` in horizon.json).

``null_metrics.npz`` (``NULL_FILE``, its own ``schema_version``): ``event_r``, ``event_step``,
``event_jumper`` (the matched violation's rule), ``event_matched`` (that violation's index in
token_metrics.npz), ``first_jumper_pass`` (0 = none) [N]; ``tokens`` int32 [N, w + max r];
``null_multiple`` and ``null_max_events`` (0-d, the settings used), ``unmatched`` and ``walks_drawn``
(0-d; schema 2, absent from schema 1, whose sampling allowed no unmatched event); every metric array of
token_metrics.npz (``<target>.layer_<L>.head_<H>.<metric>``, float32 [N, lookbacks], lookback order,
NaN past r and after a generated jumper) and its ``context.`` value [N].
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...config import ExperimentConfig
from ...data.graph import Graph
from ...data.walks import generate_corpus
from ...reproducibility import numpy_rng
from ...storage import read_npz, write_npz
from ..files import CONTEXT_PREFIX
from ..stats.statistics import lookback_view
from .events import MAX_ROUNDS, AnalysisEvents, AnalysisEventsError

NULL_FILE = "null_metrics.npz"
NULL_SCHEMA_VERSION = 2
# Schema 1 had no ``unmatched``: its sampling stopped the analysis when an event found no rule-free
# walk, so a schema-1 file has none (and phase 1 of ``_rule_free_walks`` draws what it drew).
_READABLE_SCHEMAS = (1, NULL_SCHEMA_VERSION)


def pending_after(walks: np.ndarray, graph: Graph) -> np.ndarray:
    """bool ``[N, L]``: at step ``s`` some rule of the walk is pending — a jumper visited at ``t <= s``
    whose deadline ``t + r_t`` is after ``s`` (so the tokens ``s + 1 ..`` fall under it).

    A difference array per walk: +1 at each jumper visit ``t``, −1 at ``t + r_t``; the running sum
    counts the rules pending after each step."""
    n, length = walks.shape
    jumper = graph.jumper_index[walks]
    row, t = np.nonzero(jumper >= 0)
    end = t + graph.jumper_r[jumper[row, t]].astype(np.int64)
    change = np.zeros((n, length + 1), dtype=np.int64)
    np.add.at(change, (row, t), 1)
    np.add.at(change, (row, np.minimum(end, length)), -1)
    return np.cumsum(change, axis=1)[:, :length] > 0


def matched_violations(violated: np.ndarray, multiple: int, max_events: int, rng: np.random.Generator) -> np.ndarray:
    """int [N]: the index of the violation each null event copies — every violation ``multiple``
    times, a seeded random subset of ``max_events`` of them when there are more (sorted)."""
    chosen = np.repeat(np.flatnonzero(np.asarray(violated, dtype=bool)), multiple)
    if chosen.size > max_events:
        chosen = np.sort(rng.choice(chosen, size=max_events, replace=False))
    return chosen


def _rule_free_walks(config: ExperimentConfig, graph: Graph, step: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Rejection sampling of one rule-free walk per null event (``step`` [N]: the walk step each must
    be rule-free at): ``(walks [N, L], found [N] bool, source [N] walk number, walks drawn)``.

    Two phases, each up to ``MAX_ROUNDS`` rounds of fresh walks, and no walk serves two null events:
    1. *one walk each* (``<stream>-null-<round>``): event ``i`` of those left tries walk ``i`` of the
       round. Where rule-free positions are common this settles every event within a few rounds.
    2. *pooled* (``<stream>-null-pool-<round>``), for events phase 1 left (where rules cover most
       positions: r close to w, many jumpers): the round's walks are dealt out in equal blocks, and
       each event takes the first rule-free walk of its block — up to ``MAX_ROUNDS · 1000`` tries each.
    Either way the walk an event takes is a draw from the walks that are rule-free at its step (the
    first success of independent tries), so the null is the same distribution; phase 2 only makes
    the rare cases cheap. An event still without one is left out (``found`` False) and counted."""
    length = config.walks.walk_length
    count = len(step)
    walks = np.empty((count, length), dtype=np.int64)
    source = np.full(count, -1, dtype=np.int64)
    todo = np.arange(count)
    walks_drawn = 0
    for infix, pooled in (("null", False), ("null-pool", True)):
        for round_ in range(MAX_ROUNDS):
            if todo.size == 0:
                break
            tries = max(1000 // todo.size, 2) if pooled else 1  # walks each event left tries this round
            per_round = tries * todo.size if pooled else max(2 * todo.size, 1000)
            drawn = generate_corpus(
                graph, per_round, length, config.walks.jumper_start_fraction, config.seed, f"{config.analysis.stream}-{infix}-{round_}"
            ).walks
            tried = todo.size * tries  # event todo[i] tries walks i·tries .. (i+1)·tries − 1 of the round
            free = ~pending_after(drawn[:tried], graph)[np.arange(tried), np.repeat(step[todo], tries)]
            free = free.reshape(todo.size, tries)
            hit = free.any(axis=1)
            rows = np.flatnonzero(hit) * tries + free.argmax(axis=1)[hit]  # its first rule-free walk
            walks[todo[hit]] = drawn[rows]
            source[todo[hit]] = walks_drawn + rows
            todo = todo[~hit]
            walks_drawn += per_round
    found = np.ones(count, dtype=bool)
    found[todo] = False
    return walks, found, source, walks_drawn


def draw_null_events(
    config: ExperimentConfig, graph: Graph, events: AnalysisEvents, matched: np.ndarray
) -> tuple[AnalysisEvents, np.ndarray]:
    """The null events copying ``events[matched]`` (step, r, rule as stratum) on rule-free walks, and
    ``matched`` for those that found one (``_rule_free_walks``): events whose step no drawn walk was
    rule-free at are left out, and counted by the caller (``unmatched`` in null_metrics.npz)."""
    w = config.model.context_window
    walks, found, source, walks_drawn = _rule_free_walks(config, graph, events.step[matched])
    matched, walks, source = matched[found], walks[found], source[found]
    step, r = events.step[matched], events.r[matched]
    count = len(matched)
    index = np.arange(count)[:, None]
    prompts = walks[index, step[:, None] - w + 1 + np.arange(w)[None, :]]
    before = walks[index, step[:, None] - w - 1 + np.arange(w + 1)[None, :]]
    null_events = AnalysisEvents(
        prompts=prompts,
        before=before,
        walk_continuation=np.full((count, int(r.max()) if count else 0), -1, dtype=np.int64),
        jumper=events.jumper[matched].copy(),
        vertex=walks[np.arange(count), step],
        target_block=events.target_block[matched].copy(),  # the model's target-block probability is not kept
        r=r.copy(),
        step=step.copy(),
        walk=source,
        walks_drawn=walks_drawn,
    )
    return null_events, matched


def first_jumper_pass(generated: np.ndarray, r: np.ndarray, graph: Graph) -> np.ndarray:
    """int [N]: the first pass whose emitted token is a jumper (a rule the model started), 0 = none."""
    passes = generated.shape[1]
    exists = np.arange(passes)[None, :] < r[:, None]
    hit = exists & (graph.jumper_index[np.maximum(generated, 0)] >= 0)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def null_arrays(
    null_events: AnalysisEvents, measured, graph: Graph, matched: np.ndarray, settings: dict[str, int], unmatched: int
) -> dict[str, np.ndarray]:
    """The arrays of null_metrics.npz from the null events and their ``batched.Measurements``
    (``unmatched``: null events left out because no drawn walk was rule-free at their step)."""
    w = null_events.prompts.shape[1]
    generated = measured.labels.tokens[:, w:].astype(np.int64)
    first = first_jumper_pass(generated, null_events.r, graph)
    passes = generated.shape[1]
    k = np.arange(1, passes + 1)[None, :]
    after = (first[:, None] > 0) & (k > first[:, None])  # passes after the model emitted a jumper: under its rule

    def by_lookback(values: np.ndarray) -> np.ndarray:
        values = np.where(after, np.nan, values).astype(np.float32)
        return lookback_view(values, null_events.r, fill=np.nan)

    return {
        "schema_version": np.array(NULL_SCHEMA_VERSION),
        "null_multiple": np.array(settings["null_multiple"]),
        "null_max_events": np.array(settings["null_max_events"]),
        "unmatched": np.array(unmatched),
        "walks_drawn": np.array(null_events.walks_drawn),
        "event_r": null_events.r,
        "event_step": null_events.step,
        "event_jumper": null_events.jumper,
        "event_matched": matched.astype(np.int64),
        "first_jumper_pass": first.astype(np.int16),
        "tokens": measured.labels.tokens,
        **{key: by_lookback(values) for key, values in measured.metrics.items()},
        **{f"{CONTEXT_PREFIX}{key}": values for key, values in measured.context.items()},
    }


def null_settings(config: ExperimentConfig) -> dict[str, int]:
    return {"null_multiple": config.analysis.null_multiple, "null_max_events": config.analysis.null_max_events}


def measure_null(
    out_dir: Path,
    config: ExperimentConfig,
    graph: Graph,
    events: AnalysisEvents,
    violated: np.ndarray,
    measure_events: Callable[[AnalysisEvents], Any],
    echo: Callable[[str], None] = print,
) -> Path | None:
    """Draw, continue and measure the null events of an analysis; write null_metrics.npz (before the
    summary: the summary vouches for a finished analysis). ``measure_events(events)`` is the analysis's
    own ``batched.measure`` with its settings. None (no file) when the null is off or there is no violation."""
    settings = null_settings(config)
    matched = matched_violations(
        violated, settings["null_multiple"], settings["null_max_events"], numpy_rng(config.seed, config.analysis.stream, "null")
    )
    if matched.size == 0:
        return None
    null_events, kept = draw_null_events(config, graph, events, matched)
    unmatched = len(matched) - len(kept)
    if kept.size == 0:  # rules cover every drawn walk at these steps: no null to compare with
        raise AnalysisEventsError(
            f"none of {len(matched)} jumper-free null events found a rule-free walk in {null_events.walks_drawn} walks: "
            "set analysis.null_multiple 0 to analyse without the null"
        )
    measured = measure_events(null_events)
    path = write_npz(out_dir / NULL_FILE, null_arrays(null_events, measured, graph, kept, settings, unmatched))
    left_out = f"; {unmatched} left out: no rule-free walk at their step" if unmatched else ""
    echo(f"{path}: {len(kept)} jumper-free null events ({len(kept) / max(1, int(np.sum(violated))):.2g} per violation{left_out})")
    return path


def read_null(directory: Path, config: ExperimentConfig) -> dict[str, np.ndarray] | None:
    """null_metrics.npz of an analysis made with this config's null settings, or None (absent, of
    another schema or other settings: the null is then measured again, never misread)."""
    path = Path(directory) / NULL_FILE
    if not path.is_file():
        return None
    try:
        arrays = read_npz(path)
    except (OSError, ValueError):
        return None
    settings = null_settings(config)
    if int(arrays.get("schema_version", -1)) not in _READABLE_SCHEMAS or any(int(arrays[k]) != v for k, v in settings.items()):
        return None
    return arrays


def null_expected(config: ExperimentConfig, violated: np.ndarray) -> bool:
    """Whether an analysis with these violations has (or should have) a null file."""
    return config.analysis.null_multiple > 0 and config.analysis.null_max_events > 0 and bool(np.any(violated))
