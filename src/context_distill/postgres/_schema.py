"""The PostgreSQL archive's schema, its migrations, and every statement it runs.

All tables live in one schema of their own (``context_distill`` by default), so they
sit beside a LangGraph checkpointer's tables without a clash. Statements are built
once per store from constant text, with the schema's names as quoted identifiers.
A migration runs in one transaction under an advisory lock: several processes
opening a new database at once migrate it once, and one killed mid-way leaves
nothing behind (DDL is transactional in PostgreSQL).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from psycopg import Cursor, sql

from ..errors import StoreError

SCHEMA_VERSION = 2
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_schema(schema: object) -> str:
    if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema must be a PostgreSQL name of letters, digits and '_' (at most 63), "
            f"not {schema!r}"
        )
    return schema


def _v1(cur: Cursor[tuple[object, ...]], n: Names) -> None:
    for statement in (
        "CREATE TEXT SEARCH DICTIONARY {stem} (TEMPLATE = pg_catalog.snowball, LANGUAGE = english)",
        "CREATE TEXT SEARCH CONFIGURATION {config} (COPY = pg_catalog.simple)",
        "ALTER TEXT SEARCH CONFIGURATION {config} ALTER MAPPING FOR asciiword, word WITH {stem}",
        """CREATE TABLE {threads} (
            thread_id text PRIMARY KEY,
            position bigint GENERATED ALWAYS AS IDENTITY,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            next_seq bigint NOT NULL DEFAULT 1,
            anchor text,
            memory_cap bigint
        )""",
        """CREATE TABLE {distillations} (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            thread_id text NOT NULL REFERENCES {threads} (thread_id) ON DELETE CASCADE,
            token text UNIQUE,
            created_at double precision NOT NULL,
            distiller text NOT NULL,
            outcome text NOT NULL,
            error text,
            groups integer NOT NULL,
            messages integer NOT NULL,
            facts integer NOT NULL,
            tokens_before bigint NOT NULL,
            tokens_after bigint NOT NULL,
            source_tokens bigint NOT NULL,
            fact_tokens bigint NOT NULL,
            duration_s double precision NOT NULL,
            details text NOT NULL
        )""",
        "CREATE INDEX distillations_thread ON {distillations} (thread_id, id)",
        # last_distillation_id is asked every turn: one probe of this index.
        "CREATE INDEX distillations_ok ON {distillations} (thread_id, id) WHERE outcome = 'ok'",
        """CREATE TABLE {messages} (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            thread_id text NOT NULL REFERENCES {threads} (thread_id) ON DELETE CASCADE,
            message_id text NOT NULL,
            seq bigint NOT NULL,
            role text NOT NULL,
            digest text NOT NULL,
            tokens bigint NOT NULL,
            text text NOT NULL,
            data text NOT NULL,
            state text NOT NULL,
            distillation_id bigint REFERENCES {distillations} (id) ON DELETE SET NULL,
            archived_at double precision NOT NULL,
            search tsvector NOT NULL,
            UNIQUE (thread_id, message_id),
            UNIQUE (thread_id, seq)
        )""",
        "CREATE INDEX messages_search ON {messages} USING gin (search)",
        "CREATE INDEX messages_distillation ON {messages} (distillation_id)",
        """CREATE TABLE {facts} (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            thread_id text NOT NULL REFERENCES {threads} (thread_id) ON DELETE CASCADE,
            distillation_id bigint NOT NULL REFERENCES {distillations} (id) ON DELETE CASCADE,
            text text NOT NULL,
            source_ids text NOT NULL,
            refs text NOT NULL,
            tokens bigint NOT NULL,
            created_at double precision NOT NULL,
            retired_at bigint,
            search tsvector NOT NULL
        )""",
        "CREATE INDEX facts_thread ON {facts} (thread_id, id)",
        "CREATE INDEX facts_distillation ON {facts} (distillation_id, id)",
        "CREATE INDEX facts_search ON {facts} USING gin (search)",
    ):
        cur.execute(n.q(statement))


def _v2(cur: Cursor[tuple[object, ...]], n: Names) -> None:
    """``memory_pages``: what the memory block shows, so that a restart keeps it."""
    cur.execute(n.q("ALTER TABLE {threads} ADD COLUMN IF NOT EXISTS memory_pages text"))


MIGRATIONS: tuple[tuple[int, Callable[[Cursor[tuple[object, ...]], Names], None]], ...] = (
    (1, _v1),
    (2, _v2),
)


class Names:
    """The schema's qualified names, and statements built from constant text with them."""

    def __init__(self, schema: str) -> None:
        self.schema = check_schema(schema)
        self._ids: dict[str, sql.Composable] = {
            table: sql.Identifier(schema, table)
            for table in ("threads", "messages", "facts", "distillations", "schema_version")
        }
        self._ids["stem"] = sql.Identifier(schema, "english_nostop")
        self._ids["config"] = sql.Identifier(schema, "words")
        # The configuration as a regconfig literal, for to_tsvector and the queries.
        self._ids["cfg"] = sql.SQL("{}::regconfig").format(sql.Literal('"' + schema + '".words'))
        self.version_table = '"' + schema + '".schema_version'
        self._built: dict[str, sql.Composed] = {}

    def q(self, text: str, **parts: sql.Composable) -> sql.Composed:
        """A statement from constant ``text``; ``{threads}`` etc. name this schema's objects,
        other ``{names}`` are the composed ``parts``."""
        if parts:
            return sql.SQL(text).format(**self._ids, **parts)
        built = self._built.get(text)
        if built is None:
            built = self._built[text] = sql.SQL(text).format(**self._ids)
        return built


def read_version(cur: Cursor[tuple[object, ...]], names: Names) -> int:
    """The schema version of the archive (0: none yet)."""
    cur.execute("SELECT to_regclass(%s)", (names.version_table,))
    row = cur.fetchone()
    if row is None or row[0] is None:
        return 0
    cur.execute(names.q("SELECT max(version) FROM {schema_version}"))
    row = cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0  # type: ignore[call-overload]


def migrate(cur: Cursor[tuple[object, ...]], names: Names, where: str) -> int:
    """Bring the schema up to date; the version it had.

    A session advisory lock lines migrating processes up; each migrates in a transaction
    begun once it holds the lock, so that it sees what the one before it committed.
    """
    conn = cur.connection
    key = ("context-distill:" + names.schema,)
    cur.execute("SELECT pg_advisory_lock(hashtext(%s))", key)
    if not conn.autocommit:
        conn.commit()
    try:
        with conn.transaction():
            return _migrate_locked(cur, names, where)
    finally:
        cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", key)
        if not conn.autocommit:
            conn.commit()


def _migrate_locked(cur: Cursor[tuple[object, ...]], names: Names, where: str) -> int:
    version = read_version(cur, names)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has schema version {version}, newer than this library understands "
            f"({SCHEMA_VERSION}); upgrade context-distill"
        )
    if version == SCHEMA_VERSION:
        return version
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (names.schema,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(names.schema)))
    if version == 0:
        cur.execute(names.q("CREATE TABLE {schema_version} (version integer NOT NULL)"))
        cur.execute(names.q("INSERT INTO {schema_version} (version) VALUES (0)"))
    for target, step in MIGRATIONS:
        if target > version:
            step(cur, names)
            cur.execute(names.q("UPDATE {schema_version} SET version = %s"), (target,))
    return version
