"""The training-curve figure: loss per step; edge compliance, the gate's rule aggregate and every
rule's own compliance (thin lines) per epoch, with the gate thresholds."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from ..config import GateConfig  # noqa: E402
from ..storage import atomic_write_bytes  # noqa: E402

AGGREGATE_LABEL = {"every_rule": "worst rule (gate)", "mean_rule": "mean of rules (gate)", "pooled": "pooled rules (gate)"}

FIGURE_FILE = "training_curves.png"


def plot_training_curves(
    path: Path,
    train_loss: list[float],
    steps_per_epoch: int,
    edge_compliance: list[float | None],
    rule_compliance: list[float | None],
    rule_compliance_per_jumper: list[list[float | None]],
    gate: GateConfig,
    title: str,
) -> Path:
    figure, (loss_axis, gate_axis) = plt.subplots(1, 2, figsize=(12.5, 4))
    loss_axis.plot(range(1, len(train_loss) + 1), train_loss, linewidth=0.6, color="tab:blue")
    loss_axis.set_xlabel("optimiser step")
    loss_axis.set_ylabel("cross-entropy loss")
    loss_axis.set_title("training loss (every step)")
    for boundary in range(steps_per_epoch, len(train_loss), steps_per_epoch):
        loss_axis.axvline(boundary, color="0.9", linewidth=0.5, zorder=0)

    epochs = range(1, len(edge_compliance) + 1)
    as_nan = lambda values: [float("nan") if v is None else v for v in values]  # noqa: E731
    rules = len(rule_compliance_per_jumper[0]) if rule_compliance_per_jumper else 0
    for j in range(rules):
        gate_axis.plot(
            epochs,
            as_nan([epoch[j] for epoch in rule_compliance_per_jumper]),
            color="tab:red",
            alpha=0.35,
            linewidth=0.8,
            label="each rule" if j == 0 else None,
        )
    gate_axis.plot(epochs, as_nan(edge_compliance), marker="o", color="tab:green", label="edge compliance")
    gate_axis.plot(epochs, as_nan(rule_compliance), marker="s", color="tab:red", label=AGGREGATE_LABEL[gate.rule_aggregate])
    gate_axis.axhline(
        gate.edge_threshold, color="tab:green", linestyle="--", linewidth=1, label=f"edge threshold {gate.edge_threshold}"
    )
    gate_axis.axhline(gate.rule_threshold, color="tab:red", linestyle="--", linewidth=1, label=f"rule threshold {gate.rule_threshold}")
    gate_axis.set_ylim(-0.02, 1.02)
    gate_axis.set_xlabel("epoch")
    gate_axis.set_title("gate evaluation (every epoch)")
    gate_axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the lines, never over them
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())
