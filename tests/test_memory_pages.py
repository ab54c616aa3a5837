"""The memory block in pages: a distillation writes below what the block shows."""

from __future__ import annotations

import logging

import pytest

from context_distill._memory_pages import Pages
from context_distill.memory import MemoryBlock
from context_distill.store import StoredFact
from context_distill.tokens import encoding_counter

COUNT = encoding_counter("o200k_base")


def facts(first: int, n: int) -> list[StoredFact]:
    out = []
    for i in range(first, first + n):
        text = f"bash(command=cat mod_{i}.py) → defines handler_{i} and parser_{i}; line {100 + i}"
        out.append(StoredFact(i, text, (f"m{i}",), (i + 1,), COUNT(text), i // 4 + 1))
    return out


def body(memory: MemoryBlock) -> str:
    message = memory.message()
    assert message is not None and isinstance(message.content, str)
    lines = message.content.splitlines()[1:]
    return "\n".join(ln for ln in lines if not ln.startswith("Not shown for space"))


def test_new_facts_go_below_what_the_block_shows() -> None:
    memory = MemoryBlock(COUNT)
    memory.add(facts(0, 12))
    memory.fit(200)  # not room for all twelve: a choice
    before = body(memory)
    assert memory.hidden  # setup: some left out
    memory.add(facts(12, 2))
    memory.fit(400)  # room for the new ones
    after = body(memory)
    assert after.startswith(before) and after != before
    assert "mod_12.py" in after and "mod_13.py" in after


def test_without_pages_a_fit_would_rewrite_the_start() -> None:
    """The same turns with the pages forgotten before the second fit: the block is
    chosen anew and its start changes (what the pages avoid)."""
    memory = MemoryBlock(COUNT)
    memory.add(facts(0, 12))
    memory.fit(200)
    before = body(memory)
    memory.add(facts(12, 2))
    memory.resume(None, "test")
    memory.fit(400)
    assert not body(memory).startswith(before)


def test_pages_survive_a_round_trip_and_a_restart() -> None:
    memory = MemoryBlock(COUNT)
    memory.add(facts(0, 12))
    memory.fit(200)
    stored = memory.pages
    assert stored is not None and Pages.from_json(stored) == memory._pages
    again = MemoryBlock(COUNT)
    again.restore(facts(0, 12))
    again.resume(stored, "test")
    again.fit(200)
    assert again.message() == memory.message() and again.tokens == memory.tokens


@pytest.mark.parametrize(
    "bad",
    [
        "{",
        "[]",
        '{"texts": ["a"], "sizes": [1], "shown": [[0, []]], "upto": 1, "cap": 5}',
        '{"texts": ["a"], "sizes": [2], "shown": [[0, null]], "upto": 1, "cap": 5}',
    ],
)
def test_unreadable_pages_are_let_go_with_a_warning(
    bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ValueError, match="memory pages"):
        Pages.from_json(bad)
    memory = MemoryBlock(COUNT)
    memory.restore(facts(0, 12))
    with caplog.at_level(logging.WARNING):
        memory.resume(bad, "thread t")
    assert "thread t" in caplog.text and memory.pages is None
    memory.fit(200)
    fresh = MemoryBlock(COUNT)
    fresh.restore(facts(0, 12))
    fresh.fit(200)
    assert memory.message() == fresh.message()


@pytest.mark.parametrize("next_cap", [200, 150, 400])
def test_a_restart_takes_apart_only_what_its_standing_pages_show(next_cap: int) -> None:
    """A cold process whose stored pages stand parses only the lines they show; what
    it shows then, and after the next distillation, is what an eager restore shows."""
    memory = MemoryBlock(COUNT)
    memory.add(facts(0, 40))
    memory.fit(200)
    stored = memory.pages
    lazy, eager = MemoryBlock(COUNT), MemoryBlock(COUNT)
    for block in (lazy, eager):
        block.restore(facts(0, 40))
        block.resume(stored, "test")
    eager.settle()
    lazy.fit(200)
    eager.fit(200)
    assert lazy.message() == eager.message() == memory.message()
    assert lazy._unparsed  # setup and promise: the hidden lines were not taken apart
    assert len(lazy._unparsed) == 40 - len(Pages.from_json(stored or "").shown)
    for block in (lazy, eager, memory):
        block.add(facts(40, 3))
        block.fit(next_cap)
    assert not lazy._unparsed
    assert lazy.message() == eager.message() == memory.message()
    assert lazy.tokens == eager.tokens == memory.tokens
    assert lazy.held() == eager.held()
