"""The benchmark scorers and baselines on tiny inline examples (no data set needed)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not installed

from bench import baselines, datasets, scoring


@dataclass(frozen=True)
class Q:
    question: str
    answers: tuple[str, ...]
    category: str = "1"
    scored: bool = True


def test_words_delete_punctuation_and_lower_case() -> None:
    assert scoring.words("Caroline's  $250, HAT-005!") == ["carolines", "250", "hat005"]
    assert scoring.content_words("The LGBTQ support group in May") == {
        "lgbtq",
        "support",
        "group",
        "may",
    }


def test_loose_needs_every_content_word_anywhere() -> None:
    view = [
        {"role": "user", "content": "Caroline: I went to the support group."},
        {"role": "assistant", "content": "Melanie: I painted a sunrise in 2022."},
    ]
    index = scoring.ViewIndex(view)
    assert index.loose("a sunrise")
    assert index.loose("support group, 2022")  # spread over two lines is fine for loose
    assert not index.loose("sunset")


def test_strict_needs_answer_and_a_question_word_on_one_line() -> None:
    view = [
        {"role": "user", "content": "Caroline: I went to the support group."},
        {"role": "assistant", "content": "Melanie: I painted a sunrise in 2022."},
    ]
    index = scoring.ViewIndex(view)
    assert index.strict("What did Melanie paint?", "sunrise")
    # The answer is there but nothing of the question is on its line.
    assert not index.strict("What did Caroline paint?", "sunrise")
    # Answer words split over two lines.
    assert not index.strict("What did Melanie paint?", "sunrise, support group")


def test_memory_block_lines_are_separate_facts() -> None:
    memory = {
        "role": "system",
        "name": "memory",
        "content": "Caroline: attended LGBTQ support group.\nMelanie: painted sunrise 2022.",
    }
    plain = {**memory, "name": None}
    assert not scoring.ViewIndex([memory]).strict("What did Caroline paint?", "sunrise")
    assert scoring.ViewIndex([plain]).strict("What did Caroline paint?", "sunrise")
    assert scoring.view_lines([memory]) == [
        "Caroline: attended LGBTQ support group.",
        "Melanie: painted sunrise 2022.",
    ]


def test_memory_marker_on_langchain_messages() -> None:
    messages = pytest.importorskip("langchain_core.messages")
    fact_block = messages.SystemMessage(
        content="a: one\nb: two", additional_kwargs={"memory": True}
    )
    assert scoring.view_lines([fact_block]) == ["a: one", "b: two"]
    assert scoring.view_lines([messages.HumanMessage(content="a\nb")]) == ["a\nb"]
    core_block = messages.HumanMessage(
        content="Memory:\nx: 1", additional_kwargs={"context_distill": "memory"}
    )
    assert scoring.view_lines([core_block]) == ["Memory:", "x: 1"]
    as_dict = {
        "role": "user",
        "content": "p\nq",
        "additional_kwargs": {"context_distill": "memory"},
    }
    assert scoring.view_lines([as_dict]) == ["p", "q"]


def test_score_questions_skips_unscored_and_breaks_down_by_category() -> None:
    view = [{"role": "user", "content": "Jon: my dance studio opened on 20 June 2023."}]
    questions = [
        Q("When did Jon open his dance studio?", ("20 June, 2023",), "2"),
        Q("What did Jon open?", ("a bakery",), "4"),
        Q("What is Gina's pet?", ("a cat",), "5", scored=False),
        Q("Where does Jon dance?", ("at a bakery", "studio"), "4"),  # any alternative counts
    ]
    result = scoring.score_questions(view, questions)
    assert result.total == scoring.Tally(loose=2, strict=2, n=3)
    assert result.by_category["2"] == scoring.Tally(1, 1, 1)
    assert result.by_category["4"] == scoring.Tally(1, 1, 2)
    assert "5" not in result.by_category
    pooled = result.merge(result)
    assert pooled.total == scoring.Tally(4, 4, 6)
    assert pooled.by_category["4"].loose_score == 0.5


def test_tool_call_arguments_are_part_of_the_view() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {
                    "name": "cancel_reservation",
                    "arguments": '{"reservation_id": "XK4Q9Z"}',
                },
            }
        ],
    }
    assert "XK4Q9Z" in scoring.view_text([call])
    assert scoring.value_retention([call], ["xk4q9z", "mia_li_3668"]) == 0.5


def test_values_match_verbatim_but_not_inside_other_words() -> None:
    text = "Flight HAT005 on 2024-05-15 costs $250.0; paid with credit_card_4421486."
    assert scoring.contains_value(text, "250")
    assert scoring.contains_value(text, "hat005")
    assert scoring.contains_value(text, "credit_card_4421486")
    assert not scoring.contains_value(text, "5")
    assert not scoring.contains_value(text, "HAT00")
    assert scoring.value_retention(text, []) == 1.0
    assert scoring.retained_values(text, ["250", "5", "HAT005"]) == (2, 3)


def test_answer_retention_counts_a_question_when_any_alternative_is_there() -> None:
    view = [{"role": "user", "content": "I'm 35 years old and live in Seattle."}]
    questions = [Q("How old am I?", ("35", "thirty five")), Q("Where?", ("Portland",))]
    assert scoring.answer_retention(view, questions) == (1, 2)


def _words_counter(text: str) -> int:
    return len(text.split())


def test_truncation_keeps_the_newest_unbroken_tail_within_budget() -> None:
    messages = [{"role": "user", "content": "one two three four five"}] + [
        {"role": "user", "content": f"m{i}"} for i in range(3)
    ]
    per_short = baselines.message_tokens(messages[1], _words_counter)
    assert per_short == baselines.MESSAGE_OVERHEAD + 1 + 1
    view = baselines.truncate(messages, 2 * per_short, _words_counter)
    assert [m["content"] for m in view] == ["m1", "m2"]
    assert baselines.truncate(messages, per_short - 1, _words_counter) == []
    assert baselines.full_history(messages, 1) == messages


def test_stop_word_stripper_is_naive_and_then_truncates() -> None:
    assert (
        baselines.strip_stop_words("I think that I'm in the Park, you?") == "think I'm Park, you?"
    )
    messages = [
        {"role": "user", "content": "it was the best of times"},
        {"role": "user", "content": "x"},
    ]
    view = baselines.stop_word_stripper(messages, 1000, _words_counter)
    assert [m["content"] for m in view] == ["best times", "x"]
    assert messages[0]["content"] == "it was the best of times"  # input untouched


def test_o200k_counter_works_offline() -> None:
    count = baselines.o200k_counter()
    assert count("hello world") == 2
    assert baselines.message_tokens({"role": "user", "content": "hello world"}) == 3 + 1 + 2


def test_locomo_messages_from_a_tiny_conversation() -> None:
    conversation = {
        "speaker_a": "Caroline",
        "speaker_b": "Melanie",
        "session_2_date_time": "1:14 pm on 25 May, 2023",
        "session_2": [{"speaker": "Melanie", "dia_id": "D2:1", "text": "Hi!"}],
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Caroline", "dia_id": "D1:1", "text": "Look.", "blip_caption": "a dog"},
        ],
        "session_3_date_time": "no dialogue in this one",
    }
    assert datasets.locomo_messages(conversation) == [
        {"role": "user", "content": "Session 1 — 1:56 pm on 8 May, 2023"},
        {"role": "user", "content": "Caroline: Look. [shares photo: a dog]"},
        {"role": "user", "content": "Session 2 — 1:14 pm on 25 May, 2023"},
        {"role": "assistant", "content": "Melanie: Hi!"},
    ]


def test_tau_gold_values_flatten_and_skip_enumerations() -> None:
    actions = [
        {
            "name": "book_reservation",
            "kwargs": {
                "user_id": "mia_li_3668",
                "cabin": "economy",
                "flights": [{"flight_number": "HAT136", "date": "2024-05-20"}],
                "payment_methods": [{"payment_id": "certificate_7504069", "amount": 250.0}],
                "insurance": "no",
                "total_baggages": 3,
            },
        },
        {"name": "cancel_reservation", "kwargs": {"reservation_id": "HAT136"}},
    ]
    assert datasets.tau_gold_values(actions) == [
        "mia_li_3668",
        "HAT136",
        "2024-05-20",
        "certificate_7504069",
        "250",
    ]
