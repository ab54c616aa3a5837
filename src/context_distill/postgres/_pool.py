"""The store's own connections: made in the calling thread, kept for the next call.

``psycopg_pool`` connects in background threads and, after a failed attempt, waits
1, 2, 4, 8, 16, 32 s before the next one: a call that asks for a connection while
the server is down can wait out that schedule long after the server is back, past
its own ``retry_s``. A connection made in the calling thread follows the caller's
retry loop instead, and with no thread of the pool's own a process forked from one
that used the store starts with nothing half-done.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import Connection
from psycopg.pq import TransactionStatus
from psycopg_pool import PoolTimeout

logger = logging.getLogger(__name__)

Conn = Connection[tuple[Any, ...]]


class PoolClosedError(RuntimeError):
    """A call on a store that was closed."""


class OwnPool:
    """At most ``max_size`` connections lent at once; idle ones kept, newest first."""

    def __init__(self, connect: Callable[[], Conn], max_size: int) -> None:
        if max_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {max_size}")
        self.max_size = max_size
        self._connect = connect
        self._slots = threading.BoundedSemaphore(max_size)
        self._lock = threading.Lock()
        self._idle: list[Conn] = []
        self._generation = 0  # one more in each forked child
        self.closed = False
        _POOLS.add(self)

    def keep(self, conn: Conn) -> None:
        """Take ``conn`` in as an idle connection (the one that opened the archive)."""
        self._put(conn, self._generation)

    @contextmanager
    def connection(self, timeout: float) -> Iterator[Conn]:
        if self.closed:
            raise PoolClosedError("the store is closed")
        slots, generation = self._slots, self._generation
        if not slots.acquire(timeout=timeout):
            raise PoolTimeout(f"all {self.max_size} connections busy for {timeout:.1f} s")
        try:
            conn = self._take()
            try:
                yield conn
            finally:
                self._put(conn, generation)
        finally:
            if generation == self._generation:
                slots.release()

    def discard_idle(self) -> None:
        """Close the idle connections: after a lost one, the others are likely lost too."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close(conn)

    def close(self) -> None:
        self.closed = True
        self.discard_idle()

    def _take(self) -> Conn:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not (conn.closed or conn.broken):
                    return conn
        return self._connect()

    def _put(self, conn: Conn, generation: int) -> None:
        if generation != self._generation:  # lent before this process was forked
            return  # the parent's: never close it here (see _forked)
        if conn.closed or conn.broken or self.closed:
            _close(conn)
            return
        if conn.info.transaction_status != TransactionStatus.IDLE:
            try:
                conn.rollback()
            except Exception:  # a connection that cannot roll back is dropped
                _close(conn)
                return
        with self._lock:
            self._idle.append(conn)

    def _forked(self) -> None:
        """In a forked child: start afresh. The parent's connections share their sockets
        with it, so they are dropped unclosed (closing one would end the parent's
        session; psycopg does not close a connection collected in another process)."""
        self._generation += 1
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_size)
        self._idle = []


def _close(conn: Conn) -> None:
    try:
        conn.close()
    except Exception as exc:  # closing a dead connection may fail; it is gone
        logger.debug("closing a connection failed: %s", exc)


_POOLS: weakref.WeakSet[OwnPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
