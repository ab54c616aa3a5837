"""Word rules shared by the grounding check and the lingua pruner."""

from __future__ import annotations

import pytest

from context_distill.words import count_value, is_idlike, numbers_in, pieces, stem, unify


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [("3", 3), ("Two", 2), ("a", 1), ("a couple of", 2), ("few", 3), ("zero", None), ("x", None)],
)
def test_count_value(phrase: str, expected: int | None) -> None:
    assert count_value(phrase) == expected


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("ORD-7731", True),
        ("file.py", True),
        ("LGBTQ", True),
        ("KeyError", True),
        ("src/app", True),
        ("Berlin", False),
        ("-", False),
    ],
)
def test_is_idlike(token: str, expected: bool) -> None:
    assert is_idlike(token) is expected


def test_pieces_keep_their_offsets_and_urls() -> None:
    text = "see http://x.com/a, then (Berlin)."
    assert [(p, text[s : s + len(p)]) for p, s in pieces(text)] == [
        ("see", "see"),
        ("http://x.com/a", "http://x.com/a"),
        ("then", "then"),
        ("Berlin", "Berlin"),
    ]


def test_numbers_and_unified_forms() -> None:
    assert numbers_in(unify("$1,250.00 for 3 items, 7.5°c")) == {1250.0, 3.0, 7.5}
    assert unify("it’s 12 000—done") == "it's 12 000-done"
    assert stem("visiting") == stem("visited") == "visit"
