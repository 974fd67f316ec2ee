"""The training pipeline (spec TRNG-01/03/04/05/06): loss, gate, checkpoints, resume, results."""

from __future__ import annotations

import copy
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_config

import dcsbm_transformer
from dcsbm_transformer import ExtractionMode, load_run
from dcsbm_transformer.data.dataset import build_data
from dcsbm_transformer.devices import resolve_device
from dcsbm_transformer.experiment import CHECKPOINT_DIR, RunOptions, build_model, run_directory, run_experiment
from dcsbm_transformer.model import TransformerLM
from dcsbm_transformer.training.checkpoint import CheckpointError, load_checkpoint
from dcsbm_transformer.training.evaluation import GateEvaluator
from dcsbm_transformer.training.gate import gate_decision
from dcsbm_transformer.training.results import Result
from dcsbm_transformer.training.schedule import lr_multiplier, warmup_steps_for
from dcsbm_transformer.training.trainer import Trainer, TrainingHooks, build_optimizer

NEVER = {"edge_threshold": 1.0, "rule_threshold": 1.0}  # strict ">": unreachable
# passes at the first evaluation: pooled over all events some rule is obeyed somewhere (a single rule may be at 0)
ALWAYS = {"edge_threshold": 0.0, "rule_threshold": 0.0, "rule_aggregate": "pooled"}


class Interrupted(Exception):
    """Stands in for a kill in the middle of an epoch."""


def train(config, root, hooks=None, **options):
    return run_experiment(
        config, RunOptions(results_root=root, cache_root=root / "cache", **options), hooks=hooks, echo=lambda _: None
    )


def final_weights(config, root):
    directory = run_directory(config, root) / CHECKPOINT_DIR
    newest = sorted(directory.glob("checkpoint_epoch_*.pt"))[-1]
    return torch.load(newest, weights_only=True)["model"]


# ---- TRNG-01: cross-entropy training with AdamW and warmup + cosine ---------------------------


def test_training_loss_decreases(tmp_path):
    config = tiny_config(gate=NEVER, training={"max_epochs": 3})
    result = train(config, tmp_path)
    loss = result["curves"]["train_loss"]
    per_epoch = result["training"]["steps_per_epoch"]
    first, last = np.mean(loss[:per_epoch]), np.mean(loss[-per_epoch:])
    assert loss[0] == pytest.approx(math.log(config.graph.n), rel=0.1)  # starts near uniform
    assert last < first - 0.3


def test_schedule_edges():
    total, warmup = 1000, warmup_steps_for(1000, 0.1)
    assert warmup == 100
    assert lr_multiplier(0, total, warmup, 0.1) == pytest.approx(1 / 100)  # step 0 already learns
    assert lr_multiplier(warmup - 1, total, warmup, 0.1) == pytest.approx(1.0)  # end of warmup
    assert lr_multiplier(warmup, total, warmup, 0.1) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_multiplier(total - 1, total, warmup, 0.1) == pytest.approx(0.1)  # floor at the last step
    middle = warmup + (total - 1 - warmup) / 2
    assert lr_multiplier(int(middle), total, warmup, 0.1) == pytest.approx(0.55, abs=0.01)
    values = [lr_multiplier(s, total, warmup, 0.1) for s in range(warmup, total)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_optimiser_lr_follows_the_schedule_across_a_resume(tmp_path):
    config = tiny_config(gate=NEVER, training={"max_epochs": 3, "lr": 1e-3})
    seen = []

    def stop_in_epoch_two(trainer, step):
        if step == 150:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, tmp_path, TrainingHooks(after_step=stop_in_epoch_two))
    checkpoint = load_checkpoint(run_directory(config, tmp_path) / CHECKPOINT_DIR / "checkpoint_epoch_0001.pt", config.config_hash)
    steps = checkpoint["global_step"]
    lr_after = checkpoint["optimizer"]["param_groups"][0]["lr"]
    total = checkpoint["scheduler"]["last_epoch"]
    assert total == steps
    expected = 1e-3 * lr_multiplier(steps, 3 * steps, warmup_steps_for(3 * steps, 0.1), 0.1)
    assert lr_after == pytest.approx(expected)

    def record(trainer, step):
        seen.append(step)

    train(config, tmp_path, TrainingHooks(after_step=record))
    assert seen[0] == steps  # resumed at the first step of epoch 2, not before or after


# ---- TRNG-03: checkpoints and resume -----------------------------------------------------------


def test_checkpoint_resume(tmp_path):
    """Interrupted mid-epoch 3 and resumed: curves, gate outcome and final weights bitwise identical."""
    config = tiny_config(gate=NEVER, model={"dropout": 0.1}, training={"max_epochs": 4})
    straight = train(config, tmp_path / "straight")

    def kill_mid_epoch_three(trainer, step):
        if step == 250:  # epoch 3 of 100-step epochs
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, tmp_path / "resumed", TrainingHooks(after_step=kill_mid_epoch_three))
    partial = json.loads((run_directory(config, tmp_path / "resumed") / "result.json").read_text())
    assert partial["status"] == "running" and partial["training"]["epochs_trained"] == 2
    resumed = train(config, tmp_path / "resumed")

    assert resumed["curves"] == straight["curves"]
    assert resumed["training"] == straight["training"]
    a, b = final_weights(config, tmp_path / "straight"), final_weights(config, tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_across_the_epoch_boundary(tmp_path):
    config = tiny_config(gate=NEVER, model={"dropout": 0.1}, training={"max_epochs": 3})
    straight = train(config, tmp_path / "straight")

    def stop_before_gate_eval(epoch):
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, tmp_path / "resumed", TrainingHooks(before_evaluation=stop_before_gate_eval))
    resumed = train(config, tmp_path / "resumed")
    assert resumed["curves"] == straight["curves"]
    a, b = final_weights(config, tmp_path / "straight"), final_weights(config, tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_gate_checkpoint_newer_than_the_resume_point_is_set_aside(tmp_path):
    """A kill between the gate checkpoint and the epoch checkpoint leaves a gate file from an epoch
    the resumed run retrains; if that retrain does not pass, the file must not stay as the gate's."""
    config = tiny_config(gate=NEVER, training={"max_epochs": 3})

    def kill_in_epoch_three(trainer, step):
        if step == 250:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, tmp_path, TrainingHooks(after_step=kill_in_epoch_three))
    checkpoints = run_directory(config, tmp_path) / CHECKPOINT_DIR
    ghost = (checkpoints / "checkpoint_epoch_0002.pt").read_bytes()
    (checkpoints / "checkpoint_gate.pt").write_bytes(ghost)  # stands in for the passed epoch's file
    messages = []
    result = run_experiment(config, RunOptions(results_root=tmp_path, cache_root=tmp_path / "cache"), echo=messages.append)
    assert not result["training"]["gate_passed"]
    assert not (checkpoints / "checkpoint_gate.pt").exists()
    assert (checkpoints / "checkpoint_gate.superseded.pt").read_bytes() == ghost
    assert any("kept as checkpoint_gate.superseded.pt" in m for m in messages)


def test_retention_keeps_the_last_three_and_the_gate_checkpoint(tmp_path):
    config = tiny_config(gate=NEVER, training={"max_epochs": 6})
    train(config, tmp_path)
    names = sorted(p.name for p in (run_directory(config, tmp_path) / CHECKPOINT_DIR).iterdir())
    assert names == ["checkpoint_epoch_0004.pt", "checkpoint_epoch_0005.pt", "checkpoint_epoch_0006.pt"]

    passing = tiny_config(gate=ALWAYS, training={"max_epochs": 6})
    train(passing, tmp_path)
    names = sorted(p.name for p in (run_directory(passing, tmp_path) / CHECKPOINT_DIR).iterdir())
    assert names == ["checkpoint_epoch_0001.pt", "checkpoint_gate.pt"]


def test_checkpoints_load_weights_only_with_no_unsafe_globals(tmp_path):
    config = tiny_config(gate=NEVER, training={"max_epochs": 1})
    train(config, tmp_path)
    path = run_directory(config, tmp_path) / CHECKPOINT_DIR / "checkpoint_epoch_0001.pt"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    state = torch.load(path, weights_only=True)
    for key in ("model", "optimizer", "scheduler", "epoch", "global_step", "rng", "curves", "gate", "config_hash"):
        assert key in state
    assert {"torch", "cuda", "numpy", "python"} <= set(state["rng"])


def test_checkpoint_from_another_config_is_refused(tmp_path):
    config = tiny_config(gate=NEVER, training={"max_epochs": 1})
    train(config, tmp_path)
    path = run_directory(config, tmp_path) / CHECKPOINT_DIR / "checkpoint_epoch_0001.pt"
    other = tiny_config(seed=11)
    with pytest.raises(CheckpointError, match="different config"):
        load_checkpoint(path, other.config_hash)


def test_finished_run_is_reported_not_retrained_and_restart_sets_it_aside(tmp_path):
    config = tiny_config(gate=NEVER, training={"max_epochs": 1})
    first = train(config, tmp_path)
    steps = []
    again = train(config, tmp_path, TrainingHooks(after_step=lambda trainer, step: steps.append(step)))
    assert again == first and steps == []
    train(config, tmp_path, TrainingHooks(after_step=lambda trainer, step: steps.append(step)), restart=True)
    assert steps and steps[0] == 0
    assert len(list(tmp_path.glob(f"{config.experiment_id}.restarted-*"))) == 1


def test_a_lost_result_json_is_rebuilt_from_the_final_checkpoint_without_training(tmp_path):
    config = tiny_config(gate=ALWAYS)
    first = train(config, tmp_path)
    (run_directory(config, tmp_path) / "result.json").unlink()
    steps = []
    again = train(config, tmp_path, TrainingHooks(after_step=lambda trainer, step: steps.append(step)))
    assert steps == []
    assert {k: again[k] for k in ("curves", "training", "status")} == {k: first[k] for k in ("curves", "training", "status")}


# ---- TRNG-04: curves in result.json ------------------------------------------------------------


def test_free_running_gate_mode_trains_end_to_end(tmp_path):
    config = tiny_config(gate={**NEVER, "prompt": "first_token", "eval_sequences": 100}, training={"max_epochs": 1})
    evaluation = train(config, tmp_path)["evaluation"]
    assert evaluation["prompt"] == "first_token" and evaluation["sequences"] == 100
    assert evaluation["edge_transitions"] == 100 * (config.walks.walk_length - 1)
    assert evaluation["distinct_sequences"] <= 100


def test_curve_logging(tmp_path):
    config = tiny_config(gate=NEVER, training={"max_epochs": 2})
    train(config, tmp_path)
    result = json.loads((run_directory(config, tmp_path) / "result.json").read_text())
    Result.model_validate(result)
    curves, training = result["curves"], result["training"]
    assert len(curves["train_loss"]) == training["steps_trained"] == 2 * training["steps_per_epoch"]
    assert len(curves["edge_compliance"]) == len(curves["rule_compliance"]) == 2
    assert all(0.0 <= x <= 1.0 for x in curves["edge_compliance"] + curves["rule_compliance"])
    assert result["evaluation"]["rule_events"] == curves["rule_events"][-1] > 0
    assert result["evaluation"]["sequences"] == config.gate.eval_sequences
    assert set(result["evaluation"]["rule_compliance_by_r"]) == {"6"}
    # every rule every epoch; the gate's aggregate (every_rule) is the worst of them
    assert [len(epoch) for epoch in curves["rule_compliance_per_jumper"]] == [2, 2]
    assert curves["rule_compliance"] == [min(epoch) for epoch in curves["rule_compliance_per_jumper"]]
    rules = result["rules"]
    assert [rule["rule"] for rule in rules] == [0, 1]
    assert [rule["compliance"] for rule in rules] == curves["rule_compliance_per_jumper"][-1]
    assert sum(rule["gate_events"] for rule in rules) == config.gate.eval_sequences
    assert all(rule["chance_bigram_argmax"] in (0.0, 1.0) and 0 < rule["chance_bigram_sampling"] < 1 for rule in rules)
    assert result["rule_blind_baseline"]["edge_compliance"] == 1.0
    for key in ("torch", "python", "device", "git_commit"):
        assert key in result["environment"]


# ---- TRNG-05: the sufficiency gate -------------------------------------------------------------


def test_gate_decision_is_strict_and_never_passes_blind():
    assert gate_decision(0.96, [0.81, 0.9], 0.85, 0.95, 0.80).passed
    at_edge = gate_decision(0.95, [0.81, 0.9], 0.85, 0.95, 0.80)
    assert not at_edge.passed and "edge compliance 0.9500 is not above 0.95" in at_edge.failure_reason
    at_rule = gate_decision(0.99, [0.80, 0.9], 0.85, 0.95, 0.80)
    assert not at_rule.passed and "rule 0 0.8000 is not above 0.8" in at_rule.failure_reason
    both = gate_decision(0.90, [0.50, 0.9], 0.7, 0.95, 0.80)
    assert "short by 0.0500" in both.failure_reason and "short by 0.3000" in both.failure_reason
    blind = gate_decision(1.0, [None, None], None, 0.95, 0.80)
    assert not blind.passed and "no rule events" in blind.failure_reason
    assert not gate_decision(1.0, [1.0, 1.0], None, 0.0, 0.0).passed


# one rule at 0.5, the others perfect: pooled over 100 events per rule that is 0.875
ONE_RULE_UNLEARNED = dict(edge_compliance=1.0, per_rule=[1.0, 0.5, 1.0, 1.0], pooled=0.875, edge_threshold=0.95, rule_threshold=0.80)


@pytest.mark.parametrize(
    "aggregate, passed, score",
    [("every_rule", False, 0.5), ("mean_rule", True, 0.875), ("pooled", True, 0.875)],
)
def test_gate_decision_per_rule_table(aggregate, passed, score):
    decision = gate_decision(**ONE_RULE_UNLEARNED, aggregate=aggregate, rule_names=["a", "b", "c", "d"])
    assert decision.passed is passed and decision.rule_score == pytest.approx(score) and decision.worst_rule == 1
    if not passed:  # the reason names the rule that falls short, and only that one
        assert decision.failure_reason == "b 0.5000 is not above 0.8 (short by 0.3000)"


def test_gate_decision_names_every_short_rule_and_unscored_rules_fail():
    two_short = gate_decision(1.0, [0.79, 1.0, 0.2], 0.66, 0.95, 0.80, rule_names=["a", "b", "c"])
    assert "a 0.7900" in two_short.failure_reason and "c 0.2000" in two_short.failure_reason and "b " not in two_short.failure_reason
    for aggregate in ("every_rule", "mean_rule"):
        unscored = gate_decision(1.0, [1.0, None], 1.0, 0.95, 0.80, aggregate=aggregate, rule_names=["a", "b"])
        assert not unscored.passed and "no scored events for b" in unscored.failure_reason
    mean_short = gate_decision(1.0, [1.0, 0.2], 0.9, 0.95, 0.80, aggregate="mean_rule", rule_names=["a", "b"])
    assert "mean rule compliance 0.6000" in mean_short.failure_reason and "weakest b at 0.2000" in mean_short.failure_reason
    with pytest.raises(ValueError, match="rule_aggregate"):
        gate_decision(1.0, [1.0], 1.0, 0.95, 0.80, aggregate="median")


def test_sufficiency_gate(tmp_path):
    """A gate that passes stops training at once and writes the gate checkpoint."""
    config = tiny_config(gate=ALWAYS, training={"max_epochs": 5})
    result = train(config, tmp_path)
    training = result["training"]
    assert training["gate_passed"] and training["gate_epoch"] == 1 and training["epochs_trained"] == 1
    assert training["excluded_from_analysis"] is False and training["failure_reason"] is None
    assert (run_directory(config, tmp_path) / CHECKPOINT_DIR / "checkpoint_gate.pt").exists()


# ---- TRNG-06: failed configs -------------------------------------------------------------------


def test_failed_config_metadata(tmp_path):
    config = tiny_config(gate={"edge_threshold": 0.5, "rule_threshold": 1.0}, training={"max_epochs": 2})
    result = train(config, tmp_path)
    training = result["training"]
    assert result["status"] == "finished"
    assert training["gate_passed"] is False and training["excluded_from_analysis"] is True
    assert training["gate_epoch"] is None and training["epochs_trained"] == 2
    assert "gate not passed after 2 epochs" in training["failure_reason"]
    assert "rule 0 (vertex" in training["failure_reason"] and "short by" in training["failure_reason"]
    assert training["final_edge_compliance"] == result["curves"]["edge_compliance"][-1]
    assert training["final_rule_compliance"] == result["curves"]["rule_compliance"][-1]


# ---- results folder and analysis API -----------------------------------------------------------


def test_load_run_gives_the_gate_model_with_extraction(tmp_path):
    config = tiny_config(gate=ALWAYS)
    train(config, tmp_path)
    run = load_run(run_directory(config, tmp_path))
    assert run.checkpoint.name == "checkpoint_gate.pt"
    assert run.config == config and run.result["training"]["gate_passed"]
    assert not run.model.training and next(run.model.parameters()).device.type == "cpu"
    assert run.graph.n == config.graph.n and len(run.graph.jumper_vertex) == 2
    tokens = torch.from_numpy(np.asarray([[0, 1, 2, 3]]))
    out = run.model(tokens, mode=ExtractionMode.SVD_TARGETS)
    assert out.logits.shape == (1, 4, config.graph.n) and out.qkt.shape == (1, 1, 1, 4, 4)


def test_device_must_exist():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")


def run_tiny_from_the_command_line(tmp_path, config, *options, env=None):
    """``dcsbm run`` of ``config`` on the CPU, results in tmp_path/out, data cached in tmp_path/cache."""
    config_file = tmp_path / "tiny.json"
    config_file.write_text(config.to_json())
    return run_cli(
        "run",
        "--config",
        str(config_file),
        "--results-dir",
        "out",
        "--cache-dir",
        "cache",
        "--device",
        "cpu",
        "--no-analyze",
        *options,
        cwd=tmp_path,
        env=env,
    )


def test_end_to_end_from_the_command_line(tmp_path):
    config = tiny_config(gate=NEVER, training={"max_epochs": 2})
    done = run_tiny_from_the_command_line(tmp_path, config)
    assert done.returncode == 0, done.stderr
    assert "epoch   2/2" in done.stdout and "finished without passing the gate" in done.stdout
    folder = tmp_path / "out" / config.experiment_id
    for name in ("config.json", "graph.npz", "result.json", "training_curves.png", "checkpoints/checkpoint_epoch_0002.pt"):
        assert (folder / name).is_file(), name
    assert (folder / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    Result.model_validate(json.loads((folder / "result.json").read_text()))
    assert json.loads((folder / "config.json").read_text()) == config.to_dict()


def test_bf16_on_a_device_without_native_bf16_says_so(tmp_path, monkeypatch):
    """bf16 autocast still runs where bf16 is emulated, but the run says it will likely be slower."""
    config = tiny_config(gate=NEVER, training={"max_epochs": 1})
    lines = []
    for native in (True, False):
        monkeypatch.setattr("dcsbm_transformer.experiment.bf16_supported", lambda device, native=native: native)
        options = RunOptions(results_root=tmp_path / str(native), cache_root=tmp_path / "cache", precision="bf16", device="cpu")
        run_experiment(config, options, echo=lines.append)
        notes = [line for line in lines if "no native bf16" in line]
        assert len(notes) == (0 if native else 1), lines


def test_a_compile_that_cannot_work_is_a_clear_error_before_any_training(tmp_path):
    """torch.compile needs a C++ compiler on a CPU: without one, --compile ends with one message
    naming the problem and the way out, exit status 1, no traceback and no checkpoint."""
    config = tiny_config(gate=NEVER, training={"max_epochs": 1})
    env = {"CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    done = run_tiny_from_the_command_line(tmp_path, config, "--compile", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--compile: torch.compile could not compile the model" in done.stderr and "no-such-compiler" in done.stderr
    assert "without --compile" in done.stderr
    assert not list((tmp_path / "out" / config.experiment_id / CHECKPOINT_DIR).iterdir())


@pytest.mark.parametrize("option", [{"precision": "bf16"}, {"compile": True}])
def test_checkpoints_move_between_run_options(tmp_path, option):
    """A run started under bf16 autocast or torch.compile resumes plainly (weights stay fp32)."""
    config = tiny_config(gate=NEVER, training={"max_epochs": 2})

    def stop_in_epoch_two(trainer, step):
        if step == 150:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(config, tmp_path, TrainingHooks(after_step=stop_in_epoch_two), **option)
    after_epoch_one = json.loads((run_directory(config, tmp_path) / "result.json").read_text())
    compile_seconds = after_epoch_one["timings"]["compile_seconds_this_invocation"]
    assert compile_seconds > 0 if option.get("compile") else compile_seconds is None
    result = train(config, tmp_path)
    assert result["training"]["epochs_trained"] == 2
    assert result["environment"]["precision"] == "fp32" and result["environment"]["compile"] is False
    assert result["timings"]["compile_seconds_this_invocation"] is None
    assert all(t.dtype == torch.float32 for t in final_weights(config, tmp_path).values())


def _adamw_steps(model, optimizer, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, model.vocab_size, (4, 9), generator=generator)
        logits = model(tokens[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("written_fused", [True, False])
def test_optimiser_state_moves_between_fused_and_unfused_adamw(written_fused):
    """The trainer's AdamW is torch's fused kernel: optimiser state written by it resumes in the
    unfused AdamW (a checkpoint of an older run, or for comparison) and back, with the same update."""
    model = TransformerLM(13, 8, 16, 2, 2, generator=torch.Generator().manual_seed(0))
    assert build_optimizer(model, 1e-3, 0.01).defaults["fused"] is True
    writer = torch.optim.AdamW(model.parameter_groups(0.01), lr=1e-3, fused=written_fused)
    _adamw_steps(model, writer, 3, seed=1)
    buffer = io.BytesIO()
    torch.save(writer.state_dict(), buffer)
    buffer.seek(0)
    stored = torch.load(buffer, weights_only=True)

    resumed_model = copy.deepcopy(model)
    reader = torch.optim.AdamW(resumed_model.parameter_groups(0.01), lr=1e-3, fused=not written_fused)
    reader.load_state_dict(stored)
    _adamw_steps(model, writer, 2, seed=2)
    _adamw_steps(resumed_model, reader, 2, seed=2)
    for (name, expected), actual in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert reader.state_dict()["state"][0]["step"].item() == 5


# Tensor methods that copy a value to the host: on a GPU each one waits for the queued work.
HOST_READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"}
PACKAGE_DIR = str(Path(dcsbm_transformer.__file__).parent)


def epoch_trainer(config, device: torch.device, directory, hooks=None, compile_backend=None) -> Trainer:
    """A Trainer on ``device`` for calling train_epoch directly, as the benchmarks do; with
    ``compile_backend``, training through torch.compile(model, backend=compile_backend)."""
    data = build_data(config)
    walks = torch.from_numpy(data.train.walks).to(device)
    evaluator = GateEvaluator(config, data.graph, data.eval)
    model = build_model(config, device)
    compiled = torch.compile(model, backend=compile_backend) if compile_backend else None
    return Trainer(config, model, walks, evaluator, directory, hooks=hooks, compiled=compiled)


def test_a_trainer_without_an_evaluator_trains_but_has_no_gate(tmp_path):
    """evaluator=None (dcsbm calibrate, the benches: steps only) trains an epoch; asking for the
    gate, as the training loop does, is a clear error rather than an AttributeError."""
    config = tiny_config()
    data = build_data(config)
    trainer = Trainer(config, build_model(config, torch.device("cpu")), torch.from_numpy(data.train.walks), None, tmp_path)
    assert torch.isfinite(trainer.train_epoch(1, max_steps=2)).all()
    with pytest.raises(RuntimeError, match="without a gate evaluator"):
        trainer.run(lambda *_: None)  # the loop asks for the gate after the first epoch


UNEVEN = {"batch_size": 60}  # tiny_config's 6,400 windows: 106 full batches and a last one of 40


def test_compiling_ahead_leaves_no_compilation_inside_the_epoch(tmp_path):
    """compile_ahead compiles for every batch shape an epoch feeds the model (the uneven last
    batch too), so the first epoch's time is training alone; without it the epoch compiles."""
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    config = tiny_config(training=UNEVEN)
    torch.compiler.reset()
    ahead = epoch_trainer(config, torch.device("cpu"), tmp_path, compile_backend=counting_backend)
    assert ahead.compile_ahead() > 0
    compiled_ahead = len(graphs)
    assert compiled_ahead >= 2, "the full and the uneven last batch each need a graph"
    ahead.train_epoch(1)
    assert len(graphs) == compiled_ahead, f"{len(graphs) - compiled_ahead} graphs compiled inside the epoch"

    torch.compiler.reset()
    graphs.clear()
    epoch_trainer(config, torch.device("cpu"), tmp_path, compile_backend=counting_backend).train_epoch(1)
    assert len(graphs) == compiled_ahead  # the same compilations, inside the epoch this time
    torch.compiler.reset()


def test_compiling_ahead_changes_nothing_training_computes(tmp_path):
    """With dropout drawing from the global RNG, an epoch after compile_ahead gives bitwise the
    losses and weights of one without it: no parameter, gradient, optimiser or RNG state moved."""
    config = tiny_config(training=UNEVEN, model={"dropout": 0.2})
    runs = []
    for ahead in (True, False):
        torch.compiler.reset()
        trainer = epoch_trainer(config, torch.device("cpu"), tmp_path, compile_backend="aot_eager")
        torch.manual_seed(11)
        if ahead:
            trainer.compile_ahead()
        runs.append((trainer.train_epoch(1, max_steps=20), trainer.model.state_dict()))
    torch.compiler.reset()
    (losses_ahead, weights_ahead), (losses_plain, weights_plain) = runs
    assert torch.equal(losses_ahead, losses_plain)
    assert all(torch.equal(weights_ahead[k], weights_plain[k]) for k in weights_plain)


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts calls of HOST_READS made through torch while active, and ``Tensor.to`` calls made
    by this package's own code (torch's internals move tensors between a parameter's own device
    and itself, which a CPU-only machine cannot tell apart from a copy to the host)."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        caller = sys._getframe(1).f_code.co_filename
        if name in HOST_READS or (name == "to" and caller.startswith(PACKAGE_DIR)):
            key = f"{name} ({caller.rsplit('/', 1)[-1]})"
            self.calls[key] = self.calls.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def test_an_epoch_reads_nothing_back_per_step_and_keeps_every_step_loss(tmp_path):
    """The training loop never waits on the device within an epoch: host reads do not grow with
    the number of steps (the losses come back once, at the epoch's end), and the per-step curve
    is complete."""
    trainer = epoch_trainer(tiny_config(), torch.device("cpu"), tmp_path)
    counts = []
    for steps in (3, 9):
        with _HostReads() as reads:
            losses = trainer.train_epoch(1, max_steps=steps)
        assert losses.shape == (steps,) and bool(torch.isfinite(losses).all())
        counts.append(reads.calls)
    assert counts[0] == counts[1], f"host reads grow with the steps of an epoch: {counts[0]} for 3, {counts[1]} for 9"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_an_epoch_never_synchronises_with_the_host_on_cuda(tmp_path):
    """On a GPU, CUDA's own sync check (set_sync_debug_mode "error") raises on any step after the
    first that waits for the device; the epoch's losses still all come back at its end."""
    steps = 12
    # Checked from the end of step 1 (allocator and kernel selection settle) to the end of the last.
    hooks = TrainingHooks(after_step=lambda _, step: torch.cuda.set_sync_debug_mode("error" if step < steps - 1 else 0))
    trainer = epoch_trainer(tiny_config(), torch.device("cuda"), tmp_path, hooks)
    try:
        losses = trainer.train_epoch(1, max_steps=steps)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert losses.shape == (steps,) and bool(torch.isfinite(losses).all())
