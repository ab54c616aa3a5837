"""Is a fact supported by its source? The check that keeps invented facts out of memory.

A small model that writes facts will sometimes invent a number, a date or a name.
Every fact a model writes is checked here before it is kept: each number, date,
time, id, path and name it states must occur in the source text (after
normalising case, punctuation, thousands separators and date forms), and most of
its content words must too. A date resolved from the conversation date
("yesterday" said on 8 May 2023 is 2023-05-07) counts as grounded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from .dates import WEEKDAYS, DateKey, dates_in, month_number, resolve_relative_dates, times_in
from .words import (
    COMMON_OPENERS,
    NUMBER_WORDS,
    QUANTITY_RE,
    STOPWORDS,
    WORD_RE,
    is_idlike,
    normalise,
    numbers_in,
    pieces,
    stem,
    unify,
)

__all__ = [
    "DateKey",
    "GroundingReport",
    "SourceIndex",
    "check_fact",
    "grounded_facts",
    "is_grounded",
    "normalise",
    "resolve_relative_dates",
]

_SENTENCE_START_RE = re.compile(r"(?:^|[.!?:;\-•*→]\s+|\n\s*)$")


@dataclass(frozen=True, slots=True)
class GroundingReport:
    """The verdict on one fact: what it states that the source lacks, and word overlap."""

    grounded: bool
    missing: tuple[str, ...]
    overlap: float


class SourceIndex:
    """A source text prepared once, then asked about any number of facts."""

    def __init__(self, text: str, anchor: datetime | date | None = None) -> None:
        self.text = normalise(text)
        dates, rest = dates_in(self.text)
        times, rest = times_in(rest)
        self.dates: list[DateKey] = list(dates)
        if anchor is not None:
            today = anchor.date() if isinstance(anchor, datetime) else anchor
            self.dates.append(DateKey(today.year, today.month, today.day))
            # A date stated without a year means the year of the conversation.
            dated = (DateKey(today.year, key.month, key.day) for key in dates if key.year is None)
            self.dates.extend(key for key in dated if key.exists())  # not 29 Feb 2023
        self.dates.extend(key for _, key in resolve_relative_dates(self.text, anchor))
        self.times: set[int] = set().union(*times) if times else set()
        self.numbers = numbers_in(rest)
        # Only dates the text states lend their numbers: a bare "18" is not grounded by
        # "last week" happening to cover the 18th.
        for key in dates:
            self.numbers.update(v for v in (key.year, key.day) if v is not None)
        words = WORD_RE.findall(self.text)
        self.numbers.update(float(NUMBER_WORDS[w]) for w in words if w in NUMBER_WORDS)
        self.words = set(words)
        self.stems = {stem(word) for word in words}
        # Words the source writes in lower case (by stem), or opens a sentence with
        # (exactly): common words, not names.
        unified = unify(text)
        self.common_stems = {stem(w) for w in re.findall(r"(?<![\w'])[a-z][a-z']+", unified)}
        self.openers = {
            w.lower() for w in re.findall(r"(?:^|[.!?:]\s+|\n)([A-Z][a-z']+)\b(?!:)", unified)
        }
        self.weekdays = {
            date(key.year, key.month, key.day).weekday()
            for key in self.dates
            if key.year is not None and key.month is not None and key.day is not None
        }

    def _contains(self, needle: str) -> bool:
        needle = normalise(needle)
        if not needle:
            return True
        pattern = r"(?<![a-z0-9])" + re.escape(needle) + r"(?![a-z0-9])"
        return re.search(pattern, self.text) is not None

    def _date_grounded(self, key: DateKey) -> bool:
        if key.month is None and key.day is None and float(key.year or 0) in self.numbers:
            return True  # "2000" may be an amount the source states as "2,000"
        return any(key.within(candidate) for candidate in self.dates)

    def check(self, fact: str, *, min_overlap: float = 0.6) -> GroundingReport:
        """Whether ``fact`` states only what this source supports."""
        missing: list[str] = []
        fact = unify(fact)
        dates, rest = dates_in(fact)
        missing.extend(
            f"date {key.year or '?'}-{key.month or '?'}-{key.day or '?'}"
            for key in dates
            if not self._date_grounded(key)
        )
        times, rest = times_in(rest)
        missing.extend("time" for readings in times if not readings & self.times)
        for token, start in pieces(rest):
            number = QUANTITY_RE.fullmatch(token.lower())
            if number is not None:
                if float(number.group(1)) not in self.numbers:
                    missing.append(token)
            elif is_idlike(token):
                if not self._contains(token):
                    missing.append(token)
            elif token[:1].isupper() and len(token) > 1:
                if self._contains(token) or self._name_ok(token, fact, start):
                    continue
                missing.append(token)
        overlap = self._overlap(rest)
        grounded = not missing and overlap >= min_overlap
        return GroundingReport(grounded=grounded, missing=tuple(missing), overlap=overlap)

    def _name_ok(self, token: str, fact: str, start: int) -> bool:
        lower = token.lower()
        month = month_number(lower)
        if month is not None:
            return any(key.month == month for key in self.dates)
        if lower in WEEKDAYS:
            return WEEKDAYS.index(lower) in self.weekdays
        at_start = _SENTENCE_START_RE.search(fact[:start]) is not None
        return at_start and (
            lower in COMMON_OPENERS or lower in self.openers or stem(lower) in self.common_stems
        )

    def _overlap(self, text: str) -> float:
        content = [
            word
            for word in WORD_RE.findall(normalise(text))
            if len(word) >= 3 and word.isalpha() and word not in STOPWORDS
        ]
        if not content:
            return 1.0
        found = sum(1 for word in content if word in self.words or stem(word) in self.stems)
        return found / len(content)


def check_fact(
    fact: str,
    source: str,
    anchor: datetime | date | None = None,
    *,
    min_overlap: float = 0.6,
) -> GroundingReport:
    """Check one fact against one source text (see :class:`SourceIndex` for many facts)."""
    return SourceIndex(source, anchor).check(fact, min_overlap=min_overlap)


def is_grounded(
    fact: str,
    source: str,
    anchor: datetime | date | None = None,
    *,
    min_overlap: float = 0.6,
) -> bool:
    """``True`` when every number, date, id, path and name of ``fact`` occurs in ``source``."""
    return check_fact(fact, source, anchor, min_overlap=min_overlap).grounded


def grounded_facts(
    facts: Iterable[str], source: str, anchor: datetime | date | None = None
) -> tuple[list[str], list[tuple[str, GroundingReport]]]:
    """Split ``facts`` into the grounded ones and the rejected ones with their reports."""
    index = SourceIndex(source, anchor)
    kept: list[str] = []
    rejected: list[tuple[str, GroundingReport]] = []
    for fact in facts:
        report = index.check(fact)
        if report.grounded:
            kept.append(fact)
        else:
            rejected.append((fact, report))
    return kept, rejected
