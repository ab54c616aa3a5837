"""The memory block: one message listing a thread's facts, oldest first.

Each line names the archive numbers of the messages it came from (``#12`` or
``#12-14``), so the model can ask the recall tool for an original. Repeated facts
share one line. When the facts outgrow their share of the budget, the block shows
the ones that carry the most per token and says how many more the archive holds;
nothing is deleted.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.messages import HumanMessage

from .messages import MARKER_KEY, MEMORY_MARK
from .store import StoredFact
from .tokens import TextCounter, count_message

MEMORY_ID = "context-distill-memory"

_WORD = re.compile(r"[\w'./:-]+", re.UNICODE)
_DIGIT = re.compile(r"\d")
_IDLIKE = re.compile(r"(?=[^\d]*\d)(?=.*[a-z_/])\S{4,}$")  # letters and digits: an identifier
_COMMON = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be
    been being it its this that these those i you he she we they me him her us them my your
    his our their do does did have has had not no yes just very really also too can could
    will would should may might must shall about into over after before up down out off
    again more most some any all each every both few many much such only own same than
    there here when where why how what which who whom user assistant ai thanks thank okay
    ok great good nice sure yeah hey hi hello""".split()
)
# Words of reaction and feeling: true, but rarely what anyone asks about later.
_VAGUE = frozenset(
    """amazing awesome awful beautiful cool exciting excited fantastic fun glad grateful
    happy hopeful important incredible inspiring inspired interesting lovely love loved
    meaningful nice optimistic powerful proud rewarding sad special super thankful tough
    wonderful feel feeling felt feels think thought know make made makes making want wanted
    going time times really lot lots thing things way day days people guys
    definitely totally""".split()
)
# Fact text "Speaker: clause; clause" - the speaker prefix is shared by its clauses.
# A word the view already shows still counts this much: facts are asked about as wholes.
_REPEAT_WEIGHT = 0.6
# A fact left out by this many fits in a row is no longer considered (it stays archived).
_RETIRE_AFTER = 3
_PREFIX = re.compile(r"^[^;:\n]{1,40}?: (?=\S)")


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _base_words(text: str) -> list[tuple[str, float]]:
    """The informative words of a clause, each with a weight before rarity.

    Numbers and names weigh more than plain words, words of reaction little; a
    question carries half of what a statement does.
    """
    out: dict[str, float] = {}
    question = 0.5 if text.rstrip().endswith("?") else 1.0
    for word in _WORD.findall(text):
        lower = word.lower().strip(".:'-/")
        if not lower or lower in out or lower in _COMMON:
            continue
        if _DIGIT.search(word):
            base = 2.0
        elif lower in _VAGUE:
            base = 0.2
        elif word[0].isupper():
            base = 1.5
        elif len(lower) > 2:
            base = 1.0
        else:
            continue
        out[lower] = base * question
    return list(out.items())


def format_refs(refs: Iterable[int]) -> str:
    """``[3, 4, 5, 9]`` → ``#3-5,9``."""
    numbers = sorted(set(refs))
    if not numbers:
        return ""
    parts: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = n
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return "#" + ",".join(parts)


@dataclass(slots=True)
class _Line:
    text: str
    refs: list[int]
    order: int
    prefix: str = ""
    clauses: list[str] = field(default_factory=list)
    clause_tokens: list[int] = field(default_factory=list)
    prefix_tokens: int = 0
    shown: list[int] | None = None  # indexes of clauses shown; None: all
    words: list[list[tuple[str, float]]] = field(default_factory=list)  # per clause
    misses: int = 0  # fits in a row that left the whole line out
    fact_ids: list[int] = field(default_factory=list)  # the stored facts this line shows


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A fact taken apart for the memory block: speaker, clauses and their words."""

    prefix: str
    clauses: list[str]
    clause_tokens: list[int]
    words: list[list[tuple[str, float]]]
    tokens: int | None = None  # of the whole fact text, when prepared ahead


_MAX_PREPARED = 4096


def _vocabulary(line: _Line) -> set[str]:
    """The informative words of a fact, each once (what the rarity counts)."""
    return {word for clause in line.words for word, _ in clause}


def _split(text: str) -> tuple[str, list[str]]:
    match = _PREFIX.match(text)
    prefix = match.group(0) if match else ""
    body = text[len(prefix) :]
    clauses = [c.strip() for c in body.split("; ") if c.strip()]
    return prefix, clauses or [body]


class MemoryBlock:
    """The facts of one thread and the message that shows them.

    Only facts that may still be shown are held here; a fact left out by several
    fits in a row is retired (it stays in the archive), so a thread of any length
    costs bounded memory.
    """

    def __init__(self, counter: TextCounter, *, recall_tool: str | None = None) -> None:
        self._count = counter
        self._recall_tool = recall_tool
        self._lines: dict[int, _Line] = {}  # by order of arrival
        self._next = 0
        self._retired = 0
        self._by_key: dict[str, _Line] = {}
        self._shown: list[_Line] | None = None  # None: all lines shown
        self._message: HumanMessage | None = None
        self._tokens = 0
        self._df: dict[str, int] = {}  # in how many held facts each word occurs
        self._parsed: dict[str, _Parsed] = {}  # facts parsed ahead of time
        self._weights_cache: dict[tuple[int, int], dict[str, float]] = {}
        self._heap_cache: list[tuple[float, int, int]] = []
        self._weights_for = (-1, -1)  # (next order, retired) the cache was made for
        self._line_counts: dict[str, int] = {}  # rendered line (with its newline) -> tokens
        self.cap: int | None = None
        self._newly_retired: list[int] = []  # fact ids let go since take_retired()

    def __len__(self) -> int:
        return len(self._lines) + self._retired

    @property
    def recall_tool(self) -> str | None:
        """The recall tool the header names, as of the next rendering."""
        return self._recall_tool

    @recall_tool.setter
    def recall_tool(self, name: str | None) -> None:
        if name != self._recall_tool:
            self._recall_tool = name
            self._message = None

    @property
    def facts(self) -> int:
        return len(self._lines) + self._retired

    @property
    def hidden(self) -> int:
        """Facts the view does not show at all."""
        shown = len(self._lines) if self._shown is None else len(self._shown)
        return self.facts - shown

    def restore(self, facts: Sequence[StoredFact]) -> None:
        """Take in a thread's stored facts as its distillations added them, letting go
        of each fact where the block let it go before: the same lines as then."""
        by_distillation: dict[int, list[StoredFact]] = {}
        for fact in facts:
            by_distillation.setdefault(fact.distillation_id, []).append(fact)
        let_go: dict[int, set[int]] = {}
        for fact in facts:
            if fact.retired_at is not None:
                let_go.setdefault(fact.retired_at, set()).add(fact.fact_id)
        doomed = frozenset(i for ids in let_go.values() for i in ids)
        for distillation in sorted(by_distillation):
            self.add(by_distillation[distillation], doomed=doomed)
            gone = let_go.get(distillation)
            if gone:
                for line in [ln for ln in self._lines.values() if gone & set(ln.fact_ids)]:
                    self._retire(line)
        self._newly_retired.clear()
        self._invalidate()

    @property
    def retired_pending(self) -> bool:
        return bool(self._newly_retired)

    def take_retired(self) -> list[int]:
        """Fact ids the block let go since the last call (for the store to remember)."""
        retired, self._newly_retired = self._newly_retired, []
        return retired

    def add(self, facts: Sequence[StoredFact], *, doomed: frozenset[int] = frozenset()) -> None:
        """Take in newly stored facts; a repeated fact joins the line it repeats.

        A line opened by a fact in ``doomed`` is let go before anyone looks at it
        (a restore): it keeps its place and its key but is not taken apart.
        """
        for fact in facts:
            key = _key(fact.text)
            line = self._by_key.get(key)
            if line is not None:
                line.fact_ids.append(fact.fact_id)
                line.refs = sorted(set(line.refs) | set(fact.refs))
                line.prefix_tokens = 0
                self._weights_for = (-1, -1)  # its cost changed
                continue
            if fact.fact_id in doomed:
                parsed = _Parsed(prefix="", clauses=[], clause_tokens=[], words=[])
            else:
                parsed = self._parsed.pop(fact.text, None) or self._parse(fact.text)
            line = _Line(
                text=fact.text,
                refs=sorted(set(fact.refs)),
                order=self._next,
                prefix=parsed.prefix,
                clauses=parsed.clauses,
                clause_tokens=list(parsed.clause_tokens),
                words=parsed.words,
                fact_ids=[fact.fact_id],
            )
            self._next += 1
            for word in _vocabulary(line):
                self._df[word] = self._df.get(word, 0) + 1
            self._lines[line.order] = line
            self._by_key[key] = line
        self._invalidate()

    def _retire(self, line: _Line) -> None:
        """Stop holding a fact the fits keep leaving out; the archive keeps it."""
        del self._lines[line.order]
        self._by_key.pop(_key(line.text), None)
        self._newly_retired.extend(line.fact_ids)
        for word in _vocabulary(line):
            left = self._df.get(word, 0) - 1
            if left > 0:
                self._df[word] = left
            else:
                self._df.pop(word, None)
        self._retired += 1

    def _parse(self, text: str) -> _Parsed:
        prefix, clauses = _split(text)
        return _Parsed(
            prefix=prefix,
            clauses=clauses,
            clause_tokens=[self._count(clause) + 1 for clause in clauses],
            words=[_base_words(clause) for clause in clauses],
        )

    def fact_tokens(self, text: str) -> int:
        """Tokens of a fact's text, counted ahead of time when it was prepared."""
        parsed = self._parsed.get(text)
        if parsed is not None and parsed.tokens is not None:
            return parsed.tokens
        return self._count(text)

    def prepare(self, texts: Iterable[str]) -> None:
        """Parse facts ahead of :meth:`add` (from any thread), so adding them is cheap."""
        for text in texts:
            if len(self._parsed) < _MAX_PREPARED and text not in self._parsed:
                parsed = self._parse(text)
                self._parsed[text] = replace(parsed, tokens=self._count(text))

    def clear(self) -> None:
        self._lines.clear()
        self._next = 0
        self._retired = 0
        self._by_key.clear()
        self._df.clear()
        self._weights_for = (-1, -1)
        self._invalidate()

    def _invalidate(self) -> None:
        """New facts: everything shows until the owner fits the block again."""
        self._message = None
        self._shown = None
        for line in self._lines.values():
            line.shown = None

    def _measure(self, line: _Line) -> None:
        if line.prefix_tokens:
            return
        refs = format_refs(line.refs)
        line.prefix_tokens = self._count(f"{refs} {line.prefix}".strip()) + 1
        if len(line.clause_tokens) != len(line.clauses):
            line.clause_tokens = [self._count(c) + 1 for c in line.clauses]

    def _render(self, line: _Line) -> str:
        refs = format_refs(line.refs)
        picked = line.clauses if line.shown is None else [line.clauses[i] for i in line.shown]
        body = "; ".join(picked)
        return f"{refs} {line.prefix}{body}" if refs else f"{line.prefix}{body}"

    def _header(self, hidden: int, trimmed: int) -> str:
        text = "[Memory] Earlier turns, distilled to facts, oldest first; #n = archived message."
        if self._recall_tool:
            text += f" Originals word for word: {self._recall_tool} tool."
        if hidden or trimmed:
            text += f" Not shown for space: {hidden} facts, parts of {trimmed} more (all archived)."
        return text

    def _rarity(self) -> dict[str, float]:
        """Weight of each word by how few held facts of this thread use it.

        An identifier (a user id, an order number, a path) that many facts repeat
        is what the thread is about, not noise: it weighs as if it were rare.
        """
        n = len(self._lines)
        top = math.log(1.0 + n)
        return {
            word: top if _IDLIKE.match(word) else math.log(1.0 + n / df)
            for word, df in self._df.items()
        }

    def fit(self, cap: int | None) -> None:
        """Show what carries most per token within ``cap`` tokens (None: show everything).

        Clauses are chosen greedily by the information they add per token: rare,
        specific words weigh most, and a word already shown counts for less the
        second time.
        """
        self.cap = cap
        self._message = None
        # Lines the last fits kept leaving out go now, before choosing, so that what a
        # fit shows depends only on the lines held while it chose (see restore()).
        for line in [ln for ln in self._lines.values() if ln.misses >= _RETIRE_AFTER]:
            self._retire(line)
        lines = list(self._lines.values())
        for line in lines:
            line.shown = None
        if cap is None:
            self._shown = None
            return
        for line in lines:
            self._measure(line)
        total = sum(line.prefix_tokens + sum(line.clause_tokens) for line in lines)
        overhead = self._count(self._header(self.facts, len(lines))) + 8
        if total + overhead <= cap:
            self._shown = None
            return
        picked = self._choose(cap - overhead)
        shown: list[_Line] = []
        for line in lines:
            indexes = picked.get(line.order)
            if indexes is None:
                line.misses += 1
                continue
            line.misses = 0
            line.shown = None if len(indexes) == len(line.clauses) else sorted(indexes)
            shown.append(line)
        self._shown = shown

    def _weights(self) -> tuple[dict[tuple[int, int], dict[str, float]], list[Any]]:
        """Each clause's weighted words and the opening heap; kept until facts change."""
        if self._weights_for == (self._next, self._retired):
            return self._weights_cache, self._heap_cache
        rarity = self._rarity()
        n = max(self._next, 1)
        weights: dict[tuple[int, int], dict[str, float]] = {}
        heap: list[tuple[float, int, int]] = []
        for line in self._lines.values():
            recency = 1.0 + 0.25 * line.order / n
            half_prefix = line.prefix_tokens / 2
            for index, base in enumerate(line.words):
                words = {word: w * rarity.get(word, 1.0) * recency for word, w in base}
                weights[(line.order, index)] = words
                gain = sum(words.values())
                if gain > 0:
                    heap.append(
                        (-gain / (line.clause_tokens[index] + half_prefix), line.order, index)
                    )
        heapq.heapify(heap)
        self._weights_cache, self._heap_cache = weights, heap
        self._weights_for = (self._next, self._retired)
        return weights, heap

    def _choose(self, room: int) -> dict[int, list[int]]:
        """Lazy greedy selection of clauses: most new information per token first."""
        covered: set[str] = set()
        weights, opening = self._weights()
        heap = list(opening)
        smallest = min(
            (min(line.clause_tokens) for line in self._lines.values() if line.clause_tokens),
            default=room,
        )
        picked: dict[int, list[int]] = {}
        used = 0
        while heap and room - used >= smallest:
            _, order, index = heapq.heappop(heap)
            line = self._lines[order]
            cost = line.clause_tokens[index] + (0 if order in picked else line.prefix_tokens)
            if used + cost > room:
                continue  # the room only shrinks: it will not fit later either
            words = weights[(order, index)]
            gain = sum(
                w if word not in covered else w * _REPEAT_WEIGHT for word, w in words.items()
            )
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

    def message(self) -> HumanMessage | None:
        """The memory message for the view, or None while there are no facts."""
        if not self.facts:
            return None
        if self._message is None:
            shown = list(self._lines.values()) if self._shown is None else self._shown
            rendered = [self._render(line) for line in shown]
            body = "\n".join(rendered)
            trimmed = sum(1 for line in shown if line.shown is not None)
            header = self._header(self.facts - len(shown), trimmed)
            self._message = HumanMessage(
                content=f"{header}\n{body}" if body else header,
                id=MEMORY_ID,
                additional_kwargs={MARKER_KEY: MEMORY_MARK},
            )
            if getattr(self._count, "line_additive", False) and body and "\n/" not in body:
                self._tokens = self._count_by_line([header, *rendered])
            else:
                self._tokens = count_message(self._message, self._count)
        return self._message

    def _count_by_line(self, lines: list[str]) -> int:
        """The message's tokens as a sum over its lines, most of them counted before.

        Exact for counters whose pre-tokeniser never joins a newline to the text
        after it (tiktoken's encodings), since no line starts with whitespace (nor
        with "/", which o200k joins to a newline after punctuation: the caller
        counts such a block whole).
        """
        previous, counts = self._line_counts, {}
        pieces = [f"{line}\n" for line in lines[:-1]] + lines[-1:]
        total = count_message(HumanMessage(content=""), self._count)
        for piece in pieces:
            tokens = previous.get(piece)
            if tokens is None:
                tokens = self._count(piece)
            counts[piece] = tokens
            total += tokens
        self._line_counts = counts
        return total

    @property
    def tokens(self) -> int:
        """Tokens of the memory message as the model sees it (0 without facts)."""
        return 0 if self.message() is None else self._tokens

    def lines(self) -> list[str]:
        """Every fact line held (shown or not; retired ones excepted), oldest first."""
        return [f"{format_refs(line.refs)} {line.text}".strip() for line in self._lines.values()]
