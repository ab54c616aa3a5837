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
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from langchain_core.messages import BaseMessage

from .errors import StoreError
from .messages import from_json

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 3

# Message states in the archive.
ARCHIVED = "archived"  # stored, still in the view
REDUCED = "reduced"  # in the view only as a shortened copy
DISTILLED = "distilled"  # out of the view, replaced by facts


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as the archive keeps it."""

    message_id: str
    role: str
    digest: str
    tokens: int
    text: str
    data: str | None  # exact JSON form (messages.to_json); None: archived already

    @classmethod
    def archived(cls, message_id: str) -> MessageRecord:
        """A message archived earlier, named only (its row must exist)."""
        return cls(message_id, "", "", 0, "", None)


@dataclass(frozen=True, slots=True)
class FactRecord:
    text: str
    source_ids: tuple[str, ...]
    tokens: int


@dataclass(frozen=True, slots=True)
class StoredFact:
    """A fact read back, with the archive numbers of its sources."""

    fact_id: int
    text: str
    source_ids: tuple[str, ...]
    refs: tuple[int, ...]
    tokens: int
    distillation_id: int


@dataclass(slots=True)
class DistillationLog:
    """One line of the distillation log; failures are logged too."""

    distiller: str
    outcome: str  # ok | failed | timeout | empty | rejected | reduced
    groups: int = 0
    messages: int = 0
    facts: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    source_tokens: int = 0
    fact_tokens: int = 0
    duration_s: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ThreadSnapshot:
    """What a process needs to pick a thread up again after a restart."""

    thread_id: str
    distilled: frozenset[str]
    reduced: frozenset[str]
    facts: tuple[StoredFact, ...]
    anchor: str | None
    memory_cap: int | None  # tokens the memory block was last fitted to; None: no limit
    last_distillation_id: int  # newest committed distillation (0: none)
    distilled_tokens: int
    distillations: int
    failures: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    kind: str  # "message" or "fact"
    thread_id: str
    text: str
    ref: int | None  # archive number of a message; None for facts
    message_id: str | None
    source_ids: tuple[str, ...]
    role: str | None
    state: str | None


class DistilledElsewhere(StoreError):
    """Another writer distilled some of these messages first; reload the thread and retry."""


def _v1(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE threads (
            thread_id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            next_seq INTEGER NOT NULL DEFAULT 1,
            anchor TEXT,
            memory_cap INTEGER
        )"""
    )
    db.execute(
        """CREATE TABLE distillations (
            id INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(thread_id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            distiller TEXT NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT,
            groups INTEGER NOT NULL,
            messages INTEGER NOT NULL,
            facts INTEGER NOT NULL,
            tokens_before INTEGER NOT NULL,
            tokens_after INTEGER NOT NULL,
            source_tokens INTEGER NOT NULL,
            fact_tokens INTEGER NOT NULL,
            duration_s REAL NOT NULL,
            details TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(thread_id) ON DELETE CASCADE,
            message_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            digest TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            text TEXT NOT NULL,
            data TEXT NOT NULL,
            state TEXT NOT NULL,
            distillation_id INTEGER REFERENCES distillations(id) ON DELETE SET NULL,
            archived_at REAL NOT NULL,
            UNIQUE (thread_id, message_id),
            UNIQUE (thread_id, seq)
        )"""
    )
    db.execute(
        """CREATE TABLE facts (
            id INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(thread_id) ON DELETE CASCADE,
            distillation_id INTEGER NOT NULL REFERENCES distillations(id) ON DELETE CASCADE,
            text TEXT NOT NULL,
            source_ids TEXT NOT NULL,
            refs TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX facts_thread ON facts (thread_id, id)")
    db.execute("CREATE INDEX distillations_thread ON distillations (thread_id, id)")
    db.table("messages").enable_fts(["text"], create_triggers=True, tokenize="porter unicode61")
    db.table("facts").enable_fts(["text"], create_triggers=True, tokenize="porter unicode61")


def _v2(db: sqlite_utils.Database) -> None:
    """``threads.memory_cap``: archives made before it was part of the first schema lack it."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(threads)").fetchall()}
    if "memory_cap" not in columns:
        db.execute("ALTER TABLE threads ADD COLUMN memory_cap INTEGER")


def _v3(db: sqlite_utils.Database) -> None:
    """Re-index text only when text changes: a message's state changes on every
    distillation, and re-indexing a large tool output for it cost milliseconds."""
    for table in ("messages", "facts"):
        db.execute(f'DROP TRIGGER IF EXISTS "{table}_au"')
        db.execute(
            f'CREATE TRIGGER "{table}_au" AFTER UPDATE OF "text" ON "{table}" BEGIN\n'
            f'  INSERT INTO "{table}_fts" ("{table}_fts", rowid, "text") '
            "VALUES('delete', old.rowid, old.\"text\");\n"
            f'  INSERT INTO "{table}_fts" (rowid, "text") VALUES (new.rowid, new."text");\n'
            "END"
        )


_MIGRATIONS: tuple[tuple[int, Callable[[sqlite_utils.Database], None]], ...] = (
    (1, _v1),
    (2, _v2),
    (3, _v3),
)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


_MAX_TERMS = 64  # words of a query beyond these are ignored (bounds the cost of a query)
_PHRASE = re.compile(r'"([^"]*)"|([^\s"]+)')


def fts_query(text: str) -> str:
    """A full-text query that matches the words of ``text`` and never fails to parse.

    Each word becomes a quoted string (a ``"quoted phrase"`` stays a phrase), so FTS5
    operators and punctuation are plain text; NUL (which ends an FTS5 string) and
    other control characters separate words, and lone surrogates are replaced.
    Repeated words count once and only the first ``_MAX_TERMS`` distinct ones are used.
    """
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = "".join(" " if ch < " " or ch == "\x7f" else ch for ch in text)
    terms: dict[str, None] = {}  # a repeated word adds nothing to an AND query
    for phrase, word in _PHRASE.findall(text):
        term = phrase if phrase else word
        if term.strip():
            terms['"' + term.replace('"', '""') + '"'] = None
            if len(terms) >= _MAX_TERMS:
                break
    return " ".join(terms)


def _storable(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_same(thread_id: str, record: MessageRecord, archived_digest: str) -> None:
    """Refuse a different message under an id the thread's archive already holds.

    Keeping the archived one would silently lose the new message's content.
    """
    if record.digest and archived_digest and record.digest != archived_digest:
        raise StoreError(
            f"message id {record.message_id!r} of thread {thread_id!r} is archived already "
            "with other content; each message of a thread needs an id of its own"
        )


def _check_thread_id(thread_id: object) -> str:
    """The thread id as stored, or StoreError for one SQLite cannot store as text."""
    if not isinstance(thread_id, str) or not thread_id:
        raise StoreError(f"thread id must be a non-empty string, not {thread_id!r}")
    try:
        thread_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StoreError(
            f"thread id {thread_id!r} cannot be stored: not valid Unicode "
            f"(unpaired surrogate at character {exc.start})"
        ) from None
    return thread_id


class SQLiteMemoryStore:
    """The embedded archive: one SQLite file (or ``":memory:"``) per application.

    Safe to share between the threads of a process; several processes may open
    the same file. ``busy_timeout_s`` bounds how long a writer waits for another.
    """

    def __init__(self, path: str | Path = ":memory:", *, busy_timeout_s: float = 60.0) -> None:
        self.path = str(path)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout_s,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the archive at {self.path!r}: {exc}") from exc
        self._conn = conn
        self.db = sqlite_utils.Database(conn)
        try:
            self._configure()
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
        if self.path != ":memory:":
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
        for target, step in _MIGRATIONS:
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

    def _retry(self, action: Callable[[], T]) -> T:
        """Run an action, waiting out other writers instead of failing."""
        deadline = time.monotonic() + self._busy_timeout_s
        delay = 0.005
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

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

        with self._lock:
            try:
                return self._retry(attempt)
            except sqlite3.Error as exc:
                raise StoreError(f"writing to {self.path!r} failed: {exc}") from exc
            except UnicodeEncodeError as exc:
                raise StoreError(
                    f"writing to {self.path!r} failed: text that is not valid Unicode ({exc})"
                ) from exc

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StoreError(f"reading {self.path!r} failed: {exc}") from exc

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._reading() as conn:
            return self._retry(lambda: list(conn.execute(sql, params).fetchall()))

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
                    _check_same(thread_id, record, found[1])
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
        _check_thread_id(thread_id)
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
    ) -> tuple[int, dict[str, int], list[StoredFact]]:
        """Archive originals, store their facts, take them out of the view, log it: at once.

        Returns the log id, the archive number of every original, and the facts as stored.
        """
        _check_thread_id(thread_id)
        now = time.time()

        def body() -> tuple[int, dict[str, int], list[StoredFact]]:
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
                    _check_same(thread_id, by_id[message_id], digest)
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
            return log_id, refs, stored

        return self._write(body)

    def set_memory_cap(self, thread_id: str, cap: int | None) -> None:
        """Remember how much room the memory block had, so a restart shows the same view."""
        _check_thread_id(thread_id)

        def body() -> None:
            self._conn.execute(
                "UPDATE threads SET memory_cap = ? WHERE thread_id = ?", (cap, thread_id)
            )

        self._write(body)

    def record_failure(self, thread_id: str, log: DistillationLog) -> int:
        """Log a distillation that did not happen (the history stays as it was)."""
        _check_thread_id(thread_id)
        now = time.time()

        def body() -> int:
            self._ensure_thread(thread_id, now)
            return self._insert_log(thread_id, log, now)

        return self._write(body)

    def delete_thread(self, thread_id: str) -> None:
        """Forget a thread: its messages, facts and log."""
        _check_thread_id(thread_id)

        def body() -> None:
            conn = self._conn
            for table in ("facts", "messages", "distillations", "threads"):
                conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))

        self._write(body)

    # -- reads ----------------------------------------------------------------

    def load_thread(self, thread_id: str) -> ThreadSnapshot:
        """Everything a process needs to continue a thread (one consistent snapshot)."""
        _check_thread_id(thread_id)

        def read() -> tuple[Any, ...]:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                states = conn.execute(
                    "SELECT message_id, state, tokens FROM messages WHERE thread_id = ? "
                    "AND state != ?",
                    (thread_id, ARCHIVED),
                ).fetchall()
                fact_rows = conn.execute(
                    "SELECT id, text, source_ids, refs, tokens, distillation_id FROM facts "
                    "WHERE thread_id = ? ORDER BY id",
                    (thread_id,),
                ).fetchall()
                thread = conn.execute(
                    "SELECT anchor, memory_cap FROM threads WHERE thread_id = ?", (thread_id,)
                ).fetchone()
                counts = conn.execute(
                    "SELECT SUM(outcome = 'ok'), SUM(outcome NOT IN ('ok', 'reduced')), "
                    "MAX(CASE WHEN outcome = 'ok' THEN id END) "
                    "FROM distillations WHERE thread_id = ?",
                    (thread_id,),
                ).fetchone()
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
            return states, fact_rows, thread, counts

        with self._reading():
            states, fact_rows, thread, counts = self._retry(read)
        distilled = frozenset(row[0] for row in states if row[1] == DISTILLED)
        reduced = frozenset(row[0] for row in states if row[1] == REDUCED)
        return ThreadSnapshot(
            thread_id=thread_id,
            distilled=distilled,
            reduced=reduced,
            facts=tuple(_stored_fact(row) for row in fact_rows),
            anchor=thread[0] if thread else None,
            memory_cap=thread[1] if thread else None,
            last_distillation_id=int(counts[2] or 0),
            distilled_tokens=sum(row[2] for row in states if row[1] == DISTILLED),
            distillations=int(counts[0] or 0),
            failures=int(counts[1] or 0),
        )

    def data_version(self) -> int:
        """Changes whenever another connection commits to this database (cheap to ask)."""
        with self._reading() as conn:
            return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def archived_digest(self, thread_id: str, message_id: str) -> str | None:
        """The content digest of a distilled message of this thread, or None."""
        rows = self._rows(
            "SELECT digest FROM messages WHERE thread_id = ? AND message_id = ? AND state = ?",
            (thread_id, message_id, DISTILLED),
        )
        return str(rows[0][0]) if rows else None

    def last_distillation_id(self, thread_id: str) -> int:
        """The newest committed distillation of a thread (0 if none)."""
        rows = self._rows(
            "SELECT MAX(id) FROM distillations WHERE thread_id = ? AND outcome = 'ok'",
            (thread_id,),
        )
        return int(rows[0][0] or 0)

    def get_messages(
        self, thread_id: str, *, ids: Sequence[str] = (), refs: Sequence[int] = ()
    ) -> list[tuple[int, BaseMessage]]:
        """Archived originals, exactly as they came in, by message id or archive number."""
        _check_thread_id(thread_id)
        out: dict[int, BaseMessage] = {}
        for message_id in ids:
            if not _storable(message_id):
                continue  # an id that cannot be stored is not in the archive
            for row in self._rows(
                "SELECT seq, data FROM messages WHERE thread_id = ? AND message_id = ?",
                (thread_id, message_id),
            ):
                out[int(row[0])] = from_json(row[1])
        for ref in refs:
            for row in self._rows(
                "SELECT seq, data FROM messages WHERE thread_id = ? AND seq = ?", (thread_id, ref)
            ):
                out[int(row[0])] = from_json(row[1])
        return sorted(out.items(), key=lambda item: item[0])

    def search(
        self,
        query: str,
        *,
        thread_id: str | None = None,
        limit: int = 20,
        kinds: Sequence[str] = ("message", "fact"),
    ) -> list[SearchHit]:
        """Full-text search over archived originals and/or facts, best matches first.

        ``query`` is plain text: its words must all occur (a ``"quoted phrase"`` in that
        order); FTS5 operators and punctuation in it are taken as text, never as syntax.
        """
        if thread_id is not None:
            _check_thread_id(thread_id)
        match = fts_query(query)
        if not match.strip('" '):
            return []
        scope = "AND m.thread_id = ?" if thread_id is not None else ""
        params: list[Any] = [match]
        if thread_id is not None:
            params.append(thread_id)
        params.append(limit)
        message_rows = (
            []
            if "message" not in kinds
            else self._rows(
                "SELECT m.thread_id, m.text, m.seq, m.message_id, m.role, m.state, "
                "bm25(messages_fts) AS rank FROM messages_fts "
                "JOIN messages m ON m.id = messages_fts.rowid "
                f"WHERE messages_fts MATCH ? {scope} ORDER BY rank LIMIT ?",
                params,
            )
        )
        fact_rows = (
            []
            if "fact" not in kinds
            else self._rows(
                "SELECT m.thread_id, m.text, m.source_ids, bm25(facts_fts) AS rank FROM facts_fts "
                "JOIN facts m ON m.id = facts_fts.rowid "
                f"WHERE facts_fts MATCH ? {scope} ORDER BY rank LIMIT ?",
                params,
            )
        )
        ranked: list[tuple[float, SearchHit]] = []
        for row in message_rows:
            hit = SearchHit(
                "message", row[0], row[1], int(row[2]), row[3], (row[3],), row[4], row[5]
            )
            ranked.append((float(row[6]), hit))
        for row in fact_rows:
            hit = SearchHit(
                "fact", row[0], row[1], None, None, tuple(json.loads(row[2])), None, None
            )
            ranked.append((float(row[3]), hit))
        ranked.sort(key=lambda item: item[0])
        return [hit for _, hit in ranked[:limit]]

    def threads(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT thread_id FROM threads ORDER BY created_at")]

    def stats(self, thread_id: str | None = None) -> dict[str, Any]:
        """Counts and token totals, for one thread or the whole archive."""
        if thread_id is not None:
            _check_thread_id(thread_id)
        where, params = ("WHERE thread_id = ?", (thread_id,)) if thread_id is not None else ("", ())
        msg = self._rows(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0), COALESCE(SUM(state = 'distilled'), 0), "
            "COALESCE(SUM(CASE WHEN state = 'distilled' THEN tokens END), 0) "
            f"FROM messages {where}",
            params,
        )[0]
        fact = self._rows(f"SELECT COUNT(*), COALESCE(SUM(tokens), 0) FROM facts {where}", params)[
            0
        ]
        log = self._rows(
            "SELECT COUNT(*), COALESCE(SUM(outcome = 'ok'), 0), "
            "COALESCE(SUM(outcome NOT IN ('ok', 'reduced')), 0), "
            f"COALESCE(SUM(duration_s), 0) FROM distillations {where}",
            params,
        )[0]
        threads = self._rows(f"SELECT COUNT(*) FROM threads {where}", params)[0][0]
        return {
            "threads": int(threads),
            "messages_archived": int(msg[0]),
            "tokens_archived": int(msg[1]),
            "messages_distilled": int(msg[2]),
            "tokens_distilled": int(msg[3]),
            "facts": int(fact[0]),
            "fact_tokens": int(fact[1]),
            "tokens_saved": int(msg[3]) - int(fact[1]),
            "distillations": int(log[1]),
            "failures": int(log[2]),
            "distill_seconds": round(float(log[3]), 4),
        }

    def distillations(self, thread_id: str) -> list[dict[str, Any]]:
        """The distillation log of a thread, oldest first."""
        _check_thread_id(thread_id)
        rows = self._rows(
            "SELECT id, created_at, distiller, outcome, error, groups, messages, facts, "
            "tokens_before, tokens_after, source_tokens, fact_tokens, duration_s, details "
            "FROM distillations WHERE thread_id = ? ORDER BY id",
            (thread_id,),
        )
        keys = """id created_at distiller outcome error groups messages facts tokens_before
    tokens_after source_tokens fact_tokens duration_s details""".split()
        out = []
        for row in rows:
            entry = dict(zip(keys, row, strict=True))
            entry["details"] = json.loads(entry["details"])
            out.append(entry)
        return out

    def facts(self, thread_id: str) -> list[StoredFact]:
        _check_thread_id(thread_id)
        rows = self._rows(
            "SELECT id, text, source_ids, refs, tokens, distillation_id FROM facts "
            "WHERE thread_id = ? ORDER BY id",
            (thread_id,),
        )
        return [_stored_fact(row) for row in rows]

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


def _stored_fact(row: Sequence[Any]) -> StoredFact:
    return StoredFact(
        fact_id=int(row[0]),
        text=row[1],
        source_ids=tuple(json.loads(row[2])),
        refs=tuple(json.loads(row[3])),
        tokens=int(row[4]),
        distillation_id=int(row[5]),
    )
