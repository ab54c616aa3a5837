"""The extractive distiller: telegraphic, structure-aware, deterministic, never invents."""

from __future__ import annotations

import json
import re
from datetime import datetime

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from context_distill.distillers import ExtractiveDistiller, resolve_distiller
from context_distill.distillers._structured import summarize_json, summarize_log
from context_distill.distillers._telegraph import telegraph
from context_distill.types import Group


def group(*messages: BaseMessage, anchor: datetime | None = None) -> Group:
    ids = tuple(m.id or f"m{i}" for i, m in enumerate(messages))
    return Group("t", tuple(messages), ids, tokens=100, anchor=anchor)


def facts_of(*messages: BaseMessage, anchor: datetime | None = None) -> list[str]:
    (result,) = ExtractiveDistiller().distill([group(*messages, anchor=anchor)])
    return [fact.text for fact in result.facts]


def test_by_name_and_default() -> None:
    assert isinstance(resolve_distiller("extractive"), ExtractiveDistiller)


def test_refund_policy_becomes_telegraphic() -> None:
    text = (
        "The refund policy of our company states that any customer who is completely "
        "unsatisfied with the product may return it in its original packaging within "
        "exactly 30 business days from the date of purchase. Without the receipt we "
        "cannot process the return."
    )
    (fact,) = facts_of(HumanMessage(text, id="h"))
    assert len(fact) < 0.75 * len(text)
    for kept in ("refund", "30 business days", "original packaging", "receipt", "cannot"):
        assert kept in fact


def test_json_tool_result_keeps_information_and_drops_transport() -> None:
    call = AIMessage(
        "",
        id="a",
        tool_calls=[{"name": "get_weather", "args": {"location": "Berlin, DE"}, "id": "c"}],
    )
    body = {
        "location": "Berlin, DE",
        "temp_c": 7.5,
        "conditions": "light rain",
        "humidity_pct": 86,
        "source": "weather-api v2",
        "request_id": "req_81f2a",
        "alerts": [],
    }
    result = ToolMessage(json.dumps(body), tool_call_id="c", id="r")
    (fact,) = facts_of(call, result)
    assert fact.startswith("get_weather(location=Berlin, DE) → ")
    for kept in ("temp_c=7.5", "conditions=light rain", "humidity_pct=86"):
        assert kept in fact
    for dropped in ("req_81f2a", "weather-api", "alerts"):
        assert dropped not in fact
    assert fact.count("Berlin") == 1  # the argument is not repeated from the result


def test_parallel_calls_each_get_their_result() -> None:
    call = AIMessage(
        "Checking both.",
        id="a",
        tool_calls=[
            {"name": "price", "args": {"sku": "A-1"}, "id": "c1"},
            {"name": "price", "args": {"sku": "B-2"}, "id": "c2"},
        ],
    )
    results = [
        ToolMessage('{"sku": "B-2", "eur": 20}', tool_call_id="c2", id="r2"),
        ToolMessage('{"sku": "A-1", "eur": 10}', tool_call_id="c1", id="r1"),
    ]
    (result,) = ExtractiveDistiller().distill([group(call, *results)])
    texts = [f.text for f in result.facts]
    assert "price(sku=A-1) → eur=10" in texts and "price(sku=B-2) → eur=20" in texts
    sources = {f.text: f.source_ids for f in result.facts}
    assert sources["price(sku=A-1) → eur=10"] == ("a", "r1")


def test_test_run_keeps_command_errors_and_counts() -> None:
    log = "\n".join(
        [
            "============================= test session starts ==============================",
            "collected 44 items",
            "tests/test_api.py ..F.F.F" + "." * 38,
            *[f"noise line {i}" for i in range(250)],
            "FAILED tests/test_api.py::test_login - KeyError: 'token'",
            "FAILED tests/test_api.py::test_logout - AssertionError",
            "FAILED tests/test_api.py::test_refresh - TimeoutError",
            "========================= 3 failed, 41 passed in 2.31s =========================",
        ]
    )
    summary = summarize_log(log)
    assert "test_login - KeyError: 'token'" in summary
    assert "3 failed, 41 passed" in summary
    assert "noise line" not in summary
    assert len(summary) < len(log) / 5


def test_error_results_are_marked() -> None:
    call = AIMessage("", id="a", tool_calls=[{"name": "run", "args": {"cmd": "make"}, "id": "c"}])
    result = ToolMessage(
        "make: *** No rule to make target 'all'", tool_call_id="c", id="r", status="error"
    )
    (fact,) = facts_of(call, result)
    assert "ERROR" in fact and "No rule to make target" in fact


def test_relative_dates_resolve_against_the_anchor() -> None:
    anchor = datetime(2023, 5, 8, 13, 56)
    (fact,) = facts_of(
        HumanMessage("Caroline: I went to a LGBTQ support group yesterday!", id="h"), anchor=anchor
    )
    assert fact == "Caroline: went to LGBTQ support group 7 May 2023"


def test_a_session_header_moves_the_anchor_within_a_group() -> None:
    header = HumanMessage("Session 2 — 2:32 pm on 29 January, 2023", id="s")
    said = HumanMessage("Jon: I lost my job last week.", id="h")
    header_fact, fact = facts_of(header, said, anchor=datetime(2022, 1, 1))
    assert "29 January, 2023" in header_fact
    assert fact == "Jon: lost job week before 29 January 2023"


def test_courtesy_alone_still_leaves_a_trace() -> None:
    (fact,) = facts_of(HumanMessage("Thanks so much! Bye!", id="h"))
    assert fact.startswith("User: ")


def test_names_numbers_paths_and_ids_survive_word_for_word() -> None:
    text = (
        "Actually I think that the deploy of build 4.2.1 to eu-west-1 failed because "
        "/etc/app/config.yaml was missing key DB_URL, see incident INC-20931 from Dana."
    )
    (fact,) = facts_of(AIMessage(text, id="a"))
    for kept in ("4.2.1", "eu-west-1", "/etc/app/config.yaml", "DB_URL", "INC-20931", "Dana"):
        assert kept in fact


def test_never_invents_words() -> None:
    text = "We shipped order #A-7731 to Lisbon on Tuesday; the customer paid 412.50 EUR."
    (fact,) = facts_of(AIMessage(text, id="a"))

    def words(value: str) -> set[str]:
        return {w.strip(".") for w in re.findall(r"[\w.#-]+", value.lower())}

    assert words(fact) <= words(text) | {"ai"}


def test_deterministic() -> None:
    messages = [
        HumanMessage(f"Note {i}: Paris trip costs {i * 10} EUR, booked by Ann.") for i in range(20)
    ]
    first = [ExtractiveDistiller().distill([group(m)]) for m in messages]
    second = [ExtractiveDistiller().distill([group(m)]) for m in messages]
    assert first == second


def test_nested_json_lists_keep_ids() -> None:
    body = {
        "user_id": "mia_li_3668",
        "reservations": [
            {"reservation_id": "NO6JO3", "flights": [{"flight_number": "HAT170"}]},
            {"reservation_id": "AJVCTQ", "flights": [{"flight_number": "HAT054"}]},
        ],
        "payment_methods": {"credit_card_4421486": {"brand": "visa", "last_four": "7447"}},
    }
    summary = summarize_json(body)
    for kept in (
        "mia_li_3668",
        "NO6JO3",
        "AJVCTQ",
        "HAT170",
        "HAT054",
        "credit_card_4421486",
        "7447",
    ):
        assert kept in summary


def test_telegraph_drops_greetings_and_vocatives() -> None:
    assert telegraph("Hey Mel! Good to see you! How have you been?") == []
    assert telegraph("Mel, I adopted a dog named Rex.") == ["adopted dog named Rex"]
