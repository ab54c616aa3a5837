"""Local causal language models for the model-backed distillers.

Imports nothing heavy: torch and transformers load when a model is first asked for.
"""

from __future__ import annotations

from .loading import LoadedModel, cache_dir, clear_cache, load_model

__all__ = ["LoadedModel", "cache_dir", "clear_cache", "load_model"]
