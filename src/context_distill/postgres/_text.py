"""Text as PostgreSQL keeps it: NUL characters made storable, words made searchable.

PostgreSQL ``text`` cannot hold NUL, which SQLite (and so the archive's promise of an
exact round trip) can. Every string is stored through :func:`enc`, an escape that
leaves strings without NUL or ``\\x01`` untouched (the common case costs one scan)
and is undone exactly by :func:`dec`.

Full-text search splits text into words the way SQLite's ``unicode61`` tokenizer
does (letters and digits; everything else separates; diacritics removed), in Python,
so both sides of a match are split alike whatever the database's locale, and then
PostgreSQL stems the words (English snowball, without stop words, as ``porter``).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import overload

_ESCAPED = re.compile("\x01([\x01\x02])")
_NON_WORD = re.compile(r"[\W_]+")
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
_PHRASE = re.compile(r'"([^"]*)"|([^\s"]+)')
MAX_TERMS = 64  # words of a query beyond these are ignored, as in the SQLite backend
# A tsvector holds at most 1 MB (each distinct word, 2-aligned, plus 2 bytes for each of
# up to 256 positions and 2 more): texts this long are measured, and a text that would
# not fit is indexed by its distinct words, the first ones that fit.
_CHECK_CHARS = 100_000
_MAX_INDEX_BYTES = 1_000_000


@overload
def enc(value: str) -> str: ...


@overload
def enc(value: object) -> object: ...


def enc(value: object) -> object:
    """A string PostgreSQL can store (``\\x00`` -> ``\\x01\\x02``, ``\\x01`` doubled).

    Anything else passes through unchanged, for the database to accept or refuse.
    """
    if not isinstance(value, str) or ("\x00" not in value and "\x01" not in value):
        return value
    return value.replace("\x01", "\x01\x01").replace("\x00", "\x01\x02")


@overload
def dec(value: str) -> str: ...


@overload
def dec(value: None) -> None: ...


def dec(value: str | None) -> str | None:
    """Inverse of :func:`enc`."""
    if value is None or "\x01" not in value:
        return value
    return _ESCAPED.sub(lambda m: "\x01" if m.group(1) == "\x01" else "\x00", value)


def words(text: str) -> str:
    """The words of ``text`` separated by single spaces, without diacritics."""
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    return _NON_WORD.sub(" ", text).strip()


def index_text(text: object) -> object:
    """What the full-text index of a stored text is built from."""
    if not isinstance(text, str):
        return text
    found = words(text)
    if len(found) <= _CHECK_CHARS:
        return found
    counts = Counter(found.lower().split())
    if sum(_cost(word) + 2 * min(n, 256) for word, n in counts.items()) <= _MAX_INDEX_BYTES:
        return found
    kept, size = [], 0
    for word in counts:  # first seen first
        size += _cost(word) + 2
        if size > _MAX_INDEX_BYTES:
            break
        kept.append(word)
    return " ".join(kept)


def _cost(word: str) -> int:
    """Bytes a distinct word takes in a tsvector, apart from its positions."""
    size = len(word.encode())
    return size + size % 2 + 2


def query_terms(query: str) -> list[str]:
    """The terms of a plain-text query: each word, or each ``"quoted phrase"``, as words.

    Operators and punctuation are text; terms without a word in them are dropped, and
    only the first ``MAX_TERMS`` distinct ones are kept.
    """
    query = query.encode("utf-8", "replace").decode("utf-8")
    terms: dict[str, None] = {}
    for phrase, word in _PHRASE.findall(query):
        term = words(phrase if phrase else word)
        if term:
            terms[term] = None
            if len(terms) >= MAX_TERMS:
                break
    return list(terms)
