"""ChatModelDistiller with scripted chat models: the shared prompt, parsing, grounding
check and extractive fallback, sync and async, from several threads at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from context_distill.distillers import Distiller
from context_distill.distillers._prompt import (
    SYSTEM_PROMPT,
    parse_facts,
    prompt_messages,
    segments,
    source_text,
    user_prompt,
)
from context_distill.distillers.chat_model import ChatModelDistiller, chat_prompt
from context_distill.types import Fact, Group, GroupFacts

ANCHOR = datetime(2023, 5, 8, 13, 56)


class ScriptedChat(BaseChatModel):
    """Answers with ``script(last user message)``."""

    script: Callable[[str], str]

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.script(str(messages[-1].content))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class StubDistiller(Distiller):
    """Stands in for the extractive fallback: one fact per group, the first words."""

    name = "stub"

    def __init__(self) -> None:
        self.calls = 0

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.calls += 1
        return [
            GroupFacts([Fact(" ".join(str(g.messages[0].content).split()[:4]), g.message_ids)])
            for g in groups
        ]


def chat_group(text: str, message_id: str = "m1", thread: str = "t1") -> Group:
    return Group(thread, (HumanMessage(text),), (message_id,), len(text) // 4 + 4, ANCHOR, 12)


def tool_group() -> Group:
    call = AIMessage(
        "", tool_calls=[{"name": "get_weather", "args": {"city": "Berlin"}, "id": "c1"}]
    )
    result = ToolMessage(
        '{"location": "Berlin, DE", "temp_c": 7.5, "conditions": "light rain"}',
        tool_call_id="c1",
        name="get_weather",
    )
    return Group("t1", (call, result), ("a1", "r1"), 60, None, 20)


CAROLINE = "Caroline: I went to a LGBTQ support group yesterday and it was so powerful."


def test_prompt_carries_the_group_with_dates_resolved() -> None:
    group = chat_group(CAROLINE)
    roles = [role for role, _ in prompt_messages(group)]
    assert roles[0] == "system" and roles[-1] == "user"
    assert prompt_messages(group)[0][1] == SYSTEM_PROMPT
    text = user_prompt(group)
    assert "Date: 8 May 2023" in text
    assert "Caroline: I went to a LGBTQ support group 7 May 2023" in text
    assert "(at most 9 words)" in text
    assert len(prompt_messages(group, examples=False)) == 2
    messages = chat_prompt(group)
    assert isinstance(messages[0], SystemMessage) and isinstance(messages[-1], HumanMessage)


def test_segments_render_tool_calls_and_results() -> None:
    parts = segments(tool_group())
    assert [p.kind for p in parts] == ["call", "result"]
    assert parts[0].render() == "call: get_weather(city=Berlin)"
    assert parts[1].render().startswith("get_weather → {")
    assert "Berlin" in source_text(tool_group())


def test_timestamps_date_a_message_without_making_it_a_header() -> None:
    stamped = HumanMessage(
        "Caroline: I went to the group yesterday",
        additional_kwargs={"timestamp": "2023-06-02T10:00:00"},
    )
    header = HumanMessage("Session 3 — 9:00 am on 9 June, 2023")
    later = HumanMessage("Melanie: we met yesterday")
    group = Group("t1", (stamped, header, later), ("a", "b", "c"), 40, ANCHOR, 12)
    parts = segments(group)
    assert [p.kind for p in parts] == ["prose", "header", "prose"]
    assert parts[0].text == "I went to the group 1 June 2023"
    assert parts[2].text == "we met 8 June 2023"


def test_parse_facts_reads_bullets_until_a_blank_line() -> None:
    answer = "Here you go:\n- Caroline: support group\n* 7 May 2023\n1. third\nnot a fact\n\n- late"
    assert parse_facts(answer) == ["Caroline: support group", "7 May 2023", "third"]
    assert parse_facts("plain one\nplain two\n\nlater") == ["plain one", "plain two"]
    assert parse_facts("- a\n- A\n- ...\n- b; b; b") == ["a", "b"]
    assert parse_facts("- Mel: sunset photo; 18 words\n- (at most 9 words)") == [
        "Mel: sunset photo"
    ]
    assert parse_facts("") == []


def test_grounded_facts_are_kept_and_invented_ones_dropped() -> None:
    model = ScriptedChat(
        script=lambda _: (
            "- Caroline went to LGBTQ support group 7 May 2023; powerful\n"
            "- Caroline met Dr. Reyes and 12 new members\n"
        )
    )
    stub = StubDistiller()
    [result] = ChatModelDistiller(model, fallback=stub).distill([chat_group(CAROLINE)])
    assert [f.text for f in result.facts] == [
        "Caroline went to LGBTQ support group 7 May 2023; powerful"
    ]
    assert result.facts[0].source_ids == ("m1",)
    assert result.dropped == 1
    assert result.fallback is None
    assert any("Reyes" in note for note in result.notes)
    assert stub.calls == 0


def test_group_without_grounded_facts_falls_back() -> None:
    model = ScriptedChat(script=lambda _: "- Melanie won 3 medals in Paris\n")
    stub = StubDistiller()
    groups = [chat_group(CAROLINE, "m1"), chat_group("Melanie: I painted a lake.", "m2")]
    results = ChatModelDistiller(model, fallback=stub).distill(groups)
    assert [r.fallback for r in results] == ["stub", "stub"]
    assert results[0].facts[0].text == "Caroline: I went to"
    assert all(r.dropped == 1 for r in results)
    assert stub.calls == 1  # both fallbacks in one batch


def test_default_fallback_is_the_extractive_distiller() -> None:
    model = ScriptedChat(script=lambda _: "Sorry, I cannot help with that.")
    [result] = ChatModelDistiller(model).distill([chat_group(CAROLINE)])
    assert result.fallback == "extractive"
    assert result.facts


def test_without_fallback_an_empty_result_lets_the_engine_keep_history() -> None:
    model = ScriptedChat(script=lambda _: "- Paris 1999\n")
    [result] = ChatModelDistiller(model, fallback=None).distill([chat_group(CAROLINE)])
    assert result.facts == [] and result.fallback is None and result.dropped == 1


def test_a_failing_call_falls_back_for_its_group_only() -> None:
    def script(prompt: str) -> str:
        if "boom" in prompt:
            raise RuntimeError("endpoint down")
        return "- Caroline went to LGBTQ support group\n"

    stub = StubDistiller()
    groups = [chat_group(CAROLINE, "m1"), chat_group("Melanie: boom goes the drum.", "m2")]
    results = ChatModelDistiller(ScriptedChat(script=script), fallback=stub).distill(groups)
    assert results[0].fallback is None and results[0].facts
    assert results[1].fallback == "stub"
    assert any("endpoint down" in note for note in results[1].notes)


def test_tool_groups_keep_grounded_values_and_attribute_sources() -> None:
    model = ScriptedChat(script=lambda _: "- get_weather(Berlin): 7.5 C, light rain\n")
    [result] = ChatModelDistiller(model, fallback=None).distill([tool_group()])
    assert result.facts[0].text == "get_weather(Berlin): 7.5 C, light rain"
    assert set(result.facts[0].source_ids) <= {"a1", "r1"}


def test_async_distill_matches_sync() -> None:
    model = ScriptedChat(script=lambda _: "- Caroline went to LGBTQ support group\n")
    distiller = ChatModelDistiller(model, fallback=None)
    groups = [chat_group(CAROLINE, f"m{i}") for i in range(5)]
    sync = distiller.distill(groups)
    async_ = asyncio.run(distiller.adistill(groups))
    assert [[f.text for f in r.facts] for r in async_] == [[f.text for f in r.facts] for r in sync]
    assert asyncio.run(distiller.adistill([])) == []


def test_safe_to_call_from_many_threads() -> None:
    model = ScriptedChat(script=lambda p: f"- {p.splitlines()[-3].split(':')[0]} said hello\n")
    distiller = ChatModelDistiller(model, fallback=None)
    out: dict[int, list[GroupFacts]] = {}

    def work(i: int) -> None:
        out[i] = distiller.distill([chat_group(f"Speaker{i}: hello there", f"m{i}", f"t{i}")])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {i: out[i][0].facts[0].text for i in out} == {
        i: f"Speaker{i} said hello" for i in range(8)
    }


@pytest.mark.parametrize("bad", ["", "\n\n", "- \n- ..."])
def test_answers_without_facts_note_it(bad: str) -> None:
    [result] = ChatModelDistiller(ScriptedChat(script=lambda _: bad), fallback=None).distill(
        [chat_group(CAROLINE)]
    )
    assert result.facts == [] and "model answer held no facts" in result.notes


def test_facts_longer_than_their_source_are_dropped() -> None:
    short = "Melanie: I painted a lake at dawn."
    wordy = "- Melanie painted a lake at dawn; Melanie painted lake; painted at dawn a lake\n"
    model = ScriptedChat(script=lambda _: f"- Melanie painted a lake\n{wordy}")
    stub = StubDistiller()
    [result] = ChatModelDistiller(model, fallback=stub).distill([chat_group(short)])
    assert [f.text for f in result.facts] == ["Melanie painted a lake"]
    assert result.dropped == 1 and any("longer than its source" in n for n in result.notes)
    # A group whose only fact is longer than its source gets the fallback's facts.
    model = ScriptedChat(script=lambda _: wordy)
    [result] = ChatModelDistiller(model, fallback=stub).distill([chat_group(short)])
    assert result.fallback == "stub"
