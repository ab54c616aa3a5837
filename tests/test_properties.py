"""The invariants of DESIGN.md, held over random histories with parallel tool calls."""

from __future__ import annotations

import json
from pathlib import Path
from tempfile import TemporaryDirectory

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.messages import MARKER_KEY, MEMORY_MARK, REDUCED_MARK
from context_distill.tokens import count_message

WORDS = [
    "alpha",
    "Berlin",
    "order",
    "42",
    "ord_7Q2X9",
    "failed",
    "paid",
    "/srv/app.py",
    "the",
    "of",
]


def cheap(text: str) -> int:
    return (len(text) + 3) // 4


@st.composite
def histories(draw: st.DrawFn) -> list[BaseMessage]:
    history: list[BaseMessage] = []
    if draw(st.booleans()):
        history.append(SystemMessage("You are a helpful agent.", id="sys"))
    task = " ".join(draw(st.lists(st.sampled_from(WORDS), max_size=8)))
    history.append(HumanMessage(f"Task: {task}", id="task"))
    steps = draw(st.integers(min_value=1, max_value=60))
    call = 0
    for step in range(steps):
        kind = draw(st.sampled_from(["calls", "calls", "calls", "human", "ai"]))
        text = " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=60)))
        if kind == "human":
            history.append(HumanMessage(text, id=f"h{step}"))
        elif kind == "ai":
            history.append(AIMessage(text, id=f"a{step}"))
        else:
            width = draw(st.integers(min_value=1, max_value=4))
            ids = [f"c{call + k}" for k in range(width)]
            call += width
            history.append(
                AIMessage(
                    "",
                    id=f"a{step}",
                    tool_calls=[{"name": "lookup", "args": {"q": text[:20]}, "id": i} for i in ids],
                )
            )
            order = draw(st.permutations(ids))
            for cid in order:
                size = draw(st.integers(min_value=0, max_value=400))
                data = " ".join(WORDS[i % len(WORDS)] for i in range(size))
                body = json.dumps({"call": cid, "data": data})
                history.append(ToolMessage(body, tool_call_id=cid, id=f"r{cid}"))
    return history


def check_view(
    view: list[BaseMessage],
    history: list[BaseMessage],
    store: SQLiteMemoryStore,
    update_stats: object,
    budget: int,
) -> None:
    stats = update_stats
    # 5: the stats tell the truth, and the view fits unless they say why not
    assert stats.tokens_view == sum(count_message(m, cheap) for m in view)  # type: ignore[attr-defined]
    if stats.tokens_view > budget:  # type: ignore[attr-defined]
        assert stats.over_budget and stats.reason  # type: ignore[attr-defined]
    # 2: tool calls whole
    pending: set[str] = set()
    for message in view:
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in pending
            pending.discard(message.tool_call_id)
        else:
            assert not pending
            if isinstance(message, AIMessage):
                pending = {c["id"] for c in message.tool_calls}
    # 3: pinned context stays, the latest human turn is verbatim
    for message in history[:2]:
        if message.id in ("sys", "task"):
            assert message in view
    humans = [m for m in history if isinstance(m, HumanMessage)]
    if humans:
        assert humans[-1] in view
    # 1: nothing lost - whatever left the view is archived word for word
    shown = {m.id for m in view if m.additional_kwargs.get(MARKER_KEY) != REDUCED_MARK}
    gone = [m for m in history if m.id not in shown]
    if gone:
        archived = {m.id: m for _, m in store.get_messages("p", ids=[m.id for m in gone])}
        for message in gone:
            assert archived.get(message.id) == message
    assert sum(1 for m in view if m.additional_kwargs.get(MARKER_KEY) == MEMORY_MARK) <= 1


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(history=histories(), budget=st.integers(min_value=150, max_value=3000))
def test_invariants_hold_on_every_turn(history: list[BaseMessage], budget: int) -> None:
    with TemporaryDirectory() as folder:
        store = (
            SQLiteMemoryStore(Path(folder) / "p.db")
            if len(history) % 4 == 0
            else SQLiteMemoryStore()
        )
        engine = ContextDistiller(store, budget_tokens=budget, token_counter=cheap)
        last = None
        for end in range(1, len(history) + 1):
            if end < len(history) and isinstance(history[end], ToolMessage):
                continue  # the model is asked only once every result is in
            last = engine.update("p", history[:end])
            check_view(last.view, history[:end], store, last.stats, budget)
        assert last is not None
        # 6: the same history again distills nothing new
        again = engine.update("p", history)
        assert not again.distilled and again.view == last.view
        # 7: provenance - every fact names archived messages of its thread
        archived_ids = {m.id for _, m in store.get_messages("p", refs=range(1, 100_000))}
        for fact in store.facts("p"):
            assert fact.source_ids and set(fact.source_ids) <= archived_ids
        assert store.integrity_ok()
        store.close()
