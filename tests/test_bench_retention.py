"""The retention harness (bench/retention.py, bench/peers.py, bench/local_chat.py) on tiny
inline sessions: no data set, no download, no real model."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not installed

from bench import peers, retention
from bench.datasets import Question, Replay
from bench.local_chat import LocalChatModel, chat_turns

# ------------------------------------------------------------------ tiny sessions


def chat(n: int, words: int = 12) -> list[BaseMessage]:
    """n alternating turns, each naming its number so that loss is visible."""
    out: list[BaseMessage] = []
    for i in range(n):
        text = f"turn{i} " + " ".join(f"w{i}x{j}" for j in range(words))
        out.append(HumanMessage(text) if i % 2 == 0 else AIMessage(text))
    return out


def agent_session() -> list[BaseMessage]:
    call = {"name": "get_user", "args": {"user_id": "mia_li_3668"}, "id": "c1"}
    return [
        SystemMessage("You are an airline agent. " * 20),
        HumanMessage("I want to book a flight; my user id is mia_li_3668."),
        AIMessage("", tool_calls=[call]),
        ToolMessage(
            '{"user_id": "mia_li_3668", "payment": "certificate_7504069"}', tool_call_id="c1"
        ),
        AIMessage("Found you. Which flight?"),
        HumanMessage("HAT170 on 2024-05-20, pay with certificate_7504069."),
    ]


def replay_of(messages: Sequence[BaseMessage], **fields: Any) -> Replay:
    return Replay(id=fields.pop("id", "s1"), messages=[], **fields)


def session_of(dataset: str, messages: Sequence[BaseMessage], **fields: Any) -> retention.Session:
    replay = replay_of(messages, **fields)
    return retention.Session(dataset, replay, peers.Case.build(dataset, replay.id, messages))


# ------------------------------------------------------------------ cases and steps


def test_steps_never_split_a_tool_call_from_its_results() -> None:
    messages = agent_session()
    assert peers.step_ends(messages) == [1, 2, 4, 5, 6]  # not 3: the call is in flight
    parallel = [
        HumanMessage("go"),
        AIMessage(
            "",
            tool_calls=[{"name": "a", "args": {}, "id": "1"}, {"name": "b", "args": {}, "id": "2"}],
        ),
        ToolMessage("ra", tool_call_id="1"),
        ToolMessage("rb", tool_call_id="2"),
    ]
    assert peers.step_ends(parallel) == [1, 4]


def test_case_pins_the_system_prompt_outside_the_budget_and_names_every_message() -> None:
    messages = agent_session()
    case = peers.Case.build("tau", "t1", messages)
    assert case.pinned == 1
    assert case.prefix == case.messages[:1]
    assert case.tokens == peers.tokens_of(messages[1:])
    assert case.pinned_tokens == peers.tokens_of(messages[:1])
    assert all(m.id for m in case.messages)
    assert len({m.id for m in case.messages}) == len(messages)
    assert case.conversation_steps() == [1, 3, 4, 5]
    assert messages[0].id is None  # the input is left alone


def test_truncation_keeps_the_newest_unbroken_tail_within_the_budget() -> None:
    messages = chat(10)
    one = peers.tokens_of(messages[-1:])
    view = peers.truncate_messages(messages, budget=3 * one + 1)
    assert view == messages[-3:]
    assert peers.truncate_messages(messages, budget=one - 1) == []


def test_memo_counter_counts_like_the_core_and_rejects_non_messages() -> None:
    messages = agent_session()
    count = peers.MemoCounter()
    assert count(messages) == peers.tokens_of(messages)
    assert count(messages) == peers.tokens_of(messages)  # memoised, same answer
    with pytest.raises(TypeError):
        count(["not a message"])


def test_summary_cap_is_a_quarter_of_the_budget_within_bounds() -> None:
    assert peers.summary_cap(40) == peers.SUMMARY_MIN_TOKENS
    assert peers.summary_cap(400) == 100
    assert peers.summary_cap(100_000) == peers.SUMMARY_MAX_TOKENS
    assert peers.summary_cap(100_000, most=300) == 300


def test_summaries_and_memory_blocks_are_scored_by_line() -> None:
    assert peers.is_summary_message(
        HumanMessage("Here is a summary", additional_kwargs={"lc_source": "summarization"})
    )
    assert peers.is_summary_message(SystemMessage("Summary of the conversation so far: x"))
    assert peers.is_summary_message(HumanMessage("x", additional_kwargs={"memory": True}))
    assert not peers.is_summary_message(HumanMessage("Summary of the conversation so far: x"))
    assert not peers.is_summary_message(AIMessage("plain"))


# ------------------------------------------------------------------ data selection


def test_spaced_sample_is_even_and_all_when_asked_for_more() -> None:
    assert retention.spaced(list(range(10)), 3) == [0, 3, 6]
    assert retention.spaced(list(range(4)), 9) == [0, 1, 2, 3]
    assert retention.spaced(list(range(4)), None) == [0, 1, 2, 3]
    assert retention.spaced(list(range(4)), 0) == []


def test_first_sessions_cuts_the_conversation_and_keeps_questions_with_evidence_inside() -> None:
    replay = Replay(
        id="conv-1",
        messages=[
            {"role": "user", "content": "Session 1 — 1 May 2023"},
            {"role": "user", "content": "Ann: I adopted a cat named Tom."},
            {"role": "user", "content": "Session 2 — 8 May 2023"},
            {"role": "assistant", "content": "Bo: I moved to Oslo."},
            {"role": "user", "content": "Session 3 — 9 May 2023"},
            {"role": "assistant", "content": "Bo: I sold the car."},
        ],
        questions=[
            Question("conv-1/q0", "Cat's name?", ("Tom",), "4"),
            Question("conv-1/q1", "Where did Bo move?", ("Oslo",), "4"),
            Question("conv-1/q2", "What did Bo sell?", ("car",), "4"),
            Question("conv-1/q3", "No evidence?", ("x",), "4"),
        ],
    )
    evidence = {"conv-1/q0": [1], "conv-1/q1": [2, 1], "conv-1/q2": [3], "conv-1/q3": []}
    cut = retention.first_sessions(replay, 2, evidence)
    assert [m["content"][:9] for m in cut.messages] == [
        "Session 1",
        "Ann: I ad",
        "Session 2",
        "Bo: I mov",
    ]
    assert [q.id for q in cut.questions] == ["conv-1/q0", "conv-1/q1"]
    assert cut.id == "conv-1[s1-2]"
    assert replay.messages[-1]["content"] == "Bo: I sold the car."  # input untouched


def test_locomo_evidence_reads_session_numbers(tmp_path: Path) -> None:
    data = [{"sample_id": "c", "qa": [{"evidence": ["D2:3", "D10:1"]}, {"evidence": ["?"]}]}]
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert retention.locomo_evidence(path) == {"c/q0": [2, 10], "c/q1": []}


# ------------------------------------------------------------------ scoring cells


def test_cell_scores_locomo_loose_and_strict_and_compression() -> None:
    messages = chat(8)
    questions = [
        Question("q0", "What was turn7?", ("w7x3",), "4"),
        Question("q1", "What was turn0?", ("w0x3",), "2"),
        Question("q2", "unanswerable", ("zzz",), "5", scored=False),
    ]
    item = session_of("locomo", messages, questions=questions)
    cell = retention.Cell("truncation", "locomo", 0.25)
    view = messages[-2:]
    cell.add(item, peers.Outcome(view=view, seconds=1.5))
    assert cell.qa.total.n == 2
    assert cell.qa.total.loose == 1 and cell.qa.total.strict == 1
    assert cell.score == 0.5
    assert cell.compression == pytest.approx(peers.tokens_of(messages) / peers.tokens_of(view))
    assert cell.seconds == 1.5 and cell.sessions == 1 and cell.ok


def test_cell_scores_tau_values_without_counting_the_pinned_prompt() -> None:
    messages = agent_session()
    item = session_of("tau", messages, gold_values=["mia_li_3668", "HAT170", "certificate_7504069"])
    case = item.case
    cell = retention.Cell("x", "tau", 0.1)
    view = [*case.prefix, case.messages[-1]]
    cell.add(item, peers.Outcome(view=view, seconds=0.0))
    assert (cell.found, cell.total) == (2, 3)  # the last turn names the flight and payment
    assert cell.view_tokens == peers.tokens_of(view[1:])
    assert cell.history_tokens == case.tokens


def test_cell_scores_bfcl_answers_verbatim_any_alternative() -> None:
    messages = [HumanMessage("My dentist is in Seattle."), HumanMessage("I am 17.")]
    questions = [
        Question("b0", "Where is the dentist?", ("Tacoma", "Seattle"), "customer"),
        Question("b1", "Age?", ("71",), "customer"),
    ]
    item = session_of("bfcl", messages, questions=questions)
    cell = retention.Cell("x", "bfcl", 0.5)
    cell.add(item, peers.Outcome(view=messages, seconds=0.0))
    assert (cell.found, cell.total) == (1, 2)
    assert cell.score == 0.5


def test_a_failed_outcome_is_recorded_not_scored() -> None:
    item = session_of("bfcl", chat(2), questions=[Question("b", "q", ("w0x1",), "c")])
    cell = retention.Cell("x", "bfcl", 0.5)
    cell.add(item, peers.Outcome(view=[], seconds=0.0, error="boom"))
    assert not cell.ok and cell.sessions == 0 and cell.errors == ["s1: boom"]


# ------------------------------------------------------------------ evaluate


class Exploding(peers.System):
    name, label = "exploding", "raises"

    def run(self, case: peers.Case, budget: int) -> peers.Outcome:
        raise RuntimeError("summarizer down")


class Missing(peers.System):
    name, label = "missing", "not installed"

    def available(self) -> str | None:
        return "needs something"

    def run(self, case: peers.Case, budget: int) -> peers.Outcome:  # pragma: no cover
        raise AssertionError("never run")


def test_evaluate_runs_every_budget_and_isolates_failures() -> None:
    messages = chat(12)
    questions = [Question("q", "What was turn11?", ("w11x0",), "4")]
    sessions = [session_of("locomo", messages, questions=questions)]
    systems = [peers.FullHistory(), peers.Truncation(), Exploding(), Missing()]
    run = retention.evaluate(systems, sessions, [0.1, 0.5])
    full = run.cell("full", "locomo", 0.1)
    assert full is not None and full.score == 1.0 and full.compression == pytest.approx(1.0)
    small = run.cell("truncation", "locomo", 0.1)
    large = run.cell("truncation", "locomo", 0.5)
    assert small is not None and large is not None
    assert small.compression > large.compression >= 1.9
    broken = run.cell("exploding", "locomo", 0.5)
    assert broken is not None and not broken.ok and "summarizer down" in broken.errors[0]
    assert run.not_run == {"missing": "needs something"}
    table = retention.results_tables(run, systems, [0.1, 0.5])
    assert "| full history (upper bound) | 1.000 / " in table
    assert "| raises | failed | failed |" in table
    assert "| not installed | not run | not run |" in table
    assert "missing: not run: needs something" in retention.notes_lines(run, systems)


def test_extractive_engine_keeps_pinned_prompt_and_compresses() -> None:
    messages = [SystemMessage("Policy. " * 30), *chat(40, words=30)]
    case = peers.Case.build("locomo", "e", messages)
    engine = peers.make_systems()["extractive"]
    outcome = engine.run(case, budget=case.tokens // 4)
    assert outcome.view[0] == case.messages[0]
    assert outcome.notes["distillations"] >= 1
    assert peers.tokens_of(outcome.view) - case.pinned_tokens < case.tokens // 2


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sessions = [session_of("bfcl", chat(6), questions=[Question("b", "q", ("w5x1",), "c")])]
    systems = [peers.FullHistory(), peers.Truncation()]
    run = retention.evaluate(systems, sessions, [0.25, 0.5])
    path = retention.plot([("a", run, systems), ("b", run, systems[:1])], tmp_path / "p.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ summarising peers


class ScriptedChat(LocalChatModel):
    """Answers every prompt with a fixed summary; or raises when told to."""

    answer: str = "Summary: turn facts."
    fail_with: Any = None

    def complete(
        self, conversations: Sequence[Sequence[BaseMessage]], stop: Sequence[str] | None = None
    ) -> list[str]:
        if self.fail_with is not None:
            self.overflows += 1
            raise self.fail_with
        self.calls += len(conversations)
        self.completion_tokens += 5 * len(conversations)
        return [self.answer] * len(conversations)


def _scripted(peer: Any, **options: Any) -> None:
    peer.chat_model = lambda budget: ScriptedChat(loaded=None, max_new_tokens=32, **options)


def test_summarization_middleware_summarises_at_the_budget_and_keeps_the_system_prompt() -> None:
    pytest.importorskip("langchain.agents.middleware")
    messages = [SystemMessage("rules " * 30), *chat(30)]
    case = peers.Case.build("locomo", "m", messages)
    mw = peers.SummarizationMW()
    _scripted(mw)
    outcome = mw.run(case, budget=case.tokens // 4)
    assert outcome.notes["summaries"] >= 2
    assert outcome.notes["model_calls"] == outcome.notes["summaries"]
    assert outcome.view[0] == case.messages[0]
    summary = outcome.view[1]
    assert peers.is_summary_message(summary) and "Summary: turn facts." in summary.content
    assert outcome.view[-1] == case.messages[-1]
    assert peers.tokens_of(outcome.view[1:]) <= case.tokens // 4 + 40


def test_summarization_middleware_failure_keeps_the_state_and_is_counted() -> None:
    pytest.importorskip("langchain.agents.middleware")
    case = peers.Case.build("locomo", "f", chat(20))
    mw = peers.SummarizationMW()
    # Not retryable, so the middleware's retries do not sleep; it retries an overflow
    # once with the middle of the history cut out, which fails too.
    _scripted(mw, fail_with=ContextOverflowError("prompt too long"))
    outcome = mw.run(case, budget=case.tokens // 4)
    assert outcome.notes["summary_failed"] >= 1
    assert outcome.notes["error: ContextOverflowError"] == outcome.notes["summary_failed"]
    assert outcome.notes["context_overflows"] == 2 * outcome.notes["summary_failed"]
    assert outcome.view == case.messages  # nothing summarised, nothing lost


def test_langmem_keeps_a_running_summary_and_survives_overflow() -> None:
    pytest.importorskip("langmem")
    case = peers.Case.build("locomo", "l", chat(30))
    lm = peers.LangMem()
    _scripted(lm)
    outcome = lm.run(case, budget=case.tokens // 4)
    assert outcome.notes["summaries"] >= 2
    assert isinstance(outcome.view[0], SystemMessage)
    assert "Summary: turn facts." in outcome.view[0].content
    assert outcome.view[-1].content == case.messages[-1].content

    _scripted(lm, fail_with=ContextOverflowError("too long"))
    failed = lm.run(case, budget=case.tokens // 4)
    assert failed.notes["summary_failed"] >= 1 and failed.notes["summaries"] == 0
    assert [m.content for m in failed.view] == [m.content for m in case.messages]


def test_llmlingua_reports_why_it_cannot_run(tmp_path: Path) -> None:
    assert "setup_llmlingua" in str(peers.LLMLingua(python=tmp_path / "none").available())
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    # This interpreter has no llmlingua: the worker answers an error for every job.
    lingua = peers.LLMLingua(python=Path(sys.executable), model=model, timeout_s=120)
    assert lingua.available() is None
    case = peers.Case.build("bfcl", "x", chat(3))
    outcomes = lingua.run_many([(case, 10), (case, 20)])
    assert len(outcomes) == 2
    assert all(o.error and "did not load" in o.error for o in outcomes)


# ------------------------------------------------------------------ the local chat model


def test_chat_turns_write_tool_calls_and_results_as_text() -> None:
    turns = chat_turns(agent_session()[1:4])
    assert [t["role"] for t in turns] == ["user", "assistant", "tool"]
    assert turns[1]["content"] == 'get_user({"user_id": "mia_li_3668"})'
    assert "certificate_7504069" in turns[2]["content"]


def test_local_chat_model_generates_greedily_and_refuses_prompts_past_its_window() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tiny_lm import tiny_loaded

    loaded = tiny_loaded()
    model = LocalChatModel(loaded=loaded, max_new_tokens=6)
    prompt = [HumanMessage("Caroline: support group")]
    first = model.invoke(prompt).content
    assert first == model.invoke(prompt).content  # greedy: the same answer twice
    assert model.calls == 2 and 0 < model.completion_tokens <= 12
    answers = model.batch([prompt, [HumanMessage("Melanie painted a lake")]])
    assert answers[0].content == first  # batched with padding, same answer

    short, long = [HumanMessage("a")], [HumanMessage("Caroline: I went to a support group")]
    window = len(model.prompt_ids(short)) + 6
    narrow = LocalChatModel(loaded=loaded, max_new_tokens=6, context_window=window)
    with pytest.raises(ContextOverflowError):
        narrow.invoke(long)
    mixed = narrow.batch([long, short], return_exceptions=True)
    assert isinstance(mixed[0], ContextOverflowError) and isinstance(mixed[1], AIMessage)
    assert narrow.overflows == 2
    with pytest.raises(ContextOverflowError):
        narrow.batch([long, short])


def test_merge_pools_the_runs_of_separate_systems() -> None:
    sessions = [session_of("bfcl", chat(6), questions=[Question("b", "q", ("w5x1",), "c")])]
    first = retention.evaluate([peers.FullHistory()], sessions, [0.5])
    second = retention.evaluate([peers.Truncation(), Missing()], sessions, [0.5])
    merged = retention.merge([first, second])
    assert set(merged.cells) == {("full", "bfcl", 0.5), ("truncation", "bfcl", 0.5)}
    assert merged.not_run == {"missing": "needs something"}
    assert merged.sessions == {"bfcl": ["s1"]} and merged.questions == {"bfcl": 1}
