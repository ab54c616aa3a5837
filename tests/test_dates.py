"""Conversation dates: anchors from headers and timestamps, relative expressions resolved."""

from __future__ import annotations

from datetime import datetime

import pytest
from langchain_core.messages import HumanMessage

from context_distill.dates import (
    DateKey,
    advance,
    dates_in,
    format_date,
    header_date,
    message_date,
    month_number,
    parse_date,
    resolve_relative,
    times_in,
    written_date_spans,
)

ANCHOR = datetime(2023, 5, 8, 13, 56)  # a Monday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56)),
        ("2023-05-08T09:30:00Z", datetime(2023, 5, 8, 9, 30)),
        ("May 8, 2023", datetime(2023, 5, 8)),
        ("Session 3 — 8 May 2023", datetime(2023, 5, 8)),
        ("no date here", None),
        ("31 February 2023", None),
    ],
)
def test_parse_date(text: str, expected: datetime | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I went yesterday", "I went 7 May 2023"),
        ("see you tomorrow", "see you 9 May 2023"),
        ("painted it last year", "painted it 2022"),
        ("moved last month", "moved April 2023"),
        ("a race last Saturday", "a race Saturday before 8 May 2023"),
        ("camping last week", "camping week before 8 May 2023"),
        ("3 days ago", "5 May 2023"),
        ("two weeks ago", "2 weeks before 8 May 2023"),
        ("next month", "June 2023"),
        ("nothing relative", "nothing relative"),
    ],
)
def test_resolve_relative(text: str, expected: str) -> None:
    assert resolve_relative(text, ANCHOR) == expected


def test_without_anchor_nothing_changes() -> None:
    assert resolve_relative("yesterday", None) == "yesterday"


def test_anchor_from_headers_and_timestamps() -> None:
    header = HumanMessage("Session 2 — 2:32 pm on 29 January, 2023")
    stamped = HumanMessage("hello", additional_kwargs={"timestamp": "2024-02-03T10:00:00"})
    long_text = HumanMessage("We talked about 8 May 2023 a lot. " * 10)
    assert message_date(header) == datetime(2023, 1, 29, 14, 32)
    assert message_date(stamped) == datetime(2024, 2, 3, 10, 0)
    assert message_date(long_text) is None  # a date inside prose is not a header
    assert advance(None, [header, long_text, stamped]) == datetime(2024, 2, 3, 10, 0)


def test_month_names_in_every_form() -> None:
    assert [month_number(w) for w in ("January", "jan", "Sept.", "SEP", "mayday")] == [
        1,
        1,
        9,
        9,
        None,
    ]
    assert format_date(datetime(2023, 5, 7)) == "7 May 2023"


def test_a_header_is_a_short_text_with_a_full_date() -> None:
    assert header_date("Session 3 — 8 May 2023") == datetime(2023, 5, 8)
    assert header_date("We talked about 8 May 2023 a lot. " * 5) is None
    assert header_date("on 8 May") is None


def test_list_content_headers_set_the_anchor_too() -> None:
    header = HumanMessage([{"type": "text", "text": "Session 2 — 29 January, 2023"}])
    assert message_date(header) == datetime(2023, 1, 29)


def test_written_dates_are_found_whole() -> None:
    written = resolve_relative("we met two weeks ago and last Saturday, in May 2023", ANCHOR)
    spans = [written[start:end] for start, end in written_date_spans(written)]
    assert spans == ["2 weeks before 8 May 2023", "Saturday before 8 May 2023", "May 2023"]


def test_stated_dates_partial_and_numeric() -> None:
    keys, rest = dates_in("on 7 May, then 2023/05/09, 05/07/2023, in 1990s, 31 February 2023")
    assert keys == [
        DateKey(2023, 5, 9),
        DateKey(2023, 5, 7),
        DateKey(2023, 7, 5),
        DateKey(2023, 2, None),  # no 31 February: the month and year still stand
        DateKey(None, 5, 7),
        DateKey(1990, None, None),
    ]
    assert "2023/05/09" not in rest and "31" in rest
    assert not DateKey(2023, 2, 29).exists() and DateKey(None, 2, 29).exists()


def test_stated_times_in_both_clocks() -> None:
    times, rest = times_in("at 1:56 pm, then 9am, then 12:30")
    assert times == [{13 * 60 + 56}, {12 * 60 + 30, 30}, {9 * 60}]
    assert not any(ch.isdigit() for ch in rest)
