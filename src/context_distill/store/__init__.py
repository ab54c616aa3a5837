"""The archive: every message of every thread, every fact, every distillation.

``MemoryStore`` is the protocol the rest of the library talks to; SQLite is the
embedded backend (``SQLiteMemoryStore``), and other databases plug in behind the
same protocol (``context_distill.postgres``); ``open_store`` opens either.
"""

from __future__ import annotations

from ._open import open_store
from ._sqlite_schema import SCHEMA_VERSION, fts_query
from .protocol import MemoryStore, SyncMemoryStore
from .records import (
    ARCHIVED,
    DISTILLED,
    REDUCED,
    ArchivedMessage,
    Committed,
    DistillationLog,
    DistilledElsewhere,
    FactRecord,
    MessageRecord,
    SearchHit,
    StoredFact,
    ThreadSnapshot,
)
from .sqlite import SQLiteMemoryStore

__all__ = [
    "ARCHIVED",
    "DISTILLED",
    "REDUCED",
    "SCHEMA_VERSION",
    "ArchivedMessage",
    "Committed",
    "DistillationLog",
    "DistilledElsewhere",
    "FactRecord",
    "MemoryStore",
    "MessageRecord",
    "SQLiteMemoryStore",
    "SearchHit",
    "StoredFact",
    "SyncMemoryStore",
    "ThreadSnapshot",
    "fts_query",
    "open_store",
]
