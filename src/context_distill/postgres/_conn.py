"""Where a store's connections come from, and how a call outlives a dropped one.

A store borrows a connection from a pool for each call. Given a connection string it
runs a pool of its own; given a caller's pool it borrows from that one; given a single
connection (as a LangGraph checkpointer holds) it opens a pool of its own to the same
database with the same credentials, because one connection cannot carry the
checkpointer's statements and a store transaction at once without mixing them.

A call that fails because the connection dropped or the server restarted is run
again on a fresh connection until ``retry_s`` has passed. Every write is safe to run
again: archiving is idempotent, and a distillation carries a token that lets a
retry after a commit whose answer was lost find the commit instead of repeating it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, Connection, Cursor
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ..errors import StoreError
from ._pool import OwnPool, PoolClosedError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Body = Callable[[Cursor[tuple[Any, ...]], int], T]

# Keyword arguments of psycopg.connect that are not connection parameters.
_CONNECT_ONLY = ("autocommit", "prepare_threshold", "row_factory", "cursor_factory", "context")


# Errors that say the connection or the server went away (or the server asks for a
# retry), not that the statement was wrong: the call is run again on a fresh connection.
_TRANSIENT = {"57P01", "57P02", "57P03", "40001", "40P01", "53300", "53400"}
# Of those, the ones that leave the session alive (a serialization failure, a deadlock).
_RETRY_SAME_SESSION = {"40001", "40P01"}


def transient(exc: psycopg.Error) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    state = exc.sqlstate
    if state is None:  # the client lost the connection: no answer from the server at all
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _TRANSIENT


def conninfo_of(target: object) -> str:
    """A connection string for the database ``target`` connects to."""
    if isinstance(target, str):
        return target
    if isinstance(target, (Connection, AsyncConnection)):
        params: dict[str, Any] = dict(target.info.get_parameters())
        if target.info.password:
            params["password"] = target.info.password
        return make_conninfo("", **params)
    if isinstance(target, AsyncConnectionPool) and isinstance(target.conninfo, str):
        kwargs = target.kwargs if isinstance(target.kwargs, dict) else {}
        extra = {k: v for k, v in kwargs.items() if k not in _CONNECT_ONLY}
        return make_conninfo(target.conninfo, **extra)
    raise TypeError(
        "PostgresMemoryStore needs a connection string, a psycopg_pool.ConnectionPool or a "
        f"psycopg connection, not {type(target).__name__}"
    )


def describe(conninfo: str) -> str:
    """Where a connection string points, without its password (for messages)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "PostgreSQL (unparsable connection string)"
    shown = [f"{key}={params[key]}" for key in ("host", "port", "dbname") if params.get(key)]
    return "PostgreSQL " + (" ".join(shown) or "(default connection)")


class Connections:
    """The pool a store borrows from, and the retry loop around each call."""

    def __init__(
        self, target: object, *, pool_size: int, retry_s: float, connect_timeout_s: float
    ) -> None:
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        if isinstance(target, ConnectionPool):
            self.pool: ConnectionPool[Any] | OwnPool = target
            conninfo = target.conninfo
            self.where = describe(conninfo) if isinstance(conninfo, str) else "PostgreSQL (pool)"
            return
        self.conninfo = conninfo_of(target)
        self.where = describe(self.conninfo)
        kwargs: dict[str, Any] = {"autocommit": True}
        try:
            params = conninfo_to_dict(self.conninfo)
        except psycopg.Error as exc:
            raise StoreError(f"not a usable PostgreSQL connection string: {exc}") from None
        if "connect_timeout" not in params:
            kwargs["connect_timeout"] = max(int(connect_timeout_s), 1)
        if "application_name" not in params:  # how the store's sessions show on the server
            kwargs["application_name"] = "context-distill"
        self.kwargs = kwargs
        self.pool = OwnPool(self._new_connection, pool_size)

    @property
    def owned(self) -> bool:
        """Whether the store runs its own connections (not a caller's pool)."""
        return isinstance(self.pool, OwnPool)

    def close(self) -> None:
        if isinstance(self.pool, OwnPool):
            self.pool.close()

    def run(self, body: Body[T], *, what: str, transaction: bool = True) -> T:
        """Run ``body(cursor, attempt)`` in one transaction, again after a lost connection."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.02
        attempt = 0
        while True:
            attempt += 1
            try:
                timeout = max(deadline - time.monotonic(), 0.5)
                with self.pool.connection(timeout=timeout) as conn:
                    if not transaction:
                        with conn.cursor(row_factory=tuple_row) as cur:
                            return body(cur, attempt)
                    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
                        return body(cur, attempt)
            except PoolClosedError as exc:
                raise StoreError(f"{what} {self.where} failed: {exc}") from None
            except psycopg.Error as exc:
                if not transient(exc) or time.monotonic() >= deadline:
                    raise StoreError(f"{what} {self.where} failed: {exc}") from exc
                if isinstance(self.pool, OwnPool) and exc.sqlstate not in _RETRY_SAME_SESSION:
                    self.pool.discard_idle()  # a lost session: the idle ones likely are too
                # Every attempt while a server is down would flood the log: 1st, 10th, 20th...
                log = logger.warning if attempt == 1 or attempt % 10 == 0 else logger.debug
                log("%s %s: %s; retrying (attempt %d)", what, self.where, exc, attempt)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except UnicodeEncodeError as exc:
                raise StoreError(
                    f"{what} {self.where} failed: text that is not valid Unicode ({exc})"
                ) from exc

    def _new_connection(self) -> Connection[tuple[Any, ...]]:
        return psycopg.connect(self.conninfo, row_factory=tuple_row, **self.kwargs)

    def open_with(self, prepare: Callable[[Cursor[tuple[Any, ...]]], None]) -> None:
        """Run ``prepare`` on a first connection of the store's own (to open the archive),
        then keep that connection for the first call."""
        assert isinstance(self.pool, OwnPool)
        try:
            conn = self._new_connection()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self.where}: {exc}") from exc
        try:
            with conn.cursor() as cur:
                prepare(cur)
        except BaseException:
            conn.close()
            raise
        self.pool.keep(conn)
