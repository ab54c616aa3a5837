"""Memory systems replayed call by call, for bench/trajectories.py.

Each system sees a session the way an agent's model would: at every step end (after
each message, except between a tool call and its results) it produces the view the
model is called with. The final view is scored; the sequence of views gives the
prefix reuse, the share of each call's tokens that repeat the previous call's
prefix (what a provider's prompt cache can serve: the leading messages, and the
leading text of the first message that differs; the whole-message count is kept
beside it).

- ``full``: the whole history;
- ``truncation``: the system prompt and the newest messages that fit;
- ``masking``: LangChain's ``ContextEditingMiddleware`` with ``ClearToolUsesEdit``
  (trigger at the budget, the newest 3 results kept, its defaults otherwise: every
  older result cleared), driven through ``wrap_model_call`` as an agent calls it;
- ``masking_fit``: the same edit clearing only what brings the view to the budget
  (``clear_at_least`` set to the excess before each call), then, where clearing
  cannot fit the budget (the agent's own messages alone exceed it), the oldest
  messages dropped until the view fits, as a hard context limit would force;
- ``summarization``: LangChain's ``SummarizationMiddleware.before_model`` with the
  local SmolLM2 (bench/local_chat.py), trigger at the budget;
- ``distill``: context-distill through ``ContextDistiller.update``;
- ``distill_focus``: the same with each memory fit told what the rest of the view shows
  (``MemoryBlock.focus``; the engine does not pass it yet);
- ``distill_reduced``: the same with its knobs set as a rough proxy of a tiered view
  (tool results over a 16th of the budget shortened on arrival, a 16th kept verbatim).

One token counter serves every system, the engine included.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage, RemoveMessage, SystemMessage, ToolMessage

from bench.baselines import newest_that_fit
from bench.peers import MW_KEEP_RATIO, MemoCounter, SummarizationMW, local_model_missing
from context_distill.tokens import TextCounter, count_message, encoding_counter

MASK_KEEP = 3


def chars4(text: str) -> int:
    """Characters over four, rounded up: the approximate count the issue's figures use."""
    return (len(text) + 3) // 4


def text_counter(name: str) -> TextCounter:
    """``chars4`` or a tiktoken encoding name."""
    return chars4 if name == "chars4" else encoding_counter(name)


@dataclass
class Session:
    """A replay ready to run: messages, what to score, and their token counts."""

    dataset: str
    id: str
    messages: list[BaseMessage]
    gold: list[str]
    count: TextCounter
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = []
        for index, message in enumerate(self.messages):
            if message.id is None:
                message = message.model_copy(update={"id": f"{self.id}#{index}"})
            named.append(message)
        self.messages = named
        pinned = 0
        while pinned < len(named) and isinstance(named[pinned], SystemMessage):
            pinned += 1
        self.pinned = pinned
        self.pinned_tokens = self.tokens_of(named[:pinned])
        self.tokens = self.tokens_of(named[pinned:])
        n = len(named)
        self.steps = [
            i + 1 for i in range(n) if i + 1 == n or not isinstance(named[i + 1], ToolMessage)
        ]

    def tokens_of(self, messages: Sequence[BaseMessage]) -> int:
        return sum(count_message(m, self.count) for m in messages)

    def budget(self, fraction: float) -> int:
        """Conversation tokens allowed at ``fraction`` (the system prompt comes on top)."""
        return max(int(self.tokens * fraction), 1)

    @property
    def prefix(self) -> list[BaseMessage]:
        return self.messages[: self.pinned]


def _key(message: BaseMessage) -> tuple[Any, ...]:
    return MemoCounter._key(message)


@dataclass
class Trace:
    """A system's replay of one session: the final view and what the calls cost."""

    view: list[BaseMessage]
    seconds: float = 0.0
    calls: int = 0
    call_tokens: int = 0  # tokens of every call after the first
    reused_tokens: int = 0  # of those, tokens of the prefix the previous call had
    reused_message_tokens: int = 0  # counted in whole leading messages only
    notes: Counter[str] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def reuse(self) -> float:
        return self.reused_tokens / self.call_tokens if self.call_tokens else float("nan")


class PrefixMeter:
    """Prefix reuse over a sequence of model calls.

    A prompt cache serves the longest token prefix a call shares with the one before
    (OpenAI's and vLLM's prefix caches work in tokens, not messages): the leading
    messages both calls hold, and the leading text of the first message that
    differs, when only its end changed (same role, call and tool call id). The
    whole-message figure (``reused_messages``) is kept beside it.
    """

    def __init__(
        self, count: Callable[[BaseMessage], int], text: Callable[[str], int] | None = None
    ) -> None:
        self._count = count
        self._text = text
        self._previous: list[tuple[Any, ...]] = []
        self.calls = 0
        self.tokens = 0
        self.reused = 0
        self.reused_messages = 0

    def observe(self, view: Sequence[BaseMessage]) -> tuple[int, int, bool]:
        """Count one call; its tokens, those the previous call's prefix holds, and
        whether it only added messages at the end (all 0 and False for the first)."""
        keys = [_key(m) for m in view]
        common = 0
        for before, now in zip(self._previous, keys, strict=False):
            if before != now:
                break
            common += 1
        first = self.calls == 0
        appended = not first and common == len(self._previous)
        partial = 0
        if not first and self._text is not None and common < min(len(keys), len(self._previous)):
            before, now = self._previous[common], keys[common]
            if before[0] == now[0] and before[2:] == now[2:]:
                shared = _common_start(before[1], now[1])
                # the shared text as its own string: a token the change splits is not counted
                partial = max(self._text(shared) - 1, 0) if shared else 0
        self.calls += 1
        self._previous = keys
        if first:
            return 0, 0, False
        sizes = [self._count(m) for m in view]
        total, whole = sum(sizes), sum(sizes[:common])
        self.tokens += total
        self.reused += whole + partial
        self.reused_messages += whole
        return total, whole + partial, appended

    def fill(self, trace: Trace) -> Trace:
        trace.calls, trace.call_tokens, trace.reused_tokens = self.calls, self.tokens, self.reused
        trace.reused_message_tokens = self.reused_messages
        return trace


def _common_start(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]


class StepSystem:
    """A memory replayed call by call; ``view`` gives the model's input at one step."""

    name = ""
    label = ""
    needs_model = False

    def available(self) -> str | None:
        return None

    def start(self, session: Session, budget: int) -> Any:
        """Per-session state (the budget is in conversation tokens)."""
        return None

    def view(self, state: Any, session: Session, end: int, budget: int) -> list[BaseMessage]:
        raise NotImplementedError

    def finish(self, state: Any, trace: Trace) -> None:
        """Notes and extras once the replay is done."""

    def run(self, session: Session, fraction: float) -> Trace:
        budget = session.budget(fraction)
        memo = MemoCounter(session.count)
        meter = PrefixMeter(lambda m: memo([m]), session.count)
        started = time.perf_counter()
        state = self.start(session, budget)
        view: list[BaseMessage] = []
        for end in session.steps:
            view = self.view(state, session, end, budget)
            meter.observe(view)
        trace = meter.fill(Trace(view=view, seconds=time.perf_counter() - started))
        self.finish(state, trace)
        return trace


class Full(StepSystem):
    name, label = "full", "full history"

    def view(self, state: Any, session: Session, end: int, budget: int) -> list[BaseMessage]:
        return session.messages[:end]


class Truncation(StepSystem):
    name, label = "truncation", "truncation"

    def view(self, state: Any, session: Session, end: int, budget: int) -> list[BaseMessage]:
        memo: MemoCounter = state
        tail = newest_that_fit(session.messages[session.pinned : end], budget, lambda m: memo([m]))
        return session.prefix + tail

    def start(self, session: Session, budget: int) -> Any:
        return MemoCounter(session.count)


@dataclass
class _MaskState:
    middleware: Any
    edit: Any
    model: Any
    counter: MemoCounter
    captured: list[BaseMessage] = field(default_factory=list)


class Masking(StepSystem):
    """``ContextEditingMiddleware`` + ``ClearToolUsesEdit`` around a stand-in model call."""

    name, label = "masking", "observation masking (ContextEditingMiddleware)"

    def __init__(self, fit: bool = False) -> None:
        self.fit = fit
        if fit:
            self.name, self.label = "masking_fit", "masking to the budget, then truncation"

    def start(self, session: Session, budget: int) -> Any:
        from langchain.agents.middleware import ClearToolUsesEdit, ContextEditingMiddleware
        from langchain_core.language_models.fake_chat_models import FakeListChatModel

        counter = MemoCounter(session.count)
        edit = ClearToolUsesEdit(trigger=budget, keep=MASK_KEEP)
        middleware = ContextEditingMiddleware(edits=[edit], token_counter=counter)
        return _MaskState(middleware, edit, FakeListChatModel(responses=["ok"]), counter)

    def view(self, state: Any, session: Session, end: int, budget: int) -> list[BaseMessage]:
        from langchain.agents.middleware.types import ModelRequest, ModelResponse
        from langchain_core.messages import AIMessage

        mask: _MaskState = state
        prefix = session.prefix
        system = prefix[0] if prefix else None
        messages = list(session.messages[len(prefix[:1]) : end])
        if self.fit:
            mask.edit.clear_at_least = max(mask.counter(messages) - budget, 0)

        def handler(request: Any) -> Any:
            mask.captured = list(request.messages)
            return ModelResponse(result=[AIMessage("ok")])

        request = ModelRequest(model=mask.model, messages=messages, system_message=system)
        mask.middleware.wrap_model_call(request, handler)
        edited = mask.captured
        if self.fit:
            edited = newest_that_fit(edited, budget, lambda m: mask.counter([m]))
        return [system, *edited] if system is not None else list(edited)


@dataclass
class _SummaryState:
    middleware: Any
    model: Any
    runtime: Any
    state: list[BaseMessage] = field(default_factory=list)
    done: int = 0
    notes: Counter[str] = field(default_factory=Counter)


class Summarization(StepSystem):
    """``SummarizationMiddleware.before_model`` on the agent state, SmolLM2 summaries."""

    name, label = "summarization", "SummarizationMiddleware (SmolLM2)"
    needs_model = True

    def __init__(self) -> None:
        self._peer = SummarizationMW()

    def available(self) -> str | None:
        return local_model_missing()

    def start(self, session: Session, budget: int) -> Any:
        from langchain.agents.middleware import SummarizationMiddleware
        from langgraph.runtime import Runtime

        model = self._peer.chat_model(budget)
        middleware = SummarizationMiddleware(
            model,
            trigger=("tokens", budget),
            keep=("tokens", max(1, int(budget * MW_KEEP_RATIO))),
            token_counter=MemoCounter(session.count),
        )
        return _SummaryState(middleware, model, Runtime(), done=session.pinned)

    def view(self, state: Any, session: Session, end: int, budget: int) -> list[BaseMessage]:
        s: _SummaryState = state
        s.state.extend(session.messages[s.done : end])
        s.done = end
        try:
            update = s.middleware.before_model({"messages": list(s.state)}, s.runtime)
        except Exception as exc:  # an agent would stop; the state stays as it was
            s.notes[f"failed: {type(exc).__name__}"] += 1
            update = None
        if update:
            s.state = [m for m in update["messages"] if not isinstance(m, RemoveMessage)]
            s.notes["summaries"] += 1
        return session.prefix + s.state

    def finish(self, state: Any, trace: Trace) -> None:
        s: _SummaryState = state
        trace.notes.update(s.notes)
        trace.notes.update(SummarizationMW.model_notes(s.model))


@contextmanager
def focused_fits() -> Iterator[None]:
    """The engine's memory fits told what the rest of the view shows (bench only).

    What the engine would do if it passed ``MemoryBlock.focus`` at each fit; it does
    not yet, because a restarted process could not repeat the choice (the focus is
    not stored with the memory's room).
    """
    from context_distill import commit, engine, policy
    from context_distill._relevance import focus_of

    original = policy.fit_memory

    def fit_memory(budget: Any, ledger: Any, memory: Any) -> None:
        if len(memory):
            memory.focus(focus_of(ledger.view(None)))
        original(budget, ledger, memory)

    modules = (policy, commit, engine)
    for module in modules:
        module.fit_memory = fit_memory  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module in modules:
            module.fit_memory = original  # type: ignore[attr-defined]


@dataclass
class _EngineState:
    engine: Any
    update: Any = None


class Distill(StepSystem):
    """context-distill, its budget the system prompt plus the conversation's share."""

    def __init__(
        self,
        name: str = "distill",
        label: str = "context-distill",
        shares: dict[str, float] | None = None,
        focused: bool = False,
        **options: Any,
    ) -> None:
        self.name, self.label = name, label
        self.shares = shares or {}  # engine options given as shares of the budget
        self.focused = focused
        self.options = options

    def start(self, session: Session, budget: int) -> Any:
        from context_distill import ContextDistiller, SQLiteMemoryStore

        total = session.pinned_tokens + budget
        sized = {name: max(int(total * share), 1) for name, share in self.shares.items()}
        engine = ContextDistiller(
            SQLiteMemoryStore(":memory:"),
            budget_tokens=total,
            token_counter=session.count,
            distill_timeout_s=None,
            **sized,
            **self.options,
        )
        return _EngineState(engine)

    def view(self, state: Any, session: Session, end: int, budget: int) -> list[BaseMessage]:
        s: _EngineState = state
        s.update = s.engine.update("session", session.messages[:end])
        return list(s.update.view)

    def run(self, session: Session, fraction: float) -> Trace:
        if not self.focused:
            return super().run(session, fraction)
        with focused_fits():
            return super().run(session, fraction)

    def finish(self, state: Any, trace: Trace) -> None:
        s: _EngineState = state
        if s.update is None:
            return
        stats = s.update.stats
        trace.notes.update(
            distillations=stats.distillations,
            failures=stats.failures,
            facts=stats.facts,
            facts_shown=stats.facts_shown,
            over_budget=int(stats.over_budget),
        )
        trace.extra["facts"] = [f.text for f in s.engine.store.facts("session")]


def make_systems() -> dict[str, StepSystem]:
    """Every system by name, in table order."""
    systems: list[StepSystem] = [
        Full(),
        Truncation(),
        Masking(),
        Masking(fit=True),
        Summarization(),
        Distill(),
        Distill("distill_focus", "context-distill, memory told what the view shows", focused=True),
        # What the engine's knobs can show of a tiered view: every tool result past a
        # 16th of the budget shortened on arrival, a 16th kept verbatim (not the
        # tiered reduction itself: the newest results are shortened too).
        Distill(
            "distill_reduced",
            "context-distill, results shortened on arrival (proxy)",
            shares={"max_tool_result_tokens": 1 / 16, "keep_recent_tokens": 1 / 16},
        ),
    ]
    return {s.name: s for s in systems}


MODEL_FREE = ("full", "truncation", "masking", "masking_fit", "distill", "distill_focus")
