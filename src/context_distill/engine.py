"""The engine: a thread's history in, its compact view out, everything archived.

A turn follows DESIGN.md's data flow: intake (the new messages into the ledger
and the archive, in one transaction), policy (over budget? which groups?), the
distiller, commit (facts stored, or the failure recorded), and the view. Sync
and async entry points run the same steps; the async one awaits the distiller
and runs store I/O in worker threads, so it never blocks its event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage, ToolMessage

from .commit import Committer, Outcome
from .distiller_call import DistillerRunner, isolated
from .distillers import Distiller, resolve_distiller
from .errors import StoreError
from .intake import Intake
from .ledger import TokenCache
from .message_input import MessagesInput, coerce_messages
from .messages import derived_id, marker
from .policy import Budget, Job, over_budget_reason
from .store import MemoryStore, SQLiteMemoryStore
from .thread_state import ThreadState
from .tiering import ahead, plan
from .tokens import TextCounter, resolve_counter
from .types import check_thread_id

_MAX_THREADS_CACHED = 1024


@dataclass(frozen=True, slots=True)
class ContextStats:
    """Where a thread stands after a turn."""

    thread_id: str
    messages: int  # messages seen in this thread, distilled ones included
    tokens_in: int  # tokens of the full history
    tokens_view: int  # tokens of the view returned
    peak_view_tokens: int
    distillations: int
    failures: int
    facts: int
    facts_shown: int
    over_budget: bool  # the view exceeds the budget
    reason: str | None = None  # why, when it does
    # How the view spends its tokens: pinned prompt, memory block, the turns after it.
    pinned_tokens: int = 0
    memory_tokens: int = 0
    recent_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ContextUpdate:
    """The result of one turn: the view, whether it departs from the input, the stats."""

    view: list[BaseMessage]
    changed: bool  # something was distilled or reduced this turn
    distilled: bool  # a distillation into the memory block committed this turn
    stats: ContextStats


class ContextDistiller:
    """Keeps each thread's context within a token budget by distilling its oldest turns.

    ``process(thread_id, messages)`` returns the messages the model should see: the
    system prompt, the task, a memory block of facts, and the recent turns word for
    word (older tool results among them reduced to their facts). Every message is
    archived in ``store`` by the time the call returns. ``memory_share``: the share of
    the budget beside the pinned prompt that the memory block is guaranteed.
    """

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        budget_tokens: int,
        target_tokens: int | None = None,
        keep_recent_tokens: int | None = None,
        distiller: str | Distiller = "extractive",
        token_counter: str | Callable[[str], int] = "o200k_base",
        max_tool_result_tokens: int | None = None,
        distill_timeout_s: float | None = 120.0,
        recall_tool: str | None = None,
        background: bool = False,
        background_at: float = 0.8,
        memory_share: float | None = None,
    ) -> None:
        self.budget = Budget.of(
            budget_tokens,
            target_tokens,
            keep_recent_tokens,
            max_tool_result_tokens,
            background_at,
            memory_share,
        )
        if distill_timeout_s is not None and distill_timeout_s <= 0:
            raise ValueError(f"distill_timeout_s must be positive or None, not {distill_timeout_s}")
        self.store: MemoryStore = store if store is not None else SQLiteMemoryStore(":memory:")
        self.distill_timeout_s = distill_timeout_s
        self.distiller = resolve_distiller(distiller)
        self.recall_tool = recall_tool
        self.background = background
        self._count: TextCounter = resolve_counter(token_counter)
        self._tokens = TokenCache(self._count)
        self._intake = Intake(self.store, self._tokens, self.budget, self._reduce)
        self._committer = Committer(self.store, self.budget, self.distiller.name, self._tokens)
        self._runner = DistillerRunner(self.distiller, self.budget, distill_timeout_s, background)
        self._threads: OrderedDict[str, ThreadState] = OrderedDict()
        self._threads_lock = threading.Lock()

    @property
    def budget_tokens(self) -> int:
        return self.budget.budget_tokens

    @property
    def target_tokens(self) -> int:
        return self.budget.target_tokens

    @property
    def keep_recent_tokens(self) -> int:
        return self.budget.keep_recent_tokens

    @property
    def max_tool_result_tokens(self) -> int:
        return self.budget.max_tool_result_tokens

    @property
    def memory_share(self) -> float:
        return self.budget.memory_share

    # -- public API -------------------------------------------------------------

    def process(self, thread_id: str, messages: MessagesInput) -> list[BaseMessage]:
        """The view of ``messages`` the model should see (distilling first if over budget)."""
        return self.update(thread_id, messages).view

    async def aprocess(self, thread_id: str, messages: MessagesInput) -> list[BaseMessage]:
        """Async twin of :meth:`process`."""
        return (await self.aupdate(thread_id, messages)).view

    def update(self, thread_id: str, messages: MessagesInput) -> ContextUpdate:
        """Like :meth:`process`, with whether the view changed and the thread's stats."""
        messages = coerce_messages(messages)
        thread = self._thread(thread_id)
        with thread.lock:
            version = thread.version
            distilled = False
            job = self._begin(thread, messages)
            while job is not None:
                outcome = self._runner.run(thread, job)
                committed, job = self._settle(thread, job, outcome)
                distilled = distilled or committed
            return self._end(thread, version, distilled)

    async def aupdate(self, thread_id: str, messages: MessagesInput) -> ContextUpdate:
        """Async twin of :meth:`update`: the same steps, with store I/O and bookkeeping in
        worker threads and the distiller awaited, so the event loop never waits."""
        messages = coerce_messages(messages)
        thread = self._thread(thread_id)
        await thread.lock.aacquire()
        try:
            version = thread.version
            distilled = False
            job = await asyncio.to_thread(self._begin, thread, messages)
            while job is not None:
                outcome = await self._runner.arun(thread, job)
                committed, job = await asyncio.to_thread(self._settle, thread, job, outcome)
                distilled = distilled or committed
            return await asyncio.to_thread(self._end, thread, version, distilled)
        finally:
            thread.lock.release()

    def stats(self, thread_id: str) -> ContextStats:
        """The thread's stats as of its last turn in this process."""
        thread = self._thread(thread_id)
        with thread.lock:
            return self._stats(thread, thread.ledger.view_tokens(thread.memory.tokens))

    def shown_ids(self, thread_id: str) -> frozenset[str]:
        """Ids of the messages the thread's latest view shows word for word."""
        thread = self._thread(thread_id)
        with thread.lock:
            ledger = thread.ledger
            shown = set(ledger.pinned_ids)
            for group in (*ledger.head_groups(), *ledger.groups):
                shown.update(
                    i for i, m in zip(group.ids, group.messages, strict=True) if not marker(m)
                )
            return frozenset(shown)

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait until no background distillation is running; False if ``timeout`` passed.

        For a clean shutdown, or a test that wants the facts made ahead to be ready.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._threads_lock:
            threads = list(self._threads.values())
        for thread in threads:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not thread.prefetch.wait(left):
                return False
        return True

    def forget(self, thread_id: str, *, archive: bool = True) -> None:
        """Drop a thread's cached state; with ``archive`` also delete it from the store."""
        self._drop(thread_id)
        if archive:
            self.store.delete_thread(thread_id)

    async def aforget(self, thread_id: str, *, archive: bool = True) -> None:
        """Async twin of :meth:`forget`."""
        self._drop(thread_id)
        if archive:
            await self.store.adelete_thread(thread_id)

    def _drop(self, thread_id: str) -> None:
        check_thread_id(thread_id)
        with self._threads_lock:
            self._threads.pop(thread_id, None)

    # -- one turn ---------------------------------------------------------------

    def _thread(self, thread_id: str) -> ThreadState:
        check_thread_id(thread_id)
        with self._threads_lock:
            thread = self._threads.get(thread_id)
            if thread is None:
                thread = ThreadState.new(thread_id, self._count, self.recall_tool)
                self._threads[thread_id] = thread
                while len(self._threads) > _MAX_THREADS_CACHED:
                    oldest = next(iter(self._threads))
                    if self._threads[oldest].lock.locked():
                        break
                    del self._threads[oldest]
            else:
                self._threads.move_to_end(thread_id)
            return thread

    def _begin(self, thread: ThreadState, messages: Sequence[BaseMessage]) -> Job | None:
        """Intake, then the policy's first decision."""
        try:
            self._intake.take_in(thread, messages)
        except BaseException:
            thread.archive.loaded = False  # rebuild from the store on the next call
            raise
        return self._plan(thread, 0)

    def _settle(self, thread: ThreadState, job: Job, outcome: Outcome) -> tuple[bool, Job | None]:
        """Commit (or record the failure), then the policy's next decision, if any."""
        result = self._committer.finish(thread, job, outcome)
        if result == "stopped":
            return False, None
        return result == "committed", self._plan(thread, job.round + 1)

    def _end(self, thread: ThreadState, version: int, distilled: bool) -> ContextUpdate:
        """Save what the memory block changed, start background work, build the view."""
        if self._memory_unsaved(thread):
            self._committer.save_memory(thread)
        self._maybe_prefetch(thread)
        return self._result(thread, version, distilled)

    @staticmethod
    def _memory_unsaved(thread: ThreadState) -> bool:
        memory = thread.memory
        archive = thread.archive
        return (
            memory.retired_pending
            or memory.cap != archive.saved_cap
            or memory.pages_written != archive.saved_pages
        )

    def _reduce(self, message: ToolMessage, message_id: str, tokens: int) -> ToolMessage | None:
        from .distillers.extractive import reduce_tool_result

        return reduce_tool_result(
            message, message_id, tokens, self.budget.max_tool_result_tokens, self._count
        )

    def _plan(self, thread: ThreadState, round_: int) -> Job | None:
        """The policy's decision for this round, as a job (tiering.plan)."""
        return plan(
            self.budget,
            thread,
            round_,
            lambda mid: self._original(thread, mid),
            thread.prefetch.peek if self.background else None,
            self.recall_tool,
        )

    def _original(self, thread: ThreadState, message_id: str) -> tuple[BaseMessage, int] | None:
        """An archived original and its tokens, read back for a distillation."""
        try:
            found = self.store.get_messages(thread.thread_id, ids=[message_id])
        except StoreError:
            return None
        if not found:
            return None
        message = found[0][1]
        return message, self._tokens.message_tokens(message, message_id, None)

    def _maybe_prefetch(self, thread: ThreadState) -> None:
        """Past the soft threshold, distill the groups the next crossing will need, aside."""
        if not self.background or thread.prefetch.busy():
            return
        view = thread.ledger.view_tokens(thread.memory.tokens)
        if not self.budget.background_at_tokens <= view <= self.budget.budget_tokens:
            return
        if thread.health.turn < thread.health.retry_turn:
            return
        groups = ahead(
            self.budget, thread, lambda mid: self._original(thread, mid), self.recall_tool
        )
        todo = thread.prefetch.missing(groups, thread.ledger.live_ids)
        if todo:
            thread.prefetch.start(
                thread.thread_id,
                todo,
                lambda groups: self.distiller.distill(isolated(groups)),
                thread.memory.prepare,
            )

    # -- the view -------------------------------------------------------------------

    def _result(self, thread: ThreadState, version: int, distilled: bool) -> ContextUpdate:
        ledger = thread.ledger
        thread.memory.recall_tool = self.recall_tool
        view = ledger.view(thread.memory.message())
        tokens_view = ledger.view_tokens(thread.memory.tokens)
        thread.totals.peak = max(thread.totals.peak, tokens_view)
        cursor = thread.cursor
        cursor.view_len = len(view)
        last = view[-1] if view else None
        cursor.view_last_id = (
            (last.id or derived_id(last, len(view) - 1)) if last is not None else None
        )
        return ContextUpdate(
            view=view,
            changed=thread.version != version,
            distilled=distilled,
            stats=self._stats(thread, tokens_view),
        )

    def _stats(self, thread: ThreadState, tokens_view: int) -> ContextStats:
        ledger = thread.ledger
        health = thread.health
        totals = thread.totals
        failing = health.last_error if health.failures_in_row else None
        reason = over_budget_reason(self.budget, ledger, tokens_view, failing)
        return ContextStats(
            thread_id=thread.thread_id,
            messages=totals.base_messages + ledger.messages_seen,
            tokens_in=totals.base_tokens + ledger.tokens_seen,
            tokens_view=tokens_view,
            peak_view_tokens=totals.peak,
            distillations=totals.distillations,
            failures=health.failures,
            facts=thread.memory.facts,
            facts_shown=thread.memory.facts - thread.memory.hidden,
            over_budget=reason is not None,
            reason=reason,
            pinned_tokens=ledger.pinned_tokens,
            memory_tokens=thread.memory.tokens,
            recent_tokens=ledger.head_tokens() + ledger.live_tokens,
        )
