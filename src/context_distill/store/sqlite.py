"""The archive: every message that leaves the view, every fact, every distillation.

One SQLite file through sqlite-utils. WAL mode so readers never wait on the
writer; a busy timeout and a retry loop so writers from several processes queue
instead of failing; one connection per store guarded by a lock, so a store can be
shared by the threads of a process. Writes that belong together (the originals,
their facts, their removal from the view and the log entry) commit in a single
transaction or not at all.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from ..errors import StoreError
from ..types import check_thread_id
from ._sqlite_connect import check_readable, connect
from ._sqlite_reads import SQLiteReader
from ._sqlite_schema import MIGRATIONS, SCHEMA_VERSION
from ._threaded import ThreadedAsync
from .records import (
    ARCHIVED,
    DISTILLED,
    REDUCED,
    Committed,
    DistillationLog,
    DistilledElsewhere,
    FactRecord,
    MessageRecord,
    StoredFact,
    check_same,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SQLiteMemoryStore(SQLiteReader, ThreadedAsync):
    """The embedded archive: one SQLite file (or ``":memory:"``) per application.

    Safe to share between the threads of a process; several processes may open
    the same file. ``busy_timeout_s`` bounds how long a writer waits for another.
    ``read_only`` opens an existing file for reading only (a file the user may not
    write, an inspector that must never write); writes then raise ``StoreError``.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        busy_timeout_s: float = 60.0,
        read_only: bool = False,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._known_last = {}
        conn = connect(self.path, busy_timeout_s=busy_timeout_s, read_only=read_only)
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
        try:
            self._configure()
            if read_only:
                check_readable(conn, self.path)
            else:
                self._migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"{self.path!r} is not a usable context-distill archive: {exc}"
            ) from exc

    # -- set-up ---------------------------------------------------------------

    def _configure(self) -> None:
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        if self.path != ":memory:" and not self.read_only:
            mode = self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            if mode is None or str(mode[0]).lower() != "wal":
                logger.warning("could not switch %s to WAL mode (got %s)", self.path, mode)
            conn.execute("PRAGMA synchronous = NORMAL")

    def _migrate(self) -> None:
        version = self._user_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path!r} has schema version {version}, newer than this library "
                f"understands ({SCHEMA_VERSION}); upgrade context-distill"
            )
        for target, step in MIGRATIONS:
            if target <= version:
                continue

            def apply(target: int = target, step: Callable[..., None] = step) -> None:
                if self._user_version() >= target:  # another process got there first
                    return
                step(self.db)
                self._conn.execute(f"PRAGMA user_version = {target}")

            self._write(apply)
            logger.info("archive %s migrated to schema version %d", self.path, target)

    def _user_version(self) -> int:
        row = self._conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._user_version()

    # -- transactions ---------------------------------------------------------

    def _write(self, body: Callable[[], T]) -> T:
        """Run ``body`` in one immediate write transaction: all of it or none of it."""

        def attempt() -> T:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body()
                conn.execute("COMMIT")  # a COMMIT that fails (busy) rolls back and retries
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        if self.read_only:
            raise StoreError(f"{self.path!r} is open read-only")
        with self._lock:
            try:
                return self._retry(attempt)
            except sqlite3.Error as exc:
                raise StoreError(f"writing to {self.path!r} failed: {exc}") from exc
            except UnicodeEncodeError as exc:
                raise StoreError(
                    f"writing to {self.path!r} failed: text that is not valid Unicode ({exc})"
                ) from exc

    # -- writes ---------------------------------------------------------------

    def _ensure_thread(self, thread_id: str, now: float) -> None:
        self._conn.execute(
            "INSERT INTO threads (thread_id, created_at, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(thread_id) DO UPDATE SET updated_at = excluded.updated_at",
            (thread_id, now, now),
        )

    def _insert_messages(
        self, thread_id: str, records: Sequence[MessageRecord], state: str, now: float
    ) -> dict[str, int]:
        """Archive messages not yet archived; return every given id's archive number."""
        conn = self._conn
        refs: dict[str, int] = {}
        if not records:
            return refs
        row = conn.execute(
            "SELECT next_seq FROM threads WHERE thread_id = ?", (thread_id,)
        ).fetchone()
        next_seq = int(row[0])
        for record in records:
            found = conn.execute(
                "SELECT seq, digest, state FROM messages WHERE thread_id = ? AND message_id = ?",
                (thread_id, record.message_id),
            ).fetchone()
            if found is not None:
                if found[2] != REDUCED:  # a reduced result is archived as its original
                    check_same(thread_id, record, found[1])
                refs[record.message_id] = int(found[0])
                continue
            if record.data is None:
                raise StoreError(
                    f"message {record.message_id!r} of thread {thread_id!r} should be archived "
                    "already but is not"
                )
            conn.execute(
                "INSERT INTO messages (thread_id, message_id, seq, role, digest, tokens, text, "
                "data, state, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    thread_id,
                    record.message_id,
                    next_seq,
                    record.role,
                    record.digest,
                    record.tokens,
                    record.text,
                    record.data,
                    state,
                    now,
                ),
            )
            refs[record.message_id] = next_seq
            next_seq += 1
        conn.execute("UPDATE threads SET next_seq = ? WHERE thread_id = ?", (next_seq, thread_id))
        return refs

    def _insert_log(self, thread_id: str, log: DistillationLog, now: float) -> int:
        cursor = self._conn.execute(
            "INSERT INTO distillations (thread_id, created_at, distiller, outcome, error, groups, "
            "messages, facts, tokens_before, tokens_after, source_tokens, fact_tokens, "
            "duration_s, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                thread_id,
                now,
                log.distiller,
                log.outcome,
                log.error,
                log.groups,
                log.messages,
                log.facts,
                log.tokens_before,
                log.tokens_after,
                log.source_tokens,
                log.fact_tokens,
                log.duration_s,
                json.dumps(log.details, ensure_ascii=False, default=str),
            ),
        )
        rowid = cursor.lastrowid
        assert rowid is not None
        return rowid

    def archive(
        self, thread_id: str, records: Sequence[MessageRecord], *, state: str = ARCHIVED
    ) -> dict[str, int]:
        """Archive messages (already archived ones are left as they are)."""
        check_thread_id(thread_id)
        now = time.time()

        def body() -> dict[str, int]:
            self._ensure_thread(thread_id, now)
            return self._insert_messages(thread_id, records, state, now)

        return self._write(body)

    def commit_distillation(
        self,
        thread_id: str,
        *,
        originals: Sequence[MessageRecord],
        facts: Sequence[FactRecord],
        log: DistillationLog,
        anchor: str | None,
        state: str = DISTILLED,
    ) -> Committed:
        """Archive originals, store their facts, take them out of the view, log it: at once.

        Returns the log id, the archive number of every original, and the facts as stored.
        """
        check_thread_id(thread_id)
        now = time.time()

        def body() -> Committed:
            conn = self._conn
            self._ensure_thread(thread_id, now)
            ids = [record.message_id for record in originals]
            by_id = {record.message_id: record for record in originals}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                taken = conn.execute(
                    "SELECT message_id, digest FROM messages WHERE thread_id = ? AND state = ? "
                    f"AND message_id IN ({marks})",
                    (thread_id, DISTILLED, *chunk),
                ).fetchall()
                for message_id, digest in taken:  # another message under a used id?
                    check_same(thread_id, by_id[message_id], digest)
                if taken:
                    raise DistilledElsewhere(
                        f"message {taken[0][0]!r} of thread {thread_id!r} was distilled by "
                        "another writer meanwhile"
                    )
            refs = self._insert_messages(thread_id, originals, ARCHIVED, now)
            log_id = self._insert_log(thread_id, log, now)
            conn.executemany(
                "UPDATE messages SET state = ?, distillation_id = ? "
                "WHERE thread_id = ? AND message_id = ?",
                [(state, log_id, thread_id, record.message_id) for record in originals],
            )
            stored = []
            for fact in facts:
                fact_refs = tuple(sorted(refs[i] for i in fact.source_ids if i in refs))
                cursor = conn.execute(
                    "INSERT INTO facts (thread_id, distillation_id, text, source_ids, refs, "
                    "tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        thread_id,
                        log_id,
                        fact.text,
                        json.dumps(list(fact.source_ids), ensure_ascii=False),
                        json.dumps(list(fact_refs)),
                        fact.tokens,
                        now,
                    ),
                )
                fact_id = cursor.lastrowid
                assert fact_id is not None
                stored.append(
                    StoredFact(fact_id, fact.text, fact.source_ids, fact_refs, fact.tokens, log_id)
                )
            if anchor is not None:
                conn.execute(
                    "UPDATE threads SET anchor = ? WHERE thread_id = ?", (anchor, thread_id)
                )
            return Committed(log_id, refs, stored)

        committed = self._write(body)
        self._known_last.pop(thread_id, None)
        return committed

    def set_memory_cap(
        self,
        thread_id: str,
        cap: int | None,
        *,
        retired: Sequence[int] = (),
        retired_at: int = 0,
        pages: str | None = None,
    ) -> None:
        """Remember the memory block's room and the facts it let go, so a restart
        shows the same view."""
        check_thread_id(thread_id)
        retired = list(retired)

        def body() -> None:
            conn = self._conn
            conn.execute(
                "UPDATE threads SET memory_cap = ?, memory_pages = ? WHERE thread_id = ?",
                (cap, pages, thread_id),
            )
            for start in range(0, len(retired), 500):
                chunk = retired[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                conn.execute(
                    "UPDATE facts SET retired_at = ? WHERE thread_id = ? "
                    f"AND retired_at IS NULL AND id IN ({marks})",
                    (retired_at, thread_id, *chunk),
                )

        self._write(body)

    def record_failure(self, thread_id: str, log: DistillationLog) -> int:
        """Log a distillation that did not happen (the history stays as it was)."""
        check_thread_id(thread_id)
        now = time.time()

        def body() -> int:
            self._ensure_thread(thread_id, now)
            return self._insert_log(thread_id, log, now)

        return self._write(body)

    def delete_thread(self, thread_id: str) -> None:
        """Forget a thread: its messages, facts and log."""
        check_thread_id(thread_id)

        def body() -> None:
            conn = self._conn
            for table in ("facts", "messages", "distillations", "threads"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))

        self._write(body)

    def integrity_ok(self) -> bool:
        rows = self._rows("PRAGMA integrity_check")
        return len(rows) == 1 and rows[0][0] == "ok"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteMemoryStore({self.path!r})"
