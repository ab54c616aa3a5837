"""Every door takes what LangChain's convert_to_messages takes, and refuses the rest by index."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompt_values import ChatPromptValue

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.errors import InvalidMessageError
from context_distill.history import DistillingChatMessageHistory
from context_distill.langgraph import DistillNode
from context_distill.messages import coerce_messages


def _openai_history(turns: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"role": "system", "content": "You look up parcels."},
        {"role": "user", "content": "Where are my parcels?"},
    ]
    for n in range(turns):
        call = {
            "id": f"c{n}",
            "type": "function",
            "function": {"name": "track", "arguments": json.dumps({"n": n})},
        }
        out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        body = {"parcel": f"PX-{n:04d}", "status": "in transit", "note": "depot " * 40}
        out.append({"role": "tool", "tool_call_id": f"c{n}", "content": json.dumps(body)})
    return out


def _as_messages(history: list[dict[str, Any]]) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    for item in history:
        role = item["role"]
        if role == "system":
            out.append(SystemMessage(item["content"]))
        elif role == "user":
            out.append(HumanMessage(item["content"]))
        elif role == "assistant":
            calls = [
                {
                    "name": c["function"]["name"],
                    "args": json.loads(c["function"]["arguments"]),
                    "id": c["id"],
                }
                for c in item["tool_calls"]
            ]
            out.append(AIMessage("", tool_calls=calls))
        else:
            out.append(ToolMessage(item["content"], tool_call_id=item["tool_call_id"]))
    return out


def test_openai_dicts_give_the_same_view_as_messages() -> None:
    history = _openai_history(30)
    from_dicts = ContextDistiller(SQLiteMemoryStore(), budget_tokens=900)
    from_messages = ContextDistiller(SQLiteMemoryStore(), budget_tokens=900)
    for end in range(3, len(history) + 1):
        a = from_dicts.update("t", history[:end])
        b = from_messages.update("t", _as_messages(history[:end]))
    assert a.stats.distillations > 0 and a.stats == b.stats
    assert [m.text for m in a.view] == [m.text for m in b.view]
    assert all(isinstance(m, BaseMessage) for m in a.view)


def test_tuples_strings_and_prompt_values() -> None:
    engine = ContextDistiller(SQLiteMemoryStore(), budget_tokens=2000)
    view = engine.process("t", [("system", "be brief"), ("user", "hi"), ("ai", "hello"), "thanks"])
    assert [m.type for m in view] == ["system", "human", "ai", "human"]
    assert view[-1].text == "thanks"
    prompt = ChatPromptValue(messages=[SystemMessage("s"), HumanMessage("q")])
    assert [m.type for m in engine.process("p", prompt)] == ["system", "human"]
    gen = (m for m in [("user", "from a generator")])
    assert engine.process("g", gen)[0].text == "from a generator"
    view = asyncio.run(engine.aprocess("a", [{"role": "user", "content": "async"}]))
    assert view[0].text == "async"


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"role": "robot", "content": "x"}, "message 1: unknown role 'robot'"),
        (("robot", "x"), "message 1: unknown role 'robot'"),
        (("user",), "message 1: a tuple must be (role, content), not 1 items"),
        ({"content": "x"}, "message 1: a dict needs a 'role'"),
        ({"role": "tool", "content": "r"}, "message 1: a tool message needs a 'tool_call_id'"),
        (5, "message 1 is a int; expected a LangChain message"),
        (None, "message 1 is a NoneType"),
    ],
)
def test_bad_items_are_named_by_index_in_every_door(bad: Any, expected: str) -> None:
    good = {"role": "user", "content": "hello"}
    engine = ContextDistiller(SQLiteMemoryStore(), budget_tokens=500)
    with pytest.raises(InvalidMessageError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        engine.process("t", [good, bad])
    with pytest.raises(InvalidMessageError, match="message 1"):
        asyncio.run(engine.aprocess("t2", [good, bad]))
    node = DistillNode(engine)
    with pytest.raises(InvalidMessageError, match="message 1"):
        node.invoke({"messages": [good, bad]}, {"configurable": {"thread_id": "n"}})
    history = DistillingChatMessageHistory(InMemoryChatMessageHistory(), engine, thread_id="h")
    with pytest.raises(InvalidMessageError, match="message 1"):
        history.add_messages([good, bad])
    assert history.history.messages == []  # nothing half-added
    # The engine keeps working after a refusal.
    assert engine.process("t", [good])[0].text == "hello"


def test_a_history_must_be_a_list() -> None:
    engine = ContextDistiller(SQLiteMemoryStore(), budget_tokens=500)
    for bad in ("hello", {"role": "user", "content": "x"}, HumanMessage("x"), 7):
        with pytest.raises(InvalidMessageError, match="must be a list of messages"):
            engine.process("t", bad)


def test_history_door_takes_dicts_and_tuples() -> None:
    engine = ContextDistiller(SQLiteMemoryStore(), budget_tokens=500)
    history = DistillingChatMessageHistory(InMemoryChatMessageHistory(), engine, thread_id="h")
    history.add_messages([("user", "hi"), {"role": "assistant", "content": "hello"}])
    asyncio.run(history.aadd_messages(["and a string"]))
    assert [m.type for m in history.messages] == ["human", "ai", "human"]
    assert all(m.id for m in history.history.messages)


def test_langgraph_node_takes_dicts() -> None:
    node = DistillNode(budget_tokens=900, mode="rewrite")
    out = node.invoke({"messages": _openai_history(30)}, {"configurable": {"thread_id": "g"}})
    view = out["messages"].value
    assert all(isinstance(m, BaseMessage) for m in view)
    assert any(m.additional_kwargs.get("context_distill") == "memory" for m in view)


def test_messages_pass_through_untouched() -> None:
    message = HumanMessage("x", id="h1")
    coerced = coerce_messages([message])
    assert coerced[0] is message and len(coerced) == 1 and coerced[-1] is message
    assert coerced[0:1] == [message]
