"""Seeding and RNG state.

Every random draw in the pipeline takes an explicit generator derived from the experiment seed
and a *stream name* ("graph", "train-walks", "epoch-order"...), so that streams never consume
each other's randomness and any one of them can be rebuilt on its own. The global RNGs
(torch, CUDA, numpy, python) are still captured in checkpoints, because dropout and any
user code draw from them; their states are stored as tensors and plain lists so that a
checkpoint loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np
import torch


def _stream_key(name: str | int) -> int:
    return name if isinstance(name, int) else zlib.crc32(name.encode())


def seed_sequence(seed: int, *stream: str | int) -> np.random.SeedSequence:
    """A numpy SeedSequence for (seed, stream...). Distinct streams are statistically independent."""
    return np.random.SeedSequence([seed, *(_stream_key(s) for s in stream)])


def numpy_rng(seed: int, *stream: str | int) -> np.random.Generator:
    """A fresh numpy Generator for (seed, stream...)."""
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, *stream)))


def torch_generator(seed: int, *stream: str | int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh torch Generator for (seed, stream...)."""
    derived = int(seed_sequence(seed, *stream).generate_state(1, dtype=np.uint64)[0] >> 1)
    generator = torch.Generator(device=device)
    generator.manual_seed(derived)
    return generator


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (torch, CUDA, numpy, python) for code that draws from them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain lists (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=True)
    # legacy=True gives the 5-tuple for the global MT19937 (the dict form is for other bit generators)
    assert isinstance(np_state, tuple), "numpy's global RNG is not MT19937"
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np_state
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss_next": py_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state. CUDA states are restored only where CUDA exists, so a
    checkpoint written on a GPU machine resumes on a CPU one and vice versa."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"]))
