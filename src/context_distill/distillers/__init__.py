"""Distillers: old turns in, telegraphic facts out.

``ExtractiveDistiller`` is model-free and the default. The model-backed ones
(``LinguaDistiller``, ``GenerativeDistiller``, ``ChatModelDistiller``) import their
heavy dependencies lazily, so this package imports without torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Distiller

_LAZY = {
    "ExtractiveDistiller": "context_distill.distillers.extractive",
    "LinguaDistiller": "context_distill.distillers.lingua",
    "GenerativeDistiller": "context_distill.distillers.generative",
    "ChatModelDistiller": "context_distill.distillers.chat_model",
}

#: Names accepted wherever a ``distiller=`` argument takes a string.
BY_NAME = {
    "extractive": "ExtractiveDistiller",
    "lingua": "LinguaDistiller",
    "generative": "GenerativeDistiller",
}

__all__ = ["BY_NAME", "Distiller", "resolve_distiller", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def resolve_distiller(spec: str | Distiller) -> Distiller:
    """A distiller object from a name (``"extractive"``, ``"lingua"``, ``"generative"``)
    or the object itself."""
    if isinstance(spec, Distiller):
        return spec
    if isinstance(spec, str):
        class_name = BY_NAME.get(spec.strip().lower())
        if class_name is None:
            known = ", ".join(sorted(BY_NAME))
            raise ValueError(f"unknown distiller {spec!r}; known names: {known}")
        cls = __getattr__(class_name)
        distiller: Distiller = cls()
        return distiller
    raise TypeError(f"distiller must be a name or a Distiller instance, not {type(spec).__name__}")
