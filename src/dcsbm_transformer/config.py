"""Experiment configuration: one frozen, validated object read from JSON.

The JSON keys are a contract (DESIGN.md, "Interfaces that others rely on"): every key has a
default, unknown keys are an error, and validation reports *every* problem at once, each
prefixed with the dotted path of the field it concerns (``graph.p_in: ...``).

Derived values live here too, so that every part of the pipeline agrees on them: the jump
length of each jumper, the data hash that keys the graph/corpus cache and the experiment id
that names the results folder.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator

from .storage import JsonSyntaxError, read_json_document

# Bump when the graph or walk algorithms change, so old cached data is never reused.
DATA_FORMAT_VERSION = 2


class ProblemsError(ValueError):
    """An input that cannot be used, with every problem found in it (``problems``, one per line)."""

    title = "invalid input"
    after = ""  # said after the count, e.g. what was (not) done
    preposition = "in"

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = " ".join(["", *filter(None, [self.preposition, str(source)])]) if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.title}{where} ({len(self.problems)} problem(s)){self.after}:\n{lines}")


class ConfigError(ProblemsError):
    """A configuration that cannot be run. ``problems`` lists every issue, one per field."""

    title = "invalid configuration"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GraphConfig(_Section):
    """Directed DCSBM with jumper rules (DESIGN.md §2–3)."""

    n: StrictInt = Field(500, ge=2, description="number of vertices = vocabulary size")
    K: StrictInt = Field(4, ge=2, description="number of equal-sized blocks")
    p_in: StrictFloat = Field(0.25, gt=0, le=1, description="edge propensity inside a block")
    p_out: StrictFloat = Field(0.03, gt=0, le=1, description="edge propensity across blocks")
    jumpers_per_block: StrictInt = Field(2, ge=1, description="jumper vertices in every block")
    jump_scales: tuple[StrictFloat, ...] = Field(
        (0.9,), min_length=1, description="jump length r = round(scale * context_window), spread over the jumpers"
    )
    min_out_degree: StrictInt = Field(3, ge=1, description="a drawn graph is rejected below this out-degree")
    max_attempts: StrictInt = Field(200, ge=1, description="graph redraws before giving up")


class WalksConfig(_Section):
    """Random-walk corpora (DESIGN.md §4)."""

    walk_length: StrictInt = Field(256, ge=2, description="tokens per walk")
    train_walks: StrictInt = Field(200_000, ge=1, description="walks in the training corpus")
    eval_walks: StrictInt = Field(22_222, ge=1, description="walks in the held-out eval corpus")
    jumper_start_fraction: StrictFloat = Field(
        0.5, ge=0.5, le=1.0, description="share of walks that start at a jumper (at least half)"
    )


class ModelConfig(_Section):
    """GPT-2-style decoder (DESIGN.md §6)."""

    context_window: StrictInt = Field(64, ge=2, description="w: tokens the model sees")
    d_model: StrictInt = Field(128, ge=1)
    n_layers: StrictInt = Field(4, ge=1)
    n_heads: StrictInt = Field(1, ge=1)
    dropout: StrictFloat = Field(0.0, ge=0.0, lt=1.0)


# (section, key) of config keys added after results existed: hashed only when set (config_hash)
_HASHED_ONLY_WHEN_SET = [("training", "window_stride")]


class TrainingConfig(_Section):
    """Optimisation (spec TRNG-01 and DESIGN.md's decisions)."""

    batch_size: StrictInt = Field(64, ge=1)
    lr: StrictFloat = Field(3e-4, gt=0, description="peak learning rate")
    weight_decay: StrictFloat = Field(0.01, ge=0)
    warmup_fraction: StrictFloat = Field(0.1, ge=0, lt=1, description="share of all steps spent in linear warmup")
    min_lr_fraction: StrictFloat = Field(0.1, ge=0, le=1, description="cosine floor as a share of the peak lr")
    max_epochs: StrictInt = Field(50, ge=1)
    grad_clip: StrictFloat = Field(1.0, gt=0, description="max global gradient norm")
    window_stride: StrictInt | None = Field(
        None,
        ge=1,
        description="tokens between the starts of a walk's training windows; unset: back-to-back windows of w + 1 "
        "(training/windows.py). At most w + 1 - r, every rule lies whole in some window of every epoch",
    )


class GateConfig(_Section):
    """Sufficiency gate (spec TRNG-05 and DESIGN.md's decision on prompts)."""

    edge_threshold: StrictFloat = Field(0.95, ge=0, le=1)
    rule_threshold: StrictFloat = Field(0.80, ge=0, le=1)
    eval_sequences: StrictInt = Field(1000, ge=1, description="greedy continuations per evaluation")
    prompt: Literal["jumper_prefix", "first_token"] = "jumper_prefix"
    rule_aggregate: Literal["every_rule", "mean_rule", "pooled"] = Field(
        "every_rule",
        description="every_rule: each jumper's rule compliance > rule_threshold; mean_rule: their mean; "
        "pooled: the share over all scored events",
    )


class PrimaryHypothesis(_Section):
    """The one pre-registered hypothesis of a run, fixed in the config before any data exist:
    ``metric`` of ``target`` at (``layer``, ``head``) is ``direction`` before violations than
    before successes. Everything else the analysis reports is exploratory."""

    target: Literal["qkt", "avwo"] = Field("qkt", description="QKᵀ or AVWₒ")
    layer: StrictInt = Field(-1, description="layer index; negative counts from the last (-1 = last layer)")
    head: StrictInt = Field(0, ge=0)
    metric: str = Field(
        "grassmannian_distance", description="a registered metric (dcsbm_transformer.analysis.measure.metrics.METRICS)"
    )
    direction: Literal["higher", "lower"] = Field("higher", description="the metric's side before violations")

    @field_validator("metric")
    @classmethod
    def _registered(cls, metric: str) -> str:
        from .analysis.measure.metrics import METRICS  # the registry is the one list of metric names

        if metric not in METRICS:
            raise ValueError(f"{metric!r} is not a registered metric; choose one of {', '.join(METRICS)}")
        return metric

    def describe(self) -> str:
        return f"{self.target} {self.metric}, layer {self.layer}, head {self.head}, {self.direction} before violations"


class AnalysisConfig(_Section):
    """The analysis stage (``dcsbm analyze``). Not part of the experiment id or the config hash:
    changing these re-analyses a run, never retrains it."""

    events: StrictInt = Field(
        16000, ge=1, description="rule events analysed, split evenly over the jumpers (one per walk, full windows only)"
    )
    stream: str = Field("analysis", min_length=1, description="name of the random stream of the analysis corpus")
    top_k: StrictInt = Field(2, ge=1, description="dimension of the singular subspaces compared between passes")
    chunk_mb: StrictFloat = Field(
        256.0, gt=0, description="MB of SVD targets per chunk of events processed at once (bounds memory; big batches are faster)"
    )
    temperature: StrictFloat = Field(
        0.0, ge=0.0, description="0 = greedy (argmax) continuations, as the gate; > 0 samples, labelled in every output"
    )
    primary: PrimaryHypothesis = PrimaryHypothesis()
    avwo_direction: Literal["higher", "lower"] = Field(
        "higher",
        description="the declared secondary hypothesis: the primary's metric on AVWₒ (same layer and head) is this side "
        "before violations; registered with the primary, and the comparison reads AVWₒ horizons in this direction",
    )
    permutations: StrictInt = Field(10_000, ge=0, description="label shuffles (within jumper) per permutation test; 0 = none")
    min_events: StrictInt = Field(20, ge=2, description="fewer violations or successes than this in an r stratum: 'insufficient'")
    horizon_threshold: StrictFloat = Field(0.75, gt=0.5, lt=1.0, description="AUROC a lookback must exceed to count in a horizon")
    alpha: StrictFloat = Field(0.05, gt=0, lt=1, description="significance level of the primary test and the Holm-adjusted family")
    confirmatory_fraction: StrictFloat = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="share of the analysis events (per jumper, seeded) held out for the registered test alone; "
        "everything else is computed on the rest. 0 = no held-out set (then no confirmatory verdict)",
    )
    include_failed: bool = Field(
        False,
        description="dcsbm run (and a sweep's points) analyse a run whose gate did not pass anyway, labelled exploratory "
        "everywhere: a negative control (for r > w the jumper is out of view at the deadline, so a metric that still "
        "'predicts' violations there measures something other than rule knowledge)",
    )
    sensitivity_temperature: StrictFloat = Field(
        1.0,
        ge=0.0,
        description="dcsbm run also analyses sampled continuations at this temperature (a second estimate on the same "
        "model, exploratory), and the main report says whether the primary's answer holds there; 0 = not",
    )
    sensitivity_events: StrictInt = Field(
        4000, ge=1, description="rule events of the sampled sensitivity analysis (sampling breaks rules often: fewer suffice)"
    )
    null_multiple: StrictInt = Field(
        3,
        ge=0,
        description="jumper-free null events per violation (walks under no rule at the measured positions, matched to the "
        "violations' walk step and r; analysis.measure.null); 0 = no null",
    )
    null_max_events: StrictInt = Field(
        1000,
        ge=0,
        description="at most this many null events in all (a seeded subset of the violations is matched when the multiple "
        "would exceed it): bounds the null's measuring time when violations are many (the quick preset's greedy analysis "
        "needs 948; its sampled sensitivity analysis, with ~2,200 violations, is capped here)",
    )
    min_effect_auroc: StrictFloat = Field(
        0.6,
        gt=0.5,
        lt=1.0,
        description="registered effect size: the primary's AUROC in its declared direction, on the held-out events at "
        "the lookback chosen on the exploratory events, must reach this for a 'confirmed' verdict",
    )


class ExperimentConfig(_Section):
    """The whole experiment. Attributes mirror the JSON: ``config.graph.n``."""

    seed: StrictInt = Field(42, ge=0, le=2**63 - 1)  # torch.manual_seed takes a 64-bit seed
    graph: GraphConfig = GraphConfig()
    walks: WalksConfig = WalksConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    gate: GateConfig = GateConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    # ---- derived values -------------------------------------------------------------

    @property
    def block_size(self) -> int:
        return self.graph.n // self.graph.K

    @property
    def n_jumpers(self) -> int:
        return self.graph.jumpers_per_block * self.graph.K

    def jump_length(self, scale: float) -> int:
        """r = round(scale * w), rounding halves up (not to even)."""
        return int(math.floor(scale * self.model.context_window + 0.5))

    def jumper_r_values(self) -> list[int]:
        """r of every jumper, in jumper order (block-major): scales cycle over the jumpers."""
        scales = self.graph.jump_scales
        return [self.jump_length(scales[k % len(scales)]) for k in range(self.n_jumpers)]

    @property
    def data_hash(self) -> str:
        """Hash of everything that shapes the graph and the walks (context_window included: r depends on it)."""
        payload = {
            "format": DATA_FORMAT_VERSION,
            "seed": self.seed,
            "graph": self.graph.model_dump(mode="json"),
            "walks": self.walks.model_dump(mode="json"),
            "context_window": self.model.context_window,
        }
        return _sha256_of(payload)

    @property
    def config_hash(self) -> str:
        """Hash of everything that shapes the trained model (all but ``analysis``): a checkpoint
        belongs to exactly one, and re-analysing never changes it."""
        training_part = {key: value for key, value in self.to_dict().items() if key != "analysis"}
        # keys added after runs existed enter the hash only when set, so every earlier run keeps its id
        for section, key in _HASHED_ONLY_WHEN_SET:
            if training_part[section][key] is None:
                del training_part[section][key]
        return _sha256_of({"format": DATA_FORMAT_VERSION, **training_part})

    @property
    def experiment_id(self) -> str:
        """Results folder name: what a sweep varies most (n, K, w, the jump lengths r, layers,
        d_model, seed), readable, plus the config hash: same config → same id."""
        g, m = self.graph, self.model
        r = "_".join(str(v) for v in sorted(set(self.jumper_r_values())))
        return f"dcsbm-n{g.n}-K{g.K}-w{m.context_window}-r{r}-L{m.n_layers}-d{m.d_model}-s{self.seed}-{self.config_hash[:10]}"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def _sha256_of(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _pydantic_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of the config format)" + _did_you_mean([str(part) for part in item["loc"]])
        elif item["type"] in ("tuple_type", "list_type") and "input" in item:
            # JSON has no tuples: say what to write (a sweep axis of jump_scales lists lists)
            message = f"expected a list, e.g. [{item['input']!r}], got {item['input']!r}"
        elif "input" in item and not isinstance(item["input"], dict):
            message = f"{message} (got {item['input']!r})"
        problems.append(f"{field}: {message}")
    return problems


def _did_you_mean(parts: list[str]) -> str:
    """``"; did you mean graph.jump_scales?"`` for an unknown dotted key (the closest real keys of
    the same section, as ``difflib`` ranks them), or ``""`` when none is close."""
    model: Any = ExperimentConfig
    for part in parts[:-1]:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return ""
        model = field.annotation
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    close = difflib.get_close_matches(parts[-1], list(model.model_fields), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join('.'.join([*parts[:-1], c]) for c in close)}?" if close else ""


def _section_values(raw: Any, section: str) -> dict[str, Any]:
    if isinstance(raw, dict) and isinstance(raw.get(section), dict):
        return raw[section]
    return {}


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cross_field_problems(raw: Any) -> list[str]:
    """Checks that relate several fields. Run on the raw values (defaults filled in) so they are
    reported together with per-field problems; a check is skipped when its inputs are themselves
    malformed (those are already reported)."""
    defaults = ExperimentConfig().to_dict()

    def get(section: str, key: str) -> Any:
        values = _section_values(raw, section)
        return values[key] if key in values else defaults[section][key]

    n, K = _as_int(get("graph", "n")), _as_int(get("graph", "K"))
    jumpers = _as_int(get("graph", "jumpers_per_block"))
    w = _as_int(get("model", "context_window"))
    length = _as_int(get("walks", "walk_length"))
    train = _as_int(get("walks", "train_walks"))
    d_model, heads = _as_int(get("model", "d_model")), _as_int(get("model", "n_heads"))
    scales = get("graph", "jump_scales")

    problems = []
    if n and K and K >= 2 and n >= 2:
        if n % K:
            problems.append(f"graph.K: {K} blocks do not split n={n} vertices into equal blocks (n must be a multiple of K)")
        elif jumpers and jumpers > n // K:
            problems.append(f"graph.jumpers_per_block: {jumpers} jumpers do not fit in a block of {n // K} vertices")
    if w and length and length < 2 * w:
        problems.append(f"walks.walk_length: {length} is shorter than 2 * context_window = {2 * w}")
    if n and train and train < 100 * n:
        problems.append(f"walks.train_walks: {train} is fewer than 100 * n = {100 * n} training walks")
    if d_model and heads and d_model % heads:
        problems.append(f"model.d_model: {d_model} is not divisible by n_heads={heads}")
    stride = _as_int(get("training", "window_stride"))
    if stride and w and stride > w + 1:
        problems.append(
            f"training.window_stride: {stride} is more than w + 1 = {w + 1}: windows would skip tokens (unset it for back-to-back windows)"
        )
    if isinstance(scales, (list, tuple)) and w:
        for i, scale in enumerate(scales):
            value = _as_number(scale)
            if value is None:
                continue
            if value <= 0:
                problems.append(f"graph.jump_scales.{i}: jump scale must be > 0 (got {scale!r})")
                continue
            r = int(math.floor(value * w + 0.5))
            if r < 1:
                problems.append(f"graph.jump_scales.{i}: scale {scale!r} gives r = round({scale!r} * {w}) = {r}; r must be >= 1")
            elif length and r >= length:
                problems.append(
                    f"graph.jump_scales.{i}: scale {scale!r} gives r = {r}, which does not fit in walk_length={length} "
                    "(the rule could never be observed)"
                )
    analysis = _section_values(raw, "analysis")
    primary = _section_values(analysis, "primary")
    layers = _as_int(get("model", "n_layers"))
    layer, head = _as_int(primary.get("layer", -1)), _as_int(primary.get("head", 0))
    if layers and layer is not None and not -layers <= layer < layers:
        problems.append(f"analysis.primary.layer: {layer} is not a layer of a {layers}-layer model (0..{layers - 1}, or -1 = last)")
    if heads and head is not None and head >= heads:
        problems.append(f"analysis.primary.head: {head} is not a head of a {heads}-head model (0..{heads - 1})")
    return problems


def config_from_dict(raw: Any, source: str | None = None) -> ExperimentConfig:
    """Validate a parsed JSON object; raise ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): expected a JSON object, got {type(raw).__name__}"], source)
    problems: list[str] = []
    config = None
    try:
        config = ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        problems.extend(_pydantic_problems(error))
    problems.extend(p for p in _cross_field_problems(raw) if p not in problems)
    if problems:
        raise ConfigError(problems, source)
    assert config is not None
    return config


def parse_assignments(items: list[str], option: str = "--set") -> dict[str, Any]:
    """``["analysis.temperature=1", "analysis.primary.metric=\"stable_rank\""]`` → ``{dotted key: value}``.

    Values are read as JSON, falling back to the plain string (``metric=stable_rank`` works).
    Raises ConfigError naming a malformed item."""
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"{option} {item!r}: expected key=value, e.g. analysis.temperature=1")
            continue
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text.strip()
    if problems:
        raise ConfigError(problems, option)
    return out


def with_assignments(
    config: ExperimentConfig, assignments: dict[str, Any], *, sections: tuple[str, ...] | None = None, source: str = "--set"
) -> ExperimentConfig:
    """``config`` with dotted keys set (``analysis.temperature``: 1), validated as a whole config.

    ``sections`` limits the keys that may be set (``("analysis",)`` for a re-analysis: anything else
    would change the trained model). Raises ConfigError listing every problem."""
    raw = config.to_dict()
    problems = []
    for key, value in assignments.items():
        parts = key.split(".")
        if sections is not None and parts[0] not in sections:
            problems.append(
                f"{key}: only {', '.join(s + '.*' for s in sections)} keys can be set here "
                "(other keys change the trained model: that is another run)"
            )
            continue
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                problems.append(f"{key}: {part!r} is not a section of the config")
                break
            node = node[part]
        else:
            if parts[-1] not in node:
                problems.append(f"{key}: unknown key (not part of the config format){_did_you_mean(parts)}")
                continue
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems, source)
    return config_from_dict(raw, source=source)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a JSON config file.

    Raises FileNotFoundError when the file is missing, ConfigError (a ValueError) when it is
    not valid JSON or not a valid config; the message names the file and every problem.
    """
    try:
        raw, _ = read_json_document(path, "config file", "configs/quick.json")
    except JsonSyntaxError as error:
        raise ConfigError([error.problem], str(path)) from None
    return config_from_dict(raw, source=str(path))
