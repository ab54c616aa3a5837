"""Conversation dates: anchors from headers and timestamps, relative expressions resolved."""

from __future__ import annotations

from datetime import datetime

import pytest
from langchain_core.messages import HumanMessage

from context_distill.dates import advance, message_date, parse_date, resolve_relative

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
