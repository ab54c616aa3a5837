"""PostgreSQL for the tests: a real server, a fresh schema or database per test.

The server comes from ``$CONTEXT_DISTILL_TEST_PG`` (scripts/test.sh exports it) or,
when that is unset, from ``scripts/ensure_postgres.sh`` run here. Only if neither
gives a server do the PostgreSQL tests skip, saying why; under CI (``$CI`` set) they
fail instead, so a CI run never passes without having run them.

``PgTarget`` names one archive (a DSN and a schema) the way a path names an SQLite
file; ``CheckConnection`` reads it with SQLite-style SQL so the checks in
invariants.py run unchanged against both backends.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
ENSURE = REPO_ROOT / "scripts" / "ensure_postgres.sh"
ENV = "CONTEXT_DISTILL_TEST_PG"


@dataclass(frozen=True)
class PgTarget:
    """One PostgreSQL archive: a database and the schema the store keeps its tables in."""

    dsn: str
    schema: str

    def open(self, **options: Any) -> Any:
        from context_distill.postgres import PostgresMemoryStore

        return PostgresMemoryStore(self.dsn, schema=self.schema, **options)


def _ensure(*args: str) -> str:
    """Run ensure_postgres.sh; its DSN (the last line; "stop" prints none), or raise
    with its output."""
    done = subprocess.run(
        ["bash", str(ENSURE), *args], capture_output=True, text=True, timeout=600, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not (lines or args[0] == "stop"):
        raise RuntimeError(f"ensure_postgres.sh {' '.join(args)} failed: {done.stderr[-2000:]}")
    return lines[-1] if lines else ""


def unavailable(reason: str) -> None:
    """Skip a test that needs PostgreSQL, or fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is needed under CI: {reason}")
    pytest.skip(reason)


@functools.cache
def _server() -> tuple[str | None, str]:
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed (pip install 'context-distill[postgres]')"
    dsn = os.environ.get(ENV) or None
    if dsn is None:
        try:
            dsn = _ensure("start")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            return None, f"${ENV} is unset and no server could be started: {exc}"
    try:
        psycopg.connect(dsn, connect_timeout=10).close()
    except psycopg.Error as exc:
        return None, f"cannot connect to the test server ${ENV}: {exc}"
    return dsn, ""


def server_dsn() -> str:
    """The test server's DSN (skipping or failing the test if there is none)."""
    dsn, reason = _server()
    if dsn is None:
        unavailable(reason)
    assert dsn is not None
    return dsn


def admin(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def new_schema(dsn: str) -> PgTarget:
    return PgTarget(dsn, "t_" + uuid.uuid4().hex[:16])


def drop_schema(target: PgTarget) -> None:
    from psycopg import sql

    with admin(target.dsn) as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target.schema))
        )


def new_database(dsn: str) -> str:
    """A fresh, empty database on the server; its DSN."""
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = "cd_" + uuid.uuid4().hex[:16]
    with admin(dsn) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(dsn)
    if parts.scheme in ("postgresql", "postgres"):  # keep a URL a URL (open_store needs one)
        return urlunsplit(parts._replace(path="/" + name))
    return make_conninfo(dsn, dbname=name)


def drop_database(dsn: str) -> None:
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = str(conninfo_to_dict(dsn)["dbname"])
    with admin(make_conninfo(dsn, dbname="context_distill")) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@functools.cache
def restartable_dsn() -> str:
    """A server of its own that a test may crash and restart (the shared one stays up)."""
    server_dsn()  # skip or fail as the other tests do when there is no PostgreSQL at all
    try:
        return _ensure("start", "restart")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"no restartable server: {exc}")
        raise


def crash_server() -> None:
    """Stop the restartable server as a power cut would, and start it again."""
    _ensure("crash", "restart")


def stop_server() -> None:
    """Stop the restartable server (fast shutdown); ``start_server`` brings it back."""
    _ensure("stop", "restart")


def start_server() -> None:
    _ensure("start", "restart")


def target_of(store: Any) -> Any:
    """What the checks open to read a store's archive: its path, or its PgTarget."""
    path = getattr(store, "path", None)
    if path is not None:
        return path
    return PgTarget(store._db.conninfo, store._n.schema)


# -- reading an archive for the checks -------------------------------------------------


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class CheckConnection:
    """A read connection to a PostgreSQL archive that takes the checks' SQLite-style SQL.

    ``?`` placeholders become ``%s``, the schema is the search path, ``BEGIN`` takes a
    snapshot (repeatable read), and stored text comes back decoded.
    """

    def __init__(self, target: PgTarget) -> None:
        from psycopg import sql

        self._conn = admin(target.dsn)
        self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(target.schema)))

    def execute(self, statement: str, params: Sequence[Any] = ()) -> _Rows:
        from context_distill.postgres._text import dec, enc

        if statement.strip().upper() == "BEGIN":
            statement = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
        cur = self._conn.execute(statement.replace("?", "%s"), [enc(p) for p in params])
        if cur.description is None:
            return _Rows([])
        return _Rows(
            [tuple(dec(v) if isinstance(v, str) else v for v in row) for row in cur.fetchall()]
        )

    def close(self) -> None:
        self._conn.close()


def schema_version(target: PgTarget) -> int:
    with admin(target.dsn) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (f'"{target.schema}".schema_version',))
        if row.fetchone()[0] is None:
            return 0
        from psycopg import sql

        found = conn.execute(
            sql.SQL("SELECT version FROM {}").format(
                sql.Identifier(target.schema, "schema_version")
            )
        ).fetchone()
        return int(found[0]) if found else 0
