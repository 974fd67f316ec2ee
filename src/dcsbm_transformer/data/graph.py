"""The graph with hidden rules: a directed degree-corrected SBM plus jumper vertices.

``Graph`` is the one object every later stage reads (walk generation, compliance scoring, the
gate, analysis). Vertex ids are a random permutation of the latent block order, so an id says
nothing about its block; ``block[v]`` is the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True, eq=False)
class Graph:
    """A directed graph (CSR adjacency, row = source) with block labels and jumper rules.

    Jumper rule j: whenever ``jumper_vertex[j]`` is visited at step s, the walk is in block
    ``jumper_target_block[j]`` at step ``s + jumper_r[j]``.

    One convention for what it offers: stored arrays and views derived from them alone are
    attributes (``graph.dense_adjacency``, ``graph.block_members[b]``); what takes a parameter is a
    method (``graph.block_reach(max_steps)``, ``graph.with_rules(...)``).
    """

    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 [edges], sorted within each row
    block: np.ndarray  # int32 [n]
    theta: np.ndarray  # float64 [n], degree-correction weights (mean 1 per block)
    jumper_vertex: np.ndarray  # int32 [J]
    jumper_target_block: np.ndarray  # int32 [J]
    jumper_r: np.ndarray  # int32 [J]
    K: int
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # ---- basic views ------------------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.block)

    @property
    def n_edges(self) -> int:
        return len(self.indices)

    @cached_property
    def adjacency(self) -> sp.csr_array:
        data = np.ones(len(self.indices), dtype=np.int8)
        return sp.csr_array((data, self.indices, self.indptr), shape=(self.n, self.n))

    @cached_property
    def dense_adjacency(self) -> np.ndarray:
        """bool [n, n]: ``dense_adjacency[u, v]`` is True iff u→v is an edge (fast membership)."""
        return self.adjacency.toarray().astype(bool)

    @cached_property
    def out_degree(self) -> np.ndarray:
        return np.diff(self.indptr).astype(np.int64)

    @cached_property
    def jumper_index(self) -> np.ndarray:
        """int32 [n]: index into the jumper arrays, or -1 for an ordinary vertex."""
        index = np.full(self.n, -1, dtype=np.int32)
        index[self.jumper_vertex] = np.arange(len(self.jumper_vertex), dtype=np.int32)
        return index

    @cached_property
    def vertex_rule_r(self) -> np.ndarray:
        """int64 [n]: the jump length of each vertex's rule, 0 for ordinary vertices."""
        r = np.zeros(self.n, dtype=np.int64)
        r[self.jumper_vertex] = self.jumper_r
        return r

    @cached_property
    def vertex_rule_target(self) -> np.ndarray:
        """int64 [n]: each jumper's target block, -1 for ordinary vertices."""
        target = np.full(self.n, -1, dtype=np.int64)
        target[self.jumper_vertex] = self.jumper_target_block
        return target

    @cached_property
    def block_members(self) -> tuple[np.ndarray, ...]:
        """The vertices of each block, sorted: ``block_members[b]``."""
        return tuple(np.flatnonzero(self.block == b) for b in range(self.K))

    @property
    def n_jumpers(self) -> int:
        return len(self.jumper_vertex)

    @cached_property
    def rule_labels(self) -> tuple[str, ...]:
        """A readable name for every rule, in jumper order: 'rule 2 (vertex 37, block 2→3, r=14)'."""
        return tuple(
            f"rule {j} (vertex {v}, block {self.block[v]}→{t}, r={r})"
            for j, (v, t, r) in enumerate(zip(self.jumper_vertex.tolist(), self.jumper_target_block.tolist(), self.jumper_r.tolist()))
        )

    def with_rules(self, vertex: np.ndarray, target_block: np.ndarray, r: np.ndarray) -> "Graph":
        """The same graph with these jumper rules (arrays in jumper order)."""
        return replace(
            self,
            jumper_vertex=np.asarray(vertex, dtype=np.int32),
            jumper_target_block=np.asarray(target_block, dtype=np.int32),
            jumper_r=np.asarray(r, dtype=np.int32),
            _cache={},
        )

    def __repr__(self) -> str:
        rules = ", ".join(
            f"{v}(block {self.block[v]})→block {t} in {r}"
            for v, t, r in zip(self.jumper_vertex.tolist(), self.jumper_target_block.tolist(), self.jumper_r.tolist())
        )
        return f"Graph(n={self.n}, K={self.K}, edges={self.n_edges}, jumpers=[{rules}])"

    # ---- exact-length reachability ----------------------------------------------------

    def block_reach(self, max_steps: int) -> np.ndarray:
        """bool [max_steps + 1, n, K]: ``[k, v, t]`` is True iff some walk of exactly k steps
        from v ends in block t. Cached; extended on demand."""
        cached = self._cache.get("block_reach")
        if cached is None or len(cached) <= max_steps:
            table = np.zeros((max_steps + 1, self.n, self.K), dtype=bool)
            table[0, np.arange(self.n), self.block] = True
            adjacency = self.adjacency.astype(np.int32)
            for k in range(max_steps):
                table[k + 1] = (adjacency @ table[k].astype(np.int32)) > 0
            self._cache["block_reach"] = cached = table
        return cached[: max_steps + 1]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of ``graph.npz`` (DESIGN.md: indptr, indices, block, theta, jumper_*)."""
        return {
            "indptr": self.indptr,
            "indices": self.indices,
            "block": self.block,
            "theta": self.theta,
            "jumper_vertex": self.jumper_vertex,
            "jumper_target_block": self.jumper_target_block,
            "jumper_r": self.jumper_r,
            "K": np.asarray(self.K, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Graph":
        return cls(
            indptr=arrays["indptr"].astype(np.int64),
            indices=arrays["indices"].astype(np.int32),
            block=arrays["block"].astype(np.int32),
            theta=arrays["theta"].astype(np.float64),
            jumper_vertex=arrays["jumper_vertex"].astype(np.int32),
            jumper_target_block=arrays["jumper_target_block"].astype(np.int32),
            jumper_r=arrays["jumper_r"].astype(np.int32),
            K=int(arrays["K"]),
        )
