"""Answer scores shared by every benchmark of the project.

A view is what the model would read: a list of messages, either OpenAI-style
dicts or LangChain message objects. The scores ask whether that view still
holds what a question needs, without calling a model:

- loose: every content word of a gold answer appears somewhere in the view;
- strict: one line of the view (a message, or one line of a memory block) holds
  all of the answer's content words and at least one content word of the
  question, so the answer sits next to what it answers;
- value retention: the share of gold values (ids, amounts, flight numbers)
  found verbatim, case-insensitive.

Tokenisation and stop words were calibrated on LoCoMo so that the project's
reference figures reproduce (see bench/locomo_baselines.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Function words only: pronouns, determiners, auxiliaries, prepositions,
# conjunctions and a few adverbs, plus the fragments that contractions leave
# behind. Modals other than can/will/should and every month name (May!) stay
# content words. Changing this list moves every reference figure.
_STOP_WORDS_TEXT = """
    i me my mine myself we us our ours ourselves you your yours yourself yourselves
    he him his himself she her hers herself it its itself they them their theirs themselves
    what which who whom whose this that these those
    am is are was were be been being have has had having do does did doing
    a an the and but or nor if because as until while so than too very
    of at by for with about against between into through during before after above below
    to from up down in out on off over under again further then once here there
    when where why how all any both each few more most other some such no not only own same
    can will should just now s t d ll m o re ve y
"""
STOP_WORDS: frozenset[str] = frozenset(_STOP_WORDS_TEXT.split())

_PUNCTUATION = re.compile(r"[^\w\s]")

Message = Any  # an OpenAI-style dict or a LangChain BaseMessage
MemoryPredicate = Callable[[Message], bool]


def words(text: str) -> list[str]:
    """Lower-cased words with punctuation deleted (not split on).

    Deleting keeps "Caroline's" one word ("carolines") and "$250" as "250";
    splitting on punctuation instead scored about 0.02 higher than the
    reference figures.
    """
    return _PUNCTUATION.sub("", text.lower()).split()


def content_words(text: str) -> set[str]:
    """The words of ``text`` that are not stop words."""
    return {w for w in words(text) if w not in STOP_WORDS}


# ------------------------------------------------------------------ view access


def _field(message: Message, name: str) -> Any:
    if isinstance(message, Mapping):
        return message.get(name)
    return getattr(message, name, None)


def _tool_calls(message: Message) -> list[tuple[str, str]]:
    """(name, arguments as text) of each tool call, from either message style."""
    calls = []
    for call in _field(message, "tool_calls") or []:
        if "function" in call:  # OpenAI: {"function": {"name", "arguments": str}}
            function = call["function"] or {}
            calls.append((str(function.get("name", "")), str(function.get("arguments", ""))))
        else:  # LangChain: {"name", "args": dict}
            args = call.get("args", {})
            text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            calls.append((str(call.get("name", "")), text))
    return calls


def message_content(message: Message) -> str:
    """The text content of a message; non-text content blocks are skipped."""
    content = _field(message, "content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "\n".join(parts)
    return ""


def message_text(message: Message) -> str:
    """Everything a model reads in one message: its content and its tool calls."""
    parts = [message_content(message)]
    parts.extend(f"{name}({args})" for name, args in _tool_calls(message))
    return "\n".join(p for p in parts if p)


# How the core marks its memory block (context_distill.messages / .memory).
CORE_MARKER_KEY = "context_distill"
CORE_MEMORY_MARK = "memory"
CORE_MEMORY_ID = "context-distill-memory"


def is_memory_message(message: Message) -> bool:
    """Whether a message is a memory block whose lines are separate facts.

    Recognised: the core's marker (``additional_kwargs["context_distill"] ==
    "memory"`` or its fixed id), ``name == "memory"``, or a truthy ``memory``
    entry in a dict message or in ``additional_kwargs``.
    """
    if _field(message, "name") == "memory" or _field(message, "id") == CORE_MEMORY_ID:
        return True
    if isinstance(message, Mapping) and message.get("memory"):
        return True
    extra = _field(message, "additional_kwargs")
    if not isinstance(extra, Mapping):
        return False
    return bool(extra.get("memory")) or extra.get(CORE_MARKER_KEY) == CORE_MEMORY_MARK


def view_lines(
    view: Sequence[Message], is_memory: MemoryPredicate = is_memory_message
) -> list[str]:
    """The units the strict score looks in: whole messages, memory blocks by line."""
    lines: list[str] = []
    for message in view:
        text = message_text(message)
        if is_memory(message):
            lines.extend(line for line in text.splitlines() if line.strip())
        elif text:
            lines.append(text)
    return lines


def view_text(view: Sequence[Message]) -> str:
    """The whole view as one string."""
    return "\n".join(message_text(m) for m in view)


# ------------------------------------------------------------------ QA scores


@dataclass(frozen=True)
class Tally:
    """Hits out of a number of scored questions."""

    loose: int = 0
    strict: int = 0
    n: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.loose + other.loose, self.strict + other.strict, self.n + other.n)

    @property
    def loose_score(self) -> float:
        return self.loose / self.n if self.n else 0.0

    @property
    def strict_score(self) -> float:
        return self.strict / self.n if self.n else 0.0


@dataclass
class QAResult:
    """Overall and per-category tallies of one or more views."""

    total: Tally = field(default_factory=Tally)
    by_category: dict[str, Tally] = field(default_factory=dict)

    def add(self, category: str, tally: Tally) -> None:
        self.total = self.total + tally
        self.by_category[category] = self.by_category.get(category, Tally()) + tally

    def merge(self, other: QAResult) -> QAResult:
        """Pool the questions of two results (micro average)."""
        merged = QAResult(self.total + other.total, dict(self.by_category))
        for category, tally in other.by_category.items():
            merged.by_category[category] = merged.by_category.get(category, Tally()) + tally
        return merged


class ScoredQuestion(Protocol):
    """What the scorers read from a question (bench.datasets.Question fits)."""

    @property
    def question(self) -> str: ...

    @property
    def answers(self) -> tuple[str, ...]: ...

    @property
    def category(self) -> str: ...

    @property
    def scored(self) -> bool: ...


class ViewIndex:
    """A view tokenised once, so that many questions can be scored against it."""

    def __init__(
        self, view: Sequence[Message], is_memory: MemoryPredicate = is_memory_message
    ) -> None:
        self.lines = [set(words(line)) for line in view_lines(view, is_memory)]
        self.words: set[str] = set().union(*self.lines) if self.lines else set()

    def loose(self, answer: str) -> bool:
        """Every content word of the answer is somewhere in the view."""
        return content_words(answer) <= self.words

    def strict(self, question: str, answer: str) -> bool:
        """One line holds the whole answer and at least one word of the question."""
        needed = content_words(answer)
        cue = content_words(question)
        return any(needed <= line and not cue.isdisjoint(line) for line in self.lines)


def score_questions(
    view: Sequence[Message] | ViewIndex,
    questions: Iterable[ScoredQuestion],
    is_memory: MemoryPredicate = is_memory_message,
) -> QAResult:
    """Loose and strict hits per category; unscored questions are left out.

    A question with several accepted answers counts when any one of them does.
    """
    index = view if isinstance(view, ViewIndex) else ViewIndex(view, is_memory)
    result = QAResult()
    for q in questions:
        if not q.scored:
            continue
        loose = any(index.loose(a) for a in q.answers)
        strict = any(index.strict(q.question, a) for a in q.answers)
        result.add(str(q.category), Tally(int(loose), int(strict), 1))
    return result


# ------------------------------------------------------------- value retention


def contains_value(text: str, value: str) -> bool:
    """Case-insensitive verbatim match that neither starts nor ends inside a word.

    "5" is not found inside "HAT005" or "2024-05-15"; "250" is found in "$250"
    and in "250.0".
    """
    pattern = r"(?<![0-9A-Za-z])" + re.escape(value.strip()) + r"(?![0-9A-Za-z])"
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def value_retention(view: Sequence[Message] | str, values: Sequence[str]) -> float:
    """Share of gold values found verbatim in the view (1.0 when there are none)."""
    if not values:
        return 1.0
    text = view if isinstance(view, str) else view_text(view)
    return sum(contains_value(text, v) for v in values) / len(values)


def retained_values(view: Sequence[Message] | str, values: Sequence[str]) -> tuple[int, int]:
    """(found, total) gold values, for pooling over many views."""
    text = view if isinstance(view, str) else view_text(view)
    return sum(contains_value(text, v) for v in values), len(values)


def answer_retention(
    view: Sequence[Message] | str, questions: Iterable[ScoredQuestion]
) -> tuple[int, int]:
    """(retained, scored) questions whose gold answer, any alternative, is verbatim in the view.

    The BFCL memory score: gold answers there are short values ("Seattle", "17").
    """
    text = view if isinstance(view, str) else view_text(view)
    scored = [q for q in questions if q.scored]
    found = sum(any(contains_value(text, a) for a in q.answers if a.strip()) for q in scored)
    return found, len(scored)
