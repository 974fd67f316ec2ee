"""Drawing the graph: a directed degree-corrected SBM (Karrer & Newman 2011) with jumper rules.

Edge u→v appears with probability min(1, θ_u θ_v ω(b_u, b_v)), ω = p_in inside a block and
p_out across, no self-loops. θ follows a Zipf law (α = 1) over the ranks inside each block and
is normalised to mean 1 per block, so it reshapes degrees without changing expected density.
A draw is rejected and redrawn (stream "graph", attempt a) until it is strongly connected, has
every out-degree ≥ ``min_out_degree`` and admits non-trivial rules in every block.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..config import ExperimentConfig
from ..reproducibility import numpy_rng
from .graph import Graph

ZIPF_ALPHA = 1.0
ASSIGNMENT_ATTEMPTS = 50  # balanced target assignments tried on one graph draw before redrawing it


class GraphGenerationError(RuntimeError):
    """No draw passed validation within the attempt bound."""


def zipf_theta(block_size: int, alpha: float = ZIPF_ALPHA) -> np.ndarray:
    """θ for ranks 1..block_size: proportional to rank^-α, mean 1."""
    weights = np.arange(1, block_size + 1, dtype=np.float64) ** -alpha
    return weights / weights.mean()


def draw_dcsbm(config: ExperimentConfig, rng: np.random.Generator) -> tuple[sp.csr_array, np.ndarray, np.ndarray]:
    """One DCSBM draw in shuffled vertex ids. Returns (adjacency CSR, block [n], theta [n])."""
    n, K = config.graph.n, config.graph.K
    size = n // K
    latent_block = np.repeat(np.arange(K), size)
    latent_theta = np.tile(zipf_theta(size), K)

    omega = np.where(latent_block[:, None] == latent_block[None, :], config.graph.p_in, config.graph.p_out)
    probability = np.minimum(1.0, latent_theta[:, None] * latent_theta[None, :] * omega)
    np.fill_diagonal(probability, 0.0)
    latent_edges = rng.random((n, n)) < probability

    # latent position i becomes vertex id permutation[i]: ids carry no block information
    permutation = rng.permutation(n)
    position_of_id = np.argsort(permutation)
    edges = latent_edges[np.ix_(position_of_id, position_of_id)]
    adjacency = sp.csr_array(edges.astype(np.int8))
    adjacency.sort_indices()
    return adjacency, latent_block[position_of_id].astype(np.int32), latent_theta[position_of_id]


def structural_problem(adjacency: sp.csr_array, min_out_degree: int) -> str | None:
    """Why a draw is unusable, or None when it is strongly connected with enough out-degree."""
    out_degree = np.diff(adjacency.indptr)
    if out_degree.min() < min_out_degree:
        return f"some vertex has out-degree {int(out_degree.min())} < min_out_degree={min_out_degree}"
    components, _ = connected_components(adjacency, directed=True, connection="strong")
    if components != 1:
        return f"not strongly connected ({components} strong components)"
    return None


def random_derangement(K: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of range(K) that moves every element (K ≥ 2)."""
    while True:  # about 1/e of all permutations are derangements
        permutation = rng.permutation(K)
        if (permutation != np.arange(K)).all():
            return permutation


def balanced_targets(K: int, jumpers_per_block: int, rng: np.random.Generator) -> np.ndarray:
    """int [K, jumpers_per_block]: the target block of jumper j of block b, never b itself, every
    block a target exactly ``jumpers_per_block`` times.

    Column j is a random derangement of the blocks. Every balanced assignment is such a stack
    (a K×K count matrix with zero diagonal and equal row and column sums is a sum of derangement
    matrices, Birkhoff–von Neumann), so any of them can be drawn; and where the jump scales
    repeat every jumpers_per_block jumpers, each r is balanced over the blocks on its own.
    """
    return np.stack([random_derangement(K, rng) for _ in range(jumpers_per_block)], axis=1)


def choose_jumpers(graph: Graph, r_values: list[int], jumpers_per_block: int, rng: np.random.Generator) -> Graph | str:
    """Pick the jumpers of every block and give each a balanced, non-trivial rule.

    Jumper k = b * jumpers_per_block + j lives in block b and has jump length r_values[k].
    Targets are balanced first (``balanced_targets``): with Zipf θ and unbalanced targets a
    model that only drifts into the commonest target block scores far above chance. Then each
    jumper's vertex is drawn uniformly among the unused vertices of its block whose rule to that
    target is non-trivial: the target is reachable in exactly r steps, and so is some other block
    (the graph alone does not force compliance). An assignment that leaves some jumper without
    a vertex is drawn again, up to ASSIGNMENT_ATTEMPTS times. Returns the graph with rules, or
    why it failed.
    """
    reach = graph.block_reach(max(r_values))
    r_grid = np.asarray(r_values).reshape(graph.K, jumpers_per_block)
    problem = ""
    for _ in range(ASSIGNMENT_ATTEMPTS):
        targets = balanced_targets(graph.K, jumpers_per_block, rng)
        vertices, problem = _vertices_for(graph, reach, r_grid, targets, rng)
        if vertices is not None:
            return graph.with_rules(vertices, targets.reshape(-1), r_grid.reshape(-1))
    return problem


def _vertices_for(graph: Graph, reach: np.ndarray, r_grid: np.ndarray, targets: np.ndarray, rng: np.random.Generator):
    """(jumper vertices in jumper order, "") for a target assignment, or (None, why not)."""
    vertices = []
    for b, members in enumerate(graph.block_members):
        used = np.zeros(len(members), dtype=bool)
        for r, target in zip(r_grid[b], targets[b]):
            reachable = reach[r][members]  # [block_size, K]
            valid = reachable[:, target] & (reachable.sum(axis=1) >= 2) & ~used
            if not valid.any():
                return (
                    None,
                    f"no balanced set of non-trivial rules (block {b} has no free vertex whose r={r} rule to block {target} is non-trivial)",
                )
            member = rng.choice(np.flatnonzero(valid))
            used[member] = True
            vertices.append(int(members[member]))
    return np.asarray(vertices, dtype=np.int32), ""


def generate_graph(config: ExperimentConfig) -> Graph:
    """Draw graphs (seed, "graph", attempt) until one passes; raise with the reasons otherwise."""
    reasons: Counter[str] = Counter()  # kind of problem → draws that had it
    examples: dict[str, str] = {}  # kind → the latest draw's full message
    r_values = config.jumper_r_values()
    for attempt in range(config.graph.max_attempts):
        rng = numpy_rng(config.seed, "graph", attempt)
        adjacency, block, theta = draw_dcsbm(config, rng)
        problem = structural_problem(adjacency, config.graph.min_out_degree)
        if problem is None:
            plain = Graph(
                indptr=adjacency.indptr.astype(np.int64),
                indices=adjacency.indices.astype(np.int32),
                block=block,
                theta=theta,
                jumper_vertex=np.zeros(0, dtype=np.int32),
                jumper_target_block=np.zeros(0, dtype=np.int32),
                jumper_r=np.zeros(0, dtype=np.int32),
                K=config.graph.K,
            )
            result = choose_jumpers(plain, r_values, config.graph.jumpers_per_block, rng)
            if isinstance(result, Graph):
                return result
            problem = result
        kind = problem.split(" (")[0]
        reasons[kind] += 1
        examples[kind] = problem
    summary = "; ".join(f"{count}x {examples[kind]}" for kind, count in reasons.most_common(4))
    g = config.graph
    raise GraphGenerationError(
        f"no graph passed validation in graph.max_attempts={g.max_attempts} draws "
        f"(n={g.n}, K={g.K}, p_in={g.p_in}, p_out={g.p_out}, jumpers_per_block={g.jumpers_per_block}): {summary}. "
        "Raise p_in/p_out, lower graph.min_out_degree or graph.jumpers_per_block, or allow more attempts."
    )
