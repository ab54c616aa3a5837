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
from context_distill.messages import (
    block_text,
    chat_role,
    derived_id,
    digest,
    from_json,
    plain_text,
    prose_of,
    role_label,
    text_of,
    to_json,
    validate,
)
from context_distill.tokens import block_text as block_text_from_tokens


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


def test_the_three_texts_of_one_message() -> None:
    message = AIMessage(
        content=[
            {"type": "reasoning", "reasoning": "think"},
            {"type": "text", "text": "The refund is "},
            {"type": "text", "text": "30 days."},
            {"type": "image", "url": "x"},
        ],
        tool_calls=[{"name": "lookup", "args": {"q": "Berlin"}, "id": "c1"}],
    )
    assert prose_of(message) == "The refund is \n30 days.\n[image]"  # words said, media named
    assert plain_text(message) == "The refund is 30 days."  # as a provider reads it
    assert "think" in text_of(message) and "lookup(" in text_of(message)  # all, for search
    assert prose_of(HumanMessage("plain")) == plain_text(HumanMessage("plain")) == "plain"


def test_block_text() -> None:
    assert block_text({"type": "text", "text": "hi"}) == "hi"
    assert block_text({"type": "image", "url": "x"}) is None
    assert block_text({"type": "tool_use", "id": "1"}) == '{"id": "1", "type": "tool_use"}'
    assert block_text_from_tokens is block_text


def test_role_label_names_the_speaker() -> None:
    assert role_label(HumanMessage("x")) == "User"
    assert role_label(AIMessage("x")) == "Assistant"
    assert role_label(HumanMessage("x", name="ann")) == "ann"
    assert role_label(ToolMessage("x", tool_call_id="c")) == "Tool"
    assert [chat_role(m) for m in (SystemMessage("x"), HumanMessage("x"), AIMessage("x"))] == [
        "system",
        "user",
        "assistant",
    ]
