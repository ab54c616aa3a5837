"""context-distill: a context memory for long-running LangGraph and LangChain agents.

Once a thread's history crosses a token budget, its oldest whole turns are distilled
into short telegraphic facts, originals and facts are archived in SQLite, and the
model sees a compact view: system prompt, task, a memory block, recent turns.
"""

from __future__ import annotations

from .distillers import Distiller
from .engine import ContextDistiller, ContextStats, ContextUpdate
from .errors import (
    ContextDistillError,
    InputFormatError,
    InvalidMessageError,
    InvalidThreadIdError,
    MissingExtraError,
    StoreError,
)
from .store import SQLiteMemoryStore
from .types import Fact, Group, GroupFacts

__all__ = [
    "ContextDistillError",
    "ContextDistiller",
    "ContextStats",
    "ContextUpdate",
    "Distiller",
    "Fact",
    "Group",
    "GroupFacts",
    "InputFormatError",
    "InvalidMessageError",
    "InvalidThreadIdError",
    "MissingExtraError",
    "SQLiteMemoryStore",
    "StoreError",
]

__version__ = "0.1.0"
