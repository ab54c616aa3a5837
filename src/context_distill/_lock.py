"""A lock that sync callers and coroutines share, first come first served.

One thread of conversation may be driven from a worker thread and from an event
loop at once (a LangGraph server does both). A coroutine must wait for the lock
without blocking its loop and without polling; a thread waits on an event. The
releaser hands the lock to the next waiter directly, so nobody can barge in.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque


class _Waiter:
    __slots__ = ("event", "future", "loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.loop = loop
        self.future = future
        self.event = threading.Event() if loop is None else None


class DualLock:
    """Mutual exclusion for threads and coroutines alike (not reentrant)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[_Waiter] = deque()

    def locked(self) -> bool:
        return self._held

    def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            waiter = _Waiter()
            self._waiters.append(waiter)
        assert waiter.event is not None
        waiter.event.wait()  # release() handed the lock over: _held stayed True

    async def aacquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._mutex:
            if not self._held:
                self._held = True
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append(_Waiter(loop, future))
        try:
            await future
        except asyncio.CancelledError:
            with self._mutex:
                handed = future.done() and not future.cancelled()
            if handed:  # the lock arrived as we were cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        with self._mutex:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.event is not None:
                    waiter.event.set()
                    return
                assert waiter.loop is not None and waiter.future is not None
                if waiter.future.cancelled():
                    continue
                if waiter.loop.is_closed():
                    continue
                waiter.loop.call_soon_threadsafe(_hand_over, waiter.future, self)
                return
            self._held = False

    def __enter__(self) -> DualLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _hand_over(future: asyncio.Future[None], lock: DualLock) -> None:
    """On the waiter's loop: wake it, or pass the lock on if it was cancelled meanwhile."""
    if future.cancelled():
        lock.release()
    else:
        future.set_result(None)
