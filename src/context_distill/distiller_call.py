"""Asking the distiller: facts made ahead first, the rest within a timeout.

The distiller gets copies of the messages (it cannot change the originals), and
a sync call that overruns its timeout is abandoned to its worker thread, so a
hung model never hangs a turn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

from .commit import Outcome
from .distillers import Distiller
from .policy import Budget, Job, trim_to_ready
from .thread_state import ThreadState
from .types import Group, GroupFacts


def isolated(groups: Sequence[Group]) -> list[Group]:
    """Groups holding copies of their messages: a distiller cannot change the originals."""
    return [
        dataclasses.replace(group, messages=tuple(m.model_copy(deep=True) for m in group.messages))
        for group in groups
    ]


class DistillerRunner:
    """Runs one job's distiller call and reports its :class:`Outcome`."""

    def __init__(
        self, distiller: Distiller, budget: Budget, timeout_s: float | None, background: bool
    ) -> None:
        self._distiller = distiller
        self._budget = budget
        self._timeout_s = timeout_s
        self._background = background

    def call(self, groups: Sequence[Group]) -> list[GroupFacts]:
        """The distiller on some groups, within the timeout (it may keep running after)."""
        timeout = self._timeout_s
        groups = isolated(groups)
        if timeout is None:
            return self._distiller.distill(groups)
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["results"] = self._distiller.distill(groups)
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name="context-distill", daemon=True).start()
        if not done.wait(timeout):
            raise TimeoutError(f"distiller did not answer within {timeout} s")
        if "error" in box:
            raise box["error"]
        results: list[GroupFacts] = box["results"]
        return results

    def _prepared(self, thread: ThreadState, job: Job) -> list[GroupFacts | None]:
        """Facts made ahead for the job's groups; with background distillation the job
        shrinks to the groups that are ready, when they are enough."""
        found = thread.prefetch.peek(job.groups)
        if self._background and None in found:
            trim_to_ready(
                self._budget,
                thread.ledger,
                thread.memory.tokens,
                job,
                found,
                thread.totals.ratio,
            )
        thread.prefetch.discard(job.groups)
        return found

    def run(self, thread: ThreadState, job: Job) -> Outcome:
        started = time.perf_counter()
        if not self._background:
            thread.prefetch.wait(self._timeout_s)
        ready = self._prepared(thread, job)
        missing = [group for group, found in zip(job.groups, ready, strict=True) if found is None]
        try:
            fresh = self.call(missing) if missing else []
        except Exception as exc:
            return Outcome.failed(exc, started)
        return Outcome.succeeded(ready, fresh, len(missing), started)

    async def arun(self, thread: ThreadState, job: Job) -> Outcome:
        started = time.perf_counter()
        if not self._background and thread.prefetch.busy():
            await asyncio.to_thread(thread.prefetch.wait, self._timeout_s)
        ready = self._prepared(thread, job)
        missing = [group for group, found in zip(job.groups, ready, strict=True) if found is None]
        try:
            fresh: list[GroupFacts] = []
            if missing:
                call = self._distiller.adistill(isolated(missing))
                timeout = self._timeout_s
                fresh = await (call if timeout is None else asyncio.wait_for(call, timeout))
        except asyncio.TimeoutError:
            timed_out = TimeoutError(f"distiller did not answer within {self._timeout_s} s")
            return Outcome.failed(timed_out, started)
        except Exception as exc:
            return Outcome.failed(exc, started)
        return Outcome.succeeded(ready, fresh, len(missing), started)
