"""The memory block: denser lines, nothing shown that says nothing, relevance at a fit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from context_distill._relevance import content_free, focus_of
from context_distill.memory import MemoryBlock
from context_distill.store import StoredFact
from context_distill.tokens import count_message, encoding_counter

COUNT = encoding_counter("o200k_base")


def stored(*texts: str, refs: list[tuple[int, ...]] | None = None) -> list[StoredFact]:
    return [
        StoredFact(i, text, (f"m{i}",), refs[i] if refs else (i + 1,), COUNT(text), 1)
        for i, text in enumerate(texts)
    ]


def block(*texts: str, refs: list[tuple[int, ...]] | None = None) -> MemoryBlock:
    memory = MemoryBlock(COUNT)
    memory.add(stored(*texts, refs=refs))
    return memory


def body(memory: MemoryBlock) -> list[str]:
    message = memory.message()
    assert message is not None and isinstance(message.content, str)
    lines = message.content.splitlines()[1:]  # the header and, when facts are left out,
    return lines[:-1] if lines and lines[-1].startswith("Not shown for space") else lines


def test_clauses_that_say_nothing_are_never_shown() -> None:
    memory = block(
        "Caroline: 100% agree",
        "Melanie: ok ok ok",
        "Caroline: went to Lisbon on 3 May; agreed",
    )
    memory.fit(None)
    assert body(memory) == ["#3 Caroline: went to Lisbon on 3 May"]
    assert memory.hidden == 2
    for empty in ("100% agree", "ok ok ok", "yes", "Right!"):
        assert content_free(empty)
    for full in ("went to Lisbon", "2 younger kids", "HAT170"):
        assert not content_free(full)


def test_neighbouring_facts_of_one_speaker_or_turn_share_a_line() -> None:
    memory = block(
        "Caroline: adopted a dog named Rex",
        "Caroline: works at Acme since 2021",
        "Melanie: paints on Sundays",
        "THOUGHT: look at the settings module",
        "bash(command=ls conf) → settings.py, urls.py",
        refs=[(1,), (3,), (4,), (6,), (6, 7)],
    )
    memory.fit(None)
    assert body(memory) == [
        "#1,3 Caroline: adopted a dog named Rex; works at Acme since 2021",
        "#4 Melanie: paints on Sundays",
        "#6-7 THOUGHT: look at the settings module; bash(command=ls conf) → settings.py, urls.py",
    ]


def test_a_tool_fact_shows_its_call_with_any_of_its_clauses() -> None:
    long_tail = "; ".join(f"{n}: value_{n} = compute_{n}(x)" for n in range(100, 160))
    memory = block(f"bash(command=nl -ba app/models.py) → lines 100-159; {long_tail}")
    memory.fit(60)
    (line,) = body(memory)
    assert line.startswith("#1 bash(command=nl -ba app/models.py) → ")
    assert memory.tokens <= 60


def test_focus_changes_the_choice_only_at_a_fit() -> None:
    texts = [f"bash(command=cat mod_{i}.py) → defines handler_{i} and parser_{i}" for i in range(6)]
    memory = MemoryBlock(COUNT, relevance=1.0)
    memory.add(stored(*texts))
    memory.fit(90)  # room for two facts: without a focus, the newest
    before = body(memory)
    assert [line.split()[0] for line in before] == ["#5", "#6"]
    memory.focus(["fix the bug in parser_1 and handler_1 of mod_1.py"])
    assert body(memory) == before  # the block changes only at a fit
    memory.fit(90)
    assert any("mod_1.py" in line for line in body(memory))
    memory.focus(None)
    memory.fit(90)
    assert body(memory) == before


def test_by_default_what_the_view_shows_already_counts_for_less() -> None:
    memory = block(
        "Tool: order A-7731 shipped to Lisbon",
        "Tool: order B-1200 shipped to Porto",
        refs=[(1,), (2,)],
    )
    memory.fit(55)  # room for one fact
    (alone,) = body(memory)
    assert "B-1200" in alone  # the newer one
    memory.focus(["Where is order B-1200? It went to Porto."])
    memory.fit(55)
    (alone,) = body(memory)
    assert "A-7731" in alone  # the view already says where B-1200 went


def test_focus_of_a_view_is_the_task_the_latest_human_and_the_newest_turns() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    view = [
        SystemMessage("You are a coding agent."),
        HumanMessage("Task: fix parse_date in utils/dates.py"),
        AIMessage("Reading it."),
        HumanMessage("Also check format_refs."),
        AIMessage("Looking at memory.py now."),
    ]
    texts = focus_of(view)
    assert texts[0] == "Task: fix parse_date in utils/dates.py"
    assert "Also check format_refs." in texts
    assert texts[-1] == "Looking at memory.py now."
    assert not any("coding agent" in text for text in texts)


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(
        st.sampled_from(
            [
                "Caroline: went to Lisbon on 3 May 2023",
                "Caroline: adopted Rex",
                "Melanie: 100% agree",
                "bash(command=ls) → a.py, b.py",
                "THOUGHT: read handler_1 in mod_1.py",
                "tool result → user_id=mia_li_3668, balance=412",
                "Melanie: paints on Sundays; runs 5 km",
            ]
        ),
        min_size=1,
        max_size=30,
    ),
    cap=st.integers(0, 300),
    merge=st.booleans(),
)
def test_the_block_never_exceeds_its_cap_and_counts_exactly(
    texts: list[str], cap: int, merge: bool
) -> None:
    refs = [(i + 1,) if not merge else (i // 2 + 1,) for i in range(len(texts))]
    memory = block(*texts, refs=refs)
    memory.fit(cap)
    message = memory.message()
    assert message is not None
    assert memory.tokens == count_message(message, COUNT)
    header_only = count_message(message.model_copy(update={"content": ""}), COUNT)
    if len(body(memory)) > 0:
        assert memory.tokens <= max(cap, header_only)
