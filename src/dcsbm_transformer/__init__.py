"""dcsbm-transformer: does a transformer's attention show it is about to break a learned rule?"""

from .config import ConfigError, ExperimentConfig, load_config

__all__ = ["ConfigError", "ExperimentConfig", "load_config"]
