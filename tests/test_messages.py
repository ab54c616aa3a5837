"""Single messages: validation errors that name the message, exact archive form."""

from __future__ import annotations

import pytest
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)

from context_distill.errors import InvalidMessageError
from context_distill.messages import derived_id, digest, from_json, text_of, to_json, validate


@pytest.mark.parametrize(
    "message",
    [
        SystemMessage("be brief", id="s1"),
        HumanMessage(content=[{"type": "text", "text": "hi"}, "plain"], id="h1", name="ann"),
        AIMessage(
            content=[{"type": "text", "text": "calling"}],
            tool_calls=[
                {"name": "f", "args": {"a": 1, "b": [1, {"c": None}]}, "id": "c1"},
                {"name": "g", "args": {}, "id": "c2"},
            ],
            id="a1",
            additional_kwargs={"k": {"nested": [1.5, "x"]}},
            response_metadata={"model": "m"},
        ),
        ToolMessage("result ✓ ünïcode", tool_call_id="c1", id="t1", name="f", status="error"),
    ],
)
def test_archive_form_round_trips_exactly(message: object) -> None:
    assert from_json(to_json(message)) == message  # type: ignore[arg-type]


def test_unknown_role_is_named() -> None:
    with pytest.raises(InvalidMessageError, match=r"message 3 .*unknown role 'robot'"):
        validate(ChatMessage("x", role="robot"), 3)
    with pytest.raises(InvalidMessageError, match="unknown role 'remove'"):
        validate(RemoveMessage(id="x"), 0)


def test_not_a_message() -> None:
    with pytest.raises(InvalidMessageError, match="message 2 is a dict"):
        validate({"role": "user", "content": "x"}, 2)


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidMessageError, match="not valid Unicode"):
        validate(HumanMessage("bad \ud800 text", id="h"), 5)


def test_bad_content_block_is_refused() -> None:
    message = HumanMessage(content=["ok"])
    message.content.append(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessageError, match="content block 1 is a int"):
        validate(message, 0)


def test_duplicate_tool_call_ids_in_one_message() -> None:
    message = AIMessage(
        "", tool_calls=[{"name": "f", "args": {}, "id": "c"}, {"name": "g", "args": {}, "id": "c"}]
    )
    with pytest.raises(InvalidMessageError, match="'c' appears twice"):
        validate(message, 1)


def test_derived_ids_are_stable_and_positional() -> None:
    a = HumanMessage("same text")
    assert derived_id(a, 4) == derived_id(HumanMessage("same text"), 4)
    assert derived_id(a, 4) != derived_id(a, 5)
    assert digest(a) != digest(HumanMessage("other text"))


def test_text_of_spells_out_tool_calls_and_media() -> None:
    message = AIMessage(
        content=[{"type": "text", "text": "see"}, {"type": "image", "url": "x"}],
        tool_calls=[{"name": "lookup", "args": {"q": "Berlin"}, "id": "c1"}],
    )
    text = text_of(message)
    assert "see" in text and "[image]" in text and 'lookup({"q": "Berlin"})' in text


def test_non_json_kwargs_cannot_be_archived_exactly() -> None:
    message = HumanMessage("x", additional_kwargs={"when": object()})
    with pytest.raises(InvalidMessageError, match="cannot be archived exactly"):
        to_json(message, 7)
