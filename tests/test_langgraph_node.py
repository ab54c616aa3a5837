"""DistillNode in real LangGraph graphs: view and rewrite modes, sync and async, streaming."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from agent_kit import (
    BUDGET,
    SYSTEM,
    TASK,
    build_graph,
    config,
    first_input,
    make_model,
    turns,
    view_tokens,
)
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Overwrite

from context_distill import ContextDistiller, Distiller, SQLiteMemoryStore
from context_distill.distillers.extractive import ExtractiveDistiller
from context_distill.langgraph import (
    LLM_INPUT_KEY,
    DistillNode,
    DistillState,
    InvalidStateError,
    MissingThreadIdError,
)
from context_distill.types import Group, GroupFacts


def _engine(budget: int = BUDGET, **options: Any) -> ContextDistiller:
    return ContextDistiller(SQLiteMemoryStore(":memory:"), budget_tokens=budget, **options)


def _long_history(pairs: int) -> list[BaseMessage]:
    messages: list[BaseMessage] = [SystemMessage(SYSTEM, id="sys"), HumanMessage(TASK, id="task")]
    for n in range(pairs):
        question = f"Question {n}: what is the status of service-{n}?"
        messages.append(HumanMessage(question, id=f"h{n}"))
        messages.append(
            AIMessage(
                f"Service-{n} is healthy; build {1000 + n} deployed to eu-west-{n % 3} with "
                "latency 120 ms, error rate 0.01 percent, owner platform team, ticket "
                f"OPS-{2000 + n}. Nothing else changed since the last review.",
                id=f"a{n}",
            )
        )
    return messages


def _run(app: Any, thread: str, texts: Sequence[str], *, graph: bool = True) -> dict[str, Any]:
    state: dict[str, Any] = app.invoke(first_input(texts[0], graph=graph), config(thread))
    for text in texts[1:]:
        state = app.invoke({"messages": [HumanMessage(text)]}, config(thread))
    return state


def test_view_mode_keeps_state_and_hands_the_model_the_view() -> None:
    engine = _engine()
    model = make_model()
    app = build_graph(engine, model, mode="view", checkpointer=InMemorySaver())
    state = _run(app, "v1", turns(3, 30))
    # The state holds every message; the model saw the compact view.
    assert len(state["messages"]) > 150
    history_tokens = view_tokens(state["messages"])
    assert history_tokens > 5 * BUDGET
    assert max(view_tokens(call) for call in model.calls) <= BUDGET
    view = state[LLM_INPUT_KEY]
    assert view[0].content == SYSTEM and view[1].content == TASK
    assert view[2].additional_kwargs.get("context_distill") == "memory"
    assert engine.stats("v1").distillations > 0


def test_rewrite_mode_stores_a_compact_state_in_the_checkpointer() -> None:
    engine = _engine()
    model = make_model()
    saver = InMemorySaver()
    app = build_graph(engine, model, mode="rewrite", checkpointer=saver)
    state = _run(app, "r1", turns(3, 30))
    stats = engine.stats("r1")
    assert stats.tokens_in > 5 * BUDGET
    # The checkpointed state is itself the compact view.
    checkpointed = app.get_state(config("r1")).values["messages"]
    assert view_tokens(checkpointed) <= BUDGET + 200  # plus the final answer
    assert checkpointed[0].content == SYSTEM and checkpointed[1].content == TASK
    assert any(m.additional_kwargs.get("context_distill") == "memory" for m in checkpointed)
    assert state["messages"][-1].content == "Turn 3 done: 30 tool calls made."
    # Every call the model got was a compact, valid request.
    assert max(view_tokens(call) for call in model.calls) <= BUDGET


def test_rewrite_mode_recognises_its_own_view_and_distills_nothing_twice() -> None:
    engine = _engine(budget=400)
    node = DistillNode(engine, mode="rewrite")
    history = _long_history(12)
    cfg = config("own")
    out = node({"messages": history}, cfg)
    assert isinstance(out["messages"], Overwrite)
    compact = out["messages"].value
    assert len(compact) < len(history)
    # The next turn passes the compact state plus one new message.
    state = [*compact, HumanMessage("and now?", id="new")]
    again = node({"messages": state}, cfg)
    if again:
        state = again["messages"].value
    assert engine.stats("own").messages == len(history) + 1
    # The same state once more: the node recognises its own view and changes nothing.
    distillations = engine.stats("own").distillations
    assert node({"messages": state}, cfg) == {}
    assert node({"messages": state}, cfg) == {}
    assert engine.stats("own").distillations == distillations


def test_view_mode_as_plain_callable_and_runnable() -> None:
    engine = _engine(budget=400)
    node = DistillNode(engine)
    history = _long_history(12)
    out = node({"messages": history}, config("c1"))
    assert set(out) == {LLM_INPUT_KEY}
    view = out[LLM_INPUT_KEY].value
    assert view[0].id == "sys" and view[1].id == "task"
    assert view_tokens(view) <= 400
    # The same through the runnable interface, sync and async, on a fresh thread.
    sync = node.invoke({"messages": history}, config("c2"))[LLM_INPUT_KEY].value
    async_view = asyncio.run(node.ainvoke({"messages": history}, config("c3")))[LLM_INPUT_KEY].value
    assert [m.id for m in sync] == [m.id for m in async_view]
    assert [m.id for m in sync[3:]] == [m.id for m in view[3:]]


def test_missing_thread_id_is_a_clear_error() -> None:
    node = DistillNode(_engine())
    with pytest.raises(MissingThreadIdError, match="thread_id"):
        node({"messages": _long_history(1)})
    builder = StateGraph(DistillState)
    builder.add_node("distill", node)  # type: ignore[arg-type]
    builder.add_edge(START, "distill")
    builder.add_edge("distill", END)
    with pytest.raises(MissingThreadIdError):
        builder.compile().invoke({"messages": _long_history(1)})


def test_constructor_builds_an_engine_or_refuses_ambiguity() -> None:
    node = DistillNode(budget_tokens=500, distiller="extractive", mode="rewrite")
    assert node.engine.budget_tokens == 500
    assert isinstance(node.engine.distiller, ExtractiveDistiller)
    with pytest.raises(TypeError):
        DistillNode(_engine(), budget_tokens=500)
    with pytest.raises(TypeError):
        DistillNode()
    with pytest.raises(ValueError, match="mode"):
        DistillNode(_engine(), mode="summary")  # type: ignore[arg-type]


def test_async_graph_in_view_mode() -> None:
    engine = _engine()
    model = make_model()
    app = build_graph(engine, model, mode="view", checkpointer=InMemorySaver())

    async def main() -> dict[str, Any]:
        texts = turns(2, 30)
        state: dict[str, Any] = await app.ainvoke(first_input(texts[0], graph=True), config("a1"))
        state = await app.ainvoke({"messages": [HumanMessage(texts[1])]}, config("a1"))
        return state

    state = asyncio.run(main())
    assert state["messages"][-1].content == "Turn 2 done: 30 tool calls made."
    assert engine.stats("a1").distillations > 0
    assert max(view_tokens(call) for call in model.calls) <= BUDGET


class _ChatModelDistiller(Distiller):
    """A distiller that asks a chat model, as a model-backed distiller would."""

    name = "chat-test"

    def __init__(self) -> None:
        self.model = GenericFakeChatModel(
            messages=iter([AIMessage("SECRET distilled words from the distiller")] * 10_000)
        )
        self.calls = 0
        self.inner = ExtractiveDistiller()

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.calls += 1
        self.model.invoke("distill these turns")
        return self.inner.distill(groups)

    async def adistill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.calls += 1
        await self.model.ainvoke("distill these turns")
        return self.inner.distill(groups)


def _stream_items(app: Any, texts: Sequence[str], thread: str, *, use_async: bool) -> list[Any]:
    items: list[Any] = []

    async def arun() -> None:
        first = True
        for text in texts:
            payload = first_input(text, graph=True) if first else {"messages": [HumanMessage(text)]}
            first = False
            async for item in app.astream(payload, config(thread), stream_mode="messages"):
                items.append(item)

    if use_async:
        asyncio.run(arun())
    else:
        first = True
        for text in texts:
            payload = first_input(text, graph=True) if first else {"messages": [HumanMessage(text)]}
            first = False
            items.extend(app.stream(payload, config(thread), stream_mode="messages"))
    return items


@pytest.mark.parametrize("mode", ["view", "rewrite"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_distillation_never_reaches_the_token_stream(mode: str, use_async: bool) -> None:
    distiller = _ChatModelDistiller()
    engine = _engine(distiller=distiller)
    model = make_model()
    app = build_graph(engine, model, mode=mode, checkpointer=InMemorySaver())
    items = _stream_items(app, turns(2, 30), f"s-{mode}-{use_async}", use_async=use_async)
    assert distiller.calls > 0 and engine.stats(f"s-{mode}-{use_async}").distillations > 0
    nodes = {meta["langgraph_node"] for _, meta in items}
    assert nodes <= {"agent", "tools"}, nodes
    kinds = {(meta["langgraph_node"], type(message).__name__) for message, meta in items}
    assert kinds == {("agent", "AIMessageChunk"), ("tools", "ToolMessage")}
    for message, _ in items:
        text = message.text
        assert "SECRET" not in text and "[Memory]" not in text
        assert message.additional_kwargs.get("context_distill") is None
    # The agent's own tokens do stream.
    streamed = "".join(m.text for m, meta in items if meta["langgraph_node"] == "agent")
    assert "Turn 2 done: 30 tool calls made." in streamed


def test_view_mode_in_a_state_without_the_view_key_is_a_clear_error() -> None:
    builder = StateGraph(MessagesState)
    builder.add_node("distill", DistillNode(_engine()))  # type: ignore[arg-type]
    builder.add_edge(START, "distill")
    builder.add_edge("distill", END)
    with pytest.raises(InvalidStateError, match="DistillState"):
        builder.compile().invoke({"messages": _long_history(1)}, config("k"))
    # Rewrite mode needs no extra key.
    rewrite = StateGraph(MessagesState)
    rewrite.add_node("distill", DistillNode(_engine(), mode="rewrite"))  # type: ignore[arg-type]
    rewrite.add_edge(START, "distill")
    rewrite.add_edge("distill", END)
    assert (
        len(rewrite.compile().invoke({"messages": _long_history(1)}, config("k2"))["messages"]) == 4
    )
