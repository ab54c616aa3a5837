"""The memory block's lines: a fact taken apart, and neighbouring facts merged.

A fact reads ``Speaker: clause; clause`` or ``tool(args) → clause; clause``; the
prefix is shared by its clauses and shown with any of them. Clauses that say
nothing are left out. Neighbouring shown facts that share a prefix or a turn are
written on one line with the prefix once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from langchain_core.messages import HumanMessage

from ._relevance import WordNotes, collapse_alike, content_free
from .tokens import TextCounter, count_message

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


@dataclass(slots=True)
class RenderCache:
    """Merged lines and which neighbours merge, kept between renderings of the same
    facts: this generation's and the last one's (the owner ages it at each fit, and
    clears it when a fact's sources change)."""

    runs: dict[RunKey, str] = field(default_factory=dict)
    related: dict[tuple[int, int], bool] = field(default_factory=dict)
    old_runs: dict[RunKey, str] = field(default_factory=dict)
    old_related: dict[tuple[int, int], bool] = field(default_factory=dict)

    def age(self) -> None:
        self.old_runs, self.runs = self.runs, {}
        self.old_related, self.related = self.related, {}

    def clear(self) -> None:
        for kept in (self.runs, self.related, self.old_runs, self.old_related):
            kept.clear()


def render(
    lines: Sequence[Line], cache: RenderCache | None = None, sizes: list[int] | None = None
) -> list[str]:
    """Shown facts as text lines, neighbours that share a prefix or a turn merged;
    ``sizes`` (when given) gets how many facts each text line holds."""
    if cache is None:
        cache = RenderCache()
    runs, related = cache.runs, cache.related
    old_runs, old_related = cache.old_runs, cache.old_related
    rendered: list[str] = []
    run: list[Line] = []

    def flush() -> None:
        if not run:
            return
        key = tuple((line.order, None if line.shown is None else tuple(line.shown)) for line in run)
        text = runs.get(key)
        if text is None:
            text = old_runs.get(key)
            runs[key] = text = _merged(run) if text is None else text
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
                    merge = old_related.get(pair)
                    if merge is None:
                        merge = _related(run[-1], line)
                    related[pair] = merge
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
    lines: list[str],
    count: TextCounter,
    previous: Mapping[str, int],
    older: Mapping[str, int] | None = None,
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
            tokens = older.get(piece) if older is not None else None
            if tokens is None:
                tokens = count(piece)
        counts[piece] = tokens
        total += tokens
    return total, counts
