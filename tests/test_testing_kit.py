"""context_distill.testing: the scripted model and the provider checker catch what they claim."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import message_chunk_to_message

from context_distill.testing import (
    ModelInputError,
    ScriptedChatModel,
    ScriptExhaustedError,
    check_model_input,
    tool_call,
)

SYSTEM = SystemMessage("system prompt")
TASK = HumanMessage("the task")


def _call(*ids: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": i} for i in ids])


def test_valid_request_passes() -> None:
    check_model_input(
        [
            SYSTEM,
            TASK,
            _call("a", "b"),
            ToolMessage("1", tool_call_id="a"),
            ToolMessage("2", tool_call_id="b"),
            AIMessage("done"),
            HumanMessage("more"),
        ],
        system_prompt="system prompt",
        task="the task",
    )


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([TASK, SYSTEM], "system message after"),
        ([SYSTEM, AIMessage("hi"), TASK], "opens with a ai message"),
        ([SYSTEM, TASK, _call("a", "b"), ToolMessage("1", tool_call_id="a")], "not answered"),
        ([SYSTEM, TASK, ToolMessage("1", tool_call_id="a")], "without its call"),
        (
            [
                SYSTEM,
                TASK,
                _call("a"),
                ToolMessage("1", tool_call_id="a"),
                ToolMessage("2", tool_call_id="a"),
            ],
            "second result",
        ),
        (
            [SYSTEM, TASK, _call("a"), AIMessage("x"), ToolMessage("1", tool_call_id="a")],
            "not answered",
        ),
        (
            [
                SYSTEM,
                TASK,
                _call("a"),
                ToolMessage("1", tool_call_id="a"),
                _call("a"),
                ToolMessage("1", tool_call_id="a"),
            ],
            "used twice",
        ),
        ([SYSTEM, HumanMessage("another task")], "task"),
        ([TASK], "system prompt is not the first"),
    ],
)
def test_each_problem_is_caught(messages: list, problem: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ModelInputError, match=problem):
        check_model_input(messages, system_prompt="system prompt", task="the task")


def test_script_then_respond_then_exhausted() -> None:
    model = ScriptedChatModel(script=["one", [tool_call("f", x=1), tool_call("g", y=2)]])
    assert model.invoke("hi").content == "one"
    calls = model.invoke("hi").tool_calls
    assert [c["name"] for c in calls] == ["f", "g"] and calls[0]["args"] == {"x": 1}
    with pytest.raises(ScriptExhaustedError):
        model.invoke("hi")
    responder = ScriptedChatModel(respond=lambda messages: f"{len(messages)} messages")
    assert responder.invoke([TASK, AIMessage("a"), HumanMessage("b")]).content == "3 messages"
    assert len(responder.calls) == 1


def test_streaming_yields_words_and_whole_tool_calls() -> None:
    model = ScriptedChatModel(
        script=[
            "three little words",
            [tool_call("f", _id="c1", a=1), tool_call("g", _id="c2", b=2)],
        ]
    )
    chunks = list(model.stream("hi"))
    assert [c.content for c in chunks if c.content] == ["three ", "little ", "words"]
    tool_chunks = list(model.stream("hi"))
    merged = tool_chunks[0]
    for chunk in tool_chunks[1:]:
        merged = merged + chunk
    message = message_chunk_to_message(merged)
    assert [c["id"] for c in message.tool_calls] == ["c1", "c2"]  # type: ignore[attr-defined]


def test_bind_tools_and_check_hook() -> None:
    seen: list[int] = []
    model = ScriptedChatModel(script=["ok"], check=lambda m: seen.append(len(m)))
    bound = model.bind_tools([{"type": "function", "function": {"name": "f", "parameters": {}}}])
    assert bound.invoke([SYSTEM, TASK]).content == "ok"
    assert seen == [2]
