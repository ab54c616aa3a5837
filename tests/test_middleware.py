"""ContextDistillMiddleware in real create_agent agents: both modes, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from agent_kit import (
    BUDGET,
    SYSTEM,
    TASK,
    TOOLS,
    build_agent,
    config,
    first_input,
    make_model,
    request_id,
    turns,
    view_tokens,
)
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from context_distill import ContextDistiller, Distiller, SQLiteMemoryStore
from context_distill.distillers.extractive import ExtractiveDistiller
from context_distill.middleware import ContextDistillMiddleware, MissingThreadIdError
from context_distill.testing import ScriptedChatModel
from context_distill.types import Group, GroupFacts


def _engine(budget: int = BUDGET, **options: Any) -> ContextDistiller:
    return ContextDistiller(SQLiteMemoryStore(":memory:"), budget_tokens=budget, **options)


def _run(app: Any, thread: str, texts: Sequence[str]) -> dict[str, Any]:
    state: dict[str, Any] = app.invoke(first_input(texts[0], graph=False), config(thread))
    for text in texts[1:]:
        state = app.invoke({"messages": [HumanMessage(text)]}, config(thread))
    return state


async def _arun(app: Any, thread: str, texts: Sequence[str]) -> dict[str, Any]:
    state: dict[str, Any] = await app.ainvoke(first_input(texts[0], graph=False), config(thread))
    for text in texts[1:]:
        state = await app.ainvoke({"messages": [HumanMessage(text)]}, config(thread))
    return state


def _memory_of(messages: Sequence[Any]) -> list[Any]:
    return [m for m in messages if m.additional_kwargs.get("context_distill") == "memory"]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_view_mode_edits_only_what_the_model_sees(use_async: bool) -> None:
    engine = _engine()
    model = make_model()
    app = build_agent(engine, model, mode="view", checkpointer=InMemorySaver())
    texts = turns(3, 30)
    state = asyncio.run(_arun(app, "v", texts)) if use_async else _run(app, "v", texts)
    assert state["messages"][-1].content == "Turn 3 done: 30 tool calls made."
    # The agent state still holds the whole history and no memory message.
    assert view_tokens(state["messages"]) > 5 * BUDGET
    assert not _memory_of(state["messages"])
    # Each model call: the system prompt first, then a view within the budget.
    for call in model.calls:
        assert call[0].content == SYSTEM
        assert view_tokens(call, skip_system=True) <= BUDGET
    assert _memory_of(model.calls[-1])
    assert engine.stats("v").distillations > 0


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_rewrite_mode_compacts_the_agent_state(use_async: bool) -> None:
    engine = _engine()
    model = make_model()
    app = build_agent(engine, model, mode="rewrite", checkpointer=InMemorySaver())
    texts = turns(3, 30)
    state = asyncio.run(_arun(app, "r", texts)) if use_async else _run(app, "r", texts)
    assert state["messages"][-1].content == "Turn 3 done: 30 tool calls made."
    assert engine.stats("r").tokens_in > 5 * BUDGET
    checkpointed = app.get_state(config("r")).values["messages"]
    assert checkpointed[0].content == TASK
    assert _memory_of(checkpointed)
    assert view_tokens(checkpointed) <= BUDGET + 200
    for call in model.calls:
        assert view_tokens(call, skip_system=True) <= BUDGET


def test_recall_tool_is_registered_and_announced() -> None:
    engine = _engine(budget=1500)
    middleware = ContextDistillMiddleware(engine, recall_tool=True)
    assert [tool.name for tool in middleware.tools] == ["recall"]
    assert engine.recall_tool == "recall"
    model = make_model()
    app = create_agent(
        model, TOOLS, system_prompt=SYSTEM, middleware=[middleware], checkpointer=InMemorySaver()
    )
    _run(app, "rt", turns(1, 30))
    memory = _memory_of(model.calls[-1])
    assert memory and "recall tool" in memory[0].text
    # The model is offered the tool.
    assert "recall" in str(app.get_graph().nodes["tools"].data)


def test_missing_thread_id_is_a_clear_error() -> None:
    model = ScriptedChatModel(script=["hello"])
    app = create_agent(model, [], middleware=[ContextDistillMiddleware(budget_tokens=500)])
    with pytest.raises(MissingThreadIdError, match="thread_id"):
        app.invoke({"messages": [HumanMessage("hi")]})
    rewrite = create_agent(
        ScriptedChatModel(script=["hello"]),
        [],
        middleware=[ContextDistillMiddleware(budget_tokens=500, mode="rewrite")],
    )
    with pytest.raises(MissingThreadIdError):
        rewrite.invoke({"messages": [HumanMessage("hi")]})


def test_constructor_builds_an_engine_or_refuses_ambiguity() -> None:
    middleware = ContextDistillMiddleware(budget_tokens=800, distiller="extractive")
    assert middleware.engine.budget_tokens == 800
    assert middleware.mode == "view" and middleware.tools == []
    with pytest.raises(TypeError):
        ContextDistillMiddleware(_engine(), budget_tokens=800)
    with pytest.raises(ValueError, match="mode"):
        ContextDistillMiddleware(_engine(), mode="both")  # type: ignore[arg-type]


class _ChatModelDistiller(Distiller):
    name = "chat-test"

    def __init__(self) -> None:
        self.model = GenericFakeChatModel(
            messages=iter([AIMessage("SECRET distilled words from the distiller")] * 10_000)
        )
        self.calls = 0

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.calls += 1
        self.model.invoke("distill")
        return ExtractiveDistiller().distill(groups)

    async def adistill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.calls += 1
        await self.model.ainvoke("distill")
        return ExtractiveDistiller().distill(groups)


@pytest.mark.parametrize("mode", ["view", "rewrite"])
def test_stream_shows_the_agent_tokens_only(mode: str) -> None:
    distiller = _ChatModelDistiller()
    engine = _engine(distiller=distiller)
    model = make_model()
    app = build_agent(engine, model, mode=mode, checkpointer=InMemorySaver())
    texts = turns(2, 30)
    items: list[Any] = []

    async def main() -> None:
        for index, text in enumerate(texts):
            payload = (
                first_input(text, graph=False) if index == 0 else {"messages": [HumanMessage(text)]}
            )
            async for item in app.astream(payload, config(f"st-{mode}"), stream_mode="messages"):
                items.append(item)

    asyncio.run(main())
    # Sync streaming of one more turn.
    items.extend(
        app.stream(
            {"messages": [HumanMessage("turn 3: make 10 tool calls")]},
            config(f"st-{mode}"),
            stream_mode="messages",
        )
    )
    assert distiller.calls > 0
    kinds = {(meta["langgraph_node"], type(message).__name__) for message, meta in items}
    assert kinds == {("model", "AIMessageChunk"), ("tools", "ToolMessage")}, kinds
    for message, _ in items:
        assert "SECRET" not in message.text and "[Memory]" not in message.text
    streamed = "".join(m.text for m, meta in items if meta["langgraph_node"] == "model")
    assert "Turn 3 done: 10 tool calls made." in streamed


def test_concurrent_threads_on_one_engine_stay_apart(tmp_path: Any) -> None:
    engine = ContextDistiller(SQLiteMemoryStore(tmp_path / "a.sqlite"), budget_tokens=BUDGET)
    model = make_model()
    app = build_agent(engine, model, mode="view", checkpointer=InMemorySaver())

    async def main() -> list[dict[str, Any]]:
        return await asyncio.gather(
            *(
                _arun(app, thread, turns(3, 30, first=first))
                for thread, first in (("A", 1), ("B", 101), ("C", 201))
            )
        )

    finals = [state["messages"][-1].text for state in asyncio.run(main())]
    assert finals == [f"Turn {n} done: 30 tool calls made." for n in (3, 103, 203)]
    for thread, first in (("A", 1), ("B", 101), ("C", 201)):
        stats = engine.stats(thread)
        assert stats.distillations > 0 and stats.peak_view_tokens <= BUDGET
        marker = request_id("weather", "Berlin", f"T{first}-0-0")  # its first tool result
        assert engine.store.search(marker, thread_id=thread)
        for other in {"A", "B", "C"} - {thread}:
            assert not engine.store.search(marker, thread_id=other)
