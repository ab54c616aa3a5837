"""``PostgresMemoryStore``: one memory for many agent servers.

The same archive as the SQLite backend (threads, transcript, facts with their
sources, distillation log) in a PostgreSQL schema. Every write to a thread first
locks that thread's row, so writers in any number of processes and machines take
turns on a thread: archive numbers stay dense and unique, and a distillation either
sees the originals undistilled and commits whole, or raises ``DistilledElsewhere``
and writes nothing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import Cursor

from ..errors import StoreError
from ..store._threaded import ThreadedAsync
from ..store.records import (
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
from ..types import check_thread_id
from ._conn import Body, Connections, T
from ._reads import PostgresReader, stored_fact
from ._schema import SCHEMA_VERSION, Names, migrate, read_version
from ._text import dec, enc, index_text

logger = logging.getLogger(__name__)

Cur = Cursor[tuple[Any, ...]]


class PostgresMemoryStore(PostgresReader, ThreadedAsync):
    """The archive in PostgreSQL, shared by every process that opens the same database.

    ``target`` is a connection string (``postgresql://user:pw@host/db``), a
    ``psycopg_pool.ConnectionPool`` to borrow from, or a psycopg connection such as a
    LangGraph ``PostgresSaver``'s (the store then opens a small pool of its own to
    the same database). Tables live in ``schema``. A call that loses its connection
    (a restart, a failover) is retried on a fresh one for up to ``retry_s`` seconds
    without losing or repeating a write. ``read_only`` never writes (nor migrates).
    Async methods run the sync ones in a worker thread.
    """

    def __init__(
        self,
        target: object,
        *,
        schema: str = "context_distill",
        pool_size: int = 4,
        retry_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        read_only: bool = False,
    ) -> None:
        self._n = Names(schema)
        self.read_only = read_only
        self._db = Connections(
            target, pool_size=pool_size, retry_s=retry_s, connect_timeout_s=connect_timeout_s
        )
        self.where = f"{self._db.where} schema {schema}"
        if self._db.owned:
            try:
                with self._db.connect() as conn, conn.cursor() as cur:
                    self._prepare(cur)
            except psycopg.Error as exc:
                raise StoreError(f"cannot open the archive in {self.where}: {exc}") from exc
            self._db.open()
        else:
            self._db.run(
                lambda cur, _attempt: self._prepare(cur), what="opening", transaction=False
            )

    def _prepare(self, cur: Cur) -> None:
        if self.read_only:
            version = read_version(cur, self._n)
            if version == 0:
                raise StoreError(f"{self.where} holds no context-distill archive (no schema)")
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.where} has schema version {version}; this library reads version "
                    f"{SCHEMA_VERSION} (open it once for writing to migrate it)"
                )
            return
        if read_version(cur, self._n) == SCHEMA_VERSION:
            return
        if not cur.connection.autocommit:
            cur.connection.commit()
        before = migrate(cur, self._n, self.where)
        if before != SCHEMA_VERSION:
            logger.info("archive %s migrated to schema version %d", self.where, SCHEMA_VERSION)

    @property
    def schema_version(self) -> int:
        return self._read(lambda cur, _attempt: read_version(cur, self._n))

    # -- writes ---------------------------------------------------------------

    def _write(self, body: Body[T]) -> T:
        if self.read_only:
            raise StoreError(f"{self.where} is open read-only")
        return self._db.run(body, what="writing to")

    def _lock_thread(self, cur: Cur, tid: str, now: float) -> int:
        """Create or touch the thread's row, locking it to this transaction; its next seq."""
        cur.execute(
            self._n.q(
                "INSERT INTO {threads} (thread_id, created_at, updated_at) VALUES (%s, %s, %s) "
                "ON CONFLICT (thread_id) DO UPDATE SET updated_at = excluded.updated_at "
                "RETURNING next_seq"
            ),
            (tid, now, now),
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def _insert_messages(
        self,
        cur: Cur,
        thread_id: str,
        records: Sequence[MessageRecord],
        state: str,
        now: float,
        next_seq: int,
    ) -> dict[str, int]:
        """Archive messages not yet archived; every given id's archive number."""
        refs: dict[str, int] = {}
        if not records:
            return refs
        tid = enc(thread_id)
        q = self._n.q
        cur.execute(
            q(
                "SELECT message_id, seq, digest, state FROM {messages} "
                "WHERE thread_id = %s AND message_id = ANY(%s::text[])"
            ),
            (tid, [enc(r.message_id) for r in records]),
        )
        found = {dec(row[0]): (int(row[1]), dec(row[2]), row[3]) for row in cur.fetchall()}
        new: list[tuple[Any, ...]] = []
        for record in records:
            known = found.get(record.message_id)
            if known is not None:
                if known[2] != REDUCED:  # a reduced result is archived as its original
                    check_same(thread_id, record, known[1])
                refs[record.message_id] = known[0]
                continue
            if record.data is None:
                raise StoreError(
                    f"message {record.message_id!r} of thread {thread_id!r} should be archived "
                    "already but is not"
                )
            found[record.message_id] = (next_seq, record.digest, state)
            refs[record.message_id] = next_seq
            new.append(
                (
                    enc(record.message_id), next_seq, enc(record.role), enc(record.digest),
                    record.tokens, enc(record.text), enc(record.data), index_text(record.text),
                )
            )  # fmt: skip
            next_seq += 1
        if new:
            columns = [list(column) for column in zip(*new, strict=True)]
            cur.execute(
                q(
                    "INSERT INTO {messages} (thread_id, message_id, seq, role, digest, tokens, "
                    "text, data, state, archived_at, search) "
                    "SELECT %s, r.message_id, r.seq, r.role, r.digest, r.tokens, r.text, r.data, "
                    "%s, %s, to_tsvector({cfg}, r.words) "
                    "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::bigint[], "
                    "%s::text[], %s::text[], %s::text[]) "
                    "AS r(message_id, seq, role, digest, tokens, text, data, words)"
                ),
                (tid, state, now, *columns),
            )
            cur.execute(
                q("UPDATE {threads} SET next_seq = %s WHERE thread_id = %s"), (next_seq, tid)
            )
        return refs

    def _insert_log(self, cur: Cur, tid: str, log: DistillationLog, now: float, token: str) -> int:
        cur.execute(
            self._n.q(
                "INSERT INTO {distillations} (thread_id, token, created_at, distiller, outcome, "
                "error, groups, messages, facts, tokens_before, tokens_after, source_tokens, "
                "fact_tokens, duration_s, details) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
            ),
            (
                tid, token, now, enc(log.distiller), enc(log.outcome), enc(log.error),
                log.groups, log.messages, log.facts, log.tokens_before, log.tokens_after,
                log.source_tokens, log.fact_tokens, log.duration_s,
                enc(json.dumps(log.details, ensure_ascii=False, default=str)),
            ),
        )  # fmt: skip
        row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def _logged(self, cur: Cur, token: str) -> int | None:
        """The log id of the write carrying ``token``, if an earlier attempt committed it."""
        cur.execute(self._n.q("SELECT id FROM {distillations} WHERE token = %s"), (token,))
        row = cur.fetchone()
        return None if row is None else int(row[0])

    def archive(
        self, thread_id: str, records: Sequence[MessageRecord], *, state: str = ARCHIVED
    ) -> dict[str, int]:
        """Archive messages (already archived ones are left as they are)."""
        check_thread_id(thread_id)
        now = time.time()

        def body(cur: Cur, _attempt: int) -> dict[str, int]:
            next_seq = self._lock_thread(cur, enc(thread_id), now)
            return self._insert_messages(cur, thread_id, records, state, now, next_seq)

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
        token = uuid.uuid4().hex
        tid = enc(thread_id)
        q = self._n.q
        ids = [enc(record.message_id) for record in originals]

        def body(cur: Cur, attempt: int) -> Committed:
            next_seq = self._lock_thread(cur, tid, now)
            if attempt > 1:
                done = self._logged(cur, token)
                if done is not None:  # committed before the connection dropped
                    return self._committed(cur, tid, done, ids)
            cur.execute(
                q(
                    "SELECT message_id, digest FROM {messages} WHERE thread_id = %s "
                    "AND state = %s AND message_id = ANY(%s::text[]) ORDER BY seq"
                ),
                (tid, DISTILLED, ids),
            )
            taken = [(dec(row[0]), dec(row[1])) for row in cur.fetchall()]
            by_id = {record.message_id: record for record in originals}
            for message_id, digest in taken:  # another message under a used id?
                check_same(thread_id, by_id[message_id], digest)
            if taken:
                raise DistilledElsewhere(
                    f"message {taken[0][0]!r} of thread {thread_id!r} was distilled by "
                    "another writer meanwhile"
                )
            refs = self._insert_messages(cur, thread_id, originals, ARCHIVED, now, next_seq)
            log_id = self._insert_log(cur, tid, log, now, token)
            if ids:
                cur.execute(
                    q(
                        "UPDATE {messages} SET state = %s, distillation_id = %s "
                        "WHERE thread_id = %s AND message_id = ANY(%s::text[])"
                    ),
                    (state, log_id, tid, ids),
                )
            stored = self._insert_facts(cur, tid, log_id, facts, refs, now)
            if anchor is not None:
                cur.execute(
                    q("UPDATE {threads} SET anchor = %s WHERE thread_id = %s"), (enc(anchor), tid)
                )
            return Committed(log_id, refs, stored)

        return self._write(body)

    def _insert_facts(
        self,
        cur: Cur,
        tid: str,
        log_id: int,
        facts: Sequence[FactRecord],
        refs: dict[str, int],
        now: float,
    ) -> list[StoredFact]:
        if not facts:
            return []
        fact_refs = [tuple(sorted(refs[i] for i in f.source_ids if i in refs)) for f in facts]
        cur.execute(
            self._n.q(
                "INSERT INTO {facts} (thread_id, distillation_id, text, source_ids, refs, tokens, "
                "created_at, search) "
                "SELECT %s, %s, f.text, f.source_ids, f.refs, f.tokens, %s, "
                "to_tsvector({cfg}, f.words) "
                "FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[]) "
                "WITH ORDINALITY AS f(text, source_ids, refs, tokens, words, n) ORDER BY f.n "
                "RETURNING id"
            ),
            (
                tid, log_id, now,
                [enc(f.text) for f in facts],
                [enc(json.dumps(list(f.source_ids), ensure_ascii=False)) for f in facts],
                [json.dumps(list(r)) for r in fact_refs],
                [f.tokens for f in facts],
                [index_text(f.text) for f in facts],
            ),
        )  # fmt: skip
        fact_ids = sorted(int(row[0]) for row in cur.fetchall())  # assigned in insertion order
        return [
            StoredFact(fact_id, fact.text, fact.source_ids, r, fact.tokens, log_id)
            for fact_id, fact, r in zip(fact_ids, facts, fact_refs, strict=True)
        ]

    def _committed(self, cur: Cur, tid: str, log_id: int, ids: list[Any]) -> Committed:
        """A distillation committed by an earlier attempt, read back as it was returned."""
        q = self._n.q
        cur.execute(
            q(
                "SELECT message_id, seq FROM {messages} "
                "WHERE thread_id = %s AND message_id = ANY(%s::text[])"
            ),
            (tid, ids),
        )
        refs = {dec(row[0]): int(row[1]) for row in cur.fetchall()}
        cur.execute(
            q(
                "SELECT id, text, source_ids, refs, tokens, distillation_id FROM {facts} "
                "WHERE distillation_id = %s ORDER BY id"
            ),
            (log_id,),
        )
        return Committed(log_id, refs, [stored_fact(row) for row in cur.fetchall()])

    def set_memory_cap(self, thread_id: str, cap: int | None, *, state: str | None = None) -> None:
        """Remember the memory block's room and state, so a restart shows the same view."""
        check_thread_id(thread_id)

        def body(cur: Cur, _attempt: int) -> None:
            cur.execute(
                self._n.q(
                    "UPDATE {threads} SET memory_cap = %s, memory_state = %s WHERE thread_id = %s"
                ),
                (cap, enc(state), enc(thread_id)),
            )

        self._write(body)

    def record_failure(self, thread_id: str, log: DistillationLog) -> int:
        """Log a distillation that did not happen (the history stays as it was)."""
        check_thread_id(thread_id)
        now = time.time()
        token = uuid.uuid4().hex

        def body(cur: Cur, attempt: int) -> int:
            self._lock_thread(cur, enc(thread_id), now)
            done = self._logged(cur, token) if attempt > 1 else None
            if done is not None:  # committed before the connection dropped
                return done
            return self._insert_log(cur, enc(thread_id), log, now, token)

        return self._write(body)

    def delete_thread(self, thread_id: str) -> None:
        """Forget a thread: its messages, facts and log."""
        check_thread_id(thread_id)
        tid = enc(thread_id)
        q = self._n.q

        def body(cur: Cur, _attempt: int) -> None:
            cur.execute(q("SELECT 1 FROM {threads} WHERE thread_id = %s FOR UPDATE"), (tid,))
            for statement in (
                "DELETE FROM {facts} WHERE thread_id = %s",
                "DELETE FROM {messages} WHERE thread_id = %s",
                "DELETE FROM {distillations} WHERE thread_id = %s",
                "DELETE FROM {threads} WHERE thread_id = %s",
            ):
                cur.execute(q(statement), (tid,))

        self._write(body)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PostgresMemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PostgresMemoryStore({self.where!r})"
