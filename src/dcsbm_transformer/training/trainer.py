"""The training loop, as the spec reads: epoch → gate evaluation → checkpoint → gate decision.

Cross-entropy next-token prediction on windows of w + 1 tokens; AdamW (decay on weight
matrices only), warmup + cosine stepped every optimiser step, gradient clipping. After every
epoch the gate evaluator generates greedily from held-out walks; the epoch's checkpoint is
written, and training stops at once when the gate passes. A loss that turns NaN/inf stops the
run with that reason; the last good checkpoint stays the newest.

Per-step losses stay on the device during an epoch and are copied once at its end (no per-step
host synchronisation), so the per-step curve is complete at no cost to a GPU.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..config import ExperimentConfig, GateConfig
from ..data.compliance import ComplianceReport
from ..data.graph import Graph
from ..devices import synchronize
from ..model import TransformerLM
from ..reproducibility import capture_rng_state, restore_rng_state
from .checkpoint import CHECKPOINT_FORMAT, GATE_CHECKPOINT, epoch_checkpoint_name, prune_epoch_checkpoints, save_checkpoint
from .evaluation import GateEvaluation, GateEvaluator
from .gate import GateDecision, gate_decision
from .schedule import warmup_cosine_scheduler
from .windows import epoch_windows, gather_windows, steps_per_epoch, windows_per_walk


@dataclass
class TrainingState:
    """Everything about progress that a checkpoint must carry besides module states."""

    epoch: int = 0  # epochs completed
    global_step: int = 0
    train_loss: list[float] = field(default_factory=list)
    edge_compliance: list[float | None] = field(default_factory=list)
    rule_compliance: list[float | None] = field(default_factory=list)  # the gate's rule aggregate
    rule_compliance_per_jumper: list[list[float | None]] = field(default_factory=list)  # [epoch][rule]
    rule_events: list[int] = field(default_factory=list)
    gate_passed: bool = False
    gate_epoch: int | None = None
    failure_reason: str | None = None
    finished: bool = False
    last_evaluation: dict[str, Any] | None = None
    epoch_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint's ``epoch``, ``global_step``, ``curves``, ``gate`` and ``timings`` entries."""
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "curves": {
                "train_loss": torch.tensor(self.train_loss, dtype=torch.float32),
                "edge_compliance": list(self.edge_compliance),
                "rule_compliance": list(self.rule_compliance),
                "rule_compliance_per_jumper": [list(epoch) for epoch in self.rule_compliance_per_jumper],
                "rule_events": list(self.rule_events),
            },
            "gate": {
                "passed": self.gate_passed,
                "epoch": self.gate_epoch,
                "failure_reason": self.failure_reason,
                "finished": self.finished,
                "last_evaluation": self.last_evaluation,
            },
            "timings": {"epoch_seconds": list(self.epoch_seconds), "eval_seconds": list(self.eval_seconds)},
        }

    @classmethod
    def from_checkpoint(cls, stored: dict[str, Any]) -> "TrainingState":
        curves, gate, timings = stored["curves"], stored["gate"], stored["timings"]
        return cls(
            epoch=stored["epoch"],
            global_step=stored["global_step"],
            train_loss=curves["train_loss"].tolist(),
            edge_compliance=list(curves["edge_compliance"]),
            rule_compliance=list(curves["rule_compliance"]),
            rule_compliance_per_jumper=[list(epoch) for epoch in curves["rule_compliance_per_jumper"]],
            rule_events=list(curves["rule_events"]),
            gate_passed=gate["passed"],
            gate_epoch=gate["epoch"],
            failure_reason=gate["failure_reason"],
            finished=gate["finished"],
            last_evaluation=gate["last_evaluation"],
            epoch_seconds=list(timings["epoch_seconds"]),
            eval_seconds=list(timings["eval_seconds"]),
        )


class CompileError(RuntimeError):
    """torch.compile could not compile the model on this machine (``--compile``)."""


@dataclass
class TrainingHooks:
    """Points where tests inject faults (pauses for a kill, NaNs, write errors); no-ops by default."""

    after_step: Callable[["Trainer", int], None] | None = None  # (trainer, global step just taken)
    before_evaluation: Callable[[int], None] | None = None  # (epoch)
    before_checkpoint_commit: Callable[[Path], None] | None = None  # temp file written, not yet renamed


class Trainer:
    """Owns the model, optimiser, scheduler and data of one run and advances it epoch by epoch."""

    def __init__(
        self,
        config: ExperimentConfig,
        model: TransformerLM,
        train_walks: torch.Tensor,
        evaluator: GateEvaluator | None,
        checkpoint_dir: Path,
        *,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
        compiled: Callable | None = None,
        hooks: TrainingHooks | None = None,
    ):
        self.config, self.model, self.evaluator = config, model, evaluator
        self.walks = train_walks  # int32 [W, L] on the training device
        self.checkpoint_dir = checkpoint_dir
        self.autocast, self.hooks = autocast, hooks or TrainingHooks()
        self.forward = compiled if compiled is not None else model
        t = config.training
        self.stride = t.window_stride
        self.steps_per_epoch = steps_per_epoch(
            len(train_walks), train_walks.shape[1], config.model.context_window, t.batch_size, self.stride
        )
        self.total_steps = self.steps_per_epoch * t.max_epochs
        self.optimizer = build_optimizer(model, t.lr, t.weight_decay)
        # Listed once: walking the module tree for every step's clipping costs ~7% of a small
        # model's per-step overhead (bench.training_step's host-overhead table).
        self.clipped_parameters = list(model.parameters())
        self.scheduler = warmup_cosine_scheduler(self.optimizer, self.total_steps, t.warmup_fraction, t.min_lr_fraction)
        self.state = TrainingState()

    # ---- checkpoint state ----------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config_hash": self.config.config_hash,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            **self.state.to_checkpoint(),
        }

    def restore(self, stored: dict[str, Any]) -> None:
        self.model.load_state_dict(stored["model"])
        self.optimizer.load_state_dict(stored["optimizer"])
        self.scheduler.load_state_dict(stored["scheduler"])
        self.state = TrainingState.from_checkpoint(stored)
        restore_rng_state(stored["rng"])

    # ---- one epoch -----------------------------------------------------------------------

    def train_epoch(self, epoch: int, max_steps: int | None = None) -> torch.Tensor:
        """One pass over this epoch's windows (or its first ``max_steps`` batches, for
        benchmarks); returns the per-step losses (CPU float32)."""
        device = self.walks.device
        w, batch = self.config.model.context_window, self.config.training.batch_size
        walk, start = epoch_windows(len(self.walks), self.walks.shape[1], w, self.config.seed, epoch, self.stride)
        walk, start = walk.to(device), start.to(device)
        steps = min(max_steps or self.steps_per_epoch, self.steps_per_epoch)
        losses = torch.empty(steps, device=device)
        self.model.train()
        bar = tqdm(range(steps), desc=f"epoch {epoch}", leave=False, disable=not sys.stderr.isatty())
        for i in bar:
            tokens = gather_windows(self.walks, walk[i * batch : (i + 1) * batch], start[i * batch : (i + 1) * batch], w + 1)
            loss = self.train_step(tokens)
            losses[i] = loss
            if self.hooks.after_step:
                self.hooks.after_step(self, self.state.global_step + i)
        return losses.cpu()

    def train_step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, w + 1]: predict tokens[:, 1:] from tokens[:, :-1]; returns the detached loss."""
        loss = self.loss(tokens)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.clipped_parameters, self.config.training.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        """The next-token cross-entropy of windows ``tokens`` [B, w + 1], through the (compiled) forward."""
        with self.autocast():
            logits = self.forward(tokens[:, :-1], check_ids=False).logits  # [B, w, n]
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))

    def compile_ahead(self) -> float:
        """Run the training forward and backward once on each batch shape an epoch feeds them (the
        full batch, then a smaller last one where the windows do not divide evenly), so that
        torch.compile traces and generates its code here rather than inside the first epoch's
        timing; returns the seconds this took (result.json: timings.compile_seconds_this_invocation).

        Nothing a training step reads changes: parameters and optimiser state are untouched, the
        gradients are dropped, and every RNG state (dropout draws from them) is put back. And every
        process of a run, resumed or not, then trains through the same compiled graphs. Where
        torch.compile cannot work (no C++ compiler for a CPU, no Triton for a GPU) this raises
        CompileError before any training."""
        device, w, batch = self.walks.device, self.config.model.context_window, self.config.training.batch_size
        windows = len(self.walks) * windows_per_walk(self.walks.shape[1], w, self.stride)
        sizes = dict.fromkeys([min(batch, windows), windows - (self.steps_per_epoch - 1) * batch])  # in epoch order
        walk, start = epoch_windows(len(self.walks), self.walks.shape[1], w, self.config.seed, self.state.epoch + 1, self.stride)
        rng = capture_rng_state()
        self.model.train()
        synchronize()
        started = time.perf_counter()
        try:
            for size in sizes:
                self.loss(gather_windows(self.walks, walk[:size].to(device), start[:size].to(device), w + 1)).backward()
        except torch._dynamo.exc.TorchDynamoException as error:
            reason = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
            raise CompileError(
                f"--compile: torch.compile could not compile the model on this machine: {reason}. "
                "nothing was trained in this invocation; run again without --compile (checkpoints move freely between the two)"
            ) from error
        synchronize()
        seconds = time.perf_counter() - started
        self.optimizer.zero_grad(set_to_none=True)
        restore_rng_state(rng)
        return seconds

    # ---- the loop ------------------------------------------------------------------------

    @property
    def gate(self) -> GateEvaluator:
        """The gate's evaluator. A Trainer made with ``evaluator=None`` (dcsbm calibrate and the benches
        time training steps only) has none: asking for it is an error."""
        if self.evaluator is None:
            raise RuntimeError("this Trainer was made without a gate evaluator (evaluator=None: training steps only)")
        return self.evaluator

    def run(self, on_epoch_end: Callable[["Trainer", GateEvaluation | None], None]) -> TrainingState:
        """Train until the gate passes, the loss breaks, or max_epochs; ``on_epoch_end`` writes results."""
        state = self.state
        while not state.finished and state.epoch < self.config.training.max_epochs:
            epoch = state.epoch + 1
            started = time.perf_counter()
            losses = self.train_epoch(epoch)
            seconds = time.perf_counter() - started
            if not bool(torch.isfinite(losses).all()):
                self._stop_on_broken_loss(epoch, losses)
                on_epoch_end(self, None)
                break
            if self.hooks.before_evaluation:
                self.hooks.before_evaluation(epoch)
            evaluation = self.gate.evaluate(self.model, self.autocast())
            self._record_epoch(epoch, losses, seconds, evaluation)
            self._write_checkpoints()
            on_epoch_end(self, evaluation)
        return state

    def _stop_on_broken_loss(self, epoch: int, losses: torch.Tensor) -> None:
        bad = int(torch.nonzero(~torch.isfinite(losses))[0])
        value = float(losses[bad])
        self.state.failure_reason = (
            f"training loss became {value} at step {self.state.global_step + bad + 1} (epoch {epoch}); "
            f"stopped, the newest checkpoint is the last good one (epoch {self.state.epoch})"
        )
        self.state.finished = True

    def _record_epoch(self, epoch: int, losses: torch.Tensor, seconds: float, evaluation: GateEvaluation) -> None:
        state, report = self.state, evaluation.report
        decision = judge(self.config, self.gate.graph, report)
        state.epoch = epoch
        state.global_step += len(losses)
        state.train_loss.extend(losses.tolist())
        state.edge_compliance.append(report.edge_compliance)
        state.rule_compliance.append(decision.rule_score)
        state.rule_compliance_per_jumper.append(report.jumper_compliances(self.gate.graph.n_jumpers))
        state.rule_events.append(report.rule_events)
        state.epoch_seconds.append(seconds)
        state.eval_seconds.append(evaluation.seconds)
        state.last_evaluation = evaluation_record(epoch, self.config.gate, evaluation, decision)
        if decision.passed:
            state.gate_passed, state.gate_epoch, state.finished = True, epoch, True
            state.failure_reason = None
        elif epoch >= self.config.training.max_epochs:
            state.finished = True
            state.failure_reason = f"gate not passed after {plural(epoch, 'epoch')}: {decision.failure_reason}"

    def _write_checkpoints(self) -> None:
        """The gate checkpoint first, then the epoch's: a kill between the two re-trains the epoch
        (identically) rather than leaving a passed run without its gate checkpoint."""
        state, commit = self.checkpoint(), self.hooks.before_checkpoint_commit
        if self.state.gate_passed and self.state.gate_epoch == self.state.epoch:
            save_checkpoint(self.checkpoint_dir / GATE_CHECKPOINT, state, commit)
        save_checkpoint(self.checkpoint_dir / epoch_checkpoint_name(self.state.epoch), state, commit)
        prune_epoch_checkpoints(self.checkpoint_dir)


def build_optimizer(model: TransformerLM, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``model.parameter_groups``, as torch's fused kernel: one pass over each
    parameter group instead of a dozen element-wise ops per tensor. Steps of models this small
    are bound by that overhead (kernel launches on a GPU), and fused measured as fast or faster
    on the CPU too (bench.training_step: 1.07-1.09x a quick-preset step, the same for the anchor's).
    The same update rule as the unfused AdamW up to float rounding, and the same state_dict
    layout, so checkpoints resume across devices and implementations."""
    return torch.optim.AdamW(model.parameter_groups(weight_decay), lr=lr, fused=True)


def judge(config: ExperimentConfig, graph: Graph, report: ComplianceReport) -> GateDecision:
    """The gate's verdict on one evaluation's scores, as the config reads them."""
    gate = config.gate
    return gate_decision(
        report.edge_compliance,
        report.jumper_compliances(graph.n_jumpers),
        report.rule_compliance,
        gate.edge_threshold,
        gate.rule_threshold,
        gate.rule_aggregate,
        graph.rule_labels,
    )


def evaluation_record(epoch: int, gate: GateConfig, evaluation: GateEvaluation, decision: GateDecision) -> dict[str, Any]:
    """The ``evaluation`` block of result.json: the latest gate evaluation in full."""
    return {
        "epoch": epoch,
        "prompt": gate.prompt,
        "rule_aggregate": gate.rule_aggregate,
        "rule_score": decision.rule_score,
        "worst_rule": decision.worst_rule,
        "passed": decision.passed,
        "failure_reason": decision.failure_reason,
        "sequences": evaluation.sequences,
        "distinct_sequences": evaluation.distinct_sequences,
        "generated_tokens": evaluation.generated_tokens,
        **evaluation.report.to_dict(),
        "seconds": round(evaluation.seconds, 4),
    }


def plural(count: int, noun: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def mean_loss(losses: list[float]) -> float:
    return math.fsum(losses) / max(1, len(losses))
