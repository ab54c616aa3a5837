"""The memory block's lines: a fact taken apart, and neighbouring facts merged.

A fact reads ``Speaker: clause; clause`` or ``tool(args) → clause; clause``; the
prefix is shared by its clauses and shown with any of them. Clauses that say
nothing are left out. Neighbouring shown facts that share a prefix or a turn are
written on one line with the prefix once.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ._relevance import WordNotes, collapse_alike, content_free

_PREFIX = re.compile(r"^[^;:\n]{1,40}?: (?=\S)")
_CALL = re.compile(r"^[\w.:-]{1,64}\(.{0,400}?\) → (?=\S)", re.S)
_MERGE_MOST = 6  # facts on one merged line


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


def header(recall_tool: str | None) -> str:
    """The memory message's first line: what it is. It stays the same from one fit to
    the next (a prompt cache keeps serving the block's start)."""
    text = "[Memory] Earlier turns, distilled to facts, oldest first; #n = archived message."
    if recall_tool:
        text += f" Originals word for word: {recall_tool} tool."
    return text


def footer(hidden: int, trimmed: int) -> str:
    """The memory message's last line: how much it leaves out ("" when nothing)."""
    if not hidden and not trimmed:
        return ""
    return f"Not shown for space: {hidden} facts, parts of {trimmed} more (all archived)."


@dataclass(slots=True)
class Line:
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
class Parsed:
    """A fact taken apart for the memory block: speaker, clauses and their words."""

    prefix: str
    clauses: list[str]
    clause_tokens: list[int]
    words: list[list[tuple[str, float]]]
    tokens: int | None = None  # of the whole fact text, when prepared ahead


def vocabulary(line: Line) -> set[str]:
    """The informative words of a fact, each once (what the rarity counts)."""
    return {word for clause in line.words for word, _ in clause}


def split_fact(text: str, notes: WordNotes | None = None) -> tuple[str, list[str]]:
    """Prefix and clauses of a fact; clauses that say nothing are left out (a fact
    of nothing but those has no clauses and is never shown). ``notes``: see
    :func:`._relevance.base_words`."""
    match = _CALL.match(text) or _PREFIX.match(text)
    prefix = match.group(0) if match else ""
    body = text[len(prefix) :]
    clauses = [c.strip() for c in body.split("; ") if c.strip()]
    if not clauses and body.strip():
        clauses = [body.strip()]
    clauses = collapse_alike([c for c in clauses if not content_free(c, notes)])
    if not clauses and prefix and _CALL.match(prefix):
        return "", [prefix[: -len(" → ")]]  # a call that returned nothing: the call itself
    return prefix, clauses


def _related(previous: Line, line: Line) -> bool:
    """Neighbouring shown facts share a line when they share a speaker or a tool call,
    or come from the same turn (their sources overlap)."""
    if previous.prefix and previous.prefix == line.prefix:
        return True
    return bool(set(previous.refs) & set(line.refs))


def shown_clauses(line: Line) -> Sequence[int]:
    return range(len(line.clauses)) if line.shown is None else line.shown


def body(line: Line) -> str:
    picked = line.clauses if line.shown is None else [line.clauses[i] for i in line.shown]
    return "; ".join(picked)


RunKey = tuple[tuple[int, tuple[int, ...] | None], ...]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Entries a cache keeps before it lets its older half go: about what a few fits'
# searches render, so that the next fit finds the lines it shows again.
_CACHE_MOST = 256


class Recent(Generic[K, V]):
    """A map bounded to about twice ``most`` entries: when the newer generation is
    full the older one is let go, and a hit in the older one moves to the newer."""

    __slots__ = ("_most", "_new", "_old")

    def __init__(self, most: int = _CACHE_MOST) -> None:
        self._new: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self._most = most

    def get(self, key: K) -> V | None:
        value = self._new.get(key)
        if value is None:
            value = self._old.get(key)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        self._new[key] = value
        if len(self._new) > self._most:
            self._old, self._new = self._new, {}

    def clear(self) -> None:
        self._new.clear()
        self._old.clear()

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


@dataclass(slots=True)
class RenderCache:
    """Merged lines and which neighbours merge, kept between renderings of the same
    facts (the owner clears it when a fact's sources change)."""

    runs: Recent[RunKey, str] = field(default_factory=Recent)
    related: Recent[tuple[int, int], bool] = field(default_factory=Recent)

    def clear(self) -> None:
        self.runs.clear()
        self.related.clear()


def render(
    lines: Sequence[Line], cache: RenderCache | None = None, sizes: list[int] | None = None
) -> list[str]:
    """Shown facts as text lines, neighbours that share a prefix or a turn merged;
    ``sizes`` (when given) gets how many facts each text line holds."""
    if cache is None:
        cache = RenderCache()
    runs, related = cache.runs, cache.related
    rendered: list[str] = []
    run: list[Line] = []

    def flush() -> None:
        if not run:
            return
        key = tuple((line.order, None if line.shown is None else tuple(line.shown)) for line in run)
        text = runs.get(key)
        if text is None:
            text = _merged(run)
            runs.put(key, text)
        rendered.append(text)
        if sizes is not None:
            sizes.append(len(run))
        run.clear()

    for line in lines:
        if run:
            if len(run) >= _MERGE_MOST:
                flush()
            else:
                pair = (run[-1].order, line.order)
                merge = related.get(pair)
                if merge is None:
                    merge = _related(run[-1], line)
                    related.put(pair, merge)
                if not merge:
                    flush()
        run.append(line)
    flush()
    return rendered


def _merged(run: list[Line]) -> str:
    refs = format_refs(ref for line in run for ref in line.refs)
    if all(line.prefix == run[0].prefix for line in run):
        text = run[0].prefix + "; ".join(body(line) for line in run)
    else:
        text = "; ".join(line.prefix + body(line) for line in run)
    return f"{refs} {text}" if refs else text
