"""The baselines an SVD metric must beat, measured at every pass beside it: what the model's own
output distribution and one attention weight already say about the coming violation.

Behavioural (from the next-token distribution p of the pass that emits token s + k, lookback
j = r − k):

* ``target_block_probability`` = Σ_{v ∈ target block} p(v) (measured in ``continuations``);
* ``rule_feasible_mass`` = Σ_v p(v) · [some walk of exactly j steps from v ends in the target
  block] (``Graph.block_reach``): the mass on next tokens from which the rule can still be kept at
  the deadline. At j = 0 it is the target-block probability; before the deadline it says what the
  target-block probability cannot (the target block is rarely the right *next* block);
* ``output_entropy`` = −Σ_v p(v) ln p(v) (nats): the usual hallucination detector;
* ``oracle_kl`` = KL(q ‖ p) = Σ_u q(u) ln(q(u) / p(u)), where q is the *true* next-step
  distribution of a walk at that point: uniform over the current token's out-neighbours that keep
  every pending rule satisfiable (the walk generator's own choice set,
  ``RuleAwareWalker.allowed_successors``; rules are those triggered by the stored history,
  walk tokens s − w − 1 .. s, and by the generated tokens — a rule whose jumper is older than that,
  possible only when r > w + 1, is not seen). An oracle only this synthetic setting has; NaN where
  no move is allowed (the continuation has already left every rule-true path). p(u) is floored
  at 1e-30 (a model that gives an allowed move no mass has a KL of at most ~69 nats per move).

Mechanistic:

* ``attention_jumper.layer_<L>.head_<H>`` = A[last position, jumper position] of that head: how
  much the token being emitted reads the jumper. The jumper sits at window position w − k at
  pass k (the prompt window ends at it); once k > w it has left the window: NaN.

All are [E, passes] in pass order here (``run.py`` writes them in lookback order). Computed on
the device during the passes without a host synchronisation, except the oracle's allowed sets,
which are a function of the tokens alone and are computed on the host once the chunk is done.
"""

from __future__ import annotations

import numpy as np
import torch

from ...data.graph import Graph
from ...data.walks import RuleAwareWalker

BEHAVIOURAL = ("target_block_probability", "rule_feasible_mass", "output_entropy", "oracle_kl")
ATTENTION_PREFIX = "attention_jumper"
KL_FLOOR = 1e-30


def attention_key(layer: int, head: int) -> str:
    return f"{ATTENTION_PREFIX}.layer_{layer}.head_{head}"


def attention_to_jumper(last_attention: torch.Tensor, k: int) -> torch.Tensor:
    """Attention weight from the last position to the jumper at pass ``k``: ``last_attention``
    [E, L, H, w] (the last query row) -> [E, L, H]; NaN once the jumper has left the window."""
    w = last_attention.shape[-1]
    if k > w:
        return torch.full(last_attention.shape[:-1], float("nan"), device=last_attention.device)
    return last_attention[..., w - k].float()


class PassBehaviour:
    """Per chunk: fills the behavioural and mechanistic arrays pass by pass (``record``), then the
    oracle KL from the tokens (``finish``)."""

    def __init__(
        self, graph: Graph, history: torch.Tensor, target_block: torch.Tensor, r: torch.Tensor, passes: int, layers: int, heads: int
    ):
        device = history.device
        self.graph, self.passes, self.r, self.target_block = graph, passes, r, target_block
        self.history = history  # [E, w + 2]: walk tokens s - w - 1 .. s (the jumper last)
        reach = torch.from_numpy(graph.block_reach(passes)).to(device)  # [passes + 1, n, K]
        self.reach = reach.permute(0, 2, 1).contiguous()  # [steps, K, n]
        self.walker = RuleAwareWalker(graph, history.shape[1] + passes)
        self.neighbours = torch.from_numpy(self.walker.neighbours).to(device)  # [n, max_degree], -1 padding
        shape = (len(history), passes)
        self.values = {name: torch.full(shape, float("nan"), device=device) for name in BEHAVIOURAL[1:3]}
        self.attention = torch.full((len(history), passes, layers, heads), float("nan"), device=device)
        self.neighbour_probability = torch.zeros((len(history), passes, self.neighbours.shape[1]), device=device)

    def record(self, k: int, probabilities: torch.Tensor, current: torch.Tensor, last_attention: torch.Tensor | None) -> None:
        """Pass ``k``: the next-token distribution [E, n] and the window's last token [E]."""
        steps = (self.r - k).clamp(min=0)
        feasible = self.reach[steps, self.target_block]  # [E, n]
        self.values["rule_feasible_mass"][:, k - 1] = (probabilities * feasible).sum(dim=-1)
        self.values["output_entropy"][:, k - 1] = torch.special.entr(probabilities).sum(dim=-1)
        candidates = self.neighbours[current]
        self.neighbour_probability[:, k - 1] = probabilities.gather(1, candidates.clamp(min=0)) * (candidates >= 0)
        if last_attention is not None:
            self.attention[:, k - 1] = attention_to_jumper(last_attention, k)

    def finish(self, generated: np.ndarray) -> dict[str, np.ndarray]:
        """name -> float32 [E, passes] (pass order), attention per layer and head included."""
        out = {name: values.cpu().numpy().astype(np.float32) for name, values in self.values.items()}
        out["oracle_kl"] = self._oracle_kl(generated)
        attention = self.attention.cpu().numpy().astype(np.float32)
        for layer in range(attention.shape[2]):
            for head in range(attention.shape[3]):
                out[attention_key(layer, head)] = attention[:, :, layer, head]
        return out

    def _oracle_kl(self, generated: np.ndarray) -> np.ndarray:
        """KL(q ‖ p) at every pass, q uniform over the allowed successors (see the module docstring)."""
        history = self.history.cpu().numpy()
        tokens = np.concatenate([history, generated], axis=1)
        start = history.shape[1]  # the step the token of pass 1 is emitted at
        required = self.walker.pending_rules(history)
        probability = self.neighbour_probability.cpu().numpy().astype(np.float64)
        kl = np.full(generated.shape, np.nan, dtype=np.float32)
        for k in range(1, self.passes + 1):  # a loop over passes, batched across events
            step = start + k - 1
            _, allowed = self.walker.allowed_successors(required, tokens[:, step - 1].astype(np.int64), step)
            count = allowed.sum(axis=1)
            log_p = np.log(np.maximum(probability[:, k - 1], KL_FLOOR))
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_log_p = np.where(allowed, log_p, 0.0).sum(axis=1) / count
                kl[:, k - 1] = np.where(count > 0, -np.log(np.maximum(count, 1)) - mean_log_p, np.nan)
            self.walker.add_rules(required, tokens[:, step].astype(np.int64), step)
        return kl
