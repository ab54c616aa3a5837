"""The memory block's shortcuts choose and show exactly what working from scratch does.

A fit resumes the greedy choice from a nearby room's run, reuses a choice when nothing
changed, keeps merged lines and line counts between renderings, and reads words
faster: each is checked here against the plain computation it replaces.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from context_distill import _relevance
from context_distill._memory_choice import REPEAT_WEIGHT, Greedy, Weights, clause_weights
from context_distill._memory_lines import Line, Recent, RenderCache, render
from context_distill._relevance import base_words, content_free, rarity, words_in
from context_distill.memory import MemoryBlock
from context_distill.store import StoredFact
from context_distill.tokens import count_message, encoding_counter

COUNT = encoding_counter("o200k_base")


def reference_choose(
    lines: Mapping[int, Line],
    weights: Weights,
    opening: list[tuple[float, int, int]],
    room: int,
) -> dict[int, list[int]]:
    """The lazy greedy choice as it was written before it could resume."""
    covered: set[str] = set()
    heap = list(opening)
    smallest = min(
        (min(line.clause_tokens) for line in lines.values() if line.clause_tokens),
        default=room,
    )
    picked: dict[int, list[int]] = {}
    used = 0
    while heap and room - used >= smallest:
        _, order, index = heapq.heappop(heap)
        line = lines[order]
        cost = line.clause_tokens[index] + (0 if order in picked else line.prefix_tokens)
        if used + cost > room:
            continue
        words = weights[(order, index)]
        gain = sum(w if word not in covered else w * REPEAT_WEIGHT for word, w in words.items())
        if gain <= 0:
            continue
        ratio = gain / (line.clause_tokens[index] + line.prefix_tokens / 2)
        if heap and ratio < -heap[0][0]:
            heapq.heappush(heap, (-ratio, order, index))
            continue
        used += cost
        picked.setdefault(order, []).append(index)
        covered.update(words)
    return picked


_VOCABULARY = [f"w{i}" for i in range(12)] + ["Lisbon", "A-7731", "42", "ok"]

clause_st = st.tuples(
    st.integers(1, 30), st.lists(st.sampled_from(_VOCABULARY), max_size=5, unique=True)
)
line_st = st.tuples(st.integers(0, 12), st.lists(clause_st, min_size=0, max_size=4))


def make_lines(spec: list[tuple[int, list[tuple[int, list[str]]]]]) -> dict[int, Line]:
    lines: dict[int, Line] = {}
    for order, (prefix_tokens, clauses) in enumerate(spec):
        lines[order] = Line(
            text=f"fact {order}",
            refs=[order + 1],
            order=order,
            clauses=[" ".join(words) or "x" for _, words in clauses],
            clause_tokens=[tokens for tokens, _ in clauses],
            prefix_tokens=prefix_tokens,
            words=[[(word, 1.0 + len(word) / 4) for word in words] for _, words in clauses],
        )
    return lines


@settings(max_examples=150, deadline=None)
@given(
    spec=st.lists(line_st, min_size=1, max_size=40),
    rooms=st.lists(st.integers(0, 400), min_size=1, max_size=8),
)
def test_a_resumed_choice_equals_one_made_from_scratch(
    spec: list[tuple[int, list[tuple[int, list[str]]]]], rooms: list[int]
) -> None:
    lines = make_lines(spec)
    df: dict[str, int] = {}
    for line in lines.values():
        for word in {w for clause in line.words for w, _ in clause}:
            df[word] = df.get(word, 0) + 1
    weights, opening = clause_weights(lines.values(), rarity(df, len(lines)), {}, len(lines), 0.0)
    greedy = Greedy(lines, weights, opening)
    for room in rooms:
        assert greedy.choose(room) == reference_choose(lines, weights, opening, room)


def stored(texts: list[str], first: int = 0) -> list[StoredFact]:
    return [
        StoredFact(first + i, text, (f"m{first + i}",), (first + i + 1,), COUNT(text), 1)
        for i, text in enumerate(texts)
    ]


def facts(n: int, first: int = 0) -> list[str]:
    return [
        f"bash(command=cat mod_{i}.py) → defines handler_{i % 7} and parser_{i}; "
        f"{i % 5} tests failed; see issue #{1000 + i}"
        for i in range(first, first + n)
    ]


@pytest.mark.parametrize("caps", [[120, 120, 90, 90, 200], [60, 300, 61, 61], [150]])
def test_fits_made_with_every_shortcut_show_what_plain_fits_show(
    caps: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = MemoryBlock(COUNT)
    shown: list[tuple[str | None, int]] = []
    first = 0
    for cap in caps:
        batch = facts(6, first)
        fast.add(stored(batch, first))
        first += len(batch)
        fast.fit(cap)
        fast.fit(cap)  # the same fit again: reused
        message = fast.message()
        shown.append((None if message is None else str(message.content), fast.tokens))

    # The same turns with the greedy run from scratch for every room, and no reuse.
    def from_scratch(self: MemoryBlock, room: int) -> dict[int, list[int]]:
        weights, opening = self._weights()
        return reference_choose(self._lines, weights, opening, room)

    monkeypatch.setattr(MemoryBlock, "_choose", from_scratch)
    plain = MemoryBlock(COUNT)
    first = 0
    for cap, expected in zip(caps, shown, strict=True):
        batch = facts(6, first)
        plain.add(stored(batch, first))
        first += len(batch)
        plain.fit(cap)
        plain._fitted = None  # no reuse: fitted again in full
        plain.fit(cap)
        message = plain.message()
        assert (None if message is None else str(message.content), plain.tokens) == expected


def test_counts_kept_between_fits_are_the_counts_of_the_message_shown() -> None:
    memory = MemoryBlock(COUNT)
    first = 0
    for cap in [120, 90, 200, 60, 150, 80]:
        batch = facts(6, first)
        memory.add(stored(batch, first))
        first += len(batch)
        memory.fit(cap)
        message = memory.message()
        assert message is not None
        assert memory.tokens == count_message(message, COUNT)
    assert 0 < len(memory._cost) <= 2 * 256 + 2


def test_a_recent_map_keeps_what_is_used_and_stays_bounded() -> None:
    recent: Recent[str, int] = Recent(most=3)
    for i in range(3):
        recent.put(f"k{i}", i)
    recent.put("k3", 3)  # the newer half is full: it becomes the older one
    assert recent.get("k0") == 0  # found in the older half, moved to the newer
    for i in range(4, 8):
        recent.put(f"k{i}", i)
    assert len(recent) <= 2 * 3 + 2
    assert recent.get("k1") is None  # not used since two halves ago: let go
    assert recent.get("k7") == 7
    recent.clear()
    assert recent.get("k7") is None and len(recent) == 0


def test_a_repeated_fit_still_counts_misses() -> None:
    memory = MemoryBlock(COUNT)
    memory.add(stored(facts(20)))
    memory.fit(80)
    left_out = [line for line in memory._lines.values() if line.misses]
    assert left_out
    memory.fit(80)
    assert all(line.misses == 2 for line in left_out)


def test_a_render_cache_renders_what_a_fresh_rendering_does() -> None:
    memory = MemoryBlock(COUNT)
    memory.add(stored(["Caroline: adopted Rex", "Caroline: works at Acme", "Mel: paints"]))
    lines = list(memory._lines.values())
    cache = RenderCache()
    assert render(lines, cache) == render(lines)
    lines[1].shown = []
    lines[0].shown = [0]
    assert render(lines, cache) == render(lines)
    # A repeated fact joins its line with new sources: the owner clears the cache.
    memory.add([StoredFact(9, "Mel: paints", ("m9",), (2,), 3, 2)])
    lines = list(memory._lines.values())
    message = memory.message()
    assert message is not None
    assert "\n".join(render(lines)) in str(message.content)


_WORD = re.compile(r"[\w'./:-]+", re.UNICODE)


def reference_base_words(text: str) -> list[tuple[str, float]]:
    out: dict[str, float] = {}
    question = 0.5 if text.rstrip().endswith("?") else 1.0
    for word in _WORD.findall(text):
        lower = word.lower().strip(".:'-/")
        if not lower or lower in out or lower in _relevance.COMMON:
            continue
        if re.search(r"\d", word):
            base = 2.0
        elif lower in _relevance.VAGUE:
            base = 0.2
        elif word[0].isupper():
            base = 1.5
        elif len(lower) > 2:
            base = 1.0
        else:
            continue
        out[lower] = base * question
    if out and all(re.match(r"^[\d.,:%#-]+$", word) for word in out):
        return [(word, 0.3 * weight) for word, weight in out.items()]
    return list(out.items())


def reference_content_free(clause: str) -> bool:
    words = [w.lower().strip(".:'-/%") for w in _WORD.findall(clause)]
    words = [w for w in words if w]
    if not words:
        return True
    if len(words) >= 3 and len(set(words)) == 1:
        return True
    says_nothing = _relevance.COMMON | _relevance.VAGUE | _relevance._REACTION
    meaningful = [w for w in words if w not in says_nothing and not w.isdigit()]
    return not meaningful and any(w in says_nothing for w in words)


_PIECES = [*"aZ09 _'./:-%?;,()!\t\néİß∑٣", "ok", "agree", "the", "love", "lol", "42", "Paris"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join))
def test_words_are_read_as_before(text: str) -> None:
    notes: _relevance.WordNotes = {}
    assert words_in(text) == _WORD.findall(text)
    for _ in range(2):  # without notes, then with what the first pass noted
        assert base_words(text, notes) == reference_base_words(text)
        assert content_free(text, notes) == reference_content_free(text)
    assert base_words(text) == reference_base_words(text)
    assert content_free(text) == reference_content_free(text)
