"""Checkpoints: one file per epoch, atomic, loadable with ``torch.load(weights_only=True)``.

A checkpoint holds everything the next epoch depends on — model, optimiser and scheduler state,
epoch and step counters, every RNG state, the curves so far, the gate state — plus the hash of
the config that made it, so a checkpoint is never resumed under another config. Nothing is
pickled: states are tensors, numbers, strings, lists and dicts.

Files: ``checkpoint_epoch_NNNN.pt`` (the last ``KEEP_LAST`` are kept) and ``checkpoint_gate.pt``
(the epoch at which the gate passed, kept for good). Pruning happens only after the new file
is safely on disk.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..storage import atomic_write_bytes

CHECKPOINT_FORMAT = 1
KEEP_LAST = 3
GATE_CHECKPOINT = "checkpoint_gate.pt"
SUPERSEDED_GATE_CHECKPOINT = "checkpoint_gate.superseded.pt"  # see experiment._set_aside_superseded_gate_checkpoint
_EPOCH_PATTERN = re.compile(r"^checkpoint_epoch_(\d{4,})\.pt$")
REQUIRED_KEYS = (
    "format",
    "config_hash",
    "epoch",
    "global_step",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "curves",
    "gate",
    "timings",
)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and why."""


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint_epoch_{epoch:04d}.pt"


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, say); earlier files are intact."""


def save_checkpoint(path: Path, state: dict[str, Any], before_commit: Callable[[Path], None] | None = None) -> Path:
    """Serialise ``state`` and write it atomically (temp file, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        return atomic_write_bytes(path, buffer.getvalue(), before_commit)
    except OSError as error:
        raise CheckpointWriteError(
            f"could not write checkpoint {path}: {error.strerror or error}. Earlier checkpoints and result.json "
            "are unchanged; free the space and re-run the same command to resume."
        ) from error


def load_checkpoint(path: Path, config_hash: str) -> dict[str, Any]:
    """Load and check one checkpoint; raise CheckpointError saying which file and why."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, random bytes, or a pickle that is not plain data
        kind = type(error).__name__
        detail = str(error).splitlines()[0][:200] if str(error) else ""
        raise CheckpointError(f"{path}: cannot be loaded safely ({kind}: {detail})") from None
    if not isinstance(state, dict) or any(key not in state for key in REQUIRED_KEYS):
        raise CheckpointError(f"{path}: not a training checkpoint (missing keys)")
    if state["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {state['format']}, expected {CHECKPOINT_FORMAT}")
    if state["config_hash"] != config_hash:
        raise CheckpointError(
            f"{path}: made under a different config (config hash {str(state['config_hash'])[:10]}…), refusing to resume it"
        )
    return state


def epoch_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every epoch checkpoint file, newest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH_PATTERN.match(p.name))]
    return sorted(found, reverse=True)


@dataclass(frozen=True)
class ResumePoint:
    state: dict[str, Any]
    path: Path
    skipped: list[str]  # why newer files were not used


def newest_loadable(directory: Path, config_hash: str) -> ResumePoint | None:
    """The newest checkpoint that loads; broken newer ones are reported, never deleted.

    Raises CheckpointError when checkpoints exist but none can be used."""
    candidates = epoch_checkpoints(directory)
    skipped: list[str] = []
    for _, path in candidates:
        try:
            return ResumePoint(load_checkpoint(path, config_hash), path, skipped)
        except CheckpointError as error:
            skipped.append(str(error))
    if candidates:
        raise CheckpointError(
            f"none of the {len(candidates)} checkpoints in {directory} can be used:\n  "
            + "\n  ".join(skipped)
            + "\nNothing was deleted. Use --restart to start this experiment over (the old folder is kept aside)."
        )
    return None


def prune_epoch_checkpoints(directory: Path, keep: int = KEEP_LAST) -> list[Path]:
    """Delete all but the newest ``keep`` epoch checkpoints (the gate checkpoint is separate)."""
    removed = []
    for _, path in epoch_checkpoints(directory)[keep:]:
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed
