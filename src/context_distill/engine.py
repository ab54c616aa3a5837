"""The engine: budget in, compact view out, everything archived on the way.

``ContextDistiller.process`` is called with a thread's history on every turn. It
brings the thread's ledger up to date with the new messages only, and when the
view passes the budget it distills the oldest whole groups, commits originals,
facts and the log entry in one transaction, and returns the compact view. Sync
and async entry points share every rule; they differ only in how they wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage

from ._idset import IdSet
from ._relevance import focus_of
from .dates import advance, from_iso, to_iso
from .distillers import Distiller, resolve_distiller
from .errors import InvalidMessageError, InvalidThreadIdError, StoreError
from .ledger import Ledger, LiveGroup, TokenCache
from .memory import MemoryBlock
from .messages import MEMORY_MARK, derived_id, describe, digest, marker, text_of, to_json
from .store import (
    REDUCED,
    DistillationLog,
    DistilledElsewhere,
    FactRecord,
    MessageRecord,
    SQLiteMemoryStore,
)
from .tokens import TextCounter, resolve_counter
from .types import Fact, Group, GroupFacts

logger = logging.getLogger(__name__)

_MAX_ROUNDS = 4  # distillation rounds in one turn before the view is returned anyway
_TARGET_SHARE = 0.6  # of the budget beside the pinned prompt, where distillation stops
_MAX_BACKOFF_TURNS = 32
_MAX_THREADS_CACHED = 1024
_TARGET_RATIO = 0.35  # facts per source token that budget-aware distillers aim at


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


@dataclass(frozen=True, slots=True)
class ContextUpdate:
    """The result of one turn: the view, whether it departs from the input, the stats."""

    view: list[BaseMessage]
    changed: bool  # something was distilled or reduced this turn
    distilled: bool  # a distillation committed this turn
    stats: ContextStats


@dataclass(slots=True)
class _Job:
    """A distillation the engine decided on: which groups, and where the view stood."""

    live: list[LiveGroup]
    groups: list[Group]
    tokens_before: int
    anchor_after: datetime | None
    round: int
    done: list[LiveGroup] = field(default_factory=list)  # distilled before: drop, no facts


@dataclass(slots=True)
class _Outcome:
    results: list[GroupFacts] | None = None
    error: BaseException | None = None
    outcome: str = "ok"
    duration_s: float = 0.0
    prefetched: int = 0  # groups whose facts were made in the background


def clean_fact_text(text: str) -> str:
    """A fact on one line, spaces collapsed: how the memory block shows it."""
    return " ".join(text.replace("\r", " ").replace("\n", " ; ").split())


def _failed(error: BaseException, started: float) -> _Outcome:
    outcome = "timeout" if isinstance(error, TimeoutError) else "failed"
    return _Outcome(error=error, outcome=outcome, duration_s=time.perf_counter() - started)


def _succeeded(
    ready: list[GroupFacts | None], fresh: list[GroupFacts], missing: int, started: float
) -> _Outcome:
    return _Outcome(
        results=_merge(ready, fresh),
        duration_s=time.perf_counter() - started,
        prefetched=len(ready) - missing,
    )


def _isolated(groups: Sequence[Group]) -> list[Group]:
    """Groups holding copies of their messages: a distiller cannot change the originals."""
    return [
        dataclasses.replace(group, messages=tuple(m.model_copy(deep=True) for m in group.messages))
        for group in groups
    ]


def _prepared_key(group: Group) -> tuple[Any, ...]:
    return (group.message_ids, group.anchor, group.target_tokens)


def _merge(ready: list[GroupFacts | None], fresh: list[GroupFacts]) -> list[GroupFacts]:
    """Prepared results in place, fresh ones filling the gaps in order."""
    if not isinstance(fresh, list):
        return fresh  # let the output check name what came back
    supply = iter(fresh)
    merged: list[Any] = [found if found is not None else next(supply, None) for found in ready]
    # A shortfall leaves None in place and a surplus hangs off the end: the output
    # check then names the mismatch.
    return merged + list(supply)


@dataclass(slots=True)
class _Thread:
    thread_id: str
    ledger: Ledger
    memory: MemoryBlock
    lock: threading.Lock = field(default_factory=threading.Lock)
    loaded: bool = False
    n_seen: int = 0
    last_id: str | None = None
    view_len: int = 0
    view_last_id: str | None = None
    anchor: datetime | None = None
    anchor_ready: bool = False
    turn: int = 0
    retry_turn: int = 0
    failures_in_row: int = 0
    distillations: int = 0
    failures: int = 0
    base_tokens: int = 0  # tokens of distilled messages not passed in again
    base_messages: int = 0
    peak: int = 0
    ratio: float = 0.35  # facts per source token, learned as we go
    version: int = 0
    last_error: str | None = None
    skip: frozenset[str] = frozenset()  # distilled ids a view-style input still holds
    shown_again: frozenset[str] = frozenset()  # distilled, yet shown (a rewound history)
    # Background distillation: facts made ahead of time, keyed by what they were made of.
    prepared: dict[tuple[Any, ...], GroupFacts] = field(default_factory=dict)
    prepared_lock: threading.Lock = field(default_factory=threading.Lock)
    prefetching: threading.Event | None = None  # set when the running prefetch ends
    archived_ahead: set[str] = field(default_factory=set)  # archived by a prefetch
    distilled_ids: IdSet = field(default_factory=IdSet)  # ids out of the view for good
    last_log_id: int = 0  # newest committed distillation of this thread we know of
    data_version: int = -1  # the store's PRAGMA data_version when last checked


def _id_at(messages: Sequence[BaseMessage], index: int) -> str | None:
    message = messages[index]
    if not isinstance(message, BaseMessage):
        return None  # not a message: the ledger refuses it with InvalidMessageError
    return message.id or derived_id(message, index)


class ContextDistiller:
    """Keeps each thread's context within a token budget by distilling its oldest turns.

    ``process(thread_id, messages)`` returns the messages the model should see: the
    system prompt, the task, a memory block of facts, and the recent turns word for
    word. Originals are archived in ``store`` before they leave the view.
    """

    def __init__(
        self,
        store: SQLiteMemoryStore | None = None,
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
    ) -> None:
        if not isinstance(budget_tokens, int) or budget_tokens <= 0:
            raise ValueError(f"budget_tokens must be a positive integer, not {budget_tokens!r}")
        target = int(budget_tokens * _TARGET_SHARE) if target_tokens is None else target_tokens
        if not 0 < target <= budget_tokens:
            raise ValueError(
                f"target_tokens must be between 1 and budget_tokens ({budget_tokens}), not {target}"
            )
        keep = budget_tokens // 8 if keep_recent_tokens is None else keep_recent_tokens
        if not 0 <= keep <= budget_tokens:
            raise ValueError(f"keep_recent_tokens must be between 0 and budget_tokens, not {keep}")
        max_result = (
            max(budget_tokens // 4, 64)
            if max_tool_result_tokens is None
            else max_tool_result_tokens
        )
        if max_result <= 0:
            raise ValueError(f"max_tool_result_tokens must be positive, not {max_result}")
        if distill_timeout_s is not None and distill_timeout_s <= 0:
            raise ValueError(f"distill_timeout_s must be positive or None, not {distill_timeout_s}")
        self.store = store if store is not None else SQLiteMemoryStore(":memory:")
        self.budget_tokens = budget_tokens
        self.target_tokens = target
        self._target_given = target_tokens is not None
        self.keep_recent_tokens = keep
        self.max_tool_result_tokens = max_result
        self.distill_timeout_s = distill_timeout_s
        self.distiller = resolve_distiller(distiller)
        self.recall_tool = recall_tool
        if not 0 < background_at <= 1:
            raise ValueError(f"background_at must be a fraction of the budget, not {background_at}")
        self.background = background
        self.background_at_tokens = max(int(budget_tokens * background_at), 1)
        self._count: TextCounter = resolve_counter(token_counter)
        self._tokens = TokenCache(self._count)
        self._threads: OrderedDict[str, _Thread] = OrderedDict()
        self._threads_lock = threading.Lock()

    # -- public API -------------------------------------------------------------

    def process(self, thread_id: str, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """The view of ``messages`` the model should see (distilling first if over budget)."""
        return self.update(thread_id, messages).view

    async def aprocess(self, thread_id: str, messages: Sequence[BaseMessage]) -> list[BaseMessage]:
        """Async twin of :meth:`process`."""
        return (await self.aupdate(thread_id, messages)).view

    def update(self, thread_id: str, messages: Sequence[BaseMessage]) -> ContextUpdate:
        """Like :meth:`process`, with whether the view changed and the thread's stats."""
        thread = self._thread(thread_id)
        with thread.lock:
            version = thread.version
            distilled = False
            job = self._begin(thread, messages)
            self._flush_reduced(thread)
            while job is not None:
                outcome = self._run(thread, job)
                job, done = self._finish(thread, job, outcome)
                distilled = distilled or done
            self._maybe_prefetch(thread)
            return self._result(thread, version, distilled)

    async def aupdate(self, thread_id: str, messages: Sequence[BaseMessage]) -> ContextUpdate:
        """Async twin of :meth:`update`."""
        thread = self._thread(thread_id)
        while not thread.lock.acquire(blocking=False):
            await asyncio.sleep(0.002)
        try:
            version = thread.version
            distilled = False
            job = self._begin(thread, messages)
            if thread.ledger.to_archive:
                await asyncio.to_thread(self._flush_reduced, thread)
            while job is not None:
                outcome = await self._arun(thread, job)
                job, done = await asyncio.to_thread(self._finish, thread, job, outcome)
                distilled = distilled or done
            self._maybe_prefetch(thread)
            return self._result(thread, version, distilled)
        finally:
            thread.lock.release()

    def stats(self, thread_id: str) -> ContextStats:
        """The thread's stats as of its last turn in this process."""
        thread = self._thread(thread_id)
        with thread.lock:
            return self._stats(thread, thread.ledger.view_tokens(thread.memory.tokens))

    def wait_background(self, timeout: float | None = None) -> bool:
        """Wait until no background distillation is running; False if ``timeout`` passed.

        For a clean shutdown, or a test that wants the facts made ahead to be ready.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._threads_lock:
            events = [t.prefetching for t in self._threads.values() if t.prefetching is not None]
        for event in events:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not event.wait(left):
                return False
        return True

    def forget(self, thread_id: str, *, archive: bool = True) -> None:
        """Drop a thread's cached state; with ``archive`` also delete it from the store."""
        with self._threads_lock:
            self._threads.pop(thread_id, None)
        if archive:
            self.store.delete_thread(thread_id)

    # -- threads ----------------------------------------------------------------

    def _thread(self, thread_id: str) -> _Thread:
        if not isinstance(thread_id, str) or not thread_id:
            raise InvalidThreadIdError(f"thread_id must be a non-empty string, not {thread_id!r}")
        try:
            thread_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidThreadIdError(
                f"thread_id {thread_id!r} is not valid Unicode (unpaired surrogate)"
            ) from None
        with self._threads_lock:
            thread = self._threads.get(thread_id)
            if thread is None:
                thread = _Thread(
                    thread_id, Ledger(), MemoryBlock(self._count, recall_tool=self.recall_tool)
                )
                self._threads[thread_id] = thread
                while len(self._threads) > _MAX_THREADS_CACHED:
                    oldest = next(iter(self._threads))
                    if self._threads[oldest].lock.locked():
                        break
                    del self._threads[oldest]
            else:
                self._threads.move_to_end(thread_id)
            return thread

    def _reload(self, thread: _Thread) -> frozenset[str]:
        """Reset a thread's cached state from the store; return the ids distilled away."""
        snapshot = self.store.load_thread(thread.thread_id)
        thread.ledger = Ledger()
        thread.memory = MemoryBlock(self._count, recall_tool=self.recall_tool)
        thread.memory.add(snapshot.facts)
        thread.memory.fit(snapshot.memory_cap)
        thread.anchor = from_iso(snapshot.anchor)
        thread.anchor_ready = snapshot.anchor is not None
        thread.base_tokens = snapshot.distilled_tokens
        thread.base_messages = len(snapshot.distilled)
        thread.distillations = snapshot.distillations
        thread.failures = snapshot.failures
        thread.distilled_ids = IdSet(snapshot.distilled)
        thread.last_log_id = snapshot.last_distillation_id
        thread.loaded = True
        return snapshot.distilled

    # -- one turn ---------------------------------------------------------------

    def _begin(self, thread: _Thread, messages: Sequence[BaseMessage]) -> _Job | None:
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise InvalidMessageError(
                f"messages must be a list of LangChain messages, not {type(messages).__name__}"
            )
        thread.turn += 1
        try:
            self._sync(thread, messages)
        except BaseException:
            thread.loaded = False  # rebuild from the store on the next call
            thread.n_seen = 0
            raise
        return self._plan(thread, 0)

    def _sync(self, thread: _Thread, messages: Sequence[BaseMessage]) -> None:
        """Bring the ledger up to date; only new messages cost time."""
        n = len(messages)
        start: int | None = None
        if thread.loaded:
            if n >= thread.n_seen > 0 and _id_at(messages, thread.n_seen - 1) == thread.last_id:
                start = thread.n_seen  # the history grew: view-style input
            elif (
                thread.view_len
                and n >= thread.view_len
                and _id_at(messages, thread.view_len - 1) == thread.view_last_id
            ):
                start = thread.view_len  # the caller keeps our compact view: rewrite-style
            elif n == 0 and thread.n_seen == 0:
                start = 0
        if start is not None and self._changed_elsewhere(thread):
            start = None
        if start is not None and len(thread.distilled_ids):
            start = self._check_new_ids(thread, messages, start)
        if start is None:
            distilled = self._reload(thread)
            thread.skip = self._skippable(distilled, messages)
            thread.shown_again = distilled - thread.skip
            start = 0
        skip = thread.skip
        ledger = thread.ledger
        for position in range(start, n):
            ledger.add(
                messages[position],
                position,
                self._tokens,
                skip=skip,
                counted=thread.shown_again,
                reducer=self._reduce,
                reduce_over=self.max_tool_result_tokens,
            )
        thread.n_seen = n
        thread.last_id = _id_at(messages, n - 1) if n else None
        if ledger.to_archive:
            thread.version += 1

    def _changed_elsewhere(self, thread: _Thread) -> bool:
        """Whether another connection (another process) distilled this thread meanwhile."""
        return self.store.last_distillation_id(thread.thread_id) != thread.last_log_id

    def _check_new_ids(
        self, thread: _Thread, messages: Sequence[BaseMessage], start: int
    ) -> int | None:
        """Where to go on from, given new messages that may carry distilled ids.

        The same message again means a rewound history grew back (rebuild: None); a
        different message under a distilled id would vanish, so it is refused.
        """
        for position in range(start, len(messages)):
            message = messages[position]
            if not isinstance(message, BaseMessage):
                return start  # the ledger refuses it, naming it
            message_id = message.id or derived_id(message, position)
            if message_id not in thread.distilled_ids:
                continue
            stored = self.store.distilled_digests(thread.thread_id, [message_id]).get(message_id)
            if stored is None:
                continue  # a hash collision in the id set: not distilled after all
            if stored != digest(message):
                raise InvalidMessageError(
                    f"{describe(message, position)}: id {message_id!r} belongs to an earlier "
                    "message of this thread that was distilled already; ids must be unique "
                    "within a thread"
                )
            return None
        return start

    def _skippable(
        self, distilled: frozenset[str], messages: Sequence[BaseMessage]
    ) -> frozenset[str]:
        """Ids in the input that are distilled already and must not show again.

        A compact (rewrite-style) input holds no distilled messages. In a full history,
        the latest human message and the newest group always show, even if an earlier,
        longer version of this history distilled them (the caller rewound it).
        """
        if not distilled:
            return frozenset()
        protected: set[str] = set()
        last_human = False
        tail = True
        for position in range(len(messages) - 1, -1, -1):
            message = messages[position]
            if not isinstance(message, BaseMessage):
                continue  # the ledger refuses it with InvalidMessageError
            if marker(message) == MEMORY_MARK:
                return frozenset()
            mid = message.id or derived_id(message, position)
            if tail:
                protected.add(mid)
                tail = isinstance(message, ToolMessage)
            if not last_human and message.type == "human":
                protected.add(mid)
                last_human = True
        return distilled - protected

    def _reduce(self, message: ToolMessage, message_id: str, tokens: int) -> ToolMessage | None:
        from .distillers.extractive import reduce_tool_result

        return reduce_tool_result(
            message, message_id, tokens, self.max_tool_result_tokens, self._count
        )

    def _flush_reduced(self, thread: _Thread) -> None:
        """Archive the originals of tool results the view shows shortened."""
        pending = thread.ledger.to_archive
        if not pending:
            return
        records = [self._record(message, mid, tokens) for mid, message, tokens in pending]
        self.store.archive(thread.thread_id, records, state=REDUCED)
        pending.clear()

    def _record(self, message: BaseMessage, message_id: str, tokens: int) -> MessageRecord:
        return MessageRecord(
            message_id=message_id,
            role=message.type,
            digest=digest(message),
            tokens=tokens,
            text=text_of(message),
            data=to_json(message),
        )

    def _plan(self, thread: _Thread, round_: int) -> _Job | None:
        """Decide whether to distill, and which groups, oldest first."""
        view = thread.ledger.view_tokens(thread.memory.tokens)
        if view <= self.budget_tokens and round_ == 0:
            return None
        target = self._target(thread)
        if view <= target or round_ >= _MAX_ROUNDS:
            return None
        if round_ == 0 and thread.turn < thread.retry_turn:
            return None
        job = self._select(thread, view - target, view, round_)
        if job is None:
            self._fit_memory(thread)
        return job

    def _select(self, thread: _Thread, need: float, view: int, round_: int) -> _Job | None:
        """The oldest distillable groups expected to save ``need`` tokens, as requests."""
        ledger = thread.ledger
        candidates = ledger.candidates(self.keep_recent_tokens)
        if not candidates:
            return None
        chosen: list[LiveGroup] = []
        saved = 0.0
        for group in candidates:
            chosen.append(group)
            saved += group.tokens * (1.0 - thread.ratio)
            if saved >= need:
                break
        if not thread.anchor_ready:
            thread.anchor = advance(thread.anchor, ledger.pinned)
            thread.anchor_ready = True
        anchor = thread.anchor
        requests: list[Group] = []
        picked = {id(group) for group in chosen}
        known = thread.distilled_ids
        done = [g for g in chosen if len(known) and all(i in known for i in g.ids)]
        picked.difference_update(id(group) for group in done)
        walk = list(ledger.stale) + list(ledger.groups)
        ordered: list[LiveGroup] = []
        for group in walk:
            if len(ordered) == len(picked):
                break
            if id(group) in picked:
                ordered.append(group)
                requests.append(
                    Group(
                        thread_id=thread.thread_id,
                        messages=tuple(group.messages),
                        message_ids=tuple(group.ids),
                        tokens=group.tokens,
                        anchor=anchor,
                        target_tokens=max(1, int(group.tokens * _TARGET_RATIO)),
                    )
                )
            anchor = advance(anchor, group.messages)
        return _Job(ordered, requests, view, anchor, round_, done)

    def _call(self, groups: Sequence[Group]) -> list[GroupFacts]:
        """The distiller on some groups, within the timeout (it may keep running after)."""
        timeout = self.distill_timeout_s
        groups = _isolated(groups)
        if timeout is None:
            return self.distiller.distill(groups)
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["results"] = self.distiller.distill(groups)
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

    def _run(self, thread: _Thread, job: _Job) -> _Outcome:
        started = time.perf_counter()
        ready = self._take_prepared(thread, job, wait=not self.background)
        missing = [group for group, found in zip(job.groups, ready, strict=True) if found is None]
        try:
            fresh = self._call(missing) if missing else []
        except Exception as exc:
            return _failed(exc, started)
        return _succeeded(ready, fresh, len(missing), started)

    async def _arun(self, thread: _Thread, job: _Job) -> _Outcome:
        started = time.perf_counter()
        event = thread.prefetching
        if event is not None and not self.background and self.distill_timeout_s is not None:
            await asyncio.to_thread(event.wait, self.distill_timeout_s)
        ready = self._take_prepared(thread, job, wait=False)
        missing = [group for group, found in zip(job.groups, ready, strict=True) if found is None]
        try:
            fresh: list[GroupFacts] = []
            if missing:
                call = self.distiller.adistill(_isolated(missing))
                timeout = self.distill_timeout_s
                fresh = await (call if timeout is None else asyncio.wait_for(call, timeout))
        except asyncio.TimeoutError:
            timed_out = TimeoutError(f"distiller did not answer within {self.distill_timeout_s} s")
            return _failed(timed_out, started)
        except Exception as exc:
            return _failed(exc, started)
        return _succeeded(ready, fresh, len(missing), started)

    # -- background distillation ---------------------------------------------

    def _take_prepared(self, thread: _Thread, job: _Job, *, wait: bool) -> list[GroupFacts | None]:
        """Facts made ahead for the job's groups (waiting for a prefetch under way)."""
        event = thread.prefetching
        if wait and event is not None and not event.is_set():
            event.wait(self.distill_timeout_s)
        with thread.prepared_lock:
            found = [thread.prepared.get(_prepared_key(group)) for group in job.groups]
            if self.background and None in found:
                self._trim_to_ready(thread, job, found)
                found = found[: len(job.groups)]
            for group in job.groups:
                thread.prepared.pop(_prepared_key(group), None)
            return found

    def _trim_to_ready(self, thread: _Thread, job: _Job, found: list[GroupFacts | None]) -> None:
        """Distill only the groups made ahead, if they bring the view within the budget.

        The crossing turn then commits facts that are ready instead of waiting for a
        model; the rest is made in the background for the next crossing.
        """
        ready = 0
        while ready < len(found) and found[ready] is not None:
            ready += 1
        if ready == 0:
            return
        saving = sum(group.tokens for group in job.live[:ready]) * (1.0 - thread.ratio)
        if job.tokens_before - saving > self.budget_tokens:
            return
        if ready < len(job.groups):
            job.anchor_after = job.groups[ready].anchor
        del job.live[ready:]
        del job.groups[ready:]

    def _maybe_prefetch(self, thread: _Thread) -> None:
        """Past the soft threshold, distill the groups the next crossing will need, aside."""
        if not self.background:
            return
        event = thread.prefetching
        if event is not None and not event.is_set():
            return
        view = thread.ledger.view_tokens(thread.memory.tokens)
        if not self.background_at_tokens <= view <= self.budget_tokens:
            return
        if thread.turn < thread.retry_turn:
            return
        # Every group that may be distilled now will be, at this crossing or a later one.
        job = self._select(thread, float("inf"), view, 0)
        if job is None:
            return
        live = set(thread.ledger.live_ids)
        with thread.prepared_lock:
            for key in [k for k in thread.prepared if not set(k[0]) <= live]:
                del thread.prepared[key]  # distilled meanwhile, or made for another anchor
            pairs = [
                (live_group, group)
                for live_group, group in zip(job.live, job.groups, strict=True)
                if _prepared_key(group) not in thread.prepared
            ]
        if not pairs:
            return
        done = threading.Event()
        thread.prefetching = done

        def work() -> None:
            todo = [group for _, group in pairs]
            try:
                results = self.distiller.distill(_isolated(todo))
                if isinstance(results, list) and len(results) == len(todo):
                    # Archive the originals now, so that the crossing only writes facts.
                    originals = [
                        self._record(message, mid, tokens)
                        for live_group, _ in pairs
                        for message, mid, tokens in zip(
                            live_group.messages, live_group.ids, live_group.tokens_each, strict=True
                        )
                    ]
                    self.store.archive(thread.thread_id, originals)
                    thread.memory.prepare(
                        clean_fact_text(fact.text)
                        for result in results
                        if isinstance(result, GroupFacts)
                        for fact in result.facts
                        if isinstance(fact, Fact) and isinstance(fact.text, str)
                    )
                    with thread.prepared_lock:
                        thread.archived_ahead.update(record.message_id for record in originals)
                        for group, result in zip(todo, results, strict=True):
                            if isinstance(result, GroupFacts) and result.facts:
                                thread.prepared[_prepared_key(group)] = result
            except Exception as exc:  # the crossing turn distills these itself
                logger.warning(
                    "thread %s: background distillation failed (%s); will distill in the "
                    "foreground",
                    thread.thread_id,
                    exc,
                )
            finally:
                done.set()

        threading.Thread(target=work, name="context-distill-background", daemon=True).start()

    def _checked(self, job: _Job, outcome: _Outcome) -> tuple[list[list[Fact]], str | None]:
        """Facts per group if the distiller's output is usable, else the reason it is not."""
        results = outcome.results
        if not isinstance(results, list) or len(results) != len(job.groups):
            got = len(results) if isinstance(results, list) else type(results).__name__
            return [], f"returned {got} results for {len(job.groups)} groups"
        cleaned: list[list[Fact]] = []
        for index, (group, result) in enumerate(zip(job.groups, results, strict=True)):
            if not isinstance(result, GroupFacts):
                return [], f"result {index} is a {type(result).__name__}, not GroupFacts"
            allowed = set(group.message_ids)
            facts: list[Fact] = []
            for fact in result.facts:
                if not isinstance(fact, Fact) or not isinstance(fact.text, str):
                    return [], f"result {index} holds a {type(fact).__name__}, not a Fact"
                text = clean_fact_text(fact.text)
                if not any(ch.isalnum() for ch in text):
                    continue  # blank or punctuation only: says nothing
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    return [], f"result {index} holds text that is not valid Unicode"
                sources = tuple(i for i in fact.source_ids if i in allowed) or group.message_ids
                facts.append(Fact(text, sources))
            if not facts:
                return [], f"no facts for group {index} (messages {', '.join(group.message_ids)})"
            cleaned.append(facts)
        return cleaned, None

    def _finish(self, thread: _Thread, job: _Job, outcome: _Outcome) -> tuple[_Job | None, bool]:
        """Commit a distillation (or record its failure); return the next round's job."""
        if not job.groups:  # only groups distilled before (a rewound history): drop them
            thread.ledger.remove(job.done)
            thread.version += 1
            self._fit_memory(thread)
            return self._plan(thread, job.round + 1), False
        name = self.distiller.name
        source_tokens = sum(group.tokens for group in job.live)
        message_count = sum(len(group.messages) for group in job.live)
        facts: list[list[Fact]] = []
        reason: str | None = None
        if outcome.error is not None:
            reason = f"{type(outcome.error).__name__}: {outcome.error}"
        else:
            facts, reason = self._checked(job, outcome)
            if reason is not None:
                outcome.outcome = "empty" if reason.startswith("no facts") else "rejected"
        records: list[FactRecord] = []
        if reason is None:
            for group_facts in facts:
                for fact in group_facts:
                    records.append(
                        FactRecord(
                            fact.text, fact.source_ids, thread.memory.fact_tokens(fact.text) + 4
                        )
                    )
            fact_tokens = sum(record.tokens for record in records)
            if fact_tokens > 1.2 * source_tokens + 32:
                reason = f"facts ({fact_tokens} tokens) larger than their source ({source_tokens})"
                outcome.outcome = "rejected"
        log = DistillationLog(
            distiller=name,
            outcome=outcome.outcome,
            groups=len(job.live),
            messages=message_count,
            facts=len(records) if reason is None else 0,
            tokens_before=job.tokens_before,
            tokens_after=job.tokens_before,
            source_tokens=source_tokens,
            fact_tokens=sum(r.tokens for r in records) if reason is None else 0,
            duration_s=outcome.duration_s,
            error=reason,
            details=self._details(outcome) if reason is None else {},
        )
        if reason is not None:
            self._fail(thread, log, reason)
            return None, False
        with thread.prepared_lock:
            ahead = set(thread.archived_ahead)
        originals = [
            MessageRecord.archived(mid) if mid in ahead else self._record(message, mid, tokens)
            for group in job.live
            for message, mid, tokens in zip(
                group.messages, group.ids, group.tokens_each, strict=True
            )
        ]
        log.tokens_after = max(0, job.tokens_before - source_tokens + log.fact_tokens)
        try:
            log_id, _refs, stored = self.store.commit_distillation(
                thread.thread_id,
                originals=originals,
                facts=records,
                log=log,
                anchor=to_iso(job.anchor_after),
            )
        except DistilledElsewhere as exc:
            logger.info("thread %s: %s; reloading it", thread.thread_id, exc)
            thread.loaded = False  # the next call rebuilds from the store
            thread.n_seen = 0
            return None, False
        except StoreError as exc:
            logger.error("thread %s: distillation not committed: %s", thread.thread_id, exc)
            thread.last_error = str(exc)
            thread.failures += 1
            thread.failures_in_row += 1
            thread.retry_turn = thread.turn + self._backoff(thread)
            return None, False
        ledger = thread.ledger
        ledger.remove(job.live + job.done)
        thread.distilled_ids.add_all(r.message_id for r in originals)
        thread.last_log_id = log_id
        with thread.prepared_lock:
            thread.archived_ahead.difference_update(r.message_id for r in originals)
        thread.memory.add(stored)
        thread.anchor = job.anchor_after
        thread.distillations += 1
        thread.failures_in_row = 0
        thread.retry_turn = 0
        thread.version += 1
        thread.ratio = 0.7 * thread.ratio + 0.3 * min(1.0, log.fact_tokens / max(source_tokens, 1))
        self._fit_memory(thread)
        try:
            self.store.set_memory_cap(thread.thread_id, thread.memory.cap)
        except StoreError as exc:  # only the restart view depends on it
            logger.warning("thread %s: memory cap not saved: %s", thread.thread_id, exc)
        logger.debug(
            "thread %s: distilled %d messages (%d tokens) into %d facts (%d tokens)",
            thread.thread_id,
            message_count,
            source_tokens,
            len(stored),
            log.fact_tokens,
        )
        return self._plan(thread, job.round + 1), True

    def _details(self, outcome: _Outcome) -> dict[str, Any]:
        results = outcome.results
        if not results:
            return {}
        dropped = sum(r.dropped for r in results)
        fallbacks = [r.fallback for r in results if r.fallback]
        notes = [note for r in results for note in r.notes]
        details: dict[str, Any] = {}
        if dropped:
            details["grounding_dropped"] = dropped
        if fallbacks:
            details["fallbacks"] = {name: fallbacks.count(name) for name in set(fallbacks)}
        if notes:
            details["notes"] = notes[:20]
        if outcome.prefetched:
            details["prefetched_groups"] = outcome.prefetched
        return details

    def _backoff(self, thread: _Thread) -> int:
        return int(min(2 ** (thread.failures_in_row - 1), _MAX_BACKOFF_TURNS))

    def _fail(self, thread: _Thread, log: DistillationLog, reason: str) -> None:
        thread.failures += 1
        thread.failures_in_row += 1
        thread.retry_turn = thread.turn + self._backoff(thread)
        thread.last_error = reason
        logger.warning(
            "thread %s: distillation by %s %s (%s); history kept as it was, retry in %d turn(s)",
            thread.thread_id,
            log.distiller,
            log.outcome,
            reason,
            thread.retry_turn - thread.turn,
        )
        try:
            self.store.record_failure(thread.thread_id, log)
        except StoreError as exc:
            logger.error("thread %s: could not record the failure: %s", thread.thread_id, exc)

    def _target(self, thread: _Thread) -> int:
        """Where a distillation stops: ``target_tokens`` if given, else the pinned
        prompt plus a share of what the budget leaves beside it.

        The system prompt and task cannot be distilled, so a share of the whole
        budget would leave a long system prompt's thread almost no room for its
        memory and recent turns.
        """
        if self._target_given:
            return self.target_tokens
        pinned = thread.ledger.pinned_tokens
        share = pinned + int(max(self.budget_tokens - pinned, 0) * _TARGET_SHARE)
        return max(self.target_tokens, min(share, self.budget_tokens))

    def _fit_memory(self, thread: _Thread) -> None:
        """Give the memory block what the target leaves over, if it needs more than that."""
        ledger = thread.ledger
        memory = thread.memory
        if not len(memory):
            return
        memory.focus(focus_of(ledger.view(None)))
        others = ledger.pinned_tokens + ledger.head_tokens() + ledger.live_tokens
        room = max(self._target(thread) - others, 0)
        cap = room
        for _ in range(4):
            memory.fit(cap)
            excess = memory.tokens - room
            if excess <= 0 or cap <= 0:
                break
            cap = max(cap - excess, 0)

    def _result(self, thread: _Thread, version: int, distilled: bool) -> ContextUpdate:
        ledger = thread.ledger
        memory_message = thread.memory.message()
        view = ledger.view(memory_message)
        tokens_view = ledger.view_tokens(thread.memory.tokens)
        thread.peak = max(thread.peak, tokens_view)
        thread.view_len = len(view)
        thread.view_last_id = _id_at(view, len(view) - 1) if view else None
        return ContextUpdate(
            view=view,
            changed=thread.version != version,
            distilled=distilled,
            stats=self._stats(thread, tokens_view),
        )

    def _stats(self, thread: _Thread, tokens_view: int) -> ContextStats:
        ledger = thread.ledger
        over = tokens_view > self.budget_tokens
        reason = None
        if over:
            floor = ledger.pinned_tokens + ledger.head_tokens()
            if thread.last_error and thread.failures_in_row:
                reason = f"distillation failing: {thread.last_error}"
            elif floor + (ledger.groups[-1].tokens if ledger.groups else 0) > self.budget_tokens:
                reason = "pinned context and the latest turn alone exceed the budget"
            else:
                reason = "the newest turns kept word for word exceed the budget"
        return ContextStats(
            thread_id=thread.thread_id,
            messages=thread.base_messages + ledger.messages_seen,
            tokens_in=thread.base_tokens + ledger.tokens_seen,
            tokens_view=tokens_view,
            peak_view_tokens=thread.peak,
            distillations=thread.distillations,
            failures=thread.failures,
            facts=thread.memory.facts,
            facts_shown=thread.memory.facts - thread.memory.hidden,
            over_budget=over,
            reason=reason,
        )
