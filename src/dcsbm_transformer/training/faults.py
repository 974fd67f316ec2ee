"""Fault injection for the reliability tests, driven by the DCSBM_TEST_HOOKS environment variable.

The kill tests run ``dcsbm run`` in a subprocess and must stop it at an exact point — in the
middle of an epoch, during gate evaluation, or while a checkpoint is half written — not by luck.
The variable holds JSON; every key is optional:

    {"signal_file": "/tmp/x",          # written when a pause begins (the test waits for it)
     "pause_at_step": 250,             # pause after this global optimiser step
     "hold_at_step": 110,              # pause there until "release_file" exists, then go on
     "release_file": "/tmp/y",         #   (signals are handled meanwhile: a SLURM job can be requeued)
     "pause_at_evaluation": 2,         # pause when the gate evaluation of this epoch starts
     "pause_at_checkpoint_commit": 2,  # pause with epoch 2's checkpoint written to a temp file, not renamed
     "nan_at_step": 120,               # fill the weights with NaN after this step
     "fail_checkpoint_commit": 2}      # raise ENOSPC (disk full) when epoch 2's checkpoint is committed

Unset (the normal case) it does nothing.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from .trainer import Trainer, TrainingHooks

ENVIRONMENT_VARIABLE = "DCSBM_TEST_HOOKS"
_EPOCH_IN_NAME = re.compile(r"checkpoint_epoch_(\d+)\.pt$")


def _signal(spec: dict[str, Any], where: str) -> None:
    """Write "<pid> <where>" to the signal file whole: a temp file renamed into place, so a test
    that polls for the file never reads it half-written (created but still empty)."""
    target = Path(spec["signal_file"])
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    temporary.write_text(f"{os.getpid()} {where}")
    os.replace(temporary, target)


def _pause_forever(spec: dict[str, Any], where: str) -> None:
    _signal(spec, where)
    while True:  # until the test kills this process
        time.sleep(60)


def _hold(spec: dict[str, Any], where: str) -> None:
    """Wait until the test creates ``release_file`` (at once when it exists already: a resumed
    run passes the same step again), sleeping in short steps so signals are handled."""
    release = Path(spec["release_file"])
    if release.exists():
        return
    _signal(spec, where)
    while not release.exists():
        time.sleep(0.1)


def hooks_from_environment() -> TrainingHooks | None:
    raw = os.environ.get(ENVIRONMENT_VARIABLE)
    if not raw:
        return None
    spec = json.loads(raw)

    def after_step(trainer: Trainer, step: int) -> None:
        if spec.get("pause_at_step") == step:
            _pause_forever(spec, f"step {step}")
        if spec.get("hold_at_step") == step:
            _hold(spec, f"step {step}")
        if spec.get("nan_at_step") == step:
            with torch.no_grad():
                for parameter in trainer.model.parameters():
                    parameter.fill_(float("nan"))

    def before_evaluation(epoch: int) -> None:
        if spec.get("pause_at_evaluation") == epoch:
            _pause_forever(spec, f"evaluation of epoch {epoch}")

    def before_checkpoint_commit(path: Path) -> None:
        match = _EPOCH_IN_NAME.search(path.name)
        epoch = int(match.group(1)) if match else None
        if epoch is not None and spec.get("pause_at_checkpoint_commit") == epoch:
            _pause_forever(spec, f"commit of {path.name}")
        if epoch is not None and spec.get("fail_checkpoint_commit") == epoch:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    return TrainingHooks(after_step=after_step, before_evaluation=before_evaluation, before_checkpoint_commit=before_checkpoint_commit)
