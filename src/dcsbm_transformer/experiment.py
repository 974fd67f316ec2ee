"""One experiment end to end: results/<experiment_id>/ holds config.json, graph.npz, result.json,
checkpoints/ and training_curves.png.

Re-running the same config continues the same run: it resumes from the newest checkpoint that
loads, or reports a finished run without retraining (``restart=True`` sets the old folder aside
and starts over). Only one process may work in a results folder at a time.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .config import ExperimentConfig
from .data.dataset import ExperimentData, load_or_build_data
from .data.graph import Graph
from .devices import autocast_factory, bf16_supported, device_name, resolve_device
from .model import TransformerLM
from .registration import REGISTRATION_FILE, register
from .reproducibility import seed_everything, torch_generator
from .storage import atomic_write_bytes, remove_stale_temporaries, write_npz
from .training.baselines import RuleBlindBaseline, rule_blind_baseline
from .training.checkpoint import GATE_CHECKPOINT, SUPERSEDED_GATE_CHECKPOINT, newest_loadable
from .training.evaluation import GateEvaluation, GateEvaluator
from .training.gate import worst_rule
from .training.lock import LOCK_FILE, RunLock
from .training.plots import FIGURE_FILE, plot_training_curves, rule_label
from .training.results import RESULT_FILE, read_result, write_result
from .training.trainer import Trainer, TrainingHooks, TrainingState, judge, mean_loss, plural

CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class RunOptions:
    results_root: Path = Path("results")
    device: str = "auto"  # auto | cpu | cuda
    restart: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    cache_root: Path | None = None


def run_directory(config: ExperimentConfig, results_root: Path) -> Path:
    return Path(results_root) / config.experiment_id


def _set_aside(run_dir: Path) -> Path:
    """Move a run folder out of the way (--restart), refusing while a live run holds it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = run_dir.with_name(f"{run_dir.name}.restarted-{stamp}")
    with RunLock(run_dir):
        run_dir.rename(target)
        (target / LOCK_FILE).unlink(missing_ok=True)
    return target


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _environment(device: torch.device, options: RunOptions) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "precision": options.precision,
        "compile": options.compile,
        "git_commit": git_commit(),
    }


def _data_summary(data: ExperimentData) -> dict[str, Any]:
    return {
        "n_edges": data.graph.n_edges,
        "jumpers": len(data.graph.jumper_vertex),
        "jumper_r": sorted(set(data.graph.jumper_r.tolist())),
        "train_walks": len(data.train.walks),
        "eval_walks": len(data.eval.walks),
        "train_rule_events": len(data.train.events),
        "eval_rule_events": len(data.eval.events),
        "walks_restarted": {"train": data.train.restarted_walks, "eval": data.eval.restarted_walks},
    }


def rule_records(
    graph: Graph, state: TrainingState, evaluation: dict[str, Any] | None, baseline: RuleBlindBaseline
) -> list[dict[str, Any]]:
    """result.json's ``rules``: each rule's identity, the model's latest compliance and its chance levels."""
    latest = state.rule_compliance_per_jumper[-1] if state.rule_compliance_per_jumper else [None] * graph.n_jumpers
    events = (evaluation or {}).get("rule_events_by_jumper", {})
    argmax = baseline.argmax_report.jumper_compliances(graph.n_jumpers)
    return [
        {
            "rule": j,
            "vertex": int(v),
            "block": int(graph.block[v]),
            "target_block": int(t),
            "r": int(r),
            "gate_events": int(events.get(str(j), 0)),
            "compliance": latest[j],
            "chance_bigram_argmax": argmax[j],
            "chance_bigram_sampling": baseline.sampling_chance[j],
        }
        for j, (v, t, r) in enumerate(zip(graph.jumper_vertex, graph.jumper_target_block, graph.jumper_r))
    ]


def baseline_record(config: ExperimentConfig, graph: Graph, baseline: RuleBlindBaseline) -> dict[str, Any]:
    """result.json's ``rule_blind_baseline``: the bigram-argmax policy judged as the model is."""
    report = baseline.argmax_report
    decision = judge(config, graph, report)
    return {
        "edge_compliance": report.edge_compliance,
        "rule_compliance_pooled": report.rule_compliance,
        "rule_score": decision.rule_score,
        "passed": decision.passed,
        "failure_reason": decision.failure_reason,
    }


def build_result(
    config: ExperimentConfig,
    trainer: Trainer,
    baseline: RuleBlindBaseline,
    data: dict[str, Any],
    environment: dict[str, Any],
    timings: dict[str, Any],
) -> dict[str, Any]:
    state: TrainingState = trainer.state
    graph = trainer.gate.graph
    return {
        "experiment_id": config.experiment_id,
        "status": "finished" if state.finished else "running",
        "config": config.to_dict(),
        "config_hash": config.config_hash,
        "data_hash": config.data_hash,
        "curves": {
            "train_loss": state.train_loss,
            "edge_compliance": state.edge_compliance,
            "rule_compliance": state.rule_compliance,
            "rule_compliance_per_jumper": state.rule_compliance_per_jumper,
            "rule_events": state.rule_events,
        },
        "training": {
            "gate_passed": state.gate_passed,
            "gate_epoch": state.gate_epoch,
            "epochs_trained": state.epoch,
            "steps_trained": state.global_step,
            "steps_per_epoch": trainer.steps_per_epoch,
            "total_steps": trainer.total_steps,
            "failure_reason": state.failure_reason,
            "final_edge_compliance": state.edge_compliance[-1] if state.edge_compliance else None,
            "final_rule_compliance": state.rule_compliance[-1] if state.rule_compliance else None,
            "excluded_from_analysis": not state.gate_passed,
        },
        "evaluation": state.last_evaluation,
        "rules": rule_records(graph, state, state.last_evaluation, baseline),
        "rule_blind_baseline": baseline_record(config, graph, baseline),
        "data": data,
        "environment": environment,
        "timings": {
            **timings,
            "train_seconds": round(sum(state.epoch_seconds), 3),
            "eval_seconds": round(sum(state.eval_seconds), 3),
            "epoch_seconds": [round(s, 3) for s in state.epoch_seconds],
        },
    }


def _epoch_line(trainer: Trainer, evaluation: GateEvaluation | None) -> str:
    state = trainer.state
    if evaluation is None:
        return f"stopped: {state.failure_reason}"
    losses = state.train_loss[-trainer.steps_per_epoch :]
    report = evaluation.report
    fmt = lambda x: "  n/a " if x is None else f"{x:.4f}"  # noqa: E731
    per_rule = state.rule_compliance_per_jumper[-1]
    worst = worst_rule(per_rule)
    worst_text = "n/a" if worst is None else f"{per_rule[worst]:.4f} (rule {worst})"
    verdict = "  GATE PASSED" if state.gate_passed else ""
    return (
        f"epoch {state.epoch:3d}/{trainer.config.training.max_epochs}  loss {mean_loss(losses):.4f}  "
        f"edge {fmt(report.edge_compliance)}  worst rule {worst_text}  pooled {fmt(report.rule_compliance)} "
        f"({report.rule_events} events)  train {state.epoch_seconds[-1]:.1f}s  eval {evaluation.seconds:.1f}s{verdict}"
    )


def _finish_outputs(run_dir: Path, config: ExperimentConfig, trainer: Trainer, payload: dict[str, Any]) -> None:
    write_result(run_dir, payload)
    state = trainer.state
    if state.finished:
        plot_training_curves(
            run_dir / FIGURE_FILE,
            state.train_loss,
            trainer.steps_per_epoch,
            state.edge_compliance,
            state.rule_compliance,
            state.rule_compliance_per_jumper,
            config.gate,
            title=config.experiment_id,
            rule_labels=[rule_label(rule) for rule in sorted(payload["rules"], key=lambda rule: rule["rule"])],
        )


def run_experiment(
    config: ExperimentConfig,
    options: RunOptions = RunOptions(),
    hooks: TrainingHooks | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``config`` to the gate (or resume / report it); returns the result.json payload."""
    started = time.perf_counter()
    device = resolve_device(options.device)
    autocast = autocast_factory(options.precision, device)
    if options.precision == "bf16" and not bf16_supported(device):
        echo(f"note: {device_name(device)} has no native bf16 matrix multiply; bf16 autocast runs emulated, likely slower than fp32")
    run_dir = run_directory(config, options.results_root)
    if options.restart and run_dir.exists():
        aside = _set_aside(run_dir)
        echo(f"--restart: previous run set aside as {aside}")
        if (aside / REGISTRATION_FILE).is_file():  # the experiment keeps its registration: a restart cannot re-register
            run_dir.mkdir(parents=True)
            shutil.copy2(aside / REGISTRATION_FILE, run_dir / REGISTRATION_FILE)
    if (finished := _finished_result(run_dir)) is not None:
        echo(f"{_finished_message(run_dir, finished)}; already finished, nothing to do (--restart to train again)")
        return finished

    # The data first: a config whose graph or walks cannot be made leaves no results folder behind.
    data_started = time.perf_counter()
    data = load_or_build_data(config, options.cache_root)
    data_seconds = time.perf_counter() - data_started

    checkpoint_dir = run_dir / CHECKPOINT_DIR
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        for folder in (run_dir, checkpoint_dir):
            remove_stale_temporaries(folder)
        if (finished := _finished_result(run_dir)) is not None:  # finished by another process meanwhile
            echo(f"{_finished_message(run_dir, finished)}; already finished, nothing to do (--restart to train again)")
            return finished
        if not (run_dir / RESULT_FILE).exists() and not any(checkpoint_dir.iterdir()):
            register(run_dir, config)  # a new run: its primary hypothesis is fixed before any data exist
        atomic_write_bytes(run_dir / "config.json", config.to_json().encode())
        if not (run_dir / "graph.npz").exists():
            write_npz(run_dir / "graph.npz", data.graph.to_arrays())

        trainer = _build_trainer(config, data, device, autocast, options, checkpoint_dir, hooks)
        baseline = rule_blind_baseline(trainer.gate, data.train.walks)
        _warn_if_rule_blind_passes(config, data.graph, baseline, echo)
        _resume_if_possible(trainer, checkpoint_dir, echo)
        environment, data_block = _environment(device, options), _data_summary(data)

        compile_seconds = None
        if options.compile and not trainer.state.finished:
            compile_seconds = trainer.compile_ahead()
            echo(f"torch.compile: forward and backward compiled in {compile_seconds:.1f}s, before training")

        def write_outputs() -> None:
            timings = {
                "data_seconds": round(data_seconds, 3),
                "compile_seconds_this_invocation": None if compile_seconds is None else round(compile_seconds, 3),
                "wall_seconds_this_invocation": round(time.perf_counter() - started, 3),
            }
            _finish_outputs(run_dir, config, trainer, build_result(config, trainer, baseline, data_block, environment, timings))

        def on_epoch_end(trainer: Trainer, evaluation: GateEvaluation | None) -> None:
            write_outputs()
            echo(_epoch_line(trainer, evaluation))

        if trainer.state.finished:  # the newest checkpoint is final but result.json was lost
            write_outputs()
        else:
            trainer.run(on_epoch_end)
        result = read_result(run_dir)
        assert result is not None
        echo(_finished_message(run_dir, result))
        return result


def _finished_result(run_dir: Path) -> dict[str, Any] | None:
    """The run's result.json when it says the run is finished, else None."""
    result = read_result(run_dir) if run_dir.is_dir() else None
    return result if result is not None and result["status"] == "finished" else None


def _warn_if_rule_blind_passes(config: ExperimentConfig, graph: Graph, baseline: RuleBlindBaseline, echo) -> None:
    """A gate that a rule-blind policy passes cannot show that a model knows the rules: say so up front."""
    verdict = baseline_record(config, graph, baseline)
    if verdict["passed"]:
        echo(
            f"warning: a rule-blind bigram policy passes this gate (edge {verdict['edge_compliance']:.4f}, "
            f"{config.gate.rule_aggregate} rule compliance {verdict['rule_score']:.4f}); passing it does not show that "
            "the model knows the rules (gate.rule_aggregate=every_rule and balanced rules make this unlikely)"
        )


def _resume_if_possible(trainer: Trainer, checkpoint_dir: Path, echo: Callable[[str], None]) -> None:
    """Restore the newest checkpoint that loads, saying which newer ones were skipped and why."""
    resume = newest_loadable(checkpoint_dir, trainer.config.config_hash)
    for reason in resume.skipped if resume else []:
        echo(f"not resuming from a damaged or foreign checkpoint: {reason}")
    if resume is None:
        device = next(trainer.model.parameters()).device
        echo(f"training {trainer.config.experiment_id} on {device} ({trainer.steps_per_epoch} steps per epoch)")
    else:
        trainer.restore(resume.state)
        echo(f"resuming {trainer.config.experiment_id} from {resume.path.name} (epoch {trainer.state.epoch})")
    _set_aside_superseded_gate_checkpoint(trainer.state, checkpoint_dir, echo)


def _set_aside_superseded_gate_checkpoint(state: TrainingState, checkpoint_dir: Path, echo: Callable[[str], None]) -> None:
    """A gate checkpoint beside a resume point that has not passed the gate comes from an epoch
    about to be retrained (a kill between the gate and epoch checkpoint writes). On a CPU the
    retrain writes it again identically; where training is not bitwise deterministic it may not
    pass, so the file is renamed rather than left to contradict result.json (never deleted)."""
    gate_file = checkpoint_dir / GATE_CHECKPOINT
    if state.gate_passed or not gate_file.exists():
        return
    gate_file.replace(checkpoint_dir / SUPERSEDED_GATE_CHECKPOINT)
    echo(
        f"{gate_file.name} comes from an epoch after epoch {state.epoch}, which is trained again now; kept as {SUPERSEDED_GATE_CHECKPOINT}"
    )


def build_model(config: ExperimentConfig, device: torch.device) -> TransformerLM:
    """The run's freshly initialised model (its own random stream) on ``device``.

    On a GPU training uses the fused attention kernel; on a CPU the explicit path measured
    faster (bench/training_step.py). The parameters are the same either way."""
    generator = torch_generator(config.seed, "model-init")
    return TransformerLM.from_config(config, use_sdpa=device.type == "cuda", generator=generator).to(device)


def _build_trainer(config, data, device, autocast, options, checkpoint_dir, hooks) -> Trainer:
    seed_everything(config.seed)
    model = build_model(config, device)
    compiled = torch.compile(model) if options.compile else None
    walks = torch.from_numpy(data.train.walks).to(device)
    evaluator = GateEvaluator(config, data.graph, data.eval)
    return Trainer(config, model, walks, evaluator, checkpoint_dir, autocast=autocast, compiled=compiled, hooks=hooks)


def _finished_message(run_dir: Path, result: dict[str, Any]) -> str:
    training = result["training"]
    if result["status"] != "finished":
        return f"{run_dir}: in progress after {plural(training['epochs_trained'], 'epoch')}"
    if training["gate_passed"]:
        return (
            f"{run_dir}: gate passed at epoch {training['gate_epoch']} (edge {training['final_edge_compliance']:.4f}, "
            f"{result['config']['gate']['rule_aggregate']} rule compliance {training['final_rule_compliance']:.4f})"
        )
    return f"{run_dir}: finished without passing the gate, excluded from analysis: {training['failure_reason']}"
