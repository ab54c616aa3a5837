"""The memory block's lines: a fact taken apart, and neighbouring facts merged.

A fact reads ``Speaker: clause; clause`` or ``tool(args) → clause; clause``; the
prefix is shared by its clauses and shown with any of them. Clauses that say
nothing are left out. Neighbouring shown facts that share a prefix or a turn are
written on one line with the prefix once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import HumanMessage

from ._relevance import WordNotes, collapse_alike, content_free
from .tokens import TextCounter, count_message

_PREFIX = re.compile(r"^[^;:\n]{1,40}?: (?=\S)")
_CALL = re.compile(r"^[\w.:-]{1,64}\(.{0,400}?\) → (?=\S)", re.S)
_MERGE_MOST = 6  # facts on one merged line
_CACHE_MOST = 8192  # merged lines a render cache holds before it starts over


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


def body(line: Line) -> str:
    picked = line.clauses if line.shown is None else [line.clauses[i] for i in line.shown]
    return "; ".join(picked)


@dataclass(slots=True)
class RenderCache:
    """Merged lines and which neighbours merge, kept between renderings of the same
    facts (the owner clears it when a fact's text or sources change)."""

    runs: dict[tuple[tuple[int, tuple[int, ...] | None], ...], str] = field(default_factory=dict)
    related: dict[tuple[int, int], bool] = field(default_factory=dict)

    def clear(self) -> None:
        self.runs.clear()
        self.related.clear()


def render(lines: Sequence[Line], cache: RenderCache | None = None) -> list[str]:
    """Shown facts as text lines, neighbours that share a prefix or a turn merged."""
    if cache is None:
        cache = RenderCache()
    elif len(cache.runs) > _CACHE_MOST or len(cache.related) > _CACHE_MOST:
        cache.clear()
    runs, related = cache.runs, cache.related
    rendered: list[str] = []
    run: list[Line] = []

    def flush() -> None:
        if not run:
            return
        key = tuple((line.order, None if line.shown is None else tuple(line.shown)) for line in run)
        text = runs.get(key)
        if text is None:
            text = runs[key] = _merged(run)
        rendered.append(text)
        run.clear()

    for line in lines:
        if run:
            if len(run) >= _MERGE_MOST:
                flush()
            else:
                pair = (run[-1].order, line.order)
                merge = related.get(pair)
                if merge is None:
                    merge = related[pair] = _related(run[-1], line)
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


def count_by_line(
    lines: list[str], count: TextCounter, previous: dict[str, int]
) -> tuple[int, dict[str, int]]:
    """A memory message's tokens as a sum over its lines, most of them counted before;
    with the counts to pass next time.

    Exact for counters whose pre-tokeniser never joins a newline to the text after it
    (tiktoken's encodings), since no line starts with whitespace (nor with "/", which
    o200k joins to a newline after punctuation: the caller counts such a block whole).
    """
    counts: dict[str, int] = {}
    pieces = [f"{line}\n" for line in lines[:-1]] + lines[-1:]
    total = count_message(HumanMessage(content=""), count)
    for piece in pieces:
        tokens = previous.get(piece)
        if tokens is None:
            tokens = count(piece)
        counts[piece] = tokens
        total += tokens
    return total, counts
