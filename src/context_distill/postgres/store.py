"""``PostgresMemoryStore``: one memory for many agent servers.

The same archive as the SQLite backend (threads, transcript, facts with their
sources, distillation log) in a PostgreSQL schema. Every write to a thread first
locks that thread's row, so writers in any number of processes and machines take
turns on a thread: archive numbers stay dense and unique, and a distillation either
sees the originals undistilled and commits whole, or raises ``DistilledElsewhere``
and writes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

import psycopg

from ..errors import StoreError
from ..store._threaded import ThreadedAsync
from ..store.records import (
    ARCHIVED,
    DISTILLED,
    Committed,
    DistillationLog,
    DistilledElsewhere,
    FactRecord,
    MessageRecord,
    check_same,
)
from ..types import check_thread_id
from ._conn import Body, Connections, T
from ._reads import PostgresReader
from ._schema import SCHEMA_VERSION, Names, migrate, read_version
from ._text import dec, enc
from ._writes import Cur, PostgresWriter

logger = logging.getLogger(__name__)


class PostgresMemoryStore(PostgresWriter, PostgresReader, ThreadedAsync):
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
                self._db.open_with(self._prepare)
            except psycopg.Error as exc:
                raise StoreError(f"cannot open the archive in {self.where}: {exc}") from exc
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
        tid = enc(thread_id)
        gone = [int(fact_id) for fact_id in retired]
        q = self._n.q

        def body(cur: Cur, _attempt: int) -> None:
            cur.execute(
                q("UPDATE {threads} SET memory_cap = %s, memory_pages = %s WHERE thread_id = %s"),
                (cap, None if pages is None else enc(pages), tid),
            )
            if gone:
                cur.execute(
                    q(
                        "UPDATE {facts} SET retired_at = %s WHERE thread_id = %s "
                        "AND retired_at IS NULL AND id = ANY(%s::bigint[])"
                    ),
                    (retired_at, tid, gone),
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
