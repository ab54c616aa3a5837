"""Tiered reduction and the budget split: older tool results shown as their facts with
their calls verbatim, whole groups into a memory block that keeps its share, huge new
results shortened before the memory starves; all of it committed, so a restart shows
the same view."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from invariants import ThreadChecker, check_db, open_archive, tool_pairing
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from context_distill import ContextDistiller, ContextUpdate, SQLiteMemoryStore
from context_distill.distillers import Distiller
from context_distill.distillers.extractive import ExtractiveDistiller
from context_distill.ledger import Ledger, TokenCache
from context_distill.memory import MemoryBlock
from context_distill.messages import MARKER_KEY, MEMORY_MARK, REDUCED_MARK
from context_distill.policy import (
    MEMORY_SHARE,
    TARGET_SHARE,
    Budget,
    distill_need,
    memory_cap,
    select,
    trim_to_ready,
)
from context_distill.reduced import NOTE
from context_distill.store import StoredFact
from context_distill.tiering import KEEP_RESULTS, water_level
from context_distill.types import Fact, Group, GroupFacts


def cheap(text: str) -> int:
    return (len(text) + 3) // 4


def step(i: int, lines: int = 24, thought: str | None = None) -> list[BaseMessage]:
    """One agent step: a short thought with a call, and a test run's chatty log."""
    call = f"call{i}"
    body = "\n".join(
        [f"tests/test_pkg_{i}.py::test_case_{j} PASSED [{j * 4}%]" for j in range(lines)]
        + [
            f"E   KeyError: 'token_{i}' in src/pkg_{i}/module_0.py line {100 + i}",
            f"FAILED tests/test_pkg_{i}.py::test_login_{i}",
            f"=== 1 failed, {lines} passed in 0.{i}s ===",
        ]
    )
    return [
        AIMessage(
            thought or f"Looking at pkg_{i} next.",
            id=f"a{i}",
            tool_calls=[{"name": "bash", "args": {"command": f"pytest tests/pkg_{i}"}, "id": call}],
        ),
        ToolMessage(body, tool_call_id=call, id=f"r{i}"),
    ]


def session(steps: int, **kw: Any) -> list[BaseMessage]:
    history: list[BaseMessage] = [
        SystemMessage("You are a coding agent.", id="sys"),
        HumanMessage("Fix the failing handler.", id="task"),
    ]
    for i in range(steps):
        history.extend(step(i, **kw))
    return history


def replay(
    engine: ContextDistiller, history: Sequence[BaseMessage], thread: str = "t"
) -> list[ContextUpdate]:
    return [engine.update(thread, history[:end]) for end in range(1, len(history) + 1)]


def render(view: Sequence[BaseMessage]) -> list[str]:
    return [f"{m.type}:{m.id}:{m.content}" for m in view]


def engine_for(store: SQLiteMemoryStore, **options: Any) -> ContextDistiller:
    options.setdefault("budget_tokens", 6000)
    return ContextDistiller(store, token_counter=cheap, **options)


# -- the policy, pure ----------------------------------------------------------------


def test_memory_share_is_checked_and_defaults() -> None:
    engine = ContextDistiller(budget_tokens=1000)
    assert engine.memory_share == MEMORY_SHARE
    for bad in (-0.1, TARGET_SHARE, 1.0, True):  # the target's share or more: no recent turns
        with pytest.raises(ValueError, match="memory_share"):
            ContextDistiller(budget_tokens=1000, memory_share=bad)
    budget = Budget.of(1000, None, None, None, 0.8, 0.3)
    assert budget.memory_room(pinned_tokens=200) == 240  # a share of what pinned leaves


def test_water_level_cuts_the_largest_results_first() -> None:
    assert water_level([1000, 500, 100], 700, 64) == 400  # 600 + 100 saved
    assert water_level([1000, 500, 100], 10_000, 64) == 64  # not enough: down to the floor
    assert water_level([1000], 0, 64) == 1000


def _ledger(history: Sequence[BaseMessage]) -> Ledger:
    ledger = Ledger()
    tokens = TokenCache(cheap)
    for position, message in enumerate(history):
        ledger.add(message, position, tokens)
    return ledger


def _memory(n: int) -> MemoryBlock:
    memory = MemoryBlock(cheap)
    memory.add([StoredFact(i, f"fact {i} about item_{i}", ("x",), (i,), 5, 1) for i in range(n)])
    return memory


def test_distillation_keeps_room_for_the_memory_block_once_it_holds_facts() -> None:
    ledger = _ledger(session(20))
    budget = Budget.of(1500, None, None, None, 0.8, 0.4)
    target = budget.target(ledger.pinned_tokens)
    room = budget.memory_room(ledger.pinned_tokens)
    others = ledger.view_tokens(0)
    assert others > budget.budget_tokens
    assert distill_need(budget, ledger, MemoryBlock(cheap), 0, False) == others - target
    memory = _memory(3)  # a small block: the messages beside it must leave its room
    assert distill_need(budget, ledger, memory, 0, False) == others - (target - room)
    assert distill_need(budget, ledger, memory, 0, True) is None  # backing off


def test_memory_cap_is_at_least_the_share_while_the_budget_allows() -> None:
    ledger = _ledger(session(8))
    budget = Budget.of(3000, None, None, None, 0.8, 0.4)
    others = ledger.view_tokens(0)
    room = budget.memory_room(ledger.pinned_tokens)
    assert budget.target(ledger.pinned_tokens) - others < room  # the target leaves less
    assert memory_cap(budget, ledger) == min(room, budget.budget_tokens - others)


def test_select_leaves_what_reducing_the_rest_would_save() -> None:
    ledger = _ledger(session(20))
    plain = select("t", ledger, 1200, 0.3, 0, None, set(), 0, 0)  # type: ignore[arg-type]
    savings = {id(g): g.tokens * 0.6 for g in ledger.groups}
    tiered = select("t", ledger, 1200, 0.3, 0, None, set(), 0, 0, 0, savings)  # type: ignore[arg-type]
    assert plain is not None and tiered is not None
    assert 0 < len(tiered.live) < len(plain.live)
    assert [g.ids for g in tiered.live] == [g.ids for g in plain.live][: len(tiered.live)]


def test_a_crossing_takes_the_facts_made_ahead_when_the_fitted_view_is_within_budget() -> None:
    """A block at its room shows new facts in place of others: the groups made ahead
    save their whole size, not only what their facts don't take."""
    ledger = _ledger(session(6))  # six groups of 342 tokens beside 22 pinned
    others = ledger.view_tokens(0)

    def trimmed(budget: Budget, memory_tokens: int, ready: int) -> int:
        view = others + memory_tokens
        job = select("t", ledger, 10_000, 0.4, 0, None, set(), view, 0)  # type: ignore[arg-type]
        assert job is not None and len(job.groups) == 5
        found: list[GroupFacts | None] = [
            GroupFacts([Fact("f", g.message_ids)]) if i < ready else None
            for i, g in enumerate(job.groups)
        ]
        trim_to_ready(budget, ledger, memory_tokens, job, found, 0.4)
        return len(job.groups)

    budget = Budget.of(3126, 2600, 0, None, 0.8, 0.5)
    room = budget.memory_room(ledger.pinned_tokens)
    assert others + room - budget.budget_tokens == 500  # at its room, 500 over
    assert 684 * 0.6 < 500  # two groups' size less their facts would not do
    assert trimmed(budget, room, 2) == 2  # their whole size does: the block keeps its room
    tight = Budget.of(1700, 1500, 0, None, 0.8, 0.5)  # no memory yet, 374 over
    assert trimmed(tight, 0, 1) == 5  # one group is not enough: all are asked
    assert trimmed(tight, 0, 2) == 2


# -- the ledger ------------------------------------------------------------------------


def test_ledger_offers_results_beyond_the_newest_groups_and_replaces_in_place() -> None:
    history = session(6)
    history.append(
        AIMessage("", id="pending", tool_calls=[{"name": "bash", "args": {}, "id": "open"}])
    )
    ledger = _ledger(history)
    found = ledger.tool_results(KEEP_RESULTS)
    assert [g.ids[p] for g, p in found] == [f"r{i}" for i in range(6 - KEEP_RESULTS)]
    group, position = found[0]
    copy = ToolMessage("short", tool_call_id="call0", id="r0")
    before, old = ledger.live_tokens, group.tokens_each[position]
    ledger.replace([(group, position, copy, 2)])
    assert ledger.live_tokens == before - old + 2 and group.tokens == group.tokens_each[0] + 2
    assert ledger.view(None)[3] is copy  # sys, task, a0, r0
    assert [m.id for m in ledger.view(None)] == [m.id for m in history]


# -- end to end ------------------------------------------------------------------------


def _reduced(view: Sequence[BaseMessage]) -> list[ToolMessage]:
    return [
        m
        for m in view
        if isinstance(m, ToolMessage) and m.additional_kwargs.get(MARKER_KEY) == REDUCED_MARK
    ]


def test_older_results_show_as_facts_while_calls_stay_verbatim(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "t.db")
    engine = engine_for(store, memory_share=0.1)
    history = session(24)
    checker = ThreadChecker(engine, "t", cheap)
    update = None
    for end in range(1, len(history) + 1):
        update = engine.update("t", history[:end])
        assert not checker.check(history[:end], update)
    assert update is not None
    view = update.view
    reduced = _reduced(view)
    assert reduced, "setup: some results should be reduced"
    originals = {m.id: m for m in history}
    for copy in reduced:
        original = originals[copy.id]
        assert isinstance(original, ToolMessage)
        assert copy.tool_call_id == original.tool_call_id
        assert copy.content.startswith(NOTE) and "Facts: " in copy.content
        assert len(copy.content) < len(original.content) / 2
        i = int(str(copy.id)[1:])
        assert f"src/pkg_{i}/module_0.py" in copy.content  # the names survive
        call = view[view.index(copy) - 1]
        assert call is originals[f"a{i}"]  # the call and the thought, word for word
    newest = [m for m in view if isinstance(m, ToolMessage)][-KEEP_RESULTS:]
    assert all(m is originals[m.id] for m in newest)  # the newest results stay whole
    assert not tool_pairing(view)
    assert not update.distilled and update.stats.facts == 0  # reductions alone sufficed
    stats = update.stats
    assert stats.pinned_tokens + stats.memory_tokens + stats.recent_tokens == stats.tokens_view
    log = store.distillations("t")
    assert log and {row["outcome"] for row in log} == {"reduced"}
    facts = store.facts("t")
    assert {f.source_ids for f in facts} == {(m.id,) for m in reduced}
    states = {i: m.state for i, m in store.load_thread("t").transcript.items()}
    assert all(states[m.id] == "reduced" for m in reduced)
    assert not check_db(tmp_path / "t.db")
    store.close()


def test_a_restart_shows_the_same_reduced_view(target: Any) -> None:
    db = target  # an SQLite file or a PostgreSQL schema: the rebuild reads the protocol
    options: dict[str, Any] = {"memory_share": 0.1, "keep_recent_tokens": 2500}
    probe = replay(engine_for(SQLiteMemoryStore(":memory:"), **options), session(60))
    # A length at which the view holds reduced results beside a memory block.
    end = max(n + 1 for n, u in enumerate(probe) if _reduced(u.view) and u.stats.distillations)
    history = session(60)[:end]
    first = replay(engine_for(open_archive(db), **options), history)[-1]
    assert render(first.view) == render(probe[end - 1].view)
    cold = engine_for(open_archive(db), **options)
    again = cold.update("t", history)  # a new process, the whole history at once
    assert render(again.view) == render(first.view)
    assert not again.distilled
    held = list(first.view)  # a caller that keeps the compact view (rewrite style)
    warm = engine_for(open_archive(db), **options)
    assert render(warm.update("t", held).view) == render(first.view)
    assert not check_db(db)


def test_a_reduced_result_distilled_whole_reaches_the_memory_block_once(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SQLiteMemoryStore(db)
    engine = engine_for(store, memory_share=0.1, keep_recent_tokens=2500)
    history = session(60)
    final = replay(engine, history)[-1]
    log = store.distillations("t")
    reductions = {row["id"] for row in log if row["outcome"] == "reduced"}
    whole = {row["id"] for row in log if row["outcome"] == "ok"}
    assert reductions and whole, "setup: reductions, then whole groups"
    facts = store.facts("t")
    inline = [f for f in facts if f.distillation_id in reductions]
    distilled = store.load_thread("t").distilled
    went_whole = [f for f in inline if f.source_ids[0] in distilled]
    assert went_whole, "setup: some reduced results were distilled whole later"
    memory = next(m for m in final.view if m.additional_kwargs.get(MARKER_KEY) == MEMORY_MARK)
    text = str(memory.content)
    assert "tool result →" not in text  # the reductions' own facts never join the block
    for fact in went_whole:
        i = fact.source_ids[0][1:]
        assert text.count(f"src/pkg_{i}/module_0.py") <= 1
    assert not check_db(db)


class _Failing(Distiller):
    name = "failing"

    def __init__(self) -> None:
        self.calls = 0

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.calls += 1
        raise ConnectionError("model down")


def test_a_failing_distiller_leaves_results_as_they_were(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "t.db")
    distiller = _Failing()
    engine = engine_for(store, distiller=distiller, memory_share=0.1)
    history = session(20)
    checker = ThreadChecker(engine, "t", cheap, failing=True)
    for end in range(1, len(history) + 1):
        update = engine.update("t", history[:end])
        assert not checker.check(history[:end], update)
        assert update.view == history[:end]  # over budget beats amnesia
    log = store.distillations("t")
    assert distiller.calls and len(log) == distiller.calls
    assert {row["outcome"] for row in log} == {"failed"}
    assert update.stats.failures == distiller.calls and update.stats.over_budget
    assert distiller.calls < 10  # backed off: not once per turn
    store.close()


def test_a_huge_newest_result_is_shortened_before_the_memory_starves(target: Any) -> None:
    db = target
    history = session(30)
    dump = "\n".join(f"line {n}: value_{n} = {n * 7}" for n in range(800))
    history += [
        AIMessage("Reading the big file.", id="big-call", tool_calls=[
            {"name": "bash", "args": {"command": "cat big.txt"}, "id": "cbig"}
        ]),
        ToolMessage(dump, tool_call_id="cbig", id="big"),
    ]  # fmt: skip
    options = {"memory_share": 0.4, "max_tool_result_tokens": 10**6}
    engine = engine_for(open_archive(db), **options)
    final = replay(engine, history)[-1]
    shown = final.view[-1]
    assert shown.id == "big" and shown.additional_kwargs.get(MARKER_KEY) == REDUCED_MARK
    assert "line 0: value_0" in str(shown.content) and "line 799" in str(shown.content)
    stats = final.stats
    room = engine.budget.memory_room(stats.pinned_tokens)
    assert not stats.over_budget
    assert stats.memory_tokens >= room * 0.8 or stats.facts_shown == stats.facts
    details = [row["details"] for row in engine.store.distillations("t")]
    assert any("shortened" in d for d in details)
    cold = engine_for(open_archive(db), **options)
    assert render(cold.update("t", history).view) == render(final.view)
    assert not check_db(db)


def test_chat_without_tool_calls_gets_no_reductions(tmp_path: Path) -> None:
    engine = engine_for(SQLiteMemoryStore(tmp_path / "t.db"), budget_tokens=600)
    history: list[BaseMessage] = [SystemMessage("Chat.", id="sys")]
    for i in range(60):
        history.append(HumanMessage(f"I moved to city_{i} in {1990 + i}.", id=f"h{i}"))
        history.append(AIMessage(f"Noted city_{i}, year {1990 + i}.", id=f"a{i}"))
    final = replay(engine, history)[-1]
    assert final.stats.distillations and not _reduced(final.view)
    outcomes = {row["outcome"] for row in engine.store.distillations("t")}
    assert outcomes == {"ok"}


class _Recording(Distiller):
    name = "recording"

    def __init__(self) -> None:
        self.whole: list[Group] = []
        self._inner = ExtractiveDistiller()

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        self.whole.extend(g for g in groups if len(g.messages) > 1)  # not a lone result
        return self._inner.distill(groups)


def test_a_result_shown_cut_is_distilled_whole_from_its_original(tmp_path: Path) -> None:
    distiller = _Recording()
    engine = engine_for(
        SQLiteMemoryStore(tmp_path / "t.db"), distiller=distiller, max_tool_result_tokens=200
    )
    # each result (~320 tokens) is cut on arrival to 200; long enough that reducing the
    # older results no longer keeps the view within the target and whole groups go
    history = session(80)
    replay(engine, history)
    originals = {m.id: m for m in history}
    results = [
        (mid, m)
        for g in distiller.whole
        for mid, m in zip(g.message_ids, g.messages, strict=True)
        if isinstance(m, ToolMessage)
    ]
    assert results, "setup: groups with results were distilled whole"
    for mid, message in results:
        if message.additional_kwargs.get(MARKER_KEY) == REDUCED_MARK:
            assert str(message.content).startswith(NOTE)  # shown as its facts: those stand
        else:
            assert message.content == originals[mid].content  # never the cut copy
    assert any(m.additional_kwargs.get(MARKER_KEY) is None for _, m in results)
