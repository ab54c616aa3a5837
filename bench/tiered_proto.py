"""A prototype of the tiered view (issue 10, items 1-2), to measure before the engine has it.

At a crossing of the budget, and only then (so between crossings the view grows at
its end): first every tool result older than the newest ``keep_results`` is replaced
by its facts while its call and the assistant's words stay; if the view is still
over the target, the oldest whole groups move into the memory block, which gets a
guaranteed ``memory_share`` of the conversation budget and is fitted to what the
work in progress needs. Uses the library's extractive facts and memory block; none
of the engine's archive, fail-safety or incremental bookkeeping (a measurement only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from bench.step_systems import Session, StepSystem, Trace
from context_distill._relevance import focus_of
from context_distill.distillers._structured import summarize_output
from context_distill.distillers.extractive import distill_group
from context_distill.memory import MemoryBlock
from context_distill.store import StoredFact
from context_distill.tokens import count_message
from context_distill.types import Group


@dataclass
class _State:
    memory: MemoryBlock
    upto: int  # messages before this index (after the pinned ones) live in the memory
    reduced: dict[int, BaseMessage] = field(default_factory=dict)
    facts: int = 0
    crossings: int = 0
    memory_tokens: list[int] = field(default_factory=list)


class TieredProto(StepSystem):
    name, label = "tiered_proto", "tiered view prototype (bench only)"

    def __init__(
        self,
        memory_share: float = 0.3,
        target_share: float = 0.6,
        keep_results: int = 3,
        memory_yields: bool = False,
    ) -> None:
        self.memory_share = memory_share
        self.memory_yields = memory_yields
        self.target_share = target_share
        self.keep_results = keep_results

    def start(self, session: Session, budget: int) -> Any:
        task = session.pinned + 1 if len(session.messages) > session.pinned else session.pinned
        return _State(MemoryBlock(session.count), upto=task)

    def _message(self, state: _State, session: Session, index: int) -> BaseMessage:
        return state.reduced.get(index, session.messages[index])

    def _live(self, state: _State, session: Session, end: int) -> list[BaseMessage]:
        return [self._message(state, session, i) for i in range(state.upto, end)]

    def _compose(self, state: _State, session: Session, end: int) -> list[BaseMessage]:
        head = session.messages[: session.pinned + 1]
        memory = state.memory.message()
        return [*head, *([memory] if memory is not None else []), *self._live(state, session, end)]

    def _tokens(self, session: Session, view: list[BaseMessage]) -> int:
        return sum(count_message(m, session.count) for m in view)

    def view(self, state: Any, session: Session, end: int, budget: int) -> list[BaseMessage]:
        s: _State = state
        view = self._compose(s, session, end)
        total = session.pinned_tokens + budget
        if self._tokens(session, view) <= total:
            return view
        s.crossings += 1
        self._reduce_results(s, session, end)
        target = session.pinned_tokens + int(budget * self.target_share)
        room = int(budget * self.memory_share)
        self._move_groups(s, session, end, target - room)
        others = self._tokens(
            session, [m for m in self._compose(s, session, end) if m.id != "context-distill-memory"]
        )
        s.memory.focus(
            focus_of(
                [
                    *session.messages[session.pinned : session.pinned + 1],
                    *self._live(s, session, end),
                ]
            )
        )
        # The memory keeps its share; with ``memory_yields`` it gives way when the verbatim
        # part leaves less than a headroom below the budget (else the next call crosses).
        headroom = int(budget * (1 - self.target_share) / 2) if self.memory_yields else 0
        cap = max(target - others, min(room, total - others - headroom) if headroom else room, 0)
        s.memory.fit(cap if s.facts else None)
        s.memory_tokens.append(s.memory.tokens)
        return self._compose(s, session, end)

    def _reduce_results(self, s: _State, session: Session, end: int) -> None:
        results = [i for i in range(s.upto, end) if isinstance(session.messages[i], ToolMessage)]
        for index in results[: max(len(results) - self.keep_results, 0)]:
            if index in s.reduced:
                continue
            original = session.messages[index]
            assert isinstance(original, ToolMessage)
            text = original.content if isinstance(original.content, str) else str(original.content)
            summary = summarize_output(text) or "(no output)"
            s.reduced[index] = original.model_copy(update={"content": f"[facts] {summary}"})

    def _groups(self, session: Session, start: int, end: int) -> list[tuple[int, int]]:
        spans = []
        index = start
        while index < end:
            stop = index + 1
            if isinstance(session.messages[index], AIMessage):
                while stop < end and isinstance(session.messages[stop], ToolMessage):
                    stop += 1
            spans.append((index, stop))
            index = stop
        return spans

    def _move_groups(self, s: _State, session: Session, end: int, most: int) -> None:
        """Oldest whole groups into the memory until the rest fits ``most`` tokens."""
        spans = self._groups(session, s.upto, end)
        latest_human = max(
            (i for i in range(s.upto, end) if isinstance(session.messages[i], HumanMessage)),
            default=-1,
        )
        head = self._tokens(session, session.messages[: session.pinned + 1])
        for start, stop in spans[:-1]:
            live = head + self._tokens(session, self._live(s, session, end))
            if live <= most or start <= latest_human < stop:
                break
            group = Group(
                "t",
                tuple(session.messages[start:stop]),
                tuple(f"m{i}" for i in range(start, stop)),
                tokens=1,
                anchor=None,
            )
            stored = [
                StoredFact(
                    s.facts + n, fact.text, fact.source_ids, tuple(range(start + 1, stop + 1)), 0, 1
                )
                for n, fact in enumerate(distill_group(group))
            ]
            s.facts += len(stored)
            s.memory.add(stored)
            s.upto = stop

    def finish(self, state: Any, trace: Trace) -> None:
        s: _State = state
        trace.notes.update(crossings=s.crossings, facts=s.facts)
        trace.extra["facts"] = [line for line in s.memory.lines()]
