"""The GPT-style model with extraction modes (DESIGN.md §6)."""

from .cache import KVCache
from .transformer import ExtractionMode, ModelOutput, TransformerLM

__all__ = ["ExtractionMode", "KVCache", "ModelOutput", "TransformerLM"]
