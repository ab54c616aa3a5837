"""The memory block: one message listing a thread's facts, oldest first.

Each line names the archive numbers of the messages it came from (``#12`` or
``#12-14``), so the model can ask the recall tool for an original. Repeated facts
share one line. When the facts outgrow their share of the budget, the block shows
the ones that carry the most per token and says how many more the archive holds;
nothing is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import HumanMessage

from .messages import MARKER_KEY, MEMORY_MARK
from .store import StoredFact
from .tokens import TextCounter, count_message

MEMORY_ID = "context-distill-memory"

_WORD = re.compile(r"[\w'./:-]+", re.UNICODE)
_DIGIT = re.compile(r"\d")
_COMMON = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be
    been being it its this that these those i you he she we they me him her us them my
    your his our their do does did have has had not no yes just very really also too can
    could will would should may might must shall about into over after before up down
    out off again more most some any all each every both few many much such only own
    same than there here when where why how what which who whom user assistant thanks
    thank okay ok great good nice sure yeah hey hi hello""".split()
)


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def salience(text: str) -> float:
    """How much a fact carries: distinct informative words, numbers and names count more."""
    score = 0.0
    seen: set[str] = set()
    for word in _WORD.findall(text):
        lower = word.lower().strip(".:'-/")
        if not lower or lower in seen or lower in _COMMON:
            continue
        seen.add(lower)
        if _DIGIT.search(word):
            score += 2.0
        elif word[0].isupper():
            score += 1.5
        elif len(lower) > 2:
            score += 1.0
    return score


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
    salience: float
    tokens: int = 0
    rendered: str = ""
    source_ids: list[str] = field(default_factory=list)


class MemoryBlock:
    """The facts of one thread and the message that shows them."""

    def __init__(self, counter: TextCounter, *, recall_tool: str | None = None) -> None:
        self._count = counter
        self._recall_tool = recall_tool
        self._lines: list[_Line] = []
        self._by_key: dict[str, _Line] = {}
        self._shown: list[_Line] | None = None  # None: all lines shown
        self._message: HumanMessage | None = None
        self._tokens = 0
        self.cap: int | None = None

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def facts(self) -> int:
        return len(self._lines)

    @property
    def hidden(self) -> int:
        return 0 if self._shown is None else len(self._lines) - len(self._shown)

    def add(self, facts: Sequence[StoredFact]) -> None:
        """Take in newly stored facts; a repeated fact joins the line it repeats."""
        for fact in facts:
            key = _key(fact.text)
            line = self._by_key.get(key)
            if line is not None:
                line.refs = sorted(set(line.refs) | set(fact.refs))
                line.source_ids.extend(i for i in fact.source_ids if i not in line.source_ids)
                line.rendered = ""
                continue
            line = _Line(
                text=fact.text,
                refs=sorted(set(fact.refs)),
                order=len(self._lines),
                salience=salience(fact.text),
                source_ids=list(fact.source_ids),
            )
            self._lines.append(line)
            self._by_key[key] = line
        self._invalidate()

    def clear(self) -> None:
        self._lines.clear()
        self._by_key.clear()
        self._invalidate()

    def _invalidate(self) -> None:
        self._message = None
        self._shown = None
        if self.cap is not None:
            self.fit(self.cap)

    def _render_line(self, line: _Line) -> str:
        if not line.rendered:
            refs = format_refs(line.refs)
            line.rendered = f"{refs} {line.text}" if refs else line.text
            line.tokens = self._count(line.rendered) + 1
        return line.rendered

    def _header(self, hidden: int) -> str:
        text = "[Memory] Earlier turns, distilled to facts, oldest first; #n = archived message."
        if self._recall_tool:
            text += f" Originals word for word: {self._recall_tool} tool."
        if hidden:
            text += f" {hidden} less salient facts not shown (archived)."
        return text

    def fit(self, cap: int | None) -> None:
        """Show the facts that carry most per token within ``cap`` tokens (None: all)."""
        self.cap = cap
        self._message = None
        if cap is None:
            self._shown = None
            return
        for line in self._lines:
            self._render_line(line)
        total = sum(line.tokens for line in self._lines)
        overhead = self._count(self._header(len(self._lines))) + 8
        if total + overhead <= cap:
            self._shown = None
            return
        room = cap - overhead
        n = len(self._lines)
        ranked = sorted(
            self._lines,
            key=lambda ln: (
                -(ln.salience + 0.5 * ln.order / max(n, 1)) / max(ln.tokens, 1),
                -ln.order,
            ),
        )
        chosen: list[_Line] = []
        used = 0
        for line in ranked:
            if used + line.tokens <= room:
                chosen.append(line)
                used += line.tokens
        chosen.sort(key=lambda ln: ln.order)
        self._shown = chosen

    def message(self) -> HumanMessage | None:
        """The memory message for the view, or None while there are no facts."""
        if not self._lines:
            return None
        if self._message is None:
            shown = self._lines if self._shown is None else self._shown
            body = "\n".join(self._render_line(line) for line in shown)
            header = self._header(len(self._lines) - len(shown))
            self._message = HumanMessage(
                content=f"{header}\n{body}" if body else header,
                id=MEMORY_ID,
                additional_kwargs={MARKER_KEY: MEMORY_MARK},
            )
            self._tokens = count_message(self._message, self._count)
        return self._message

    @property
    def tokens(self) -> int:
        """Tokens of the memory message as the model sees it (0 without facts)."""
        return 0 if self.message() is None else self._tokens

    def lines(self) -> list[str]:
        """Every fact line, shown or not, oldest first."""
        return [self._render_line(line) for line in self._lines]
