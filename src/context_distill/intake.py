"""Intake: reconcile the caller's history with what the thread already holds.

A caller passes its whole history every turn (view mode), or our compact view
plus what is new (rewrite mode), or a history that was rewound, forked, edited
or re-grown after a distillation. Intake finds where the new part starts, takes
only that into the ledger, and returns the records of every message the archive
does not hold yet, so the whole turn is archived in one transaction before the
call returns. A thread this process never saw, or one another process changed,
is rebuilt from the store once; after that, work is in proportion to the change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from langchain_core.messages import BaseMessage, ToolMessage

from ._idset import IdSet
from .dates import from_iso
from .errors import InvalidMessageError
from .ledger import LiveGroup, TokenCache
from .messages import (
    MEMORY_MARK,
    REDUCED_MARK,
    derived_id,
    describe,
    digest,
    is_human,
    marker,
    text_of,
    validate,
)
from .messages import to_json as message_json
from .policy import Budget
from .reduced import copy_of, inline_from
from .store import (
    ARCHIVED,
    REDUCED,
    ArchivedMessage,
    MemoryStore,
    MessageRecord,
    ThreadSnapshot,
)
from .thread_state import ThreadState

logger = logging.getLogger(__name__)

Reducer = Callable[[ToolMessage, str, int], ToolMessage | None]


def _id_at(messages: Sequence[BaseMessage], index: int) -> str | None:
    message = messages[index]
    if not isinstance(message, BaseMessage):
        return None  # not a message: the ledger refuses it with InvalidMessageError
    return message.id or derived_id(message, index)


def record_of(
    message: BaseMessage, message_id: str, known_digest: str, tokens: int, index: int
) -> MessageRecord:
    return MessageRecord(
        message_id=message_id,
        role=message.type,
        digest=known_digest,
        tokens=tokens,
        text=text_of(message),
        data=message_json(message, index),
    )


def _protected(messages: Sequence[BaseMessage], start: int) -> set[str] | None:
    """Ids among ``messages[start:]`` that must show even if distilled before: the
    newest group and the latest human message. None: the input holds our memory
    block, so it is a compact view and holds no distilled message to hide."""
    protected: set[str] = set()
    last_human = False
    tail = True
    for position in range(len(messages) - 1, start - 1, -1):
        message = messages[position]
        if not isinstance(message, BaseMessage):
            continue  # the ledger refuses it with InvalidMessageError
        if marker(message) == MEMORY_MARK:
            return None
        mid = message.id or derived_id(message, position)
        if tail:
            protected.add(mid)
            tail = isinstance(message, ToolMessage)
        if not last_human and is_human(message):
            protected.add(mid)
            last_human = True
    return protected


class Intake:
    """Brings a thread's ledger up to date with a caller's history."""

    def __init__(
        self, store: MemoryStore, tokens: TokenCache, budget: Budget, reducer: Reducer
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._budget = budget
        self._reducer = reducer

    def take_in(self, thread: ThreadState, messages: Sequence[BaseMessage]) -> None:
        """Take the new part of ``messages`` in and archive it before returning (one
        transaction; a second one first for originals the view shows shortened)."""
        thread.health.turn += 1
        start = self._resume_at(thread, messages)
        if start is not None and self._store.last_distillation_id(thread.thread_id) != (
            thread.archive.last_log_id
        ):
            start = None  # another process distilled this thread meanwhile
        transcript: Mapping[str, ArchivedMessage] = {}
        if start is None:
            transcript = self._rebuild(thread)
            start = 0
        digests = self._mark_distilled(thread, messages, start)
        records, reduced = self._add(thread, messages, start, transcript, digests)
        if thread.archive.shown_again and start < len(messages):
            self._hide_shown_again(thread)
        if reduced:
            self._store.archive(thread.thread_id, reduced, state=REDUCED)
        if records:
            self._store.archive(thread.thread_id, records, state=ARCHIVED)
        cursor = thread.cursor
        cursor.n_seen = len(messages)
        cursor.last_id = _id_at(messages, len(messages) - 1) if messages else None
        if reduced:
            thread.version += 1

    # -- where the new part starts --------------------------------------------

    @staticmethod
    def _resume_at(thread: ThreadState, messages: Sequence[BaseMessage]) -> int | None:
        if not thread.archive.loaded:
            return None
        cursor = thread.cursor
        n = len(messages)
        if n >= cursor.n_seen > 0 and _id_at(messages, cursor.n_seen - 1) == cursor.last_id:
            return cursor.n_seen  # the history grew: view-style input
        if (
            cursor.view_len
            and n >= cursor.view_len
            and _id_at(messages, cursor.view_len - 1) == cursor.view_last_id
        ):
            return cursor.view_len  # the caller keeps our compact view: rewrite-style
        if n == 0 and cursor.n_seen == 0:
            return 0
        return None

    def _rebuild(self, thread: ThreadState) -> Mapping[str, ArchivedMessage]:
        """Start the thread over from one snapshot of the store; its transcript."""
        snapshot: ThreadSnapshot = self._store.load_thread(thread.thread_id)
        thread.reset(self._tokens.count)
        archive = thread.archive
        archive.loaded = True
        archive.last_log_id = snapshot.last_distillation_id
        archive.distilled = IdSet(snapshot.distilled)
        archive.anchor = from_iso(snapshot.anchor)
        archive.anchor_ready = snapshot.anchor is not None
        inline, reductions = (
            inline_from(snapshot, self._store.distillations(thread.thread_id))
            if snapshot.facts
            else ({}, frozenset())
        )
        archive.inline = inline
        thread.memory.restore([f for f in snapshot.facts if f.distillation_id not in reductions])
        thread.memory.resume(snapshot.memory_pages, f"thread {thread.thread_id}")
        thread.memory.fit(snapshot.memory_cap)
        archive.saved_cap = snapshot.memory_cap
        if thread.memory.pages == snapshot.memory_pages:
            archive.saved_pages = thread.memory.pages_written
        totals = thread.totals
        totals.base_tokens = snapshot.distilled_tokens
        totals.base_messages = len(snapshot.distilled)
        totals.distillations = snapshot.distillations
        thread.health.failures = snapshot.failures
        return snapshot.transcript

    # -- distilled messages passed in again -----------------------------------

    def _mark_distilled(
        self, thread: ThreadState, messages: Sequence[BaseMessage], start: int
    ) -> dict[int, str]:
        """Sort new messages that were distilled before into hidden and shown again.

        The same message again means the caller rewound its history and it grew back:
        it stays hidden, except the newest group and the latest human message. A
        different message under a distilled id would vanish, so it is refused.
        Returns the digests it computed, by position (intake needs them again).
        """
        archive = thread.archive
        digests: dict[int, str] = {}
        if not len(archive.distilled):
            return digests
        found: dict[str, tuple[int, BaseMessage]] = {}
        for position in range(start, len(messages)):
            message = messages[position]
            if not isinstance(message, BaseMessage):
                continue  # the ledger refuses it, naming it
            mid = message.id or derived_id(message, position)
            if mid in archive.distilled:
                found[mid] = (position, message)
        if not found:
            return digests
        stored = self._store.distilled_digests(thread.thread_id, list(found))
        if not stored:
            return digests  # hash collisions in the id set: not distilled after all
        for mid, archived in stored.items():
            position, message = found[mid]
            digests[position] = known = digest(message)
            if archived != known:
                raise InvalidMessageError(
                    f"{describe(message, position)}: id {mid!r} belongs to an earlier "
                    "message of this thread that was distilled already; ids must be unique "
                    "within a thread"
                )
        protected = _protected(messages, start)
        for mid in stored:
            if protected is None or mid in protected:
                archive.shown_again.add(mid)
            else:
                archive.skip.add(mid)
        return digests

    @staticmethod
    def _hide_shown_again(thread: ThreadState) -> None:
        """Distilled groups a rewound history showed as its tail leave the view once
        newer messages follow them; the newest group and latest human stay."""
        ledger = thread.ledger
        again = thread.archive.shown_again

        def distilled(group: LiveGroup) -> bool:
            return bool(group.ids) and all(i in again for i in group.ids)

        gone = [g for g in ledger.stale if distilled(g)]
        newest = ledger.groups[-1] if ledger.groups else None
        for group in ledger.groups:
            if group is newest:
                break
            if group is ledger.latest_human:
                continue
            if not distilled(group):
                break
            gone.append(group)
        if gone:
            ledger.remove(gone)
            thread.version += 1

    # -- into the ledger ---------------------------------------------------------

    def _add(
        self,
        thread: ThreadState,
        messages: Sequence[BaseMessage],
        start: int,
        transcript: Mapping[str, ArchivedMessage],
        digests: Mapping[int, str],
    ) -> tuple[list[MessageRecord], list[MessageRecord]]:
        """Take messages in; records to archive as they are, and reduced originals.

        ``transcript`` is what the store held when the thread was just rebuilt (else
        empty: new messages of a known thread are new to the store too, and the store
        itself ignores one archived twice); ``digests``: those known already, by position.
        """
        ledger = thread.ledger
        archive = thread.archive
        records: list[MessageRecord] = []
        reduced: list[MessageRecord] = []
        over = self._budget.max_tool_result_tokens
        for position in range(start, len(messages)):
            message = messages[position]
            validate(message, position)
            mid: str | None = None
            tokens: int | None = None
            known: str | None = None
            held: str | None = None
            replacement: ToolMessage | None = None
            mark = marker(message)
            if mark != MEMORY_MARK:
                known = digests.get(position) or digest(message)
                mid = message.id or derived_id(message, position, known)
                entry = transcript.get(mid)
                held = entry.digest if entry is not None else None
                if mark == REDUCED_MARK:
                    known = None  # our shortened copy: the original is archived
                elif held == known and entry is not None:
                    tokens = entry.tokens
                elif held is not None and mid not in archive.distilled:
                    mid = f"{mid}~{known[:12]}"  # edited in place: archive this version too
                    entry = transcript.get(mid)
                    held = entry.digest if entry is not None else None
                if tokens is None and known is not None:
                    tokens = self._tokens.message_tokens(message, mid, known)
                inline = archive.inline.get(mid)
                if inline is not None and tokens is not None and isinstance(message, ToolMessage):
                    replacement = copy_of(inline, message, mid, tokens, self._tokens.count)
            outcome = ledger.add(
                message,
                position,
                self._tokens,
                message_id=mid,
                tokens=tokens,
                skip=archive.skip,
                counted=archive.shown_again,
                reducer=self._reducer,
                reduce_over=over,
                checked=True,
                replacement=replacement,
            )
            if mid is None or known is None or tokens is None or outcome in ("memory", "skipped"):
                continue
            if held == known:
                continue  # archived already
            record = record_of(message, mid, known, tokens, position)
            (reduced if outcome == "reduced" else records).append(record)
        ledger.to_archive.clear()
        return records, reduced
