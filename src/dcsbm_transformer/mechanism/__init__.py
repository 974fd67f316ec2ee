"""Mechanism: where the rule lives. Interventions on the model's own forward pass
(``interventions``: knockout and mean-ablation of the jumper's position, patching the jumper
token), measured on an analysis's events (``measure``), written to mechanism.json (``files``,
``run``) and to the report's mechanism section (``report``). A floor above ``analysis``."""

from .interventions import Knockout, MeanAblation, PatchPlan, intervene, mean_values, patch_jumpers

__all__ = ["Knockout", "MeanAblation", "PatchPlan", "intervene", "mean_values", "patch_jumpers"]
