"""The learnability map's numbers (issue 25), from a sweep's results and the points' training data.

    python bench/learnability.py [SWEEP_FILE] [--results-dir results] [--cache-dir .cache]
                                 [--json docs/learnability-map.json] [--extra-config configs/anchor.json]

For every point of the sweep whose results folder has a result.json it reads the run (gate
epoch, epochs trained, the worst rule per epoch from ``curves.rule_compliance_per_jumper``, the
epoch-mean training loss, seconds per epoch) and computes, from the point's own training walks
(the data cache the run used) and the windowing of ``training/windows.py``, what explains how
hard its rules are to learn:

* ``visible``: the probability that a rule event (a jumper at step s, deadline s + r inside the
  walk) lies whole in one training window of an epoch: each walk is cut into k = L // (w + 1)
  back-to-back windows from a phase drawn uniformly in 0 .. L - k(w + 1), so the event is seen
  with its deadline predicted from a context holding the jumper iff the window that starts at or
  before s (the last one) also holds s + r. Exact, by enumerating the phases.
* per rule (jumper), the expected number of such visible rule deadlines per epoch, and in all
  until the gate (epochs to the gate x per epoch);
* the share of predicted tokens that are visible rule deadlines (k w targets per walk);
* the bigram entropy H(next | current) of the training walks (the loss a rule-blind model can
  reach) and the mean information a rule adds at its deadline, -log p(target block | previous
  token) under the corpus bigram; share x information = the loss a model gains by learning every
  rule (an estimate: the corpus bigram already carries some of the rules' effect);
* jumper density (jumpers / n, and the share of walk tokens that are jumpers).

``--extra-config`` computes the data quantities for a config that was not run (the anchor); with
``--extra-walks N`` it draws only N walks for that (the per-walk rates do not depend on the
corpus size; the per-epoch counts are scaled to the config's train_walks). Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dcsbm_transformer.config import config_from_dict, load_config
from dcsbm_transformer.data.dataset import build_data, load_or_build_data
from dcsbm_transformer.sweep import load_sweep
from dcsbm_transformer.training.windows import windows_per_walk


def visible_probability(step: np.ndarray, r: np.ndarray, walk_length: int, w: int) -> np.ndarray:
    """P(the event lies whole in a training window) over the epoch's uniform phase, per event."""
    span = w + 1
    k = windows_per_walk(walk_length, w)
    phases = np.arange(0, walk_length - k * span + 1)
    seen = np.zeros(len(step), dtype=np.float64)
    for phase in phases:
        offset = step - phase
        index = np.floor_divide(offset, span)
        start = phase + index * span
        ok = (offset >= 0) & (index < k) & (step + r <= start + w)
        seen += ok
    return seen / len(phases)


def data_quantities(config, data) -> dict[str, Any]:
    graph, corpus = data.graph, data.train
    walks = np.asarray(corpus.walks)
    events = corpus.events
    n, w, length = config.graph.n, config.model.context_window, config.walks.walk_length
    walk_count = walks.shape[0]
    k = windows_per_walk(length, w)
    jumper_of = np.asarray(graph.jumper_index)[events.vertex]
    r = events.deadline - events.step
    p_visible = visible_probability(events.step, r, length, w)
    jumpers = int((np.asarray(graph.jumper_index) >= 0).sum())
    per_rule_events = np.bincount(jumper_of, minlength=jumpers)
    per_rule_visible = np.bincount(jumper_of, weights=p_visible, minlength=jumpers)

    # the corpus bigram: H(next | current), and p(block of next = target | token before the deadline)
    current, following = walks[:, :-1].ravel().astype(np.int64), walks[:, 1:].ravel().astype(np.int64)
    counts = np.bincount(current * n + following, minlength=n * n).reshape(n, n).astype(np.float64)
    rows = counts.sum(1, keepdims=True)
    p = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_rows = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    bigram_entropy = float((h_rows * rows[:, 0]).sum() / rows.sum())
    block = np.asarray(graph.block)
    K = config.graph.K
    p_block = np.stack([p[:, block == b].sum(1) for b in range(K)], axis=1)  # [n, K]
    before = walks[events.row, events.deadline - 1].astype(np.int64)
    p_target = p_block[before, events.target_block]
    info = -np.log(np.clip(p_target, 1e-12, None))
    info_visible = float((info * p_visible).sum() / max(p_visible.sum(), 1e-12))

    predicted_tokens = walk_count * k * w
    visible_total = float(p_visible.sum())
    share = visible_total / predicted_tokens
    return {
        "n": n,
        "w": w,
        "walk_length": length,
        "train_walks": walk_count,
        "windows_per_walk": k,
        "tokens_used_per_epoch_share": k * (w + 1) / length,
        "jumpers": jumpers,
        "jumper_density": jumpers / n,
        "r": sorted({int(v) for v in r}),
        "rule_events_per_walk": len(events) / walk_count,
        "jumper_token_share": float(np.isin(walks, np.nonzero(np.asarray(graph.jumper_index) >= 0)[0]).mean()),
        "p_visible_mean": float(p_visible.mean()),
        "p_visible_step0": float(p_visible[events.step == 0].mean()) if (events.step == 0).any() else None,
        "events_at_step0_share": float((events.step == 0).mean()),
        "visible_deadlines_per_epoch_by_rule": [round(float(v), 1) for v in per_rule_visible],
        "visible_deadlines_per_epoch_min_rule": float(per_rule_visible.min()),
        "visible_deadlines_per_epoch_all_rules": visible_total,
        "rule_events_by_rule": per_rule_events.tolist(),
        "rule_deadline_share_of_predicted_tokens": share,
        "bigram_entropy": bigram_entropy,
        "rule_information_nats_at_deadline": info_visible,
        "loss_gain_if_rules_learned": share * info_visible,
        "steps_per_epoch": math.ceil(walk_count * k / config.training.batch_size),
    }


def run_quantities(result: dict[str, Any], bigram_entropy: float | None) -> dict[str, Any]:
    training, curves, timings = result["training"], result["curves"], result["timings"]
    per_jumper = curves["rule_compliance_per_jumper"]
    worst = [min(row) for row in per_jumper]
    steps = training["steps_per_epoch"]
    losses = np.asarray(curves["train_loss"], dtype=np.float64)
    epochs = len(losses) // steps
    epoch_loss = [float(losses[e * steps : (e + 1) * steps].mean()) for e in range(epochs)]
    plateau = None
    if bigram_entropy is not None:
        plateau = next((e + 1 for e, value in enumerate(epoch_loss) if value <= bigram_entropy + 0.05), None)
    first_half = next((e + 1 for e, value in enumerate(worst) if value > 0.5), None)
    epoch_seconds = timings.get("epoch_seconds") or []
    trained = training["epochs_trained"]
    return {
        "gate_passed": training["gate_passed"],
        "gate_epoch": training["gate_epoch"],
        "epochs_trained": trained,
        "steps_per_epoch": steps,
        "worst_rule_by_epoch": [round(v, 3) for v in worst],
        "worst_rule_last": worst[-1] if worst else None,
        "worst_rule_best": max(worst) if worst else None,
        "first_epoch_worst_rule_above_half": first_half,
        "epoch_mean_loss": [round(v, 4) for v in epoch_loss],
        "loss_plateau_epoch": plateau,
        "median_epoch_seconds": float(np.median(epoch_seconds)) if epoch_seconds else None,
        "eval_seconds_per_epoch": timings["eval_seconds"] / trained if trained else None,
        "train_seconds": timings["train_seconds"],
        "threads": result["environment"]["threads"],
    }


def markdown_table(points: list[dict[str, Any]], extras: list[dict[str, Any]]) -> str:
    """The map as a Markdown table: one row per point, run or not."""
    lines = [
        "| # | varied (vs the centre) | gate epoch | epochs | worst rule at the end | epoch worst > 0.5 | loss plateau epoch "
        "| s / epoch (train) | steps / epoch | P(rule in a window) | visible deadlines / epoch, rarest rule | ... to the gate "
        "| rule-deadline share of predicted tokens | steps to the gate |",
        "|" + "---|" * 14,
    ]
    for entry in points:
        label = ", ".join(f"{k} = {json.dumps(v)}" for k, v in entry["varied"].items()) or "(centre)"
        if "run" not in entry:
            lines.append(f"| {entry['point']} | {label} | not run |" + " |" * 11)
            continue
        run, data, to_gate = entry["run"], entry["data"], entry["to_gate"]
        gate = str(run["gate_epoch"]) if run["gate_passed"] else "no"
        partial = "" if entry["state"] == "finished" else " (unfinished)"  # running, or stopped and resumable
        seen = f"{to_gate['visible_deadlines_min_rule']:,.0f}" if to_gate else "–"
        steps = f"{to_gate['steps']:,}" if to_gate else "–"
        lines.append(
            f"| {entry['point']} | {label} | {gate}{partial} | {run['epochs_trained']} | {run['worst_rule_last']:.3f} "
            f"| {run['first_epoch_worst_rule_above_half'] or '–'} | {run['loss_plateau_epoch'] or '–'} "
            f"| {run['median_epoch_seconds']:.1f} | {run['steps_per_epoch']} | {data['p_visible_mean']:.3f} "
            f"| {data['visible_deadlines_per_epoch_min_rule']:,.0f} | {seen} "
            f"| {100 * data['rule_deadline_share_of_predicted_tokens']:.2f}% | {steps} |"
        )
    for extra in extras:
        data = extra["data"]
        lines.append(
            f"| – | {extra['config']} (not run) | | | | | | | {data['steps_per_epoch']} | {data['p_visible_mean']:.3f} "
            f"| {data['visible_deadlines_per_epoch_min_rule']:,.0f} | | {100 * data['rule_deadline_share_of_predicted_tokens']:.3f}% | |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_file", nargs="?", default="configs/sweep-learnability.json")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--cache-dir", default=".cache")
    parser.add_argument("--json", default=None, help="write every number here")
    parser.add_argument("--markdown", default=None, help="write the table of the map here (Markdown)")
    parser.add_argument("--extra-config", action="append", default=[], help="a config not run: data quantities only")
    parser.add_argument("--extra-walks", type=int, default=None, help="walks drawn for an extra config (default: its own)")
    args = parser.parse_args(argv)

    plan = load_sweep(args.sweep_file)
    points = []
    for point in plan.points:
        run_dir = Path(args.results_dir) / point.experiment_id
        try:
            result = json.loads((run_dir / "result.json").read_text())
        except (OSError, ValueError):
            points.append({"point": point.index, "varied": point.varied, "experiment_id": point.experiment_id, "state": "not run"})
            continue
        entry: dict[str, Any] = {
            "point": point.index,
            "varied": point.varied,
            "experiment_id": point.experiment_id,
            "state": result["status"],
        }
        data = load_or_build_data(point.config, args.cache_dir)
        entry["data"] = data_quantities(point.config, data)
        entry["run"] = run_quantities(result, entry["data"]["bigram_entropy"])
        run = entry["run"]
        epochs = run["gate_epoch"] or run["epochs_trained"]
        entry["to_gate"] = (
            {
                "steps": epochs * run["steps_per_epoch"],
                "visible_deadlines_min_rule": epochs * entry["data"]["visible_deadlines_per_epoch_min_rule"],
                "visible_deadlines_all_rules": epochs * entry["data"]["visible_deadlines_per_epoch_all_rules"],
            }
            if run["gate_passed"]
            else None
        )
        points.append(entry)

    extras = []
    for path in args.extra_config:
        config = load_config(path)
        raw = config.to_dict()
        if args.extra_walks:
            raw["walks"]["train_walks"] = args.extra_walks
        small = config_from_dict(raw)
        started = time.perf_counter()
        data = build_data(small)
        quantities = data_quantities(small, data)
        scale = config.walks.train_walks / small.walks.train_walks
        quantities["visible_deadlines_per_epoch_by_rule"] = [
            round(v * scale, 1) for v in quantities["visible_deadlines_per_epoch_by_rule"]
        ]
        quantities["visible_deadlines_per_epoch_min_rule"] *= scale
        quantities["visible_deadlines_per_epoch_all_rules"] *= scale
        quantities["steps_per_epoch"] = math.ceil(
            config.walks.train_walks * quantities["windows_per_walk"] / config.training.batch_size
        )
        quantities["train_walks"] = config.walks.train_walks
        quantities["walks_drawn_for_these_numbers"] = small.walks.train_walks
        quantities["draw_seconds"] = round(time.perf_counter() - started, 1)
        extras.append({"config": path, "data": quantities})

    print(
        f"{'pt':>3} {'varied':<48} {'gate':>5} {'ep':>3} {'worst@end':>9} {'1st>.5':>6} {'plat':>4} {'s/ep':>5} "
        f"{'Pvis':>5} {'vis/ep/rule':>11} {'share%':>6} {'H2':>5} {'info':>5}"
    )
    for entry in points:
        label = ", ".join(f"{k}={json.dumps(v)}" for k, v in entry["varied"].items()) or "(centre)"
        if "run" not in entry:
            print(f"{entry['point']:>3} {label:<48} not run")
            continue
        run, data = entry["run"], entry["data"]
        print(
            f"{entry['point']:>3} {label[:48]:<48} {str(run['gate_epoch'] or '-'):>5} {run['epochs_trained']:>3} "
            f"{run['worst_rule_last']:>9.3f} {str(run['first_epoch_worst_rule_above_half'] or '-'):>6} "
            f"{str(run['loss_plateau_epoch'] or '-'):>4} {run['median_epoch_seconds']:>5.1f} {data['p_visible_mean']:>5.3f} "
            f"{data['visible_deadlines_per_epoch_min_rule']:>11.0f} {100 * data['rule_deadline_share_of_predicted_tokens']:>6.3f} "
            f"{data['bigram_entropy']:>5.2f} {data['rule_information_nats_at_deadline']:>5.2f}"
        )
    for extra in extras:
        data = extra["data"]
        print(
            f"extra {extra['config']}: Pvis {data['p_visible_mean']:.3f}, visible deadlines per epoch (min rule) "
            f"{data['visible_deadlines_per_epoch_min_rule']:.0f}, share {100 * data['rule_deadline_share_of_predicted_tokens']:.3f}%, "
            f"H2 {data['bigram_entropy']:.2f}, info {data['rule_information_nats_at_deadline']:.2f}, steps/epoch {data['steps_per_epoch']}"
        )
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(points, extras))
    if args.json:
        Path(args.json).write_text(json.dumps({"sweep": plan.name, "points": points, "extra": extras}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
