"""Opening an SQLite archive file: for writing, or so that it can never write."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from ..errors import StoreError
from ._sqlite_schema import SCHEMA_VERSION

logger = logging.getLogger(__name__)


def connect(path: str, *, busy_timeout_s: float, read_only: bool) -> sqlite3.Connection:
    """A connection in autocommit mode, shareable between threads (the store locks)."""
    try:
        if read_only:
            return _connect_read_only(path, busy_timeout_s)
        return sqlite3.connect(
            path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the archive at {path!r}: {exc}") from exc


def _connect_read_only(path: str, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection that cannot write: ``mode=ro``, or ``immutable=1`` where even
    that cannot read (a WAL archive in a folder this user may not write: no -shm
    file can be made beside it)."""
    if not Path(path).is_file():
        raise StoreError(f"no archive at {path!r}")
    base = Path(path).resolve().as_uri()
    for flags in ("?mode=ro", "?mode=ro&immutable=1"):
        conn = sqlite3.connect(
            base + flags,
            uri=True,
            timeout=busy_timeout_s,
            check_same_thread=False,
            isolation_level=None,
        )
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            conn.close()
            continue
        if "immutable" in flags:
            logger.info("%s read as immutable: no -shm file can be made beside it", path)
        return conn
    raise StoreError(f"cannot read the archive at {path!r}: permission denied")


def check_readable(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a file opened read-only that this library cannot read as it is."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0:
        raise StoreError(f"{path!r} is not a context-distill archive (no schema)")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path!r} has schema version {version}; this library reads version "
            f"{SCHEMA_VERSION} (open it once for writing to migrate it)"
        )
