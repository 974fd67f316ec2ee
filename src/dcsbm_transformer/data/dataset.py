"""The experiment's data — graph, training corpus, eval corpus — built, checked, stored and cached.

Files (DESIGN.md): ``graph.npz`` (indptr, indices, block, theta, jumper_vertex,
jumper_target_block, jumper_r), ``train.npz`` and ``eval.npz`` (walks int32 [walks, length] and
the rule events). A ``manifest.json`` written *last* records the data hash and each file's
SHA-256: a folder without a matching manifest, or with a file whose checksum differs (a
truncated or altered file), is never trusted; the cache regenerates it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import DATA_FORMAT_VERSION, ExperimentConfig
from ..storage import atomic_write_json, read_npz, sha256_file, write_npz
from .compliance import score_compliance
from .dcsbm import generate_graph
from .graph import Graph
from .walks import Corpus, generate_corpus

log = logging.getLogger(__name__)

DATA_FILES = ("graph.npz", "train.npz", "eval.npz")
MANIFEST = "manifest.json"


class DataIntegrityError(RuntimeError):
    """Stored data is missing, damaged or belongs to another config."""


@dataclass(frozen=True, eq=False)
class ExperimentData:
    graph: Graph
    train: Corpus
    eval: Corpus


def verify_corpus(corpus: Corpus, graph: Graph, name: str) -> None:
    """Every transition is an edge and every in-walk rule is obeyed; anything else is a bug."""
    report = score_compliance(corpus.walks, graph)
    if report.edge_compliance != 1.0 or report.rule_compliance not in (1.0, None):
        raise RuntimeError(
            f"internal error: the {name} corpus breaks the graph or its rules "
            f"(edge compliance {report.edge_compliance}, rule compliance {report.rule_compliance})"
        )


def build_data(config: ExperimentConfig) -> ExperimentData:
    """Draw the graph and both corpora (independent random streams) and check them."""
    graph = generate_graph(config)
    walks = config.walks
    corpora = {}
    for name, count in (("train", walks.train_walks), ("eval", walks.eval_walks)):
        corpora[name] = generate_corpus(graph, count, walks.walk_length, walks.jumper_start_fraction, config.seed, f"{name}-walks")
        verify_corpus(corpora[name], graph, name)
    return ExperimentData(graph, corpora["train"], corpora["eval"])


def write_data(data: ExperimentData, directory: str | Path, config: ExperimentConfig) -> None:
    """Write the three data files, then the manifest that vouches for them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)  # the folder is untrusted until we finish
    write_npz(directory / "graph.npz", data.graph.to_arrays())
    write_npz(directory / "train.npz", data.train.to_arrays())
    write_npz(directory / "eval.npz", data.eval.to_arrays())
    manifest = {
        "format": DATA_FORMAT_VERSION,
        "data_hash": config.data_hash,
        "files": {name: sha256_file(directory / name) for name in DATA_FILES},
    }
    atomic_write_json(directory / MANIFEST, manifest)


def read_data(directory: str | Path, config: ExperimentConfig) -> ExperimentData:
    """Load data written by ``write_data`` for this config; raise DataIntegrityError otherwise."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise DataIntegrityError(f"{directory / MANIFEST}: unreadable manifest ({error})") from None
    if manifest.get("data_hash") != config.data_hash or manifest.get("format") != DATA_FORMAT_VERSION:
        raise DataIntegrityError(f"{directory}: data was made for another config (data hash differs)")
    for name in DATA_FILES:
        path = directory / name
        if not path.is_file():
            raise DataIntegrityError(f"{path}: missing")
        if sha256_file(path) != manifest["files"].get(name):
            raise DataIntegrityError(f"{path}: checksum mismatch (truncated or altered file)")
    graph = Graph.from_arrays(read_npz(directory / "graph.npz"))
    train = Corpus.from_arrays(read_npz(directory / "train.npz"))
    eval_ = Corpus.from_arrays(read_npz(directory / "eval.npz"))
    expected = {
        "train": (config.walks.train_walks, config.walks.walk_length),
        "eval": (config.walks.eval_walks, config.walks.walk_length),
    }
    for name, corpus in (("train", train), ("eval", eval_)):
        if corpus.walks.shape != expected[name]:
            raise DataIntegrityError(
                f"{directory / (name + '.npz')}: walks have shape {corpus.walks.shape}, expected {expected[name]}"
            )
    if graph.n != config.graph.n:
        raise DataIntegrityError(f"{directory / 'graph.npz'}: {graph.n} vertices, expected {config.graph.n}")
    return ExperimentData(graph, train, eval_)


CACHE_ENV = "DCSBM_CACHE_DIR"
LEGACY_CACHE = ".cache"  # the old default, relative to the directory a command ran in (a project checkout)


def default_cache_root() -> Path:
    """Where data are cached when no ``--cache-dir`` is given: ``$DCSBM_CACHE_DIR``, else the per-user
    cache directory (``$XDG_CACHE_HOME/dcsbm-transformer``, or ``~/.cache/dcsbm-transformer``).

    Never the current directory: a command or ``load_run`` from another folder finds the same data
    instead of regenerating them there. The folder is keyed by the data hash, so every checkout,
    run and sweep of the same data shares one copy."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "dcsbm-transformer"


def has_cached_data(config: ExperimentConfig, cache_root: str | Path) -> bool:
    """True when ``cache_root`` holds a finished data folder for ``config`` (its manifest is written last)."""
    return (cache_directory(config, cache_root) / MANIFEST).is_file()


def cache_directory(config: ExperimentConfig, cache_root: str | Path | None = None) -> Path:
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return root / f"data-{config.data_hash[:20]}"


def load_or_build_data(config: ExperimentConfig, cache_root: str | Path | None = None) -> ExperimentData:
    """The experiment's data from the cache when intact, else built and cached."""
    directory = cache_directory(config, cache_root)
    if (directory / MANIFEST).exists() or any((directory / name).exists() for name in DATA_FILES):
        try:
            return read_data(directory, config)
        except DataIntegrityError as error:
            log.warning("cached data not trusted, regenerating: %s", error)
    data = build_data(config)
    write_data(data, directory, config)
    return data
