"""Writing the PostgreSQL archive: the statements inside a write transaction.

Each runs on the cursor of a transaction that has locked the thread's row first
(``_lock_thread``), so no other writer of the thread is between them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from psycopg import Cursor

from ..errors import StoreError
from ..store.records import (
    REDUCED,
    Committed,
    DistillationLog,
    FactRecord,
    MessageRecord,
    StoredFact,
    check_same,
)
from ._reads import stored_fact
from ._schema import Names
from ._text import dec, enc, index_text

Cur = Cursor[tuple[Any, ...]]


class PostgresWriter:
    """The statements of the store's write transactions."""

    _n: Names

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
        """Archive messages not yet archived (one statement); every given id's number."""
        if not records:
            return {}
        first: dict[str, MessageRecord] = {}
        for record in records:  # an id twice in one call: the first is archived
            earlier = first.setdefault(record.message_id, record)
            if earlier is not record and state != REDUCED:
                check_same(thread_id, record, earlier.digest)
        batch = list(first.values())
        tid = enc(thread_id)
        cur.execute(
            self._n.q(
                "WITH r AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], "
                "%s::bigint[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY "
                "AS r(message_id, role, digest, tokens, text, data, words, n)), "
                "found AS (SELECT m.message_id, m.seq, m.digest, m.state FROM {messages} m "
                "WHERE m.thread_id = %s AND m.message_id IN (SELECT message_id FROM r)), "
                "fresh AS (SELECT r.*, %s + row_number() OVER (ORDER BY r.n) - 1 AS seq FROM r "
                "WHERE r.data IS NOT NULL AND r.message_id NOT IN (SELECT message_id FROM found)), "
                "added AS (INSERT INTO {messages} (thread_id, message_id, seq, role, digest, "
                "tokens, text, data, state, archived_at, search) "
                "SELECT %s, message_id, seq, role, digest, tokens, text, data, %s, %s, "
                "to_tsvector({cfg}, words) FROM fresh RETURNING message_id, seq), "
                "moved AS (UPDATE {threads} SET next_seq = next_seq + (SELECT count(*) FROM fresh) "
                "WHERE thread_id = %s) "
                "SELECT message_id, seq, digest, state FROM found "
                "UNION ALL SELECT message_id, seq, NULL, NULL FROM added"
            ),
            (
                [enc(r.message_id) for r in batch], [enc(r.role) for r in batch],
                [enc(r.digest) for r in batch], [r.tokens for r in batch],
                [enc(r.text) for r in batch], [enc(r.data) for r in batch],
                [index_text(r.text) if r.data is not None else "" for r in batch],
                tid, next_seq, tid, state, now, tid,
            ),
        )  # fmt: skip
        found: dict[str, tuple[int, str, str]] = {}
        added: dict[str, int] = {}
        for message_id, seq, digest, row_state in cur.fetchall():
            if digest is None:
                added[dec(message_id)] = int(seq)
            else:
                found[dec(message_id)] = (int(seq), dec(digest), row_state)
        refs: dict[str, int] = {}
        for record in records:
            known = found.get(record.message_id)
            if known is not None:
                if known[2] != REDUCED:  # a reduced result is archived as its original
                    check_same(thread_id, record, known[1])
                refs[record.message_id] = known[0]
            elif record.message_id in added:
                refs[record.message_id] = added[record.message_id]
            else:
                raise StoreError(
                    f"message {record.message_id!r} of thread {thread_id!r} should be archived "
                    "already but is not"
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
                "SELECT id, text, source_ids, refs, tokens, distillation_id, retired_at "
                "FROM {facts} "
                "WHERE distillation_id = %s ORDER BY id"
            ),
            (log_id,),
        )
        return Committed(log_id, refs, [stored_fact(row) for row in cur.fetchall()])
