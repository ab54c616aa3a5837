"""Snippets: the parts of a long original around the words a search matched.

Pure text logic shared by the recall tool, the ``search`` command and the
inspector, so the three show the same thing: a window around each match with its
character offset in the original, so a reader can page on from there
(``#12@4000`` in the recall tool). Matching follows the archive's full-text
search loosely (case-insensitive, a word or its stem at the start of a word), so
a snippet finds what the search found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Snippet", "find_matches", "page", "query_terms", "render", "snippets"]

_TERM = re.compile(r'"([^"]*)"|([^\s"]+)')
_WORD_EDGE = re.compile(r"[\w]", re.UNICODE)
_SUFFIXES = ("ing", "ed", "es", "s", "ly")
_MAX_TERMS = 64


@dataclass(frozen=True, slots=True)
class Snippet:
    """A window of an original: ``text == original[start:end]``, matches as offsets in it."""

    start: int
    end: int
    text: str
    matches: tuple[tuple[int, int], ...]  # (start, end) in the original
    length: int  # characters of the whole original

    @property
    def cut_before(self) -> bool:
        return self.start > 0

    @property
    def cut_after(self) -> bool:
        return self.end < self.length


def query_terms(query: str) -> list[str]:
    """The words of a search query (a ``"quoted phrase"`` stays one term), lowercased."""
    terms: dict[str, None] = {}
    for phrase, word in _TERM.findall(query):
        term = (phrase or word).strip().lower()
        term = term.strip(".,;:!?()[]{}'`")
        if term:
            terms[term] = None
        if len(terms) >= _MAX_TERMS:
            break
    return list(terms)


def _stem(term: str) -> str:
    for suffix in _SUFFIXES:
        if len(term) - len(suffix) >= 4 and term.endswith(suffix):
            return term[: -len(suffix)]
    return term


def find_matches(text: str, query: str) -> list[tuple[int, int]]:
    """Where the query's terms occur in ``text``, in order, as (start, end) offsets.

    A term matches where a word starts (``token`` in ``token_id`` but not in
    ``mytoken``); a term of five letters or more also matches by its stem, as the
    archive's stemming search does (``failing`` finds ``failed``).
    """
    lowered = text.lower()
    spans: list[tuple[int, int]] = []
    for term in query_terms(query):
        needles = {term, _stem(term)} if term.isalpha() else {term}
        for needle in needles:
            pattern = re.compile(
                (r"(?<![\w])" if _WORD_EDGE.match(needle[0]) else "") + re.escape(needle)
            )
            for found in pattern.finditer(lowered):
                end = found.end()
                if needle != term:  # a stem: extend over the rest of the word
                    while end < len(lowered) and lowered[end].isalnum():
                        end += 1
                spans.append((found.start(), end))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _snap(text: str, position: int, direction: int, slack: int) -> int:
    """Move a cut to the nearest whitespace within ``slack`` characters, if any."""
    if position <= 0 or position >= len(text):
        return max(0, min(position, len(text)))
    for step in range(slack + 1):
        probe = position + direction * step
        if 0 < probe < len(text) and text[probe].isspace():
            return probe + (1 if direction < 0 else 0)
    return position


def snippets(text: str, query: str, *, width: int = 240, limit: int = 3) -> list[Snippet]:
    """Up to ``limit`` windows of about ``width`` characters around the query's matches.

    Windows that would overlap are merged; when there are more matches than
    windows, windows that show terms not shown yet win, then earlier ones. A text
    with no match (the search matched a form this does not see) gives its start.
    """
    if width < 20:
        raise ValueError(f"width must be at least 20 characters, not {width}")
    matches = find_matches(text, query)
    if not matches:
        end = _snap(text, min(width, len(text)), -1, width // 5)
        return [Snippet(0, end, text[:end], (), len(text))] if text else []
    half = width // 2
    windows: list[list[int]] = []
    for start, end in matches:
        centre = (start + end) // 2
        lo, hi = max(0, centre - half), min(len(text), centre + half)
        lo, hi = min(lo, start), max(hi, end)
        if windows and lo <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], hi)
        else:
            windows.append([lo, hi])
    lowered = text.lower()

    def terms_in(window: list[int]) -> set[str]:
        return {lowered[s:e] for s, e in matches if s >= window[0] and e <= window[1]}

    chosen: list[list[int]] = []
    seen: set[str] = set()
    candidates = list(windows)
    while candidates and len(chosen) < limit:
        best = max(candidates, key=lambda w: (len(terms_in(w) - seen), -w[0]))
        chosen.append(best)
        seen |= terms_in(best)
        candidates.remove(best)
    out = []
    for lo, hi in sorted(chosen):
        lo = _snap(text, lo, -1, width // 5)
        hi = _snap(text, hi, 1, width // 5)
        inside = tuple((s, e) for s, e in matches if s >= lo and e <= hi)
        out.append(Snippet(lo, hi, text[lo:hi], inside, len(text)))
    return out


def render(snippet: Snippet, *, mark: tuple[str, str] = ("", ""), one_line: bool = True) -> str:
    """A snippet as text: ``…`` where it was cut, matches wrapped in ``mark``."""
    pieces = []
    cursor = snippet.start
    for start, end in snippet.matches:
        pieces.append(snippet.text[cursor - snippet.start : start - snippet.start])
        pieces.append(mark[0] + snippet.text[start - snippet.start : end - snippet.start] + mark[1])
        cursor = end
    pieces.append(snippet.text[cursor - snippet.start :])
    body = "".join(pieces)
    if one_line:
        body = " ".join(body.split())
    return ("…" if snippet.cut_before else "") + body + ("…" if snippet.cut_after else "")


def page(text: str, offset: int, size: int) -> tuple[str, int | None]:
    """``size`` characters of ``text`` from ``offset``; and where the next page starts.

    The next offset is None at the end. An offset past the end gives an empty page.
    """
    if offset < 0:
        raise ValueError(f"offset must be 0 or more, not {offset}")
    if size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    end = min(len(text), offset + size)
    if end < len(text):
        end = _snap(text, end, -1, size // 10)
        if end <= offset:
            end = min(len(text), offset + size)
    return text[offset:end], (end if end < len(text) else None)
