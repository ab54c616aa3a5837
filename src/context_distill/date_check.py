"""The check side of the date grammar: every date and time a text states, and every
day a relative phrase may mean, so grounding can tell a restated date from an
invented one. The patterns are ``dates.py``'s."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .dates import (  # the grammar's own pieces
    _RELATIVE_DAYS,
    _STATED,
    _TIME,
    _TIME_AMPM,
    WEEKDAYS,
    _day,
    _month_shift,
    month_number,
)
from .words import count_value


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
