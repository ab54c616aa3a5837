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
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

__all__ = [
    "DateKey",
    "GroundingReport",
    "SourceIndex",
    "check_fact",
    "is_grounded",
    "resolve_relative_dates",
]

_MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4,
    "apr": 4, "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8,
    "september": 9, "sep": 9, "sept": 9, "october": 10, "oct": 10, "november": 11,
    "nov": 11, "december": 12, "dec": 12,
}  # fmt: skip
_WEEKDAYS = {
    "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5,
    "sunday": 6,
}  # fmt: skip
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 1_000_000, "billion": 1_000_000_000, "dozen": 12,
}  # fmt: skip
# Only cardinal number words ground a digit: "a team" must not ground "Team: 1".
_COUNT_WORDS = {"a": 1, "an": 1, "couple": 2, "few": 3}

# Words that may open a telegraphic fact with a capital letter without being a name.
_OPENERS = frozenset(
    """
    a an the this that these those it its he she they we you i his her their our my your
    there here what when where who why how which if then also and but or so not no yes
    user assistant tool system human ai result results call calls called output input error
    note notes fact facts summary status plan plans decision decided task goal request
    reply replied response answer answered asked asks said says told tells mentioned
    went goes going attended attends visited visits moved moves started starts finished
    finishes bought buys made makes got gets has have had is was were are be been being
    will would can could should may might must did does do done uses used using wants
    wanted likes liked loves loved enjoys enjoyed prefers preferred feels felt thinks
    thought plans planned hopes hoped tried tries works worked lives lived joined joins
    found finds saw sees took takes gave gives ran runs read reads wrote writes shared
    shares created creates added adds removed removes updated updates fixed fixes
    failed fails passed passes returned returns ok okay both all some many most each
    every other another new old first last next recent recently today yesterday tomorrow
    tonight currently now later earlier before after during since until
    """.split()
)

COMMON_OPENERS = _OPENERS | frozenset(
    "thank thanks love hope sorry great good glad nice happy excited".split()
)

STOPWORDS = _OPENERS | frozenset(
    """
    about above across against along among around because before below beside between
    beyond both from into like near onto over past than through toward under upon with
    within without for of on in at to by as up down out off just very really quite
    such only own same too more less much any few lot lots thing things something
    anything everything nothing been him them me us am was were get got also still even
    ever never always often sometimes again once well back way ways day days time times
    one ones per via etc
    """.split()
)

_MONTH_RE = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_ORD = r"(?:st|nd|rd|th)?"
_DATE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b"), "ymd"),
    (re.compile(rf"\b(\d{{1,2}}){_ORD}\s+(?:of\s+)?({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.I), "dMy"),
    (re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}}){_ORD},?\s+(\d{{4}})\b", re.I), "Mdy"),
    (re.compile(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{4}|\d{2})\b"), "numeric"),
    (re.compile(rf"\b({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.I), "My"),
    (re.compile(rf"\b(\d{{1,2}}){_ORD}\s+(?:of\s+)?({_MONTH_RE})\b", re.I), "dM"),
    (re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}}){_ORD}\b(?!:)", re.I), "Md"),
    (re.compile(r"(?<![\d.,:/-])((?:19|20)\d{2})(?:s)?(?![\d.,:/]?\d)"), "y"),
]
_TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2})(?::\d{2})?\s*(am|pm|a\.m\.|p\.m\.)?", re.I)
_TIME_AMPM_RE = re.compile(r"\b(\d{1,2})\s*(am|pm|a\.m\.|p\.m\.)(?!\w)", re.I)
_NUMBER_RE = re.compile(r"(?<![\w.])[-+]?(\d+(?:\.\d+)?)(?=[a-z°%]{0,3}(?!\w))")
# A number, maybe with a currency sign, an ordinal suffix or a short unit: $1200, 5th, 7.5°c.
_QUANTITY_RE = re.compile(r"[-+~]?[$€£¥]?(\d+(?:\.\d+)?)(?:st|nd|rd|th|%|°[a-z]?|[a-z]{1,3})?")
_SPLIT_RE = re.compile(r"[\s,;()\[\]{}<>\"'`=|→⇒–—]+|:(?!//)|(?<=\w)\.(?=\s|$)")
_WORD_RE = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?")
_SENTENCE_START_RE = re.compile(r"(?:^|[.!?:;\-•*→]\s+|\n\s*)$")


@dataclass(frozen=True, slots=True)
class DateKey:
    """A calendar date with any part unknown (``None``): 2023-05-07, May 2023, 2022."""

    year: int | None
    month: int | None
    day: int | None

    def within(self, other: DateKey) -> bool:
        """Whether every part this key states agrees with ``other``."""
        return all(
            mine is None or mine == theirs
            for mine, theirs in (
                (self.year, other.year),
                (self.month, other.month),
                (self.day, other.day),
            )
        )


@dataclass(frozen=True, slots=True)
class GroundingReport:
    """The verdict on one fact: what it states that the source lacks, and word overlap."""

    grounded: bool
    missing: tuple[str, ...]
    overlap: float


def _unify(text: str) -> str:
    """Unicode forms, quotes, dashes and thousands separators made uniform; case kept."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"[‐‑‒–—−]", "-", text)
    return re.sub(r"(?<=\d)[,\u202f\u00a0'](?=\d{3}(?!\d))", "", text)


def normalise(text: str) -> str:
    """Lowercase, unify quotes and dashes, drop thousands separators, collapse spaces."""
    return re.sub(r"\s+", " ", _unify(text)).strip().lower()


def _month(word: str) -> int:
    return _MONTHS[word.lower().rstrip(".")]


def _valid(year: int | None, month: int | None, day: int | None) -> bool:
    if month is not None and not 1 <= month <= 12:
        return False
    if day is not None and not 1 <= day <= 31:
        return False
    if year is not None and month is not None and day is not None:
        try:
            date(year, month, day)
        except ValueError:
            return False
    return True


def _dates_in(text: str) -> tuple[list[DateKey], str]:
    """The dates ``text`` states, and the text with their spans blanked out."""
    found: list[DateKey] = []
    chars = list(text)
    for pattern, kind in _DATE_PATTERNS:
        for match in pattern.finditer("".join(chars)):
            groups = match.groups()
            keys: list[tuple[int | None, int | None, int | None]] = []
            if kind == "ymd":
                keys = [(int(groups[0]), int(groups[1]), int(groups[2]))]
            elif kind == "dMy":
                keys = [(int(groups[2]), _month(groups[1]), int(groups[0]))]
            elif kind == "Mdy":
                keys = [(int(groups[2]), _month(groups[0]), int(groups[1]))]
            elif kind == "numeric":
                year = int(groups[2]) + (2000 if len(groups[2]) == 2 else 0)
                first, second = int(groups[0]), int(groups[1])
                keys = [(year, first, second), (year, second, first)]  # US and European
            elif kind == "My":
                keys = [(int(groups[1]), _month(groups[0]), None)]
            elif kind == "dM":
                keys = [(None, _month(groups[1]), int(groups[0]))]
            elif kind == "Md":
                keys = [(None, _month(groups[0]), int(groups[1]))]
            else:
                keys = [(int(groups[0]), None, None)]
            valid = [DateKey(*key) for key in keys if _valid(*key)]
            if not valid:
                continue
            found.extend(valid)
            for position in range(match.start(), match.end()):
                chars[position] = " "
    return found, "".join(chars)


def _times_in(text: str) -> tuple[list[set[int]], str]:
    """Each time of day stated, as the minutes after midnight it may mean (both
    readings when am/pm is absent), and the text with the times blanked out."""
    found: list[set[int]] = []
    chars = list(text)
    for pattern in (_TIME_RE, _TIME_AMPM_RE):
        for match in pattern.finditer("".join(chars)):
            hour = int(match.group(1))
            minute = int(match.group(2)) if pattern is _TIME_RE else 0
            suffix = (match.group(3) if pattern is _TIME_RE else match.group(2)) or ""
            if hour > 23 or minute > 59:
                continue
            readings: set[int] = set()
            if suffix.lower().startswith("p") and hour < 12:
                readings.add((hour + 12) * 60 + minute)
            elif suffix.lower().startswith("a") and hour == 12:
                readings.add(minute)
            else:
                readings.add(hour * 60 + minute)
                if not suffix and hour <= 12:
                    readings.add(((hour + 12) % 24) * 60 + minute)
            found.append(readings)
            for position in range(match.start(), match.end()):
                chars[position] = " "
    return found, "".join(chars)


def _numbers_in(text: str) -> set[float]:
    return {float(match.group(1)) for match in _NUMBER_RE.finditer(text)}


def _shift_month(day: date, months: int) -> tuple[int, int]:
    index = day.year * 12 + (day.month - 1) + months
    return index // 12, index % 12 + 1


_RELATIVE_RE = re.compile(
    r"\b(?:(today|tonight|this (?:morning|afternoon|evening))"
    r"|(yesterday|last night)"
    r"|(tomorrow)"
    r"|(\w+) (day|week|month|year)s? ago"
    r"|(last|next|this|past|coming) (week|weekend|month|year)"
    r"|(last|next|this|on|past) (monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"|(the other day|a few days ago|recently|the day before yesterday))\b",
    re.I,
)


def _count(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    value = _NUMBER_WORDS.get(word.lower(), _COUNT_WORDS.get(word.lower()))
    return int(value) if value is not None and value >= 1 else None


def resolve_relative_dates(text: str, anchor: datetime | date | None) -> list[tuple[str, DateKey]]:
    """Each relative time phrase in ``text`` ("yesterday", "last year", "two weeks
    ago", "last Saturday") with the date it means, seen from ``anchor``.

    Vague phrases ("last week") yield several keys, one per day they may mean.
    """
    if anchor is None:
        return []
    today = anchor.date() if isinstance(anchor, datetime) else anchor
    out: list[tuple[str, DateKey]] = []

    def add_day(phrase: str, day: date) -> None:
        out.append((phrase, DateKey(day.year, day.month, day.day)))

    for match in _RELATIVE_RE.finditer(text):
        phrase = match.group(0)
        (same_day, day_before, day_after, count_word, count_unit, rel, rel_unit, wd_rel, weekday,
         vague) = match.groups()  # fmt: skip
        if same_day:
            add_day(phrase, today)
        elif day_before:
            add_day(phrase, today - timedelta(days=1))
        elif day_after:
            add_day(phrase, today + timedelta(days=1))
        elif count_word:
            n = _count(count_word)
            if n is None:
                continue
            unit = count_unit.lower()
            if unit == "day":
                add_day(phrase, today - timedelta(days=n))
            elif unit == "week":
                for offset in range(7 * n - 3, 7 * n + 4):
                    add_day(phrase, today - timedelta(days=offset))
            elif unit == "month":
                year, month = _shift_month(today, -n)
                out.append((phrase, DateKey(year, month, None)))
            else:
                out.append((phrase, DateKey(today.year - n, None, None)))
        elif rel:
            step = {"last": -1, "past": -1, "next": 1, "coming": 1, "this": 0}[rel.lower()]
            unit = rel_unit.lower()
            if unit in ("week", "weekend"):
                start = 7 * step - 6 if step else -6
                for offset in range(start, start + 13):
                    add_day(phrase, today + timedelta(days=offset))
            elif unit == "month":
                year, month = _shift_month(today, step)
                out.append((phrase, DateKey(year, month, None)))
            else:
                out.append((phrase, DateKey(today.year + step, None, None)))
        elif wd_rel:
            target = _WEEKDAYS[weekday.lower()]
            back = (today.weekday() - target) % 7 or 7
            ahead = (target - today.weekday()) % 7 or 7
            if wd_rel.lower() in ("last", "past", "on"):
                add_day(phrase, today - timedelta(days=back))
            if wd_rel.lower() in ("next", "this", "on"):
                add_day(phrase, today + timedelta(days=ahead))
        elif vague:
            lower = vague.lower()
            if lower == "the day before yesterday":
                add_day(phrase, today - timedelta(days=2))
            else:
                for offset in range(1, 15):
                    add_day(phrase, today - timedelta(days=offset))
    return out


def _tokens(text: str) -> list[tuple[str, int]]:
    """Whitespace/punctuation separated pieces of ``text`` with their start offsets."""
    out: list[tuple[str, int]] = []
    position = 0
    for piece in _SPLIT_RE.split(text):
        start = text.find(piece, position) if piece else position
        if piece:
            position = start + len(piece)
            stripped = piece.strip(".!?*-•~")
            if stripped:
                out.append((stripped, start + piece.find(stripped)))
    return out


def is_idlike(token: str) -> bool:
    has_digit = any(ch.isdigit() for ch in token)
    has_alpha = any(ch.isalpha() for ch in token)
    if has_digit and has_alpha:
        return True
    if any(ch in token for ch in "/\\_@#$"):
        return has_alpha or has_digit
    if "." in token and has_alpha:  # file.py, example.com
        return True
    if has_alpha and len(token) >= 2 and token.isupper():  # LGBTQ, HTTP
        return True
    return bool(re.search(r"[a-z][A-Z]", token))  # KeyError, getWeather


def _stem(word: str) -> str:
    return word[:5] if len(word) > 5 else word


class SourceIndex:
    """A source text prepared once, then asked about any number of facts."""

    def __init__(self, text: str, anchor: datetime | date | None = None) -> None:
        self.text = normalise(text)
        dates, rest = _dates_in(self.text)
        times, rest = _times_in(rest)
        self.dates: list[DateKey] = list(dates)
        if anchor is not None:
            today = anchor.date() if isinstance(anchor, datetime) else anchor
            self.dates.append(DateKey(today.year, today.month, today.day))
            # A date stated without a year means the year of the conversation.
            self.dates.extend(
                DateKey(today.year, key.month, key.day) for key in dates if key.year is None
            )
        self.dates.extend(key for _, key in resolve_relative_dates(self.text, anchor))
        self.times: set[int] = set().union(*times) if times else set()
        self.numbers = _numbers_in(rest)
        # Only dates the text states lend their numbers: a bare "18" is not grounded by
        # "last week" happening to cover the 18th.
        for key in dates:
            self.numbers.update(v for v in (key.year, key.day) if v is not None)
        words = _WORD_RE.findall(self.text)
        self.numbers.update(float(_NUMBER_WORDS[w]) for w in words if w in _NUMBER_WORDS)
        self.words = set(words)
        self.stems = {_stem(word) for word in words}
        # Words the source writes in lower case (by stem), or opens a sentence with
        # (exactly): common words, not names.
        unified = _unify(text)
        self.common_stems = {_stem(w) for w in re.findall(r"(?<![\w'])[a-z][a-z']+", unified)}
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
        fact = _unify(fact)
        dates, rest = _dates_in(fact)
        missing.extend(
            f"date {key.year or '?'}-{key.month or '?'}-{key.day or '?'}"
            for key in dates
            if not self._date_grounded(key)
        )
        times, rest = _times_in(rest)
        missing.extend("time" for readings in times if not readings & self.times)
        for token, start in _tokens(rest):
            number = _QUANTITY_RE.fullmatch(token.lower())
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
        if lower in _MONTHS:
            month = _MONTHS[lower]
            return any(key.month == month for key in self.dates)
        if lower in _WEEKDAYS:
            return _WEEKDAYS[lower] in self.weekdays
        at_start = _SENTENCE_START_RE.search(fact[:start]) is not None
        return at_start and (
            lower in COMMON_OPENERS or lower in self.openers or _stem(lower) in self.common_stems
        )

    def _overlap(self, text: str) -> float:
        content = [
            word
            for word in _WORD_RE.findall(normalise(text))
            if len(word) >= 3 and word.isalpha() and word not in STOPWORDS
        ]
        if not content:
            return 1.0
        found = sum(1 for word in content if word in self.words or _stem(word) in self.stems)
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
