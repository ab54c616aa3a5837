"""Reading the PostgreSQL archive: every read query, each on a pooled connection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from psycopg import Cursor, sql

from ..messages import from_json
from ..store.protocol import KINDS
from ..store.records import (
    DISTILLED,
    REDUCED,
    ArchivedMessage,
    SearchHit,
    StoredFact,
    ThreadSnapshot,
    stats_dict,
    storable,
)
from ..types import check_thread_id
from ._conn import Body, Connections, T
from ._schema import Names
from ._text import dec, enc, query_terms

Rows = list[tuple[Any, ...]]


class PostgresReader:
    """Everything that only reads the archive."""

    _db: Connections
    _n: Names

    def _read(self, body: Body[T], *, transaction: bool = False) -> T:
        return self._db.run(body, what="reading", transaction=transaction)

    def _rows(self, query: sql.Composed, params: Sequence[Any] = ()) -> Rows:
        def body(cur: Cursor[tuple[Any, ...]], _attempt: int) -> Rows:
            cur.execute(query, params)
            return cur.fetchall()

        return self._read(body)

    def load_thread(self, thread_id: str) -> ThreadSnapshot:
        """Everything a process needs to continue a thread (one consistent snapshot)."""
        check_thread_id(thread_id)
        q = self._n.q
        tid = enc(thread_id)

        def body(cur: Cursor[tuple[Any, ...]], _attempt: int) -> tuple[Rows, Rows, Any, Any]:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute(
                q("SELECT message_id, state, tokens, digest FROM {messages} WHERE thread_id = %s"),
                (tid,),
            )
            states = cur.fetchall()
            cur.execute(
                q(
                    "SELECT id, text, source_ids, refs, tokens, distillation_id, retired_at "
                    "FROM {facts} "
                    "WHERE thread_id = %s ORDER BY id"
                ),
                (tid,),
            )
            fact_rows = cur.fetchall()
            cur.execute(
                q("SELECT anchor, memory_cap, memory_pages FROM {threads} WHERE thread_id = %s"),
                (tid,),
            )
            thread = cur.fetchone()
            cur.execute(
                q(
                    "SELECT count(*) FILTER (WHERE outcome = 'ok'), "
                    "count(*) FILTER (WHERE outcome NOT IN ('ok', 'reduced')), "
                    "max(id) FILTER (WHERE outcome = 'ok') "
                    "FROM {distillations} WHERE thread_id = %s"
                ),
                (tid,),
            )
            return states, fact_rows, thread, cur.fetchone()

        states, fact_rows, thread, counts = self._read(body, transaction=True)
        distilled = frozenset(dec(row[0]) for row in states if row[1] == DISTILLED)
        reduced = frozenset(dec(row[0]) for row in states if row[1] == REDUCED)
        return ThreadSnapshot(
            thread_id=thread_id,
            distilled=distilled,
            reduced=reduced,
            facts=tuple(stored_fact(row) for row in fact_rows),
            anchor=dec(thread[0]) if thread else None,
            memory_cap=int(thread[1]) if thread and thread[1] is not None else None,
            memory_pages=dec(thread[2]) if thread and thread[2] is not None else None,
            last_distillation_id=int(counts[2] or 0),
            distilled_tokens=sum(int(row[2]) for row in states if row[1] == DISTILLED),
            distillations=int(counts[0] or 0),
            failures=int(counts[1] or 0),
            transcript={
                dec(row[0]): ArchivedMessage(dec(row[3]), int(row[2]), row[1]) for row in states
            },
        )

    def last_distillation_id(self, thread_id: str) -> int:
        """The newest committed distillation of a thread (0 if none): one index probe."""
        check_thread_id(thread_id)
        rows = self._rows(
            self._n.q(
                "SELECT max(id) FROM {distillations} WHERE thread_id = %s AND outcome = 'ok'"
            ),
            (enc(thread_id),),
        )
        return int(rows[0][0] or 0)

    def distilled_digests(self, thread_id: str, message_ids: Sequence[str]) -> dict[str, str]:
        """Content digests of those of ``message_ids`` that are distilled."""
        check_thread_id(thread_id)
        wanted = [enc(i) for i in dict.fromkeys(message_ids) if storable(i)]
        if not wanted:
            return {}
        rows = self._rows(
            self._n.q(
                "SELECT message_id, digest FROM {messages} WHERE thread_id = %s AND state = %s "
                "AND message_id = ANY(%s::text[])"
            ),
            (enc(thread_id), DISTILLED, wanted),
        )
        return {dec(row[0]): dec(row[1]) for row in rows}

    def get_messages(
        self, thread_id: str, *, ids: Sequence[str] = (), refs: Sequence[int] = ()
    ) -> list[tuple[int, BaseMessage]]:
        """Archived originals, exactly as they came in, by message id or archive number."""
        check_thread_id(thread_id)
        wanted = [enc(i) for i in ids if storable(i)]  # an unstorable id is not archived
        numbers = [int(ref) for ref in refs]
        if not wanted and not numbers:
            return []
        rows = self._rows(
            self._n.q(
                "SELECT seq, data FROM {messages} WHERE thread_id = %s "
                "AND (message_id = ANY(%s::text[]) OR seq = ANY(%s::bigint[])) ORDER BY seq"
            ),
            (enc(thread_id), wanted, numbers),
        )
        return [(int(row[0]), from_json(dec(row[1]))) for row in rows]

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
        order); operators and punctuation in it are text, never syntax.
        """
        if thread_id is not None:
            check_thread_id(thread_id)
        terms = query_terms(query)
        if not terms:
            return []
        q = self._n.q
        match = sql.SQL(" && ").join([q("phraseto_tsquery({cfg}, %s)") for _ in terms])
        scope = sql.SQL("AND t.thread_id = %s" if thread_id is not None else "")
        params: list[Any] = [*terms]
        if thread_id is not None:
            params.append(enc(thread_id))
        params.append(int(limit))
        ranked: list[tuple[float, SearchHit]] = []
        if "message" in kinds:
            statement = q(
                "SELECT t.thread_id, t.text, t.seq, t.message_id, t.role, t.state, "
                "ts_rank(t.search, q.query) AS rank FROM {messages} t, (SELECT {match} AS query) q "
                "WHERE t.search @@ q.query {scope} ORDER BY rank DESC, t.id LIMIT %s",
                match=match,
                scope=scope,
            )
            for row in self._rows(statement, params):
                message_id = dec(row[3])
                hit = SearchHit(
                    "message", dec(row[0]), dec(row[1]), int(row[2]), message_id,
                    (message_id,), dec(row[4]), row[5],
                )  # fmt: skip
                ranked.append((float(row[6]), hit))
        if "fact" in kinds:
            statement = q(
                "SELECT t.thread_id, t.text, t.source_ids, ts_rank(t.search, q.query) AS rank "
                "FROM {facts} t, (SELECT {match} AS query) q "
                "WHERE t.search @@ q.query {scope} ORDER BY rank DESC, t.id LIMIT %s",
                match=match,
                scope=scope,
            )
            for row in self._rows(statement, params):
                sources = tuple(json.loads(dec(row[2])))
                hit = SearchHit("fact", dec(row[0]), dec(row[1]), None, None, sources, None, None)
                ranked.append((float(row[3]), hit))
        ranked.sort(key=lambda item: -item[0])
        return [hit for _, hit in ranked[:limit]]

    def message_index(self, thread_id: str, *, preview: int = 160) -> list[dict[str, Any]]:
        """Every archived message of a thread in archive order, without its full text."""
        check_thread_id(thread_id)
        keys = "ref message_id role state tokens distillation_id archived_at chars preview"
        rows = self._rows(
            self._n.q(
                "SELECT seq, message_id, role, state, tokens, distillation_id, archived_at, "
                "length(text), substr(text, 1, %s) FROM {messages} WHERE thread_id = %s "
                "ORDER BY seq"
            ),
            (2 * preview, enc(thread_id)),
        )
        out = []
        for row in rows:
            entry = dict(zip(keys.split(), row, strict=True))
            entry["message_id"] = dec(entry["message_id"])
            entry["preview"] = dec(entry["preview"])[:preview]
            out.append(entry)
        return out

    def threads(self) -> list[str]:
        """Every thread id, oldest first."""
        rows = self._rows(self._n.q("SELECT thread_id FROM {threads} ORDER BY position"))
        return [dec(row[0]) for row in rows]

    def stats(self, thread_id: str | None = None) -> dict[str, Any]:
        """Counts and token totals, for one thread or the whole archive."""
        if thread_id is not None:
            check_thread_id(thread_id)
        where = sql.SQL("WHERE thread_id = %s" if thread_id is not None else "")
        params = (enc(thread_id),) if thread_id is not None else ()
        q = self._n.q

        def body(cur: Cursor[tuple[Any, ...]], _attempt: int) -> list[Any]:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            out = []
            for text in (
                "SELECT count(*), COALESCE(sum(tokens), 0), "
                "count(*) FILTER (WHERE state = 'distilled'), "
                "COALESCE(sum(tokens) FILTER (WHERE state = 'distilled'), 0) "
                "FROM {messages} {where}",
                "SELECT count(*), COALESCE(sum(tokens), 0) FROM {facts} {where}",
                "SELECT count(*), count(*) FILTER (WHERE outcome = 'ok'), "
                "count(*) FILTER (WHERE outcome NOT IN ('ok', 'reduced')), "
                "COALESCE(sum(duration_s), 0) FROM {distillations} {where}",
                "SELECT count(*) FROM {threads} {where}",
            ):
                cur.execute(q(text, where=where), params)
                out.append(cur.fetchone())
            return out

        msg, fact, log, threads = self._read(body, transaction=True)
        return stats_dict(
            threads=threads[0], messages=tuple(msg), facts=tuple(fact), log=tuple(log)
        )

    def distillations(self, thread_id: str) -> list[dict[str, Any]]:
        """The distillation log of a thread, oldest first."""
        check_thread_id(thread_id)
        keys = (
            "id created_at distiller outcome error groups messages facts tokens_before "
            "tokens_after source_tokens fact_tokens duration_s details"
        ).split()
        rows = self._rows(
            self._n.q(
                "SELECT id, created_at, distiller, outcome, error, groups, messages, facts, "
                "tokens_before, tokens_after, source_tokens, fact_tokens, duration_s, details "
                "FROM {distillations} WHERE thread_id = %s ORDER BY id"
            ),
            (enc(thread_id),),
        )
        out = []
        for row in rows:
            entry = dict(zip(keys, row, strict=True))
            for key in ("distiller", "outcome", "error"):
                entry[key] = dec(entry[key])
            entry["details"] = json.loads(dec(entry["details"]))
            out.append(entry)
        return out

    def facts(self, thread_id: str) -> list[StoredFact]:
        """A thread's facts, oldest first."""
        check_thread_id(thread_id)
        rows = self._rows(
            self._n.q(
                "SELECT id, text, source_ids, refs, tokens, distillation_id, retired_at "
                "FROM {facts} "
                "WHERE thread_id = %s ORDER BY id"
            ),
            (enc(thread_id),),
        )
        return [stored_fact(row) for row in rows]


def stored_fact(row: Sequence[Any]) -> StoredFact:
    return StoredFact(
        fact_id=int(row[0]),
        text=dec(row[1]),
        source_ids=tuple(json.loads(dec(row[2]))),
        refs=tuple(json.loads(dec(row[3]))),
        tokens=int(row[4]),
        distillation_id=int(row[5]),
        retired_at=None if row[6] is None else int(row[6]),
    )
