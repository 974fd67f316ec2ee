"""The training-curve figure: loss per step; edge compliance, the gate's rule aggregate and every
rule's own compliance per epoch (one labelled line per rule: its r and its block → target block),
with the gate thresholds.

Written beside result.json as ``training_curves.png`` when training ends, and redrawn from
result.json's curves into the report (``analysis/figures/training_curves.png``), so a report of an
older run shows the labelled figure too. Drawn with matplotlib's object API (no pyplot state) at
``plotting.DPI``, no wider than the page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..config import GateConfig
from ..plotting import png_bytes
from ..storage import atomic_write_bytes

AGGREGATE_LABEL = {"every_rule": "worst rule (gate)", "mean_rule": "mean of rules (gate)", "pooled": "pooled rules (gate)"}
FIGURE_FILE = "training_curves.png"
MAX_LABELLED_RULES = 10  # beyond this the rules share one legend entry (the legend would outgrow the panel)
# distinct from the edge (green) and aggregate (red) lines
RULE_COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:brown", "tab:pink", "tab:olive", "tab:gray", "gold", "navy")


def rule_label(rule: Mapping[str, Any]) -> str:
    """``rule 2: r = 8, block 1 → 3`` from a result.json rule row."""
    return f"rule {rule['rule']}: r = {rule['r']}, block {rule.get('block', '?')} → {rule['target_block']}"


def _as_nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def training_curves_figure(
    train_loss: Sequence[float],
    steps_per_epoch: int,
    edge_compliance: Sequence[float | None],
    rule_compliance: Sequence[float | None],
    rule_compliance_per_jumper: Sequence[Sequence[float | None]],
    gate: GateConfig,
    title: str,
    rule_labels: Sequence[str] | None = None,
) -> Figure:
    """The figure; ``rule_labels[j]`` names rule j's line (default ``rule j``)."""
    figure = Figure(figsize=(11.0, 4.0), layout="constrained")
    loss_axis, gate_axis = figure.subplots(1, 2, width_ratios=(1.0, 1.25))
    loss_axis.plot(range(1, len(train_loss) + 1), train_loss, linewidth=0.6, color="tab:blue")
    loss_axis.set_xlabel("optimiser step")
    loss_axis.set_ylabel("cross-entropy loss")
    loss_axis.set_title("training loss (every step)", fontsize=10)
    for boundary in range(steps_per_epoch, len(train_loss), max(1, steps_per_epoch)):
        loss_axis.axvline(boundary, color="0.9", linewidth=0.5, zorder=0)

    epochs = range(1, len(edge_compliance) + 1)
    rules = len(rule_compliance_per_jumper[0]) if rule_compliance_per_jumper else 0
    labelled = rules <= MAX_LABELLED_RULES
    for j in range(rules):
        label = (rule_labels[j] if rule_labels else f"rule {j}") if labelled else (f"each rule ({rules})" if j == 0 else None)
        gate_axis.plot(
            epochs,
            _as_nan([epoch[j] for epoch in rule_compliance_per_jumper]),
            color=RULE_COLOURS[j % len(RULE_COLOURS)] if labelled else "tab:red",
            alpha=0.8 if labelled else 0.35,
            linewidth=1.0,
            marker="." if labelled else None,
            label=label,
        )
    gate_axis.plot(epochs, _as_nan(edge_compliance), marker="o", color="tab:green", linewidth=2, label="edge compliance")
    gate_axis.plot(
        epochs, _as_nan(rule_compliance), marker="s", color="tab:red", linewidth=2, label=AGGREGATE_LABEL[gate.rule_aggregate]
    )
    gate_axis.axhline(
        gate.edge_threshold, color="tab:green", linestyle="--", linewidth=1, label=f"edge threshold {gate.edge_threshold}"
    )
    gate_axis.axhline(gate.rule_threshold, color="tab:red", linestyle="--", linewidth=1, label=f"rule threshold {gate.rule_threshold}")
    gate_axis.set_ylim(-0.02, 1.02)
    gate_axis.set_xlabel("epoch")
    gate_axis.set_ylabel("compliance")
    gate_axis.set_title("gate evaluation (every epoch)", fontsize=10)
    gate_axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the lines, never over them
    figure.suptitle(title, fontsize=9)
    return figure


def plot_training_curves(
    path: Path,
    train_loss: list[float],
    steps_per_epoch: int,
    edge_compliance: list[float | None],
    rule_compliance: list[float | None],
    rule_compliance_per_jumper: list[list[float | None]],
    gate: GateConfig,
    title: str,
    rule_labels: Sequence[str] | None = None,
) -> Path:
    """Draw :func:`training_curves_figure` and write it to ``path`` (PNG, atomically)."""
    figure = training_curves_figure(
        train_loss, steps_per_epoch, edge_compliance, rule_compliance, rule_compliance_per_jumper, gate, title, rule_labels
    )
    return atomic_write_bytes(path, png_bytes(figure))


def plot_from_result(path: Path, result: Mapping[str, Any], gate: Mapping[str, Any], title: str) -> Path | None:
    """The figure from a result.json payload and the config's ``gate`` block; None when the
    result holds no evaluated epoch (nothing to draw)."""
    curves = result.get("curves") or {}
    if not curves.get("edge_compliance") or not curves.get("train_loss"):
        return None
    known = {k: float(gate[k]) for k in ("edge_threshold", "rule_threshold") if k in gate}
    if "rule_aggregate" in gate:
        known["rule_aggregate"] = gate["rule_aggregate"]
    per_jumper = curves.get("rule_compliance_per_jumper") or []
    rules = sorted(result.get("rules") or [], key=lambda rule: rule["rule"])
    if per_jumper and len(rules) != len(per_jumper[0]):  # labels only when they name the lines one to one
        rules = []
    return plot_training_curves(
        path,
        curves["train_loss"],
        int((result.get("training") or {}).get("steps_per_epoch") or len(curves["train_loss"]) // len(curves["edge_compliance"])),
        curves["edge_compliance"],
        curves["rule_compliance"],
        per_jumper,
        GateConfig(**known),
        title,
        [rule_label(rule) for rule in rules] or None,
    )
