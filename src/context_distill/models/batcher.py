"""Merge concurrent calls from many threads into one batched model call.

The engine calls a distiller once per conversation thread, so with many threads the
model would run many small forward passes one after another. A small model is
cheap per token only in large batches; this batcher lets the first caller wait a
few milliseconds, collects whatever other threads submit meanwhile, runs one call
over all of it, and hands every caller its own slice back. Calls that arrive while
a batch runs wait and go together into the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class _Request(Generic[T, R]):
    __slots__ = ("done", "error", "items", "results")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.results: list[R] | None = None
        self.error: BaseException | None = None
        self.done = False


class MicroBatcher(Generic[T, R]):
    """Runs ``fn`` over the items of all concurrent :meth:`submit` calls at once.

    ``fn`` takes a list of items and returns one result per item, in order. Only one
    ``fn`` call runs at a time, which also keeps threads from fighting over the CPU
    cores inside the model. If a merged call fails, each request is retried alone,
    so one bad input cannot fail another thread's distillation.
    """

    def __init__(self, fn: Callable[[list[T]], list[R]], *, window_s: float = 0.002) -> None:
        self._fn = fn
        self._window_s = window_s
        self._cond = threading.Condition()
        self._pending: list[_Request[T, R]] = []
        self._busy = False
        self.calls = 0  # fn calls so far (for tests and stats)

    def submit(self, items: Sequence[T]) -> list[R]:
        """Results for ``items``, computed together with whatever else is submitted now."""
        request: _Request[T, R] = _Request(list(items))
        if not request.items:
            return []
        with self._cond:
            self._pending.append(request)
            while not request.done and self._busy:
                self._cond.wait()
            if request.done:
                return self._outcome(request)
            self._busy = True  # this caller leads the next batch
        try:
            if self._window_s > 0:
                time.sleep(self._window_s)
            with self._cond:
                batch, self._pending = self._pending, []
            self._run(batch)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return self._outcome(request)

    @staticmethod
    def _outcome(request: _Request[T, R]) -> list[R]:
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def _run(self, batch: list[_Request[T, R]]) -> None:
        merged = [item for request in batch for item in request.items]
        try:
            self.calls += 1
            results = self._fn(merged)
            if len(results) != len(merged):
                raise RuntimeError(
                    f"batched call returned {len(results)} results for {len(merged)}"
                )
        except BaseException as error:
            if len(batch) == 1:
                batch[0].error = error
            else:
                logger.warning(
                    "merged batch of %d requests failed (%s); retrying each", len(batch), error
                )
                for request in batch:
                    try:
                        self.calls += 1
                        request.results = self._fn(request.items)
                    except BaseException as single_error:
                        request.error = single_error
        else:
            start = 0
            for request in batch:
                request.results = results[start : start + len(request.items)]
                start += len(request.items)
        finally:
            with self._cond:
                for request in batch:
                    request.done = True
                self._cond.notify_all()
