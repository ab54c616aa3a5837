"""Conversation dates: find the date a conversation is at, resolve "yesterday" against it.

A thread's anchor is the latest date stated by a session header (a short message
that is mostly a date, such as "Session 3 - 1:56 pm on 8 May, 2023") or by a
message timestamp. Relative expressions in later messages are rewritten against
it, so a fact still means the same thing when read weeks later.
"""

from __future__ import annotations

import re
from calendar import month_name
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from typing import Any

from langchain_core.messages import BaseMessage

_MONTHS = {name.lower(): i for i, name in enumerate(month_name) if name}
_MONTHS.update({name[:3].lower(): i for name, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_ISO = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?")
_DMY = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH_RE})\.?,?\s+(\d{{4}})\b", re.I)
_MDY = re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b", re.I)
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\s*([ap])\.?m\.?", re.I)

_HEADER_MAX_CHARS = 120
_TIMESTAMP_KEYS = ("timestamp", "created_at", "date", "time", "sent_at")


def format_date(day: date) -> str:
    """``7 May 2023``: the form people and answer keys write."""
    return f"{day.day} {month_name[day.month]} {day.year}"


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
        try:
            found = datetime(int(named[3]), _MONTHS[month_s.lower().rstrip(".")], int(day_s))
        except (ValueError, KeyError):
            continue
        time_match = _TIME.search(text)
        if time_match:
            hour = int(time_match[1]) % 12 + (12 if time_match[3].lower() == "p" else 0)
            found = found.replace(hour=hour, minute=int(time_match[2]))
        best = (named.start(), found)
    return best[1] if best else None


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
    if text is None:
        content = message.content
        text = content if isinstance(content, str) else None
    if text is not None and len(text) <= _HEADER_MAX_CHARS:
        return parse_date(text)
    return None


def advance(anchor: datetime | None, messages: Iterable[BaseMessage]) -> datetime | None:
    """The anchor after reading ``messages`` in order."""
    for message in messages:
        found = message_date(message)
        if found is not None:
            anchor = found
    return anchor


def _month_shift(day: date, months: int) -> tuple[int, int]:
    index = day.year * 12 + day.month - 1 + months
    return index // 12, index % 12 + 1


_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "couple of": 2, "a couple of": 2,
}  # fmt: skip
_COUNT = r"(\d+|a couple of|couple of|an|a|one|two|three|four|five|six|seven|eight|nine|ten)"
_RELATIVE = re.compile(
    r"\b(?:"
    r"(?P<yesterday>yesterday)|(?P<today>today|tonight|this morning|this afternoon|this evening)"
    r"|(?P<tomorrow>tomorrow)|(?P<lastnight>last night)"
    rf"|(?P<ago>{_COUNT}\s+(?P<unit>day|week|month|year)s?\s+ago)"
    r"|(?P<few>(?:a\s+)?few\s+(?P<funit>day|week|month|year)s\s+ago)"
    r"|(?P<dir>last|next|this|past)\s+(?P<what>week|weekend|month|year|"
    + "|".join(_WEEKDAYS)
    + r")"
    r")\b",
    re.I,
)


def resolve_relative(text: str, anchor: datetime | date | None) -> str:
    """Rewrite relative time expressions against the anchor date; unchanged without one."""
    if anchor is None:
        return text
    day = anchor.date() if isinstance(anchor, datetime) else anchor

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
            count = int(count_s) if count_s.isdigit() else _NUMBER_WORDS.get(count_s, 1)
            unit = groups["unit"].lower()
            if unit == "day":
                return format_date(day - timedelta(days=count))
            if unit == "year":
                return str(day.year - count)
            if unit == "month":
                year, month = _month_shift(day, -count)
                return f"{month_name[month]} {year}"
            return f"{count} week{'s' if count > 1 else ''} before {format_date(day)}"
        if groups["few"]:
            return f"few {groups['funit'].lower()}s before {format_date(day)}"
        direction = groups["dir"].lower()
        what = groups["what"].lower()
        if what == "year":
            offset = {"last": -1, "past": -1, "next": 1}.get(direction, 0)
            return str(day.year + offset)
        if what == "month":
            offset = {"last": -1, "past": -1, "next": 1}.get(direction, 0)
            year, month = _month_shift(day, offset)
            return f"{month_name[month]} {year}"
        relation = {"last": "before", "past": "before", "next": "after"}.get(direction, "of")
        label = what.capitalize() if what in _WEEKDAYS else what
        return f"{label} {relation} {format_date(day)}"

    return _RELATIVE.sub(replace, text)


def to_iso(anchor: datetime | None) -> str | None:
    return anchor.isoformat() if anchor else None


def from_iso(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
