"""The engine: budget, pinned context, whole tool calls, fail-safe, restart, async twin."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from context_distill import (
    ContextDistiller,
    Distiller,
    Fact,
    Group,
    GroupFacts,
    InvalidMessageError,
    SQLiteMemoryStore,
)
from context_distill.messages import MARKER_KEY, MEMORY_MARK, REDUCED_MARK


def cheap(text: str) -> int:
    return (len(text) + 3) // 4


def agent_history(calls: int, *, parallel_every: int = 5, payload: int = 40) -> list[BaseMessage]:
    """System, task, then assistant tool calls (every fifth one parallel) and results."""
    history: list[BaseMessage] = [
        SystemMessage("You are an agent.", id="sys"),
        HumanMessage("Find the cheapest flight to Lisbon.", id="task"),
    ]
    for i in range(calls):
        width = 3 if i % parallel_every == 0 else 1
        ids = [f"c{i}_{k}" for k in range(width)]
        history.append(
            AIMessage(
                f"step {i}",
                id=f"a{i}",
                tool_calls=[
                    {"name": "search_flights", "args": {"page": i, "k": k}, "id": cid}
                    for k, cid in enumerate(ids)
                ],
            )
        )
        for k, cid in enumerate(ids):
            body = {"flight": f"TP{1000 + i}{k}", "price_eur": 100 + i, "note": "x " * payload}
            history.append(ToolMessage(json.dumps(body), tool_call_id=cid, id=f"r{i}_{k}"))
    return history


def replay(engine: ContextDistiller, history: Sequence[BaseMessage], thread: str = "t") -> list:
    updates = []
    for end in range(1, len(history) + 1):
        updates.append(engine.update(thread, history[:end]))
    return updates


def check_pairs(view: Sequence[BaseMessage]) -> None:
    """Every tool result follows its call; every call but the last is fully answered."""
    pending: set[str] = set()
    for index, message in enumerate(view):
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in pending, f"orphan result at {index}"
            pending.discard(message.tool_call_id)
        else:
            assert not pending, f"call(s) {pending} unanswered before message {index}"
            if isinstance(message, AIMessage):
                pending = {c["id"] for c in message.tool_calls}


@pytest.fixture
def store(tmp_path: Path) -> SQLiteMemoryStore:
    return SQLiteMemoryStore(tmp_path / "memory.db")


def test_under_budget_the_view_is_the_history(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(store, budget_tokens=100_000, token_counter=cheap)
    history = agent_history(10)
    update = engine.update("t", history)
    assert update.view == history
    assert not update.changed and not update.distilled
    assert update.stats.tokens_view == update.stats.tokens_in


def test_long_session_stays_within_budget_and_keeps_its_shape(store: SQLiteMemoryStore) -> None:
    budget = 2000
    engine = ContextDistiller(store, budget_tokens=budget, token_counter=cheap)
    history = agent_history(120, payload=200)
    updates = replay(engine, history)
    final = updates[-1]
    assert final.stats.tokens_in > 10 * budget
    assert final.stats.distillations > 0
    for update in updates:
        view = update.view
        assert update.stats.tokens_view <= budget or update.stats.over_budget
        assert not update.stats.over_budget
        assert [m.id for m in view[:2]] == [m.id for m in history[:2]][: len(view)]
        check_pairs(view)
    memory = final.view[2]
    assert memory.additional_kwargs[MARKER_KEY] == MEMORY_MARK
    assert "search_flights" in memory.content
    assert final.view[-1] is history[-1]


def test_the_view_counts_what_it_says(store: SQLiteMemoryStore) -> None:
    from context_distill.tokens import count_message

    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap)
    final = replay(engine, agent_history(60))[-1]
    assert final.stats.tokens_view == sum(count_message(m, cheap) for m in final.view)


def test_nothing_is_lost(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap)
    history = agent_history(60)
    final = replay(engine, history)[-1]
    shown = {m.id for m in final.view}
    gone = [m for m in history if m.id not in shown]
    assert gone
    archived = dict(store.get_messages("t", ids=[m.id for m in gone]))
    assert len(archived) == len(gone)
    by_id = {m.id: m for m in archived.values()}
    for message in gone:
        assert by_id[message.id] == message
    hits = store.search("TP10000", thread_id="t", kinds=("message",))
    assert any(h.message_id == "r0_0" for h in hits)


def test_facts_name_their_sources(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap)
    replay(engine, agent_history(40))
    facts = store.facts("t")
    assert facts
    archived = {m.id for _, m in store.get_messages("t", refs=range(1, 10_000))}
    for fact in facts:
        assert fact.source_ids and set(fact.source_ids) <= archived
        assert fact.refs


def test_processing_twice_distills_nothing_new(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap)
    history = agent_history(40)
    first = replay(engine, history)[-1]
    again = engine.update("t", history)
    assert again.view == first.view
    assert not again.distilled
    assert again.stats.distillations == first.stats.distillations


def test_latest_human_turn_stays_verbatim(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap)
    history = agent_history(10)
    question = HumanMessage("Also: what about trains to Porto?", id="q2")
    history.append(question)
    for message in agent_history(60)[2:]:
        copy = message.model_copy(update={"id": f"late-{message.id}"})
        if isinstance(copy, AIMessage):
            copy.tool_calls = [{**c, "id": f"late-{c['id']}"} for c in copy.tool_calls]
        if isinstance(copy, ToolMessage):
            copy.tool_call_id = f"late-{copy.tool_call_id}"
        history.append(copy)
    final = replay(engine, history)[-1]
    assert question in final.view
    assert final.view[1].id == "task"


def test_restart_continues_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    history = agent_history(60)
    first = ContextDistiller(SQLiteMemoryStore(path), budget_tokens=1500, token_counter=cheap)
    before = replay(first, history[:100])[-1]
    first.store.close()
    second = ContextDistiller(SQLiteMemoryStore(path), budget_tokens=1500, token_counter=cheap)
    resumed = second.update("t", history[:100])
    assert resumed.view == before.view
    assert not resumed.distilled
    after = replay(second, history)[-1]
    assert after.stats.distillations > before.stats.distillations
    assert after.stats.tokens_in == sum(cheap_tokens(m) for m in history)


def cheap_tokens(message: BaseMessage) -> int:
    from context_distill.tokens import count_message

    return count_message(message, cheap)


def test_rewrite_style_callers_continue_from_the_view(store: SQLiteMemoryStore) -> None:
    """A caller that keeps only the compact view (as a rewriting graph node does)."""
    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap)
    full = agent_history(80)
    state: list[BaseMessage] = full[:2]
    for message in full[2:]:
        state = [*state, message]
        update = engine.update("t", state)
        if update.changed:
            state = update.view
        check_pairs(state)
        assert update.stats.tokens_view <= 1500
    assert update.stats.tokens_in == sum(cheap_tokens(m) for m in full)
    assert sum(1 for m in state if m.additional_kwargs.get(MARKER_KEY) == MEMORY_MARK) == 1


def test_two_threads_are_kept_apart(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap)
    replay(engine, agent_history(40), "alpha")
    other = [SystemMessage("x", id="s"), HumanMessage("Book a hotel in Oslo.", id="h")]
    other += [HumanMessage(f"Oslo hotel note {i} " + "y " * 80, id=f"o{i}") for i in range(40)]
    replay(engine, other, "beta")
    assert all(h.thread_id == "alpha" for h in store.search("flight", thread_id="alpha"))
    assert not store.search("Oslo", thread_id="alpha")
    assert store.search("Oslo", thread_id="beta")


class Boom(Distiller):
    name = "boom"

    def __init__(self) -> None:
        self.calls = 0

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.calls += 1
        raise RuntimeError("model server down")


class Empty(Distiller):
    name = "empty"

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        return [GroupFacts([]) for _ in groups]


class Slow(Distiller):
    name = "slow"

    def __init__(self) -> None:
        self.release = threading.Event()

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.release.wait(5)
        return [GroupFacts([Fact("late", group.message_ids)]) for group in groups]


class Bloated(Distiller):
    name = "bloated"

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        return [GroupFacts([Fact("word " * 5000, group.message_ids)]) for group in groups]


@pytest.mark.parametrize(
    ("distiller", "outcome"),
    [(Boom(), "failed"), (Empty(), "empty"), (Slow(), "timeout"), (Bloated(), "rejected")],
)
def test_a_failing_distiller_leaves_the_history_as_it_was(
    store: SQLiteMemoryStore,
    distiller: Distiller,
    outcome: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = ContextDistiller(
        store, budget_tokens=1500, token_counter=cheap, distiller=distiller, distill_timeout_s=0.2
    )
    history = agent_history(25)
    with caplog.at_level(logging.WARNING, logger="context_distill.engine"):
        updates = replay(engine, history)
    final = updates[-1]
    assert final.view == history
    assert final.stats.over_budget and "failing" in (final.stats.reason or "")
    assert final.stats.distillations == 0
    log = store.distillations("t")
    assert log and {entry["outcome"] for entry in log} == {outcome}
    assert store.facts("t") == []
    assert store.stats("t")["messages_distilled"] == 0
    assert "history kept as it was" in caplog.text
    if isinstance(distiller, Slow):
        distiller.release.set()


def test_failures_back_off_instead_of_retrying_every_turn(store: SQLiteMemoryStore) -> None:
    boom = Boom()
    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap, distiller=boom)
    history = agent_history(80)
    replay(engine, history)
    over_turns = sum(1 for n in range(1, len(history) + 1) if cheap_total(history[:n]) > 1500)
    assert 0 < boom.calls < over_turns / 4
    assert len(store.distillations("t")) == boom.calls


def cheap_total(history: Sequence[BaseMessage]) -> int:
    return sum(cheap_tokens(m) for m in history)


def test_a_failed_turn_is_retried_and_then_succeeds(store: SQLiteMemoryStore) -> None:
    class Flaky(Distiller):
        name = "flaky"

        def __init__(self) -> None:
            self.calls = 0

        def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("first call fails")
            return [GroupFacts([Fact("ok", g.message_ids)]) for g in groups]

    engine = ContextDistiller(store, budget_tokens=1500, token_counter=cheap, distiller=Flaky())
    final = replay(engine, agent_history(40))[-1]
    assert final.stats.failures == 1
    assert final.stats.distillations > 0
    assert final.stats.tokens_view <= 1500


def test_an_oversized_tool_result_is_shortened_and_archived(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(
        store, budget_tokens=4000, token_counter=cheap, max_tool_result_tokens=300
    )
    log = "\n".join(f"line {i}: ok" for i in range(3000)) + "\nERROR: disk full at /var/data"
    history: list[BaseMessage] = [
        HumanMessage("Check the logs.", id="task"),
        AIMessage("", id="a", tool_calls=[{"name": "tail_log", "args": {}, "id": "c"}]),
        ToolMessage(log, tool_call_id="c", id="big"),
    ]
    update = engine.update("t", history)
    shown = update.view[-1]
    assert isinstance(shown, ToolMessage) and shown.tool_call_id == "c" and shown.id == "big"
    assert shown.additional_kwargs[MARKER_KEY] == REDUCED_MARK
    assert cheap_tokens(shown) <= 300
    assert "disk full at /var/data" in shown.content
    assert update.changed
    ((_, original),) = store.get_messages("t", ids=["big"])
    assert original.content == log


def test_invalid_histories_are_refused_with_the_message_named(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(store, budget_tokens=1000, token_counter=cheap)
    orphan = [HumanMessage("task", id="h"), ToolMessage("x", tool_call_id="nope", id="t")]
    with pytest.raises(InvalidMessageError, match=r"message 1 .*'nope'"):
        engine.update("a", orphan)
    unanswered = [
        HumanMessage("task", id="h"),
        AIMessage("", id="a", tool_calls=[{"name": "f", "args": {}, "id": "c"}]),
        HumanMessage("next", id="h2"),
    ]
    with pytest.raises(InvalidMessageError, match=r"message 2 .*'c' of message 1 have no result"):
        engine.update("b", unanswered)
    duplicate = [HumanMessage("task", id="h"), HumanMessage("again", id="h")]
    with pytest.raises(InvalidMessageError, match="already in this thread"):
        engine.update("c", duplicate)
    # After an error the thread recovers on the next, valid call.
    assert engine.update("a", orphan[:1]).view == orphan[:1]


def test_a_call_still_in_flight_at_the_end_is_fine(store: SQLiteMemoryStore) -> None:
    engine = ContextDistiller(store, budget_tokens=1000, token_counter=cheap)
    history = [
        HumanMessage("task", id="h"),
        AIMessage("", id="a", tool_calls=[{"name": "f", "args": {}, "id": "c"}]),
    ]
    assert engine.update("t", history).view == history


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="budget_tokens"):
        ContextDistiller(budget_tokens=0)
    with pytest.raises(ValueError, match="target_tokens"):
        ContextDistiller(budget_tokens=100, target_tokens=200)
    with pytest.raises(ValueError, match="unknown distiller"):
        ContextDistiller(budget_tokens=100, distiller="magic")


def test_async_twin_gives_the_same_views(tmp_path: Path) -> None:
    history = agent_history(50)
    sync_engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "a.db"), budget_tokens=1500, token_counter=cheap
    )
    sync_views = [u.view for u in replay(sync_engine, history)]
    async_engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "b.db"), budget_tokens=1500, token_counter=cheap
    )

    async def run() -> list[list[BaseMessage]]:
        views = []
        for end in range(1, len(history) + 1):
            views.append(await async_engine.aprocess("t", history[:end]))
        return views

    async_views = asyncio.run(run())
    assert [[m.content for m in v] for v in async_views] == [
        [m.content for m in v] for v in sync_views
    ]


def test_a_turn_counts_only_its_new_messages(store: SQLiteMemoryStore) -> None:
    seen: list[str] = []

    def counting(text: str) -> int:
        seen.append(text)
        return cheap(text)

    engine = ContextDistiller(store, budget_tokens=10_000_000, token_counter=counting)
    history = agent_history(200)
    engine.update("t", history)
    seen.clear()
    extra = HumanMessage("one more question", id="extra")
    engine.update("t", [*history, extra])
    # one new message: its role and its text, nothing of the 600 before it
    assert seen == ["human", "one more question"]


class SlowExtractive(Distiller):
    """The extractive distiller behind a delay, recording which threads call it."""

    name = "slow-extractive"

    def __init__(self, delay: float) -> None:
        from context_distill.distillers import ExtractiveDistiller

        self.inner = ExtractiveDistiller()
        self.delay = delay
        self.callers: list[str] = []

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        import time

        self.callers.append(threading.current_thread().name)
        time.sleep(self.delay)
        return self.inner.distill(groups)


def test_background_distillation_gives_the_foreground_result(tmp_path: Path) -> None:
    """Facts made in the background are the facts the foreground would make."""
    history = agent_history(70)
    foreground = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "f.db"), budget_tokens=1500, token_counter=cheap,
        distiller=SlowExtractive(0.0),
    )  # fmt: skip
    slow = SlowExtractive(0.02)
    background = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "b.db"), budget_tokens=1500, token_counter=cheap,
        distiller=slow, background=True,
    )  # fmt: skip
    replay(foreground, history)
    for end in range(1, len(history) + 1):
        update = background.update("t", history[:end])
        check_pairs(update.view)
        assert update.stats.tokens_view <= 1500
        assert background.wait_background(timeout=30)  # the model's turn: time to prefetch
    assert "context-distill-background" in slow.callers
    log = background.store.distillations("t")
    assert log and all(entry["outcome"] == "ok" for entry in log)
    assert sum(entry["details"].get("prefetched_groups", 0) for entry in log) > 0

    def facts_by_source(store: SQLiteMemoryStore) -> dict[tuple[str, ...], str]:
        return {fact.source_ids: fact.text for fact in store.facts("t")}

    made_ahead = facts_by_source(background.store)
    made_now = facts_by_source(foreground.store)
    common = made_ahead.keys() & made_now.keys()
    assert len(common) > 0.8 * len(made_now)
    assert {k: made_ahead[k] for k in common} == {k: made_now[k] for k in common}


def test_background_crossings_once_within_budget_do_not_wait_for_the_model(
    tmp_path: Path,
) -> None:
    """With facts made ahead, a crossing takes what is ready when that brings the view
    within the budget; going on to the target is left to the background."""
    from context_distill.demo import build_session

    slow = SlowExtractive(0.0)
    engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "b.db"), budget_tokens=6000, distiller=slow, background=True
    )
    history = build_session()
    waited: list[int] = []
    changed: list[int] = []
    for end in range(1, len(history) + 1):
        if end < len(history) and not isinstance(history[end], AIMessage):
            continue  # a model call comes before each assistant message
        before = slow.callers.count("context-distill")
        update = engine.update("t", history[:end])
        assert update.stats.tokens_view <= 6000
        if update.changed:
            changed.append(end)
        if slow.callers.count("context-distill") > before:
            waited.append(end)
        assert engine.wait_background(timeout=30)
    crossings = [e for e in engine.store.distillations("t") if e["outcome"] == "ok"]
    assert len(crossings) > 5
    assert sum(e["details"].get("prefetched_groups", 0) for e in crossings) > 0
    # only the first crossing, before anything was made ahead, asks the model itself
    assert len(waited) <= 1 and set(waited) <= set(changed[:1]), (waited, changed[:1])


def test_a_ten_megabyte_tool_output_is_counted_exactly_shortened_and_archived(
    store: SQLiteMemoryStore,
) -> None:
    engine = ContextDistiller(store, budget_tokens=8000)  # exact o200k counts
    lines = [
        f"{i:08d} INFO request handled in {i % 97} ms path=/api/v1/items/{i}"
        for i in range(160_000)
    ]
    lines[123_456] = "00123456 ERROR database timeout after 30000 ms on shard eu-7"
    output = "\n".join(lines)
    assert len(output) > 10_000_000
    history: list[BaseMessage] = [
        HumanMessage("Why did the nightly job fail?", id="task"),
        AIMessage("", id="a", tool_calls=[{"name": "read_log", "args": {}, "id": "c"}]),
        ToolMessage(output, tool_call_id="c", id="log"),
    ]
    update = engine.update("t", history)
    assert update.stats.tokens_in > 2_000_000
    assert update.stats.tokens_view <= 8000
    shown = update.view[-1]
    assert "database timeout after 30000 ms on shard eu-7" in shown.content
    ((_, original),) = store.get_messages("t", ids=["log"])
    assert original.content == output


def test_a_shortened_result_is_distilled_from_its_facts_not_its_note(
    store: SQLiteMemoryStore,
) -> None:
    engine = ContextDistiller(
        store, budget_tokens=900, token_counter=cheap, max_tool_result_tokens=200
    )
    flights = [
        {"flight_number": f"HAT{i:03d}", "origin": "DEN", "destination": "IAH", "price": 100 + i}
        for i in range(400)
    ]
    history: list[BaseMessage] = [
        HumanMessage("Find flights.", id="task"),
        AIMessage("", id="a", tool_calls=[{"name": "search", "args": {}, "id": "c"}]),
        ToolMessage(json.dumps(flights), tool_call_id="c", id="big"),
    ]
    for i in range(40):  # enough later turns to distill the shortened result away
        history.append(HumanMessage(f"Question {i} about the flights, nothing new.", id=f"h{i}"))
        history.append(AIMessage(f"Answer {i}: still looking into it.", id=f"r{i}"))
    engine.update("t", history)
    (fact,) = [f for f in store.facts("t") if "big" in f.source_ids]
    assert "HAT000" in fact.text
    assert "shortened" not in fact.text and "omitted" not in fact.text


def test_a_long_system_prompt_leaves_room_for_memory(store: SQLiteMemoryStore) -> None:
    """The default target is a share of what the budget leaves beside the pinned prompt."""
    engine = ContextDistiller(store, budget_tokens=2000, token_counter=cheap)
    history: list[BaseMessage] = [
        SystemMessage("policy " * 570, id="sys"),  # half the budget, never distilled
        HumanMessage("Book a flight.", id="task"),
    ]
    for i in range(80):
        history.append(HumanMessage(f"My booking code is BK{i:04d} for passenger {i}.", id=f"h{i}"))
        history.append(AIMessage(f"Noted BK{i:04d}.", id=f"r{i}"))
    update = engine.update("t", history)
    assert update.distilled and update.stats.tokens_view <= 2000
    pinned = cheap_total(history[:2])
    # A share of the whole budget (1,200) would leave about 200 tokens beside the
    # 1,000-token prompt, less than the newest turns alone; a share of the rest, 600.
    assert update.stats.tokens_view > pinned + 450
    assert update.stats.facts_shown > 0
