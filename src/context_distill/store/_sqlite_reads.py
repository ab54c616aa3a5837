"""Reading the SQLite archive: the connection discipline and every read query.

Reads share the writer's connection (one per store, guarded by a lock); WAL mode
means they never wait for another process's writer.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from langchain_core.messages import BaseMessage

from ..errors import StoreError
from ..messages import from_json
from ..types import check_thread_id
from ._sqlite_schema import fts_query
from .protocol import KINDS
from .records import (
    DISTILLED,
    REDUCED,
    ArchivedMessage,
    SearchHit,
    StoredFact,
    ThreadSnapshot,
    stats_dict,
    storable,
)

T = TypeVar("T")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteReader:
    """A connection to an archive file, and everything that only reads it."""

    path: str
    _conn: sqlite3.Connection
    _lock: threading.RLock
    _busy_timeout_s: float
    # thread id -> (data_version, newest distillation id) when last asked
    _known_last: dict[str, tuple[int, int]]

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

    def load_thread(self, thread_id: str) -> ThreadSnapshot:
        """Everything a process needs to continue a thread (one consistent snapshot)."""
        check_thread_id(thread_id)

        def read() -> tuple[Any, ...]:
            conn = self._conn
            conn.execute("BEGIN")
            try:
                states = conn.execute(
                    "SELECT message_id, state, tokens, digest FROM messages WHERE thread_id = ?",
                    (thread_id,),
                ).fetchall()
                fact_rows = conn.execute(
                    "SELECT id, text, source_ids, refs, tokens, distillation_id, retired_at "
                    "FROM facts "
                    "WHERE thread_id = ? ORDER BY id",
                    (thread_id,),
                ).fetchall()
                thread = conn.execute(
                    "SELECT anchor, memory_cap, memory_pages FROM threads WHERE thread_id = ?",
                    (thread_id,),
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
            memory_pages=thread[2] if thread else None,
            last_distillation_id=int(counts[2] or 0),
            distilled_tokens=sum(row[2] for row in states if row[1] == DISTILLED),
            distillations=int(counts[0] or 0),
            failures=int(counts[1] or 0),
            transcript={row[0]: ArchivedMessage(row[3], int(row[2]), row[1]) for row in states},
        )

    def last_distillation_id(self, thread_id: str) -> int:
        """The newest committed distillation of a thread (0 if none).

        Asked on every turn, so it is answered from memory while ``PRAGMA
        data_version`` says no other connection has committed since the last answer.
        """
        check_thread_id(thread_id)
        with self._reading() as conn:
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            known = self._known_last.get(thread_id)
            if known is not None and known[0] == version:
                return known[1]
            row = self._retry(
                lambda: conn.execute(
                    "SELECT MAX(id) FROM distillations WHERE thread_id = ? AND outcome = 'ok'",
                    (thread_id,),
                ).fetchone()
            )
            last = int(row[0] or 0)
            self._known_last[thread_id] = (version, last)
            return last

    def distilled_digests(self, thread_id: str, message_ids: Sequence[str]) -> dict[str, str]:
        """Content digests of those of ``message_ids`` that are distilled."""
        check_thread_id(thread_id)
        wanted = [i for i in dict.fromkeys(message_ids) if storable(i)]
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self._rows(
                "SELECT message_id, digest FROM messages WHERE thread_id = ? AND state = ? "
                f"AND message_id IN ({marks})",
                (thread_id, DISTILLED, *chunk),
            ):
                found[row[0]] = row[1]
        return found

    def get_messages(
        self, thread_id: str, *, ids: Sequence[str] = (), refs: Sequence[int] = ()
    ) -> list[tuple[int, BaseMessage]]:
        """Archived originals, exactly as they came in, by message id or archive number."""
        check_thread_id(thread_id)
        out: dict[int, BaseMessage] = {}
        for message_id in ids:
            if not storable(message_id):
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
        kinds: Sequence[str] = KINDS,
    ) -> list[SearchHit]:
        """Full-text search over archived originals and/or facts, best matches first.

        ``query`` is plain text: its words must all occur (a ``"quoted phrase"`` in that
        order); FTS5 operators and punctuation in it are taken as text, never as syntax.
        """
        if thread_id is not None:
            check_thread_id(thread_id)
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

    def message_index(self, thread_id: str, *, preview: int = 160) -> list[dict[str, Any]]:
        """Every archived message of a thread in archive order, without its full text:
        number, id, role, state, tokens, distillation, when archived, length, a preview."""
        check_thread_id(thread_id)
        keys = "ref message_id role state tokens distillation_id archived_at chars preview"
        # Bytes, not text: SQLite's text functions stop at a NUL character.
        rows = self._rows(
            "SELECT seq, message_id, role, state, tokens, distillation_id, archived_at, "
            "length(CAST(text AS BLOB)), substr(CAST(text AS BLOB), 1, ?) FROM messages "
            "WHERE thread_id = ? ORDER BY seq",
            (4 * preview, thread_id),
        )
        out = []
        for row in rows:
            entry = dict(zip(keys.split(), row, strict=True))
            entry["preview"] = bytes(entry["preview"]).decode("utf-8", "ignore")[:preview]
            out.append(entry)
        return out

    def threads(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT thread_id FROM threads ORDER BY created_at")]

    def stats(self, thread_id: str | None = None) -> dict[str, Any]:
        """Counts and token totals, for one thread or the whole archive."""
        if thread_id is not None:
            check_thread_id(thread_id)
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
        return stats_dict(threads=threads, messages=tuple(msg), facts=tuple(fact), log=tuple(log))

    def distillations(self, thread_id: str) -> list[dict[str, Any]]:
        """The distillation log of a thread, oldest first."""
        check_thread_id(thread_id)
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
        check_thread_id(thread_id)
        rows = self._rows(
            "SELECT id, text, source_ids, refs, tokens, distillation_id, retired_at "
            "FROM facts "
            "WHERE thread_id = ? ORDER BY id",
            (thread_id,),
        )
        return [_stored_fact(row) for row in rows]


def _stored_fact(row: Sequence[Any]) -> StoredFact:
    return StoredFact(
        fact_id=int(row[0]),
        text=row[1],
        source_ids=tuple(json.loads(row[2])),
        refs=tuple(json.loads(row[3])),
        tokens=int(row[4]),
        distillation_id=int(row[5]),
        retired_at=None if row[6] is None else int(row[6]),
    )
