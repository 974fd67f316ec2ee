"""The analysis stage: does a trained model's attention show that it is about to break a rule?

``dcsbm analyze`` / ``analyze_run`` write ``results/<id>/analysis/``; the pieces are public for
interactive work: ``generate_continuations`` (tokens, labels and SVD targets of every pass, for a
few prompts), ``spectrum`` and ``compute_metrics`` with the registry ``METRICS``.
"""

from .measure.continuations import Continuation, PassTargets, generate_continuations
from .measure.metrics import METRICS, Spectrum, compute_metrics, spectrum
from .run import AnalysisRefused, analyze_run

__all__ = [
    "METRICS",
    "AnalysisRefused",
    "Continuation",
    "PassTargets",
    "Spectrum",
    "analyze_run",
    "compute_metrics",
    "generate_continuations",
    "spectrum",
]
