"""One way to open any archive: a file path for SQLite, a URL for PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

from .protocol import MemoryStore
from .sqlite import SQLiteMemoryStore

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(target: str | os.PathLike[str], *, read_only: bool = False) -> MemoryStore:
    """The archive at ``target``: a ``postgresql://`` (or ``postgres://``) URL opens
    PostgreSQL (the ``[postgres]`` extra); anything else is an SQLite file path."""
    if isinstance(target, str) and target[:13].lower().startswith(_POSTGRES_SCHEMES):
        from ..postgres import PostgresMemoryStore  # MissingExtraError without the extra

        scheme, rest = target.split("://", 1)
        return PostgresMemoryStore(scheme.lower() + "://" + rest, read_only=read_only)
    return SQLiteMemoryStore(
        target if isinstance(target, str) else Path(target), read_only=read_only
    )
