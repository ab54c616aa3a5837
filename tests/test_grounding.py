"""The grounding check: facts that invent numbers, dates, ids, paths or names are caught;
facts that restate their source in other forms are not."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from context_distill.dates import resolve_relative
from context_distill.grounding import (
    DateKey,
    SourceIndex,
    check_fact,
    grounded_facts,
    is_grounded,
    normalise,
    resolve_relative_dates,
)

ANCHOR = datetime(2023, 5, 8, 13, 56)
CHAT = "Caroline: I went to a LGBTQ support group yesterday and it was so powerful."
WEATHER = (
    "get_weather(city=Berlin)\n"
    '{"location": "Berlin, DE", "temp_c": 7.5, "conditions": "light rain", '
    '"humidity_pct": 86, "request_id": "req_8f2a91"}'
)
REFUND = (
    "The refund policy states that any customer may return the product in its original "
    "packaging within exactly 30 business days. Order total: $1,250.00, order ORD-7731."
)
PYTEST = (
    "$ pytest tests/test_api.py\nFAILED tests/test_api.py::test_login - KeyError: 'token'\n"
    "3 failed, 41 passed in 2.31s"
)


@pytest.mark.parametrize(
    ("fact", "source"),
    [
        ("2023-05-07 Caroline: attended LGBTQ support group.", CHAT),
        ("Caroline went to LGBTQ support group 7 May 2023; powerful", CHAT),
        ("Caroline: support group on May 7th, 2023", CHAT),
        ("Caroline went to a support group in May 2023", CHAT),
        ("get_weather(Berlin) → 7.5°C, light rain, humidity 86%.", WEATHER),
        ("Berlin weather request req_8f2a91: light rain", WEATHER),
        ("Refund: return within 30 business days, original packaging.", REFUND),
        ("Order ORD-7731 total $1250", REFUND),
        ("Order total 1,250 dollars", REFUND),
        ("pytest tests/test_api.py → 3 failed (test_login KeyError token), 41 passed", PYTEST),
    ],
)
def test_faithful_restatements_are_grounded(fact: str, source: str) -> None:
    report = check_fact(fact, source, ANCHOR)
    assert report.grounded, report


@pytest.mark.parametrize(
    ("fact", "source", "invented"),
    [
        ("Caroline went to 3 support groups", CHAT, "3"),
        ("Melanie attended LGBTQ support group", CHAT, "Melanie"),
        ("Caroline attended support group on 2023-05-06", CHAT, "date"),
        ("Caroline went to the group on 12 June 2023", CHAT, "date"),
        ("Caroline: LGBTQ group at 7 pm", CHAT, "time"),
        ("Berlin: 8.5°C, light rain", WEATHER, "8.5°C"),
        ("Munich: 7.5°C, light rain", WEATHER, "Munich"),
        ("request req_8f2a92 failed", WEATHER, "req_8f2a92"),
        ("Refund: return within 60 business days", REFUND, "60"),
        ("Order ORD-7732 total $1250", REFUND, "ORD-7732"),
        ("Order total $1,350", REFUND, "$1350"),
        ("Refund needs approval from Bob", REFUND, "Bob"),
        ("pytest tests/test_app.py → 3 failed", PYTEST, "tests/test_app.py"),
        ("pytest: 4 failed, 41 passed", PYTEST, "4"),
        ("test_logout raised ValueError", PYTEST, "test_logout"),
        ("Carole liked the event", "Melanie: Caroline, the event was great.", "Carole"),
        ("Team: 2", "John: we make a great team, both of us.", "2"),
    ],
)
def test_invented_values_are_caught(fact: str, source: str, invented: str) -> None:
    report = check_fact(fact, source, ANCHOR)
    assert not report.grounded
    missing = " ".join(report.missing)
    assert invented.split("°")[0].lstrip("$").replace(",", "") in missing.replace(",", "") or (
        invented in ("date", "time") and invented in missing
    ), report


def test_fact_without_source_words_is_rejected_by_overlap() -> None:
    report = check_fact("weather sunny warm pleasant evening walk", WEATHER)
    assert not report.grounded
    assert report.missing == ()
    assert report.overlap < 0.6


def test_names_match_case_insensitively_and_whole_words_only() -> None:
    assert is_grounded("CAROLINE went to support group", CHAT)
    assert not is_grounded("Carol went to support group", CHAT)  # not a prefix match


def test_common_words_may_open_a_fact_with_a_capital() -> None:
    assert is_grounded("Went to LGBTQ support group; powerful", CHAT)
    assert is_grounded(
        "Thank you, Caroline! Event thought-provoking",
        "Mel: Thanks, Caroline! The event was thought-provoking.",
    )
    # An unknown capitalised word mid-sentence is a name and must be in the source.
    assert not is_grounded("went to group with Priya", CHAT)


def test_number_words_and_thousands_separators_normalise() -> None:
    source = "We shipped thirty boxes and 12,000 units to 3 stores."
    assert is_grounded("shipped 30 boxes, 12000 units, three stores", source)
    assert not is_grounded("shipped 31 boxes", source)
    assert normalise("12,000 units — done") == "12000 units - done"


def test_times_match_in_either_clock() -> None:
    source = "Session 1 — 1:56 pm on 8 May, 2023"
    assert is_grounded("session at 13:56 on 8 May 2023", source)
    assert not is_grounded("session at 2:56 pm on 8 May 2023", source)
    assert not is_grounded("session 1:56 pm; next 8:55 pm", source)  # every time counts


def test_numeric_dates_accept_both_orders() -> None:
    source = "Invoice dated 05/07/2023."
    assert is_grounded("invoice 2023-05-07", source)
    assert is_grounded("invoice 2023-07-05", source)
    assert not is_grounded("invoice 2023-07-06", source)


def test_years_need_support_but_amounts_can_look_like_years() -> None:
    assert is_grounded("budget 2000", "The budget is $2,000 this year.")
    assert not is_grounded("trip in 2019", "We took the trip in 2018.")


def test_a_relative_date_does_not_ground_a_bare_number() -> None:
    said = "Melanie: I went hiking last week."
    assert is_grounded("Melanie hiking week before 8 May 2023", said, ANCHOR)
    assert not is_grounded("Melanie hiked 3 trails", said, ANCHOR)  # 3 May is in last week


def test_dates_resolved_from_the_anchor_are_grounded() -> None:
    said = "Melanie: I painted that lake sunrise last year, and ran a charity race last Saturday."
    assert is_grounded("Melanie painted lake sunrise 2022", said, ANCHOR)
    assert is_grounded("Melanie ran charity race 6 May 2023", said, ANCHOR)
    assert not is_grounded("Melanie painted lake sunrise 2021", said, ANCHOR)
    assert not is_grounded("Melanie painted lake sunrise 2022", said)  # no anchor, no resolution


def test_the_engine_date_rewrites_stay_grounded() -> None:
    """Facts use context_distill.dates.resolve_relative; its forms must pass the check."""
    said = (
        "I went yesterday; we met two weeks ago, last Saturday, last month and "
        "last year; I'll go next week."
    )
    rewritten = resolve_relative(said, ANCHOR)
    assert "7 May 2023" in rewritten
    assert is_grounded(rewritten, said, ANCHOR), check_fact(rewritten, said, ANCHOR)


def test_resolve_relative_dates() -> None:
    found = dict(resolve_relative_dates("yesterday, last year, two days ago", ANCHOR))
    assert found["yesterday"] == DateKey(2023, 5, 7)
    assert found["last year"] == DateKey(2022, None, None)
    assert found["two days ago"] == DateKey(2023, 5, 6)
    assert resolve_relative_dates("yesterday", None) == []
    weekday = dict(resolve_relative_dates("last Friday", date(2023, 5, 8)))
    assert weekday["last Friday"] == DateKey(2023, 5, 5)


def test_date_keys_compare_by_the_parts_they_state() -> None:
    assert DateKey(2023, 5, None).within(DateKey(2023, 5, 7))
    assert DateKey(None, 5, 7).within(DateKey(2023, 5, 7))
    assert not DateKey(2023, 5, 7).within(DateKey(2023, 5, None))


def test_source_index_checks_many_facts_and_splits_them() -> None:
    index = SourceIndex(WEATHER)
    assert index.check("Berlin 7.5").grounded
    assert not index.check("Paris 7.5").grounded
    kept, rejected = grounded_facts(["Berlin light rain 86%", "Berlin snow 90%"], WEATHER)
    assert kept == ["Berlin light rain 86%"]
    assert rejected[0][0] == "Berlin snow 90%"
    assert "90%" in rejected[0][1].missing


def test_empty_or_trivial_facts() -> None:
    assert check_fact("", CHAT).grounded  # nothing stated, nothing invented
    assert check_fact("powerful", CHAT).grounded


def test_a_day_that_does_not_exist_in_the_conversation_year_is_no_crash() -> None:
    # "29 February" said in 2023: the source still grounds the fact word for word.
    assert is_grounded("met on 29 February", "We met on 29 February.", ANCHOR)
    assert is_grounded("due 31 April", "Due 31 April, they said.", ANCHOR)
