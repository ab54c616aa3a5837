"""Distiller faults: raising, hanging, empty, garbage and bloated output.

Whatever the distiller does, the history stays as it was (over budget beats
amnesia), the failure is logged and recorded in the distillations table, a later
turn retries with bounded backoff, and nothing loops.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from invariants import Session, cheap_count, check_db, same_message

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.distillers import Distiller
from context_distill.distillers.extractive import ExtractiveDistiller
from context_distill.types import Fact, Group, GroupFacts

TURNS = 40
BUDGET = 400


class Scripted(Distiller):
    """A distiller whose behaviour is a function; counts its calls."""

    name = "scripted"

    def __init__(self, behave: Callable[[Sequence[Group]], Any]) -> None:
        self.behave = behave
        self.calls = 0
        self.lock = threading.Lock()

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        with self.lock:
            self.calls += 1
        result: list[GroupFacts] = self.behave(groups)
        return result


def _raise(groups: Sequence[Group]) -> Any:
    raise RuntimeError("model server said 503")


def _empty(groups: Sequence[Group]) -> Any:
    return [GroupFacts([]) for _ in groups]


def _blank_facts(groups: Sequence[Group]) -> Any:
    return [GroupFacts([Fact("   \n ", g.message_ids)]) for g in groups]


def _none(groups: Sequence[Group]) -> Any:
    return None


def _strings(groups: Sequence[Group]) -> Any:
    return ["a fact" for _ in groups]


def _short(groups: Sequence[Group]) -> Any:
    return [GroupFacts([Fact("one", groups[0].message_ids)])][: len(groups) - 1]


def _not_facts(groups: Sequence[Group]) -> Any:
    return [GroupFacts([{"text": "x"}]) for _ in groups]  # type: ignore[list-item]


def _surrogates(groups: Sequence[Group]) -> Any:
    return [GroupFacts([Fact("bad \ud800 text", g.message_ids)]) for g in groups]


def _huge(groups: Sequence[Group]) -> Any:
    return [GroupFacts([Fact("blah " * (50 * g.tokens + 200), g.message_ids)]) for g in groups]


FAULTS: dict[str, tuple[Callable[[Sequence[Group]], Any], set[str]]] = {
    "raises": (_raise, {"failed"}),
    "empty": (_empty, {"empty"}),
    "blank_facts": (_blank_facts, {"empty"}),
    "returns_none": (_none, {"rejected"}),
    "returns_strings": (_strings, {"rejected"}),
    "too_few_results": (_short, {"rejected"}),
    "not_facts": (_not_facts, {"rejected"}),
    "lone_surrogates": (_surrogates, {"rejected"}),
    "facts_far_larger_than_input": (_huge, {"rejected"}),
}


def max_attempts(turns: int) -> int:
    """Attempts allowed in ``turns`` turns with backoff 1, 2, 4, ... 32 turns."""
    attempts, turn, wait = 0, 0, 1
    while turn < turns:
        attempts += 1
        turn += wait
        wait = min(wait * 2, 32)
    return attempts


def run_failing(
    tmp_path: Path, distiller: Distiller, *, turns: int = TURNS, **options: Any
) -> tuple[ContextDistiller, Session, list[str]]:
    engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "faults.db"),
        budget_tokens=BUDGET,
        token_counter=cheap_count,
        distiller=distiller,
        max_tool_result_tokens=10**6,  # no reductions: the view must equal the history
        **options,
    )
    session = Session(engine, "faulty", 17)
    assert session.checker is not None
    session.checker.failing = True
    problems: list[str] = []
    originals: list[Any] = []
    for _ in range(turns):
        update, found = session.step()
        problems.extend(found)
        originals = copy.deepcopy(session.history)
        if [m.id for m in update.view] != [m.id for m in session.history]:
            problems.append(f"turn {session.turn}: the view is not the history")
        if update.distilled:
            problems.append(f"turn {session.turn}: a failing distiller distilled")
    assert all(same_message(a, b) for a, b in zip(originals, session.history, strict=True))
    return engine, session, problems


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faulty_distiller_keeps_history_records_and_backs_off(
    tmp_path: Path, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    behave, outcomes = FAULTS[fault]
    distiller = Scripted(behave)
    with caplog.at_level(logging.WARNING, logger="context_distill"):
        engine, session, problems = run_failing(tmp_path, distiller)
    assert not problems, problems[:5]
    last = session.last
    assert last is not None and last.stats.over_budget
    assert last.stats.reason and "failing" in last.stats.reason
    log = engine.store.distillations("faulty")
    assert log, "no failure recorded"
    assert {row["outcome"] for row in log} <= outcomes
    assert all(row["error"] and row["facts"] == 0 for row in log)
    assert engine.store.stats("faulty")["facts"] == 0
    assert engine.store.stats("faulty")["failures"] == len(log) == last.stats.failures
    assert 2 <= distiller.calls <= max_attempts(TURNS), f"{distiller.calls} calls in {TURNS} turns"
    assert len(log) == distiller.calls
    warned = [r for r in caplog.records if "faulty" in r.getMessage()]
    assert warned, "the failure was not logged"
    assert not check_db(tmp_path / "faults.db")
    engine.store.close()


def test_hanging_distiller_times_out_every_attempt(tmp_path: Path) -> None:
    release = threading.Event()

    def hang(groups: Sequence[Group]) -> Any:
        release.wait(30)
        return _empty(groups)

    distiller = Scripted(hang)
    try:
        engine, _session, problems = run_failing(
            tmp_path, distiller, turns=12, distill_timeout_s=0.1
        )
        assert not problems, problems[:5]
        log = engine.store.distillations("faulty")
        assert log and {row["outcome"] for row in log} == {"timeout"}
        assert len(log) == distiller.calls <= max_attempts(12)
        engine.store.close()
    finally:
        release.set()


def test_hanging_async_distiller_times_out(tmp_path: Path) -> None:
    class Slow(Distiller):
        name = "slow"
        calls = 0

        def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
            raise AssertionError("the async path must not call distill")

        async def adistill(self, groups: Sequence[Group]) -> list[GroupFacts]:
            self.calls += 1
            await asyncio.sleep(30)
            return []

    distiller = Slow()
    engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "slow.db"),
        budget_tokens=BUDGET,
        token_counter=cheap_count,
        distiller=distiller,
        distill_timeout_s=0.1,
        max_tool_result_tokens=10**6,
    )
    session = Session(engine, "slow", 3)
    assert session.checker is not None
    session.checker.failing = True

    async def main() -> list[str]:
        found: list[str] = []
        for _ in range(12):
            _, problems = await session.astep()
            found.extend(problems)
        return found

    assert not asyncio.run(main())
    log = engine.store.distillations("slow")
    assert log and {row["outcome"] for row in log} == {"timeout"}
    assert len(log) == distiller.calls <= max_attempts(12)
    engine.store.close()


def test_flaky_distiller_recovers_on_a_later_turn(tmp_path: Path) -> None:
    good = ExtractiveDistiller()
    state = {"fail": 3}

    def flaky(groups: Sequence[Group]) -> Any:
        if state["fail"] > 0:
            state["fail"] -= 1
            raise ConnectionError("connection reset")
        return good.distill(groups)

    distiller = Scripted(flaky)
    engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "flaky.db"),
        budget_tokens=BUDGET,
        token_counter=cheap_count,
        distiller=distiller,
    )
    session = Session(engine, "flaky", 5)
    recovered_at = None
    for _ in range(TURNS):
        update, problems = session.step()
        assert not problems, problems[:5]
        if update.distilled and recovered_at is None:
            recovered_at = session.turn
    assert recovered_at is not None, "never distilled after the distiller recovered"
    first_failure = min(
        i for i, row in enumerate(engine.store.distillations("flaky")) if row["outcome"] != "ok"
    )
    assert first_failure == 0
    last = session.last
    assert last is not None and not last.stats.over_budget
    outcomes = [row["outcome"] for row in engine.store.distillations("flaky")]
    assert outcomes[:3] == ["failed"] * 3 and "ok" in outcomes
    assert not check_db(tmp_path / "flaky.db")
    engine.store.close()


def test_distiller_that_mutates_its_input_cannot_corrupt_the_archive(tmp_path: Path) -> None:
    """A careless distiller edits the messages it is given: the archive keeps the originals."""
    good = ExtractiveDistiller()

    def vandal(groups: Sequence[Group]) -> Any:
        results = good.distill(groups)
        for group in groups:
            for message in group.messages:
                message.content = "overwritten by the distiller"
        return results

    engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "vandal.db"),
        budget_tokens=BUDGET,
        token_counter=cheap_count,
        distiller=Scripted(vandal),
    )
    session = Session(engine, "vandal", 8, check=False)
    pristine: dict[str, Any] = {}
    for _ in range(15):
        new = session.next_messages()
        pristine.update({m.id: copy.deepcopy(m) for m in new})
        session.history.extend(new)
        engine.update("vandal", session.history)
    archived = engine.store.get_messages("vandal", ids=list(pristine))
    assert archived
    changed = [m.id for _, m in archived if not same_message(m, pristine[m.id])]
    assert not changed, f"{len(changed)} archived originals differ from what the caller sent"
    engine.store.close()


@pytest.mark.parametrize("fault", ["raises", "empty"])
def test_background_distillation_backs_off_too(tmp_path: Path, fault: str) -> None:
    """In background mode a failing distiller must not be called on every turn."""
    behave, _ = FAULTS[fault]
    distiller = Scripted(behave)
    engine, _session, problems = run_failing(tmp_path, distiller, background=True)
    assert not problems, problems[:5]
    assert distiller.calls <= 2 * max_attempts(TURNS), (
        f"{distiller.calls} calls in {TURNS} turns (background)"
    )
    engine.store.close()


@pytest.fixture(autouse=True)
def _no_thread_leak() -> Iterator[None]:
    before = {t.ident for t in threading.enumerate()}
    yield
    # Hanging distillers run on daemon threads that end once released; none may stay busy
    # forever. Give released workers a moment, then count only new non-daemon threads.
    leftover = [
        t for t in threading.enumerate() if t.ident not in before and not t.daemon and t.is_alive()
    ]
    assert not leftover, f"threads left running: {leftover}"


def test_max_attempts_is_logarithmic_then_linear() -> None:
    assert max_attempts(1) == 1
    assert max_attempts(40) <= math.ceil(math.log2(32)) + 1 + math.ceil((40 - 31) / 32) + 1
