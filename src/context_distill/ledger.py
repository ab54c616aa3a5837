"""The ledger: one thread's history as the engine tracks it, updated incrementally.

It holds what the view needs and no more: the pinned messages (system prompt and
task), the live groups still shown word for word, and the token totals. Messages
arrive one call at a time; each is validated, counted once and placed into a
group, so a turn costs time in proportion to its new messages.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from .errors import InvalidMessageError
from .messages import (
    MEMORY_MARK,
    REDUCED_MARK,
    derived_id,
    describe,
    digest,
    is_human,
    marker,
    validate,
)
from .tokens import TextCounter, count_message


@dataclass(slots=True)
class LiveGroup:
    """An atomic group still in the view: one message, or a tool call with its results."""

    messages: list[BaseMessage] = field(default_factory=list)  # as shown in the view
    ids: list[str] = field(default_factory=list)
    tokens_each: list[int] = field(default_factory=list)
    tokens: int = 0
    pending: set[str] = field(default_factory=set)  # tool calls still waiting for a result
    answered: set[str] = field(default_factory=set)
    human: bool = False
    origin: int = 0  # position of its first message in the input, for error texts

    def add(self, message: BaseMessage, message_id: str, tokens: int) -> None:
        self.messages.append(message)
        self.ids.append(message_id)
        self.tokens_each.append(tokens)
        self.tokens += tokens


class TokenCache:
    """Token counts per (message id, content digest), bounded, shared by all threads."""

    def __init__(self, count: TextCounter, size: int = 4096) -> None:
        self.count = count
        self._size = size
        self._cache: OrderedDict[tuple[str, str], int] = OrderedDict()

    def message_tokens(self, message: BaseMessage, message_id: str, known: str | None) -> int:
        key = (message_id, known if known is not None else digest(message))
        found = self._cache.get(key)
        if found is not None:
            return found
        tokens = count_message(message, self.count)
        self._cache[key] = tokens
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return tokens


#: Reduces a tool result that is too large on its own; returns the shortened copy
#: that the view shows, or None to keep it.
Reducer = Callable[[ToolMessage, str, int], ToolMessage | None]


class Ledger:
    """Pinned messages plus the live groups of one thread."""

    def __init__(self) -> None:
        self.pinned: list[BaseMessage] = []
        self.pinned_ids: list[str] = []
        self.pinned_tokens = 0
        self.task_seen = False
        self.pinned_pending: set[str] = set()  # tool calls before the task awaiting results
        self.groups: deque[LiveGroup] = deque()
        self.live: list[BaseMessage] = []  # flattened view of ``groups``
        self.live_tokens = 0
        self.latest_human: LiveGroup | None = None
        self.held: LiveGroup | None = None  # latest human, kept while older turns are distilled
        self.stale: list[LiveGroup] = []  # earlier held humans, distilled first
        self.live_ids: set[str] = set()
        self.tokens_seen = 0  # every message ever counted, distilled ones included
        self.messages_seen = 0
        self.to_archive: list[tuple[str, BaseMessage, int]] = []

    # -- arrivals ---------------------------------------------------------------

    def add(
        self,
        message: BaseMessage,
        position: int,
        tokens_of: TokenCache,
        *,
        message_id: str | None = None,
        tokens: int | None = None,
        skip: Container[str] = frozenset(),
        counted: Container[str] = frozenset(),
        reducer: Reducer | None = None,
        reduce_over: int | None = None,
        checked: bool = False,
        replacement: ToolMessage | None = None,
    ) -> str:
        """Take one new message in; raise InvalidMessageError (naming it) if it cannot be.

        ``message_id`` and ``tokens`` are the caller's when it knows them already, and
        ``checked`` says the caller validated the message. ``replacement``: the reduced
        copy an earlier crossing made of this tool result (a thread rebuilt from the
        store shows it again).
        Returns what became of it: ``"memory"`` (our own memory block, ignored),
        ``"skipped"`` (distilled before), ``"reduced"`` (shown shortened; the original
        is queued in ``to_archive``) or ``"added"``.
        """
        if not checked:
            validate(message, position)
        mark = marker(message)
        if mark == MEMORY_MARK:
            return "memory"
        if message_id is None:
            message_id = message.id or derived_id(message, position)
        if message_id in skip:
            return "skipped"
        if message_id in self.live_ids or message_id in self.pinned_ids:
            raise InvalidMessageError(
                f"{describe(message, position)}: id {message_id!r} is already in this thread"
            )
        if tokens is None:
            tokens = tokens_of.message_tokens(message, message_id, None)
        if message_id not in counted:  # else its tokens are in the distilled total already
            self.messages_seen += 1
            self.tokens_seen += tokens
        if not self.task_seen:
            self._pin_before_task(message, message_id, tokens, position)
            return "added"
        if isinstance(message, ToolMessage):
            group = self.groups[-1] if self.groups else None
            call_id = message.tool_call_id
            if group is None or call_id not in group.pending:
                problem = (
                    "answers a tool call that was already answered"
                    if group is not None and call_id in group.answered
                    else "answers no tool call of the assistant message before it"
                )
                raise InvalidMessageError(
                    f"{describe(message, position)}: tool result for {call_id!r} {problem}"
                )
            group.pending.discard(call_id)
            group.answered.add(call_id)
            shown: BaseMessage = message
            outcome = "added"
            if replacement is not None and mark != REDUCED_MARK:
                shown = replacement
                tokens = tokens_of.message_tokens(replacement, message_id + "#reduced", None)
                outcome = "reduced"
            elif (
                reducer is not None
                and reduce_over is not None
                and tokens > reduce_over
                and mark != REDUCED_MARK
            ):
                smaller = reducer(message, message_id, tokens)
                if smaller is not None:
                    self.to_archive.append((message_id, message, tokens))
                    shown = smaller
                    tokens = tokens_of.message_tokens(smaller, message_id + "#reduced", None)
                    outcome = "reduced"
            group.add(shown, message_id, tokens)
            self._live_append(shown, message_id, tokens)
            return outcome
        if self.groups and self.groups[-1].pending:
            last = self.groups[-1]
            missing = ", ".join(repr(call) for call in sorted(last.pending))
            raise InvalidMessageError(
                f"{describe(message, position)}: arrives while tool call(s) {missing} of "
                f"message {last.origin} have no result"
            )
        group = LiveGroup(origin=position)
        if isinstance(message, AIMessage) and message.tool_calls:
            group.pending = {cid for call in message.tool_calls if (cid := call.get("id"))}
        if is_human(message):
            group.human = True
            if self.held is not None:
                self.stale.append(self.held)
                self.held = None
            self.latest_human = group
        group.add(message, message_id, tokens)
        self.groups.append(group)
        self._live_append(message, message_id, tokens)
        return "added"

    def _pin_before_task(
        self, message: BaseMessage, message_id: str, tokens: int, position: int
    ) -> None:
        """Everything up to the first human message (the task) is pinned, in order.

        Usually that is the system prompt; a greeting before the task stays too, so
        the view never moves the task in front of what preceded it.
        """
        if isinstance(message, ToolMessage):
            if message.tool_call_id not in self.pinned_pending:
                raise InvalidMessageError(
                    f"{describe(message, position)}: tool result for "
                    f"{message.tool_call_id!r} answers no tool call before it"
                )
            self.pinned_pending.discard(message.tool_call_id)
        else:
            if self.pinned_pending:
                missing = ", ".join(repr(call) for call in sorted(self.pinned_pending))
                raise InvalidMessageError(
                    f"{describe(message, position)}: arrives while tool call(s) {missing} "
                    "have no result"
                )
            if isinstance(message, AIMessage):
                self.pinned_pending = {c for call in message.tool_calls if (c := call.get("id"))}
            self.task_seen = is_human(message)
        self._pin(message, message_id, tokens)

    def _pin(self, message: BaseMessage, message_id: str, tokens: int) -> None:
        self.pinned.append(message)
        self.pinned_ids.append(message_id)
        self.pinned_tokens += tokens

    def _live_append(self, message: BaseMessage, message_id: str, tokens: int) -> None:
        self.live.append(message)
        self.live_ids.add(message_id)
        self.live_tokens += tokens

    # -- the view -------------------------------------------------------------

    def head_groups(self) -> list[LiveGroup]:
        """Groups shown between the memory block and the live tail (old humans kept)."""
        heads = list(self.stale)
        if self.held is not None:
            heads.append(self.held)
        return heads

    def head_tokens(self) -> int:
        return sum(group.tokens for group in self.head_groups())

    def view_tokens(self, memory_tokens: int) -> int:
        return self.pinned_tokens + memory_tokens + self.head_tokens() + self.live_tokens

    def view(self, memory: BaseMessage | None) -> list[BaseMessage]:
        head: list[BaseMessage] = [memory] if memory is not None else []
        for group in self.head_groups():
            head.extend(group.messages)
        return self.pinned + head + self.live

    # -- reduction ------------------------------------------------------------

    def tool_results(self, keep_groups: int) -> list[tuple[LiveGroup, int]]:
        """Tool results of answered live groups, oldest first, as (group, position),
        leaving out the newest ``keep_groups`` groups that hold results."""
        found: list[tuple[LiveGroup, int]] = []
        kept = 0
        for group in reversed(self.groups):
            if group.pending:
                continue
            positions = [i for i, m in enumerate(group.messages) if isinstance(m, ToolMessage)]
            if not positions:
                continue
            if kept < keep_groups:
                kept += 1
                continue
            found.extend((group, i) for i in reversed(positions))
        found.reverse()
        return found

    def replace(self, changes: Sequence[tuple[LiveGroup, int, BaseMessage, int]]) -> None:
        """Show reduced copies in place of messages of live groups: (group, position,
        copy, its tokens). Ids and order stay; only what the view shows changes."""
        if not changes:
            return
        offsets: dict[int, int] = {}
        offset = 0
        for group in self.groups:
            offsets[id(group)] = offset
            offset += len(group.messages)
        for group, position, copy, tokens in changes:
            delta = tokens - group.tokens_each[position]
            group.messages[position] = copy
            group.tokens_each[position] = tokens
            group.tokens += delta
            self.live_tokens += delta
            self.live[offsets[id(group)] + position] = copy

    # -- distillation ---------------------------------------------------------

    def candidates(self, keep_recent_tokens: int) -> list[LiveGroup]:
        """Groups that may be distilled, oldest first.

        Stale humans come first; then live groups, except the newest group, an
        unfinished tool call, and the newest turns within ``keep_recent_tokens``.
        The latest human message is never among them.
        """
        protected = 0
        kept = 0
        for group in reversed(self.groups):
            if kept == 0 or group.pending or protected + group.tokens <= keep_recent_tokens:
                protected += group.tokens
                kept += 1
                continue
            break
        movable = list(self.groups)[: len(self.groups) - kept]
        return list(self.stale) + [g for g in movable if g is not self.latest_human]

    def remove(self, groups: Sequence[LiveGroup]) -> None:
        """Take distilled groups out of the view; the latest human, if passed, moves up."""
        gone = {id(group) for group in groups}
        for group in self.stale:
            if id(group) in gone:
                self.live_ids.difference_update(group.ids)
        self.stale = [group for group in self.stale if id(group) not in gone]
        last = -1
        for index, group in enumerate(self.groups):
            if id(group) in gone:
                last = index
            elif group is not self.latest_human:
                break
        dropped = 0
        for _ in range(last + 1):
            group = self.groups.popleft()
            dropped += len(group.messages)
            self.live_tokens -= group.tokens
            if id(group) in gone:
                self.live_ids.difference_update(group.ids)
            else:
                self.held = group
        del self.live[:dropped]
