"""The transcript is complete on arrival, and a store that holds a thread already is
picked up where it stands: replaying a session again (in this process, a new one,
or two at once) costs about what the first replay cost and ends on the same view."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from langchain_core.messages import BaseMessage

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.demo import build_session
from context_distill.messages import text_of

BUDGET = 2_000


def cheap(text: str) -> int:
    return (len(text) + 3) // 4


def replay(
    db: Path, messages: list[BaseMessage], engine: ContextDistiller | None = None
) -> list[str]:
    engine = engine or ContextDistiller(
        SQLiteMemoryStore(db), budget_tokens=BUDGET, token_counter=cheap
    )
    view: list[BaseMessage] = []
    for end in range(1, len(messages) + 1):
        view = engine.update("s", messages[:end]).view
    return [f"{m.type}:{m.id}:{text_of(m)}" for m in view]


def _replay_in_child(db: str, queue: multiprocessing.Queue[list[str]]) -> None:
    queue.put(replay(Path(db), build_session()[:240]))


def test_every_message_is_searchable_when_the_call_returns(tmp_path: Path) -> None:
    engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "t.db"), budget_tokens=BUDGET, token_counter=cheap
    )
    session = build_session()
    for end in range(1, 120):
        engine.update("s", session[:end])
        newest = session[end - 1]
        got = engine.store.get_messages("s", ids=[newest.id or ""])
        assert got and text_of(got[0][1]) == text_of(newest), f"message {end - 1} not archived"
    stats = engine.store.stats("s")
    assert stats["messages_archived"] == 119


def test_replaying_into_a_store_that_holds_the_thread_gives_the_same_view(tmp_path: Path) -> None:
    session = build_session()[:240]
    db = tmp_path / "again.db"
    first = replay(db, session)
    assert any("[Memory]" in line for line in first), "setup: the replay should distill"
    again_new_process = replay(db, session)  # a new engine: a cold process
    assert again_new_process == first
    engine = ContextDistiller(SQLiteMemoryStore(db), budget_tokens=BUDGET, token_counter=cheap)
    replay(db, session, engine)
    assert replay(db, session, engine) == first  # the same engine again: a warm process
    with SQLiteMemoryStore(db) as store:
        stats = store.stats("s")
        assert stats["messages_archived"] == len({m.id for m in session})


def test_two_processes_replaying_one_thread_at_once_agree(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    first = replay(db, build_session()[:240])
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[str]] = context.Queue()
    workers = [context.Process(target=_replay_in_child, args=(str(db), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    views = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert views == [first, first]
