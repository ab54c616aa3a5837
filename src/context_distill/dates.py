"""Every date phrase the library reads or writes, in one grammar.

Three uses share the month and weekday names, the patterns and the arithmetic:

- the anchor: the date a conversation is at, stated by a session header (a short
  message that is mostly a date, such as "Session 3 - 1:56 pm on 8 May, 2023") or
  by a message timestamp;
- the rewrite: relative phrases ("yesterday") in later messages rewritten against
  the anchor, so a fact still means the same thing when read weeks later;
- the check: every date and time a text states, and every day a relative phrase
  may mean, so the grounding check can tell a restated date from an invented one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from langchain_core.messages import BaseMessage

from .messages import prose_of
from .words import count_value

# English whatever the process locale: these are the words facts are written in.
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = {name.lower(): i for i, name in enumerate(_MONTH_NAMES, start=1)}
_MONTHS.update({name[:3]: i for name, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_MONTH_RE = "(?:" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + ")"
_WEEKDAY_RE = "|".join(WEEKDAYS)
_ORD = r"(?:st|nd|rd|th)?"

# A full calendar date, as an anchor needs it (the time of day only with am/pm).
_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?")
_DMY = re.compile(rf"\b(\d{{1,2}}){_ORD}\s+({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.I)
_MDY = re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}}){_ORD},?\s+(\d{{4}})\b", re.I)
_CLOCK = re.compile(r"\b(\d{1,2}):(\d{2})\s*([ap])\.?m\.?", re.I)

# Any date a text states, for the check: partial ones too (May 2023, 7 May, 2022).
_STATED: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\b"), "ymd"),
    (re.compile(rf"\b(\d{{1,2}}){_ORD}\s+(?:of\s+)?({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.I), "dMy"),
    (_MDY, "Mdy"),
    (re.compile(r"\b(\d{1,2})[/.](\d{1,2})[/.](\d{4}|\d{2})\b"), "numeric"),
    (re.compile(rf"\b({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.I), "My"),
    (re.compile(rf"\b(\d{{1,2}}){_ORD}\s+(?:of\s+)?({_MONTH_RE})\b", re.I), "dM"),
    (re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}}){_ORD}\b(?!:)", re.I), "Md"),
    (re.compile(r"(?<![\d.,:/-])((?:19|20)\d{2})(?:s)?(?![\d.,:/]?\d)"), "y"),
]
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})(?::\d{2})?\s*(am|pm|a\.m\.|p\.m\.)?", re.I)
_TIME_AMPM = re.compile(r"\b(\d{1,2})\s*(am|pm|a\.m\.|p\.m\.)(?!\w)", re.I)

# What format_date and resolve_relative write ("Sunday before 7 May 2023").
_WRITTEN_MONTH = "|".join(_MONTH_NAMES)
_WRITTEN = re.compile(
    rf"\b(?:(?:\d+|few) )?\w+ (?:before|after|of) \d{{1,2}} (?:{_WRITTEN_MONTH}) \d{{4}}"
    rf"|\b\d{{1,2}} (?:{_WRITTEN_MONTH}) \d{{4}}|\b(?:{_WRITTEN_MONTH}) \d{{4}}"
)

_SAME_DAY = r"today|tonight|this (?:morning|afternoon|evening)"
_UNIT = r"day|week|month|year"
_COUNT = r"(\d+|a couple of|couple of|an|a|one|two|three|four|five|six|seven|eight|nine|ten)"
# Phrases with one meaning the rewrite can state exactly.
_RELATIVE = re.compile(
    r"\b(?:"
    rf"(?P<yesterday>yesterday)|(?P<today>{_SAME_DAY})"
    r"|(?P<tomorrow>tomorrow)|(?P<lastnight>last night)"
    rf"|(?P<ago>{_COUNT}\s+(?P<unit>{_UNIT})s?\s+ago)"
    rf"|(?P<few>(?:a\s+)?few\s+(?P<funit>{_UNIT})s\s+ago)"
    rf"|(?P<dir>last|next|this|past)\s+(?P<what>week|weekend|month|year|{_WEEKDAY_RE})"
    r")\b",
    re.I,
)
# Every phrase the check resolves, vague ones too ("recently": any of the last 14 days).
_RELATIVE_DAYS = re.compile(
    rf"\b(?:({_SAME_DAY})"
    r"|(yesterday|last night)"
    r"|(tomorrow)"
    rf"|(\w+) ({_UNIT})s? ago"
    r"|(last|next|this|past|coming) (week|weekend|month|year)"
    rf"|(last|next|this|on|past) ({_WEEKDAY_RE})"
    r"|(the other day|a few days ago|recently|the day before yesterday))\b",
    re.I,
)

_HEADER_MAX_CHARS = 120
_TIMESTAMP_KEYS = ("timestamp", "created_at", "date", "time", "sent_at")


def month_number(word: str) -> int | None:
    """1 for "January", "jan" or "Jan."; ``None`` for a word that names no month."""
    return _MONTHS.get(word.lower().rstrip("."))


def format_date(day: date) -> str:
    """``7 May 2023``: the form people and answer keys write."""
    return f"{day.day} {_MONTH_NAMES[day.month - 1]} {day.year}"


def written_date_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds a date as this module writes one ("week before 8 May
    2023"): a span that means something only whole."""
    return [match.span() for match in _WRITTEN.finditer(text)]


# -- the anchor --------------------------------------------------------------------


def parse_date(text: str) -> datetime | None:
    """The first full calendar date in ``text`` (with its time of day when given)."""
    best: tuple[int, datetime] | None = None
    for match in _ISO.finditer(text):
        try:
            hour, minute = int(match.group(4) or 0), int(match.group(5) or 0)
            found = datetime(int(match[1]), int(match[2]), int(match[3]), hour, minute)
        except ValueError:
            continue
        best = (match.start(), found)
        break
    for pattern, order in ((_DMY, "dmy"), (_MDY, "mdy")):
        named = pattern.search(text)
        if named is None or (best is not None and best[0] <= named.start()):
            continue
        day_s, month_s = (named[1], named[2]) if order == "dmy" else (named[2], named[1])
        month = month_number(month_s)
        try:
            found = datetime(int(named[3]), month or 0, int(day_s))
        except ValueError:
            continue
        time_match = _CLOCK.search(text)
        if time_match:
            hour = int(time_match[1]) % 12 + (12 if time_match[3].lower() == "p" else 0)
            found = found.replace(hour=hour, minute=int(time_match[2]))
        best = (named.start(), found)
    return best[1] if best else None


def header_date(text: str) -> datetime | None:
    """The date a session header states: a short text that holds a full date."""
    return parse_date(text) if len(text) <= _HEADER_MAX_CHARS else None


def _from_metadata(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        return parse_date(value)
    return None


def message_date(message: BaseMessage, text: str | None = None) -> datetime | None:
    """The date a message establishes: a timestamp field, or a short date header."""
    for holder in (message.additional_kwargs, message.response_metadata):
        for key in _TIMESTAMP_KEYS:
            if key in holder:
                found = _from_metadata(holder[key])
                if found is not None:
                    return found
    return header_date(prose_of(message) if text is None else text)


def advance(anchor: datetime | None, messages: Iterable[BaseMessage]) -> datetime | None:
    """The anchor after reading ``messages`` in order."""
    for message in messages:
        found = message_date(message)
        if found is not None:
            anchor = found
    return anchor


def to_iso(anchor: datetime | None) -> str | None:
    return anchor.isoformat() if anchor else None


def from_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# -- the rewrite -------------------------------------------------------------------


def _day(anchor: datetime | date) -> date:
    return anchor.date() if isinstance(anchor, datetime) else anchor


def _month_shift(day: date, months: int) -> tuple[int, int]:
    index = day.year * 12 + day.month - 1 + months
    return index // 12, index % 12 + 1


def _month_year(day: date, months: int) -> str:
    year, month = _month_shift(day, months)
    return f"{_MONTH_NAMES[month - 1]} {year}"


def resolve_relative(text: str, anchor: datetime | date | None) -> str:
    """Rewrite relative time expressions against the anchor date; unchanged without one."""
    if anchor is None:
        return text
    day = _day(anchor)

    def replace(match: re.Match[str]) -> str:
        groups = match.groupdict()
        if groups["yesterday"]:
            return format_date(day - timedelta(days=1))
        if groups["today"]:
            return format_date(day)
        if groups["tomorrow"]:
            return format_date(day + timedelta(days=1))
        if groups["lastnight"]:
            return f"night of {format_date(day - timedelta(days=1))}"
        if groups["ago"]:
            count_s = match.group(0).split(groups["unit"])[0].strip().lower()
            count = count_value(count_s)
            count = 1 if count is None else count
            unit = groups["unit"].lower()
            if unit == "day":
                return format_date(day - timedelta(days=count))
            if unit == "year":
                return str(day.year - count)
            if unit == "month":
                return _month_year(day, -count)
            return f"{count} week{'s' if count > 1 else ''} before {format_date(day)}"
        if groups["few"]:
            return f"few {groups['funit'].lower()}s before {format_date(day)}"
        direction = groups["dir"].lower()
        what = groups["what"].lower()
        if what == "year":
            offset = {"last": -1, "past": -1, "next": 1}.get(direction, 0)
            return str(day.year + offset)
        if what == "month":
            return _month_year(day, {"last": -1, "past": -1, "next": 1}.get(direction, 0))
        relation = {"last": "before", "past": "before", "next": "after"}.get(direction, "of")
        label = what.capitalize() if what in WEEKDAYS else what
        return f"{label} {relation} {format_date(day)}"

    return _RELATIVE.sub(replace, text)


# -- the check ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DateKey:
    """A calendar date with any part unknown (``None``): 2023-05-07, May 2023, 2022."""

    year: int | None
    month: int | None
    day: int | None

    def within(self, other: DateKey) -> bool:
        """Whether every part this key states agrees with ``other``."""
        mine = (self.year, self.month, self.day)
        theirs = (other.year, other.month, other.day)
        return all(a is None or a == b for a, b in zip(mine, theirs, strict=True))

    def exists(self) -> bool:
        """Whether some calendar date has every part this key states (not 31 April)."""
        year, month, day = self.year, self.month, self.day
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


def _stated_keys(kind: str, groups: tuple[str, ...]) -> list[tuple[int | None, ...]]:
    """The (year, month, day) readings of one stated date; a numeric one has two."""
    if kind == "ymd":
        return [(int(groups[0]), int(groups[1]), int(groups[2]))]
    if kind == "dMy":
        return [(int(groups[2]), month_number(groups[1]), int(groups[0]))]
    if kind == "Mdy":
        return [(int(groups[2]), month_number(groups[0]), int(groups[1]))]
    if kind == "numeric":
        year = int(groups[2]) + (2000 if len(groups[2]) == 2 else 0)
        first, second = int(groups[0]), int(groups[1])
        return [(year, first, second), (year, second, first)]  # US and European
    if kind == "My":
        return [(int(groups[1]), month_number(groups[0]), None)]
    if kind == "dM":
        return [(None, month_number(groups[1]), int(groups[0]))]
    if kind == "Md":
        return [(None, month_number(groups[0]), int(groups[1]))]
    return [(int(groups[0]), None, None)]


def dates_in(text: str) -> tuple[list[DateKey], str]:
    """The dates ``text`` states, and the text with their spans blanked out."""
    found: list[DateKey] = []
    chars = list(text)
    for pattern, kind in _STATED:
        for match in pattern.finditer("".join(chars)):
            keys = (DateKey(*key) for key in _stated_keys(kind, match.groups()))
            valid = [key for key in keys if key.exists()]
            if not valid:
                continue
            found.extend(valid)
            for position in range(match.start(), match.end()):
                chars[position] = " "
    return found, "".join(chars)


def times_in(text: str) -> tuple[list[set[int]], str]:
    """Each time of day stated, as the minutes after midnight it may mean (both
    readings when am/pm is absent), and the text with the times blanked out."""
    found: list[set[int]] = []
    chars = list(text)
    for pattern in (_TIME, _TIME_AMPM):
        for match in pattern.finditer("".join(chars)):
            hour = int(match.group(1))
            minute = int(match.group(2)) if pattern is _TIME else 0
            suffix = (match.group(3) if pattern is _TIME else match.group(2)) or ""
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


def resolve_relative_dates(text: str, anchor: datetime | date | None) -> list[tuple[str, DateKey]]:
    """Each relative time phrase in ``text`` ("yesterday", "last year", "two weeks
    ago", "last Saturday") with the date it means, seen from ``anchor``.

    Vague phrases ("last week") yield several keys, one per day they may mean.
    """
    if anchor is None:
        return []
    today = _day(anchor)
    out: list[tuple[str, DateKey]] = []

    def add_day(phrase: str, day: date) -> None:
        out.append((phrase, DateKey(day.year, day.month, day.day)))

    for match in _RELATIVE_DAYS.finditer(text):
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
            n = count_value(count_word)
            if n is None:
                continue
            unit = count_unit.lower()
            if unit == "day":
                add_day(phrase, today - timedelta(days=n))
            elif unit == "week":
                for offset in range(7 * n - 3, 7 * n + 4):
                    add_day(phrase, today - timedelta(days=offset))
            elif unit == "month":
                out.append((phrase, DateKey(*_month_shift(today, -n), None)))
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
                out.append((phrase, DateKey(*_month_shift(today, step), None)))
            else:
                out.append((phrase, DateKey(today.year + step, None, None)))
        elif wd_rel:
            target = WEEKDAYS.index(weekday.lower())
            back = (today.weekday() - target) % 7 or 7
            ahead = (target - today.weekday()) % 7 or 7
            if wd_rel.lower() in ("last", "past", "on"):
                add_day(phrase, today - timedelta(days=back))
            if wd_rel.lower() in ("next", "this", "on"):
                add_day(phrase, today + timedelta(days=ahead))
        elif vague:
            if vague.lower() == "the day before yesterday":
                add_day(phrase, today - timedelta(days=2))
            else:
                for offset in range(1, 15):
                    add_day(phrase, today - timedelta(days=offset))
    return out
