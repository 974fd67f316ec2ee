"""dcsbm-transformer: does a transformer's attention show it is about to break a learned rule?

The public interface (DESIGN.md, "Interfaces that others rely on")::

    from . import load_config, TransformerLM, ExtractionMode, load_run, analyze_run
"""

from .analysis.run import analyze_run
from .api import Run, load_run
from .config import ConfigError, ExperimentConfig, load_config
from .model import ExtractionMode, ModelOutput, TransformerLM

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ExtractionMode",
    "ModelOutput",
    "Run",
    "TransformerLM",
    "analyze_run",
    "load_config",
    "load_run",
]
