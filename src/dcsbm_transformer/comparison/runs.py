"""Find run folders, read what each holds, say where each stands, and filter them by config keys.

A *run folder* is a folder holding ``config.json`` (``results/<experiment_id>/``); ``result.json``
appears after the first finished epoch and ``analysis/horizon.json`` after a finished analysis.
A *results root* is a folder whose sub-folders (one level down) include run folders; other
sub-folders (``comparison/``, a sweep's files) are skipped.

Filters (``--where key=value``) name any dotted config key (``graph.jump_scales=[0.9]``,
``seed=2``, ``model.context_window=16``) or the derived ``r`` (``r=8``: any jumper's r). Values are
read as JSON, falling back to a plain string. Conditions on different keys must all hold; a key
given several times matches any of its values (``--where seed=1 --where seed=2``).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..analysis.files import ANALYSIS_DIR, HORIZON_FILE, SUMMARY_FILE, read_horizon, read_index
from ..config import ExperimentConfig, load_config
from ..registration import read_registration
from ..training.results import RESULT_FILE, read_result

CONFIG_FILE = "config.json"
DERIVED_KEYS = {"r": "the jump length of any jumper (round(scale * context_window))"}


class ComparisonError(ValueError):
    """A mistake in what ``dcsbm report`` was asked to compare (a path, a filter): exit status 2."""


# ---- one run folder ------------------------------------------------------------------------------


@dataclass
class Run:
    """What one run folder holds. ``config`` is None when config.json is unreadable (``config_error``
    says why); ``result`` is None before the first finished epoch or when result.json is invalid;
    ``horizon`` is the validated horizon.json, or None."""

    folder: Path
    config: ExperimentConfig | None
    config_error: str | None
    result: dict[str, Any] | None
    result_error: str | None
    horizon: dict[str, Any] | None
    horizon_error: str | None
    duplicate_of: str | None = field(default=None)  # set by ``mark_duplicates``
    analysis_name: str | None = None  # the analysis folder under analysis/ this entry shows (None: not analysed)
    registration: dict[str, Any] | None = None  # preregistration.json (None: none, or unreadable)
    summary: dict[str, Any] | None = None  # that analysis's summary.json: its own settings

    @property
    def name(self) -> str:
        """The run folder's name, with the analysis's when the run has several."""
        return self.folder.name if self.analysis_name is None else f"{self.folder.name}/{self.analysis_name}"

    @property
    def experiment_id(self) -> str:
        return self.config.experiment_id if self.config is not None else self.folder.name

    @cached_property
    def flat_config(self) -> dict[str, Any]:
        """The config's keys, with ``analysis.*`` read from the analysis's own settings (never the
        config's block, which may have changed since)."""
        if self.config is None:
            return {}
        flat = flatten(self.config.to_dict())
        if self.summary is not None:
            flat.update(flatten({"analysis": self.summary["settings"]["analysis"]}))
        return flat

    @property
    def r_values(self) -> list[int]:
        return sorted(set(self.config.jumper_r_values())) if self.config is not None else []

    @property
    def finished(self) -> bool:
        return self.result is not None and self.result["status"] == "finished"

    @property
    def gate_passed(self) -> bool:
        return self.result is not None and self.finished and bool(self.result["training"]["gate_passed"])

    @property
    def state(self) -> str:
        """``unreadable`` | ``unfinished`` | ``failed`` (gate not passed) | ``passed``."""
        if self.config is None or self.result_error is not None:
            return "unreadable"
        if not self.finished:
            return "unfinished"
        return "passed" if self.gate_passed else "failed"

    @property
    def analysed(self) -> bool:
        return self.horizon is not None

    @property
    def status(self) -> str:
        """Where the run stands, in a few words (the listing's status column)."""
        if self.config is None:
            return f"config.json unreadable: {self.config_error}"
        if self.result_error is not None:
            return f"result.json unreadable: {self.result_error}"
        if self.result is None:
            return "unfinished: no epoch finished yet (running or interrupted)"
        training = self.result["training"]
        if not self.finished:
            return (
                f"unfinished: {training['epochs_trained']}/{self.config.training.max_epochs} epochs trained (running or interrupted)"
            )
        if not training["gate_passed"]:
            reason = training["failure_reason"] or f"not passed within {self.config.training.max_epochs} epochs"
            exploratory = "; analysed anyway (--include-failed: exploratory)" if self.analysed else ""
            return f"gate failed after {training['epochs_trained']} epochs: {reason}{exploratory}"
        analysis = "analysed" if self.analysed else (self.horizon_error or "not analysed")
        return f"gate passed at epoch {training['gate_epoch']}; {analysis}"

    @property
    def note(self) -> str | None:
        notes = []
        if self.duplicate_of is not None:
            notes.append(f"same experiment as {self.duplicate_of}: counted once, there")
        if self.config is not None and self.folder.name != self.config.experiment_id:
            notes.append(f"folder name is not the config's experiment id {self.config.experiment_id} (renamed, or an older naming)")
        return "; ".join(notes) or None


def is_run_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def read_runs(folder: Path, analysis: str | None = None) -> list[Run]:
    """One Run per analysis of the run folder (``analysis``: only the one with that name or label);
    a folder with no analysis gives one Run without a horizon. Unreadable files are recorded on the
    Run, never raised."""
    config, config_error = None, None
    try:
        config = load_config(folder / CONFIG_FILE)
    except (OSError, ValueError) as error:  # ConfigError is a ValueError
        config_error = " ".join(str(error).split())
    result, result_error = None, None
    if (folder / RESULT_FILE).is_file():
        result = read_result(folder)
        if result is None:
            result_error = "not valid JSON or not the current result.json format"

    try:
        registration = read_registration(folder)
    except ValueError:
        registration = None

    def bare(error: str | None) -> Run:
        return Run(folder, config, config_error, result, result_error, None, error, registration=registration)

    try:
        entries = read_index(folder)
    except ValueError as error:
        return [bare(str(error))]
    if analysis is not None:
        entries = [e for e in entries if analysis == e["name"] or analysis in e["labels"]]
        if not entries:
            return [bare(f"no analysis named {analysis!r}")]
    if not entries:
        stale = (folder / ANALYSIS_DIR / HORIZON_FILE).is_file()
        return [
            bare(
                "an analysis of an earlier version (analysis/horizon.json at the top): re-analyse the run"
                if stale
                else ("analysis unfinished (no analysis/index.json)" if (folder / ANALYSIS_DIR).is_dir() else None)
            )
        ]
    runs = []
    for entry in entries:
        directory = folder / ANALYSIS_DIR / entry["name"]
        horizon, horizon_error, summary = read_horizon(directory), None, None
        if horizon is None:
            horizon_error = f"analysis/{entry['name']}/horizon.json missing, invalid or of an earlier version"
        elif config is not None and horizon["experiment_id"] != config.experiment_id:
            horizon_error = f"analysis/{entry['name']}/horizon.json belongs to {horizon['experiment_id']}, not {config.experiment_id}"
            horizon = None
        try:
            summary = json.loads((directory / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            horizon, horizon_error = None, horizon_error or f"analysis/{entry['name']}/summary.json unreadable"
        runs.append(
            Run(
                folder,
                config,
                config_error,
                result,
                result_error,
                horizon,
                horizon_error,
                analysis_name=entry["name"],
                summary=summary,
                registration=registration,
            )
        )
    return runs


# ---- finding runs ------------------------------------------------------------------------------------


def natural_key(path: Path) -> list[Any]:
    """Numbers in folder names compare as numbers: ...-r4-... before ...-r12-..."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


def run_folders(path: Path) -> list[Path]:
    """``path`` itself when it is a run folder, else its run sub-folders (sorted); raises
    ComparisonError when it is neither."""
    if not path.exists():
        raise ComparisonError(f"{path}: no such folder (pass a run folder results/<experiment_id> or a results root)")
    if not path.is_dir():
        raise ComparisonError(f"{path} is a file, not a run folder or a results root")
    if is_run_folder(path):
        return [path]
    children = sorted((child for child in path.iterdir() if child.is_dir() and is_run_folder(child)), key=natural_key)
    if not children:
        raise ComparisonError(
            f"{path} is neither a run folder nor a results root: it holds no {CONFIG_FILE}, and none of its "
            f"sub-folders does (a run folder holds {CONFIG_FILE} and, once an epoch finished, {RESULT_FILE})"
        )
    return children


def find_runs(paths: list[Path], analysis: str | None = None) -> list[Run]:
    """Every run under ``paths`` (run folders or results roots), each folder once, in the order
    given; a run with several analyses once per analysis (``analysis``: only that one)."""
    if not paths:
        raise ComparisonError("name at least one run folder or results root")
    seen: set[Path] = set()
    runs = []
    for path in paths:
        for folder in run_folders(Path(path)):
            if folder.resolve() not in seen:
                seen.add(folder.resolve())
                runs.extend(read_runs(folder, analysis))
    mark_duplicates(runs)
    return runs


def mark_duplicates(runs: list[Run]) -> None:
    """Folders holding the same experiment (same config hash) count once: the one named by its
    experiment id (else the first) is kept, the others get ``duplicate_of``."""
    by_id: dict[tuple[str, str | None], list[Run]] = {}
    for run in runs:
        if run.config is not None:
            by_id.setdefault((run.config.experiment_id, run.analysis_name), []).append(run)
    for (experiment_id, _), group in by_id.items():
        if len(group) > 1:
            kept = next((run for run in group if run.folder.name == experiment_id), group[0])
            for run in group:
                if run is not kept:
                    run.duplicate_of = str(kept.folder)


# ---- filters -----------------------------------------------------------------------------------------


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"graph": {"n": 64}}`` → ``{"graph.n": 64}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


DEFAULTS = flatten(ExperimentConfig().to_dict())  # every config key, with its default value
CONFIG_KEYS = tuple(DEFAULTS)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_where(items: list[str]) -> dict[str, list[Any]]:
    """``["seed=1", "seed=2", "r=8"]`` → ``{"seed": [1, 2], "r": [8]}``; raises ComparisonError naming
    a malformed item, an unknown key (with the closest real ones) or a value of the wrong kind."""
    conditions: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ComparisonError(f"--where {item!r}: expected key=value, e.g. seed=2 or graph.jump_scales=[0.9]")
        if key not in CONFIG_KEYS and key not in DERIVED_KEYS:
            sections = sorted({k.split(".")[0] for k in CONFIG_KEYS if "." in k})
            if key in sections:
                hint = f"{key} is a section; name one of its keys: " + ", ".join(k for k in CONFIG_KEYS if k.startswith(f"{key}."))
            else:
                close = difflib.get_close_matches(key, [*CONFIG_KEYS, *DERIVED_KEYS], n=3, cutoff=0.5)
                hint = (
                    f"did you mean {', '.join(close)}?"
                    if close
                    else "keys are dotted config keys such as graph.n, seed, model.context_window, or r"
                )
            raise ComparisonError(f"--where {item!r}: {key!r} is not a config key ({hint})")
        value = _value(text.strip())
        if key == "r" and (not isinstance(value, int) or isinstance(value, bool)):
            raise ComparisonError(f"--where {item!r}: r is a jump length in tokens, an integer such as r=8")
        if isinstance(DEFAULTS.get(key), list) and not isinstance(value, list):
            raise ComparisonError(f"--where {item!r}: {key} is a list; write it as JSON, e.g. {key}=[{text.strip()}]")
        conditions.setdefault(key, []).append(value)
    return conditions


def matches(run: Run, conditions: dict[str, list[Any]]) -> bool:
    """True when every condition holds (a run whose config is unreadable matches no condition)."""
    if not conditions:
        return True
    if run.config is None:
        return False
    for key, values in conditions.items():
        if key == "r":
            if not set(run.r_values) & set(values):
                return False
        elif run.flat_config.get(key) not in values:
            return False
    return True


def filter_runs(runs: list[Run], conditions: dict[str, list[Any]]) -> list[Run]:
    return [run for run in runs if matches(run, conditions)]
