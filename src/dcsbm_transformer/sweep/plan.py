"""Sweep files: a base config plus axes, expanded into one validated config per point.

A sweep file is JSON::

    {"name": "sweep-quick",                      # optional; default: the file's stem
     "description": "free text (cost, purpose)", # optional
     "base": "quick.json",                       # a config object, or a path relative to this file
     "set": {"training.max_epochs": 20},         # optional: dotted keys fixed for every point
     "axes": {"graph.jump_scales": [[0.5], [0.9], [1.3]], "seed": [1, 2, 3]},
     "order": {"seed": [1], "graph.jump_scales": [[0.9]]},  # optional: what runs first
     "variants": [{}, {"model.n_layers": 4}],      # optional: explicit variations of the base
     "analyze": true}                              # optional: false stops each point after training

The grid is the product of the axes (file order, the last axis varying fastest). ``order`` maps
axes to some of their values: points are sorted by the rank of their value in each listed axis
(the first key most significant; values not listed come after the listed ones, in grid order),
so the core points of a sweep run first.

``variants`` (optional) is a list of objects of dotted config keys and values, each one
variation of the base: the grid is then every variant crossed with the product of the axes
(variant by variant, in file order, before ``order`` sorts the queue). It expresses designs that
are not a product, such as one factor at a time around a centre point: ``{}`` is the centre (the
base itself), ``{"model.n_layers": 4}`` changes one factor. A variant's keys may not be axes or
fixed in ``set``; different variants may set different keys. With ``variants`` the ``axes`` may
be left out (each variant is then one point).

``analyze`` (optional, default true): whether each point is analysed after its gate passed.
False stops every point after training and the gate (a learnability map needs only the epochs to
the gate), and the status table counts a trained point as done, its analysis "not asked".

Every point is validated before anything runs; every problem is reported at once, each naming
its point.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel

from ..config import ConfigError, ExperimentConfig, ProblemsError, config_from_dict
from ..storage import JsonSyntaxError, read_json_document

SWEEP_KEYS = ("name", "description", "base", "set", "axes", "order", "variants", "analyze")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class SweepError(ProblemsError):
    """A sweep file that cannot be run. ``problems`` lists every issue."""

    title = "invalid sweep file"
    after = "; nothing was run or written"
    preposition = ""


def render(value: Any) -> str:
    """A value as compact JSON (``[1.3]``, ``2``, ``"pooled"``): how points are named."""
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class Point:
    """One configuration of the grid. ``index`` is its 1-based place in the queue."""

    index: int
    varied: dict[str, Any]
    config: ExperimentConfig

    @property
    def label(self) -> str:
        return ", ".join(f"{key}={render(value)}" for key, value in self.varied.items()) or "(base)"

    @property
    def experiment_id(self) -> str:
        return self.config.experiment_id

    def describe(self) -> str:
        return describe_point(self.index, self.varied)


def describe_point(index: int, varied: dict[str, Any]) -> str:
    """``point 7 (graph.jump_scales=[1.3], seed=2)``: how every message names a point."""
    label = ", ".join(f"{key}={render(value)}" for key, value in varied.items()) or "(base)"
    return f"point {index} ({label})"


@dataclass(frozen=True)
class SweepPlan:
    name: str
    description: str | None
    source: Path | None  # the sweep file, when read from one
    text: str | None  # the sweep file's text, copied into the sweep folder
    base: dict[str, Any]  # the base config with ``set`` applied (raw JSON values)
    axes: dict[str, list[Any]]
    order: dict[str, list[Any]]
    points: list[Point] = field(default_factory=list)
    variants: list[dict[str, Any]] | None = None  # explicit variations of the base, crossed with the axes
    analyze: bool = True  # False: every point stops after training and the gate

    @property
    def columns(self) -> list[str]:
        """Every varied key, axes first, then the variants' keys in order of first appearance."""
        keys = list(self.axes)
        for variant in self.variants or []:
            keys.extend(key for key in variant if key not in keys)
        return keys

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": str(self.source) if self.source else None,
            "base": self.base,
            "axes": self.axes,
            "order": self.order,
            "variants": self.variants,
            "analyze": self.analyze,
            "points": [{"point": p.index, "varied": p.varied, "experiment_id": p.experiment_id} for p in self.points],
        }


# ---- config keys ------------------------------------------------------------------------------


def _section_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def config_key_problem(key: Any) -> str | None:
    """Why ``key`` is not a dotted path to one value of the config, or None when it is."""
    if not isinstance(key, str) or not key:
        return f"{key!r} is not a dotted config key (such as graph.jump_scales or seed)"
    model: type[BaseModel] = ExperimentConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        where = ".".join(parts[:depth]) or "the config"
        if part not in fields:
            return f"{key!r} is not a config key: {where} has no {part!r} (it has {', '.join(fields)})"
        section = _section_model(fields[part].annotation)
        last = depth == len(parts) - 1
        if section is not None and last:
            return f"{key!r} is a whole section; vary one of its keys ({', '.join(f'{key}.{k}' for k in section.model_fields)})"
        if section is None and not last:
            return f"{key!r} is not a config key: {'.'.join(parts[: depth + 1])} is a value, not a section"
        if section is not None:
            model = section
    return None


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (dotted) in the nested dict ``raw``, creating sections as needed; the value is copied."""
    *sections, leaf = key.split(".")
    target = raw
    for section in sections:
        if not isinstance(target.get(section), dict):
            target[section] = {}
        target = target[section]
    target[leaf] = copy.deepcopy(value)


# ---- reading ----------------------------------------------------------------------------------


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepPlan:
    """Read, expand and validate a sweep file; raises FileNotFoundError or SweepError (every problem).

    ``overrides`` (``dcsbm sweep --set KEY=VALUE``: dotted key → value) are fixed for every point,
    as if added to the file's ``set`` (they win over it), before any point is validated; an axis
    cannot be overridden. plan.json's ``base`` records them."""
    path = Path(path)
    try:
        raw, text = read_json_document(path, "sweep file", "configs/sweep-quick.json")
    except JsonSyntaxError as error:
        raise SweepError([error.problem], str(path)) from None
    if overrides:
        problems = [f"--set {problem}" for key in overrides if (problem := config_key_problem(key)) is not None]
        given = raw.get("axes") if isinstance(raw, dict) else None
        axes = given if isinstance(given, dict) else {}
        problems += [f"--set {key}: an axis of this sweep; a key is either fixed or varied" for key in overrides if key in axes]
        if problems:
            raise SweepError(problems, str(path))
        if isinstance(raw, dict) and isinstance(raw.get("set", {}), dict):
            raw = {**raw, "set": {**raw.get("set", {}), **overrides}}
    return sweep_from_dict(raw, source=path, text=text)


def _read_base(base: Any, base_dir: Path, problems: list[str]) -> dict[str, Any] | None:
    if isinstance(base, dict):
        return copy.deepcopy(base)
    if isinstance(base, str) and base:
        path = Path(base) if Path(base).is_absolute() else base_dir / base
        if not path.is_file():
            problems.append(f"base: config file not found: {path} (a path is read relative to the sweep file)")
            return None
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"base: {path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")
            return None
        if not isinstance(loaded, dict):
            problems.append(f"base: {path} holds a JSON {type(loaded).__name__}, not a config object")
            return None
        return loaded
    problems.append(
        f"base: expected a config object or the path of a config file, got {render(base) if base is not None else 'nothing'}"
    )
    return None


def _check_values(where: str, values: Any, problems: list[str]) -> bool:
    if not isinstance(values, list) or not values:
        problems.append(f"{where}: expected a non-empty list of values, got {render(values)}")
        return False
    seen: set[str] = set()
    for value in values:
        text = json.dumps(value, sort_keys=True)
        if text in seen:
            problems.append(f"{where}: {render(value)} is listed twice")
            return False
        seen.add(text)
    return True


def _list_axis_problem(key: str, values: list[Any], problems: list[str]) -> bool:
    """True (a problem appended, with the fix) when ``key`` holds a list, such as graph.jump_scales,
    and its axis lists bare values: each value of such an axis is itself a list."""
    model: Any = ExperimentConfig
    for part in key.split("."):
        annotation = model.model_fields[part].annotation
        model = annotation
    if get_origin(annotation) not in (tuple, list) or all(isinstance(v, list) for v in values):
        return False
    one_each = json.dumps([v if isinstance(v, list) else [v] for v in values])
    problems.append(
        f"axes.{key}: each value of this axis is itself a list ({key} holds a list), got {render(values)}; "
        f"for one point per value write {one_each}"
        + (f", or [{json.dumps(values)}] for a single point with all of them" if len(values) > 1 else "")
    )
    return True


def sweep_from_dict(raw: Any, source: Path | None = None, text: str | None = None, base_dir: Path | None = None) -> SweepPlan:
    """Expand and validate a parsed sweep file. ``base_dir`` (default: the source's folder) resolves
    a base given as a path. Raises SweepError listing every problem."""
    where = str(source) if source else None
    if not isinstance(raw, dict):
        raise SweepError([f"(top level): expected a JSON object, got {type(raw).__name__}"], where)
    base_dir = base_dir if base_dir is not None else (source.parent if source else Path.cwd())
    problems = [f"{key}: unknown key (a sweep file has {', '.join(SWEEP_KEYS)})" for key in raw if key not in SWEEP_KEYS]

    name = raw.get("name", source.stem if source else None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(
            f"name: {render(name)} cannot name a folder (letters, digits, '.', '_', '-'; give one when the sweep has no file)"
        )
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(f"description: expected text, got {render(description)}")

    base = _read_base(raw.get("base"), base_dir, problems) if "base" in raw else None
    if "base" not in raw:
        problems.append("base: required (a config object, or the path of a config file relative to the sweep file)")

    fixed = raw.get("set", {})
    if not isinstance(fixed, dict):
        problems.append(f"set: expected an object of dotted config keys and values, got {render(fixed)}")
        fixed = {}
    for key, value in fixed.items():
        if (problem := config_key_problem(key)) is not None:
            problems.append(f"set: {problem}")
        elif base is not None:
            set_dotted(base, key, value)

    analyze = raw.get("analyze", True)
    if not isinstance(analyze, bool):
        problems.append(f"analyze: expected true or false (false stops every point after training), got {render(analyze)}")
        analyze = True

    axes_raw = raw.get("axes", {} if "variants" in raw else None)
    axes: dict[str, list[Any]] = {}
    if not isinstance(axes_raw, dict) or (not axes_raw and "variants" not in raw):
        problems.append(f"axes: expected an object of dotted config keys and lists of values, got {render(axes_raw)}")
        axes_raw = {}
    for key, values in axes_raw.items():
        if (problem := config_key_problem(key)) is not None:
            problems.append(f"axes: {problem}")
        elif key in fixed:
            problems.append(f"axes: {key!r} is also fixed in set; a key is either fixed or varied")
        elif _check_values(f"axes.{key}", values, problems) and not _list_axis_problem(key, values, problems):
            axes[key] = values

    order_raw = raw.get("order", {})
    order: dict[str, list[Any]] = {}
    if not isinstance(order_raw, dict):
        problems.append(f"order: expected an object of axes and the values to run first, got {render(order_raw)}")
        order_raw = {}
    for key, values in order_raw.items():
        if key not in axes_raw:
            problems.append(f"order: {key!r} is not an axis of this sweep (axes: {', '.join(axes_raw) or 'none'})")
            continue
        if key not in axes or not _check_values(f"order.{key}", values, problems):
            continue
        known = {json.dumps(v, sort_keys=True) for v in axes[key]}
        missing = [render(v) for v in values if json.dumps(v, sort_keys=True) not in known]
        if missing:
            problems.append(f"order.{key}: {', '.join(missing)} not among the axis values {render(axes[key])}")
            continue
        order[key] = values

    variants = _read_variants(raw, fixed, axes_raw, problems) if "variants" in raw else None

    points: list[Point] = []
    if base is not None and (axes or variants):
        points = _expand(base, axes, order, problems, variants)
    if problems:
        raise SweepError(problems, where)
    assert isinstance(name, str), "a name that is not text is among the problems above"
    return SweepPlan(
        name=name,
        description=description,
        source=source,
        text=text,
        base=base or {},
        axes=axes,
        order=order,
        points=points,
        variants=variants,
        analyze=analyze,
    )


def _read_variants(
    raw: dict[str, Any], fixed: dict[str, Any], axes_raw: dict[str, Any], problems: list[str]
) -> list[dict[str, Any]] | None:
    """The ``variants`` list, each a dict of valid dotted keys that are neither fixed nor axes."""
    listed = raw["variants"]
    if not isinstance(listed, list) or not listed:
        problems.append(f"variants: expected a non-empty list of objects of dotted config keys and values, got {render(listed)}")
        return None
    variants: list[dict[str, Any]] = []
    seen: set[str] = set()
    ok = True
    for number, variant in enumerate(listed, start=1):
        where = f"variants[{number}]"
        if not isinstance(variant, dict):
            problems.append(
                f"{where}: expected an object of dotted config keys and values ({{}} is the base itself), got {render(variant)}"
            )
            ok = False
            continue
        for key in variant:
            if (problem := config_key_problem(key)) is not None:
                problems.append(f"{where}: {problem}")
                ok = False
            elif key in fixed:
                problems.append(f"{where}: {key!r} is also fixed in set; a key is either fixed or varied")
                ok = False
            elif key in axes_raw:
                problems.append(f"{where}: {key!r} is also an axis; a variant may not set an axis")
                ok = False
        text = json.dumps(variant, sort_keys=True)
        if text in seen:
            problems.append(f"{where}: {render(variant)} is listed twice")
            ok = False
        seen.add(text)
        variants.append(variant)
    return variants if ok else None


def _expand(
    base: dict[str, Any],
    axes: dict[str, list[Any]],
    order: dict[str, list[Any]],
    problems: list[str],
    variants: list[dict[str, Any]] | None = None,
) -> list[Point]:
    """The grid in queue order, each point validated; problems are appended, naming the point."""
    keys = list(axes)
    product = [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]
    grid = [{**variant, **combination} for variant in (variants or [{}]) for combination in product]

    def rank(item: tuple[int, dict[str, Any]]) -> tuple[int, ...]:
        position, varied = item
        ranks = []
        for key, first in order.items():
            listed = [json.dumps(v, sort_keys=True) for v in first]
            text = json.dumps(varied[key], sort_keys=True)
            ranks.append(listed.index(text) if text in listed else len(listed))
        return (*ranks, position)

    queue = [varied for _, varied in sorted(enumerate(grid), key=rank)]
    points: list[Point] = []
    failures: list[tuple[str, list[str]]] = []
    for index, varied in enumerate(queue, start=1):
        raw = copy.deepcopy(base)
        for key, value in varied.items():
            set_dotted(raw, key, value)
        label = describe_point(index, varied)
        try:
            points.append(Point(index, varied, config_from_dict(raw)))
        except ConfigError as error:
            failures.append((label, error.problems))

    # A problem every point shares comes from the base: say it once, not once per point.
    shared = set.intersection(*(set(p) for _, p in failures)) if len(failures) == len(queue) > 1 else set()
    for problem in sorted(shared, key=lambda p: failures[0][1].index(p)):
        problems.append(f"every point ({len(queue)}): {problem}")
    for label, point_problems in failures:
        problems.extend(f"{label}: {problem}" for problem in point_problems if problem not in shared)

    by_id: dict[str, Point] = {}
    for point in points:
        if (other := by_id.get(point.experiment_id)) is not None:
            problems.append(
                f"{point.describe()}: same experiment id {point.experiment_id} as {other.describe()} (one results folder "
                "for both; analysis.* settings are not part of the id, so a sweep cannot vary them alone)"
            )
        by_id.setdefault(point.experiment_id, point)
    return points
