"""Opening a finished run for analysis: ``run = load_run("results/<experiment_id>")``.

``run.model`` is the gate checkpoint's model when the gate passed, else the newest checkpoint's,
in eval mode on the CPU; ``run.model(tokens, mode=ExtractionMode.SVD_TARGETS)`` exposes the
attention internals. ``run.graph`` carries adjacency, blocks and jumper rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, load_config
from .data.graph import Graph
from .experiment import CHECKPOINT_DIR
from .model import TransformerLM
from .storage import read_npz
from .training.checkpoint import GATE_CHECKPOINT, load_checkpoint, newest_loadable
from .training.results import RESULT_FILE, read_result


@dataclass(frozen=True, eq=False)
class Run:
    directory: Path
    config: ExperimentConfig
    result: dict[str, Any]
    graph: Graph
    model: TransformerLM
    checkpoint: Path  # the file the weights came from


def _is_run_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / RESULT_FILE).is_file()


def _check_run_folder(directory: Path) -> None:
    """Refuse, saying what is wrong, a path that is not a run folder written by ``dcsbm run``.

    The common mistake is passing the results root (``results``) instead of one run in it
    (``results/<experiment_id>``): that is recognised and the runs it holds are listed. A folder
    with a config.json is left to the checks of each file that follow.
    """
    if not directory.is_dir():
        raise FileNotFoundError(f"no run folder at {directory}: pass results/<experiment_id>, written by dcsbm run")
    if (directory / "config.json").is_file():
        return
    runs = sorted(p.name for p in directory.iterdir() if p.is_dir() and _is_run_folder(p))
    if runs:
        raise FileNotFoundError(
            f"{directory} is a results root, not a run folder: pass {directory / '<experiment_id>'} "
            f"(runs here: {', '.join(runs)})"
        )
    raise FileNotFoundError(
        f"{directory} is not a run folder: it has no config.json "
        "(a run folder is results/<experiment_id>, written by dcsbm run)"
    )


def load_run(results_dir: str | Path) -> Run:
    """Load config, result, graph and trained model of one experiment folder."""
    directory = Path(results_dir)
    _check_run_folder(directory)
    config = load_config(directory / "config.json")
    result = read_result(directory)
    if result is None:
        raise FileNotFoundError(f"{directory / RESULT_FILE}: missing or not a valid result file")
    graph = Graph.from_arrays(read_npz(directory / "graph.npz"))
    checkpoints = directory / CHECKPOINT_DIR
    if result["training"]["gate_passed"]:
        path = checkpoints / GATE_CHECKPOINT
        state = load_checkpoint(path, config.config_hash)
    else:
        resume = newest_loadable(checkpoints, config.config_hash)
        if resume is None:
            raise FileNotFoundError(f"{checkpoints}: no checkpoint to load the model from")
        path, state = resume.path, resume.state
    model = TransformerLM.from_config(config)
    model.load_state_dict(state["model"])
    model.eval()
    return Run(directory, config, result, graph, model, path)
