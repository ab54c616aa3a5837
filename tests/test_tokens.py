"""Token accounting: exact offline counts, what providers bill, graceful fallback."""

from __future__ import annotations

import logging

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from context_distill.memory import MemoryBlock
from context_distill.store import StoredFact
from context_distill.tokens import (
    MEDIA_BLOCK_TOKENS,
    MESSAGE_OVERHEAD,
    approximate_count,
    count_message,
    encoding_counter,
    resolve_counter,
)

ENCODINGS = ("o200k_base", "cl100k_base")


def test_o200k_loads_offline_and_counts_exactly() -> None:
    count = encoding_counter("o200k_base")
    assert count is not approximate_count
    # o200k_base splits this into exactly these pieces.
    assert count("hello world") == 2
    assert count("") == 0


def test_cl100k_is_available_too() -> None:
    count = encoding_counter("cl100k_base")
    assert count is not approximate_count
    assert count("hello world") == 2


def test_unknown_encoding_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="context_distill.tokens"):
        count = encoding_counter("no_such_encoding_xyz")
    assert count is approximate_count
    assert "approximate" in caplog.text


def test_callable_counter_is_used_as_given() -> None:
    def words(text: str) -> int:
        return len(text.split())

    assert resolve_counter(words) is words
    with pytest.raises(TypeError):
        resolve_counter(42)  # type: ignore[arg-type]


def test_message_count_includes_role_name_calls_and_results() -> None:
    count = encoding_counter("o200k_base")
    plain = count_message(HumanMessage("hello world"), count)
    assert plain == MESSAGE_OVERHEAD + count("human") + 2
    named = count_message(HumanMessage("hello world", name="alice"), count)
    assert named == plain + count("alice") + 1
    call = AIMessage(
        "", tool_calls=[{"name": "get_weather", "args": {"city": "Berlin"}, "id": "c1"}]
    )
    with_call = count_message(call, count)
    assert with_call > MESSAGE_OVERHEAD + count("ai") + count("get_weather")
    result = count_message(ToolMessage("7.5 C", tool_call_id="c1"), count)
    assert result == MESSAGE_OVERHEAD + count("tool") + count("7.5 C") + count("c1")


def test_content_blocks_text_and_media() -> None:
    count = encoding_counter("o200k_base")
    blocks = HumanMessage(
        content=[
            {"type": "text", "text": "look at this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]
    )
    expected = MESSAGE_OVERHEAD + count("human") + count("look at this") + MEDIA_BLOCK_TOKENS
    assert count_message(blocks, count) == expected


_LINE = (
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1)
    .map(lambda text: " ".join(text.split()))
    .filter(bool)
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(_LINE.filter(lambda line: not line.startswith("/")), min_size=1, max_size=8),
    name=st.sampled_from(ENCODINGS),
)
def test_encodings_count_lines_additively(lines: list[str], name: str) -> None:
    """What the memory block relies on to recount only the lines that changed."""
    count = encoding_counter(name)
    assert getattr(count, "line_additive", False)
    pieces = [f"{line}\n" for line in lines[:-1]] + [lines[-1]]
    assert count("\n".join(lines)) == sum(count(piece) for piece in pieces)


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(_LINE | st.just("/srv/app.py: ok"), min_size=1, max_size=40),
    cap=st.integers(0, 400),
)
@example(texts=["done.", "/srv/app.py: ok"], cap=400)  # o200k joins ".\n/" into one piece
def test_memory_block_tokens_are_the_exact_count(texts: list[str], cap: int) -> None:
    count = encoding_counter("o200k_base")
    memory = MemoryBlock(count)
    facts = [
        StoredFact(i, text, (f"m{i}",), () if i % 3 else (i + 1,), count(text), 1)
        for i, text in enumerate(texts)
    ]
    memory.add(facts[: len(facts) // 2])
    memory.fit(cap)
    first = memory.message()
    assert memory.tokens == (count_message(first, count) if first is not None else 0)
    memory.add(facts[len(facts) // 2 :])
    for fit in (cap, None):
        memory.fit(fit)
        message = memory.message()
        assert message is not None
        assert memory.tokens == count_message(message, count)
