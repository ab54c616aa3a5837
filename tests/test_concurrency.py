"""Concurrency: threads, processes and asyncio tasks sharing one archive.

No "database is locked" (or any other error) may reach the caller, nothing may be
lost or duplicated, and every view must satisfy the invariants. The campaigns run on
an SQLite file and on PostgreSQL (``new_archive``, ``target``).
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import NewArchive
from invariants import (
    Session,
    ThreadChecker,
    WorkerResult,
    cheap_count,
    check_db,
    concurrency_worker,
    fork_worker,
    join_worker,
    open_archive,
    raw_connect,
    session_start,
)
from pg_kit import PgTarget

from context_distill import ContextDistiller, SQLiteMemoryStore


def assert_clean(results: list[WorkerResult], db: Any) -> None:
    errors = [e for r in results for e in r.errors]
    problems = [p for r in results for p in r.problems]
    assert not errors, f"errors reached the caller: {errors[:5]}"
    assert not problems, f"invariant violations: {problems[:5]}"
    assert not check_db(db)
    conn = raw_connect(db)
    try:
        for r in results:
            if not r.direct_ids:
                continue
            tid = r.direct_ids[0].split("-d")[0] + "-direct"
            rows = conn.execute(
                "SELECT message_id FROM messages WHERE thread_id = ?", (tid,)
            ).fetchall()
            got = sorted(row[0] for row in rows)
            assert got == sorted(r.direct_ids), f"{tid}: archived ids differ from the ids written"
    finally:
        conn.close()


def test_python_threads_share_one_engine_and_one_store(target: Any) -> None:
    db = target
    engine = ContextDistiller(open_archive(db), budget_tokens=500, token_counter=cheap_count)
    results: list[WorkerResult] = [WorkerResult() for _ in range(6)]

    def work(i: int) -> None:
        results[i] = concurrency_worker(db, f"pt{i}", 2, 12, engine=engine)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    engine.store.close()
    assert sum(r.turns for r in results) == 6 * 2 * 12
    assert_clean(results, db)


def test_python_threads_with_a_store_each_on_one_file(target: Any) -> None:
    db = target
    results: list[WorkerResult] = [WorkerResult() for _ in range(5)]

    def work(i: int) -> None:
        results[i] = concurrency_worker(db, f"pc{i}", 2, 10)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sum(r.turns for r in results) == 5 * 2 * 10
    assert_clean(results, db)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_processes_share_one_file(target: Any) -> None:
    db = target
    open_archive(db).close()  # created before the workers race to open it
    children = [fork_worker(lambda i=i: concurrency_worker(db, f"pr{i}", 2, 10)) for i in range(4)]
    results = [join_worker(pid, pipe) for pid, pipe in children]
    assert sum(r.turns for r in results) == 4 * 2 * 10
    assert_clean(results, db)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_processes_race_to_create_the_archive(new_archive: NewArchive) -> None:
    """Several processes open an archive that does not exist yet, all at once."""
    for round_ in range(3):
        db = new_archive(f"race{round_}")
        children = [
            fork_worker(lambda i=i, db=db: concurrency_worker(db, f"cr{i}", 1, 3, check=False))
            for i in range(4)
        ]
        results = [join_worker(pid, pipe) for pid, pipe in children]
        assert_clean(results, db)


def test_writer_waits_out_a_long_foreign_write_lock(target: Any) -> None:
    """Another connection holds the write lock for a while: the engine waits, no error."""
    db = target
    engine = ContextDistiller(open_archive(db), budget_tokens=300, token_counter=cheap_count)
    session = Session(engine, "held", 5)
    for _ in range(3):
        _, problems = session.step()
        assert not problems
    blocker = raw_connect(db)
    if isinstance(db, PgTarget):  # the thread's row: what every writer of it locks first
        blocker.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        blocker.execute("SELECT 1 FROM threads WHERE thread_id = 'held' FOR UPDATE")
    else:
        blocker.execute("BEGIN IMMEDIATE")
        blocker.execute(
            "INSERT INTO threads (thread_id, created_at, updated_at) VALUES ('x', 0, 0)"
        )
    released = threading.Event()

    def release() -> None:
        time.sleep(1.0)
        blocker.execute("COMMIT")
        released.set()

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        before = engine.store.stats("held")["distillations"]
        for _ in range(4):  # enough turns that at least one of them must write
            _, problems = session.step()
            assert not problems
        assert released.is_set(), "the engine wrote while another connection held the lock"
        assert engine.store.stats("held")["distillations"] > before
    finally:
        releaser.join()
        blocker.close()
        engine.store.close()


def test_short_busy_timeout_gives_store_error_not_sqlite_error(tmp_path: Path) -> None:
    """When waiting is bounded and runs out, the caller gets the documented StoreError."""
    from context_distill.errors import StoreError
    from context_distill.store import MessageRecord

    db = tmp_path / "short.db"
    store = SQLiteMemoryStore(db, busy_timeout_s=0.2)
    blocker = raw_connect(db)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match=r"locked|busy"):
            store.archive("t", [MessageRecord("m", "human", "d", 1, "hello", "{}")])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.archive("t", [MessageRecord("m", "human", "d", 1, "hello", "{}")])
    assert store.stats("t")["messages_archived"] == 1
    store.close()


def test_one_conversation_thread_hammered_from_many_python_threads(target: Any) -> None:
    """Callers racing on the same thread id with prefixes of one history."""
    db = target
    engine = ContextDistiller(open_archive(db), budget_tokens=400, token_counter=cheap_count)
    builder = Session(engine, "hammer", 9, check=False)
    prefixes = []
    for _ in range(20):
        builder.history.extend(builder.next_messages())
        prefixes.append(list(builder.history))
    errors: list[str] = []
    problems: list[str] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        rng = random.Random(seed)
        checker = ThreadChecker(engine, "hammer", cheap_count)
        order = list(range(len(prefixes)))
        for i in sorted(order, key=lambda i: i + rng.uniform(-3, 3)):
            try:
                update = engine.update("hammer", prefixes[i])
            except Exception as exc:
                with lock:
                    errors.append(repr(exc))
                continue
            found = checker.check(prefixes[i], update)
            with lock:
                problems.extend(found)

    workers = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    engine.store.close()
    assert not errors, errors[:5]
    assert not problems, problems[:5]
    assert not check_db(db)


def test_asyncio_serves_many_threads_at_once(target: Any) -> None:
    db = target
    engine = ContextDistiller(open_archive(db), budget_tokens=500, token_counter=cheap_count)
    sessions = [
        Session(engine, f"as{i}", i, style="view" if i % 2 else "rewrite") for i in range(20)
    ]

    async def main() -> list[str]:
        found: list[str] = []
        for _ in range(6):
            results = await asyncio.gather(*(s.astep() for s in sessions))
            for _, problems in results:
                found.extend(problems)
        return found

    problems = asyncio.run(main())
    engine.store.close()
    assert not problems, problems[:5]
    assert all(s.last is not None and s.last.stats.distillations > 0 for s in sessions)
    assert not check_db(db)


def test_langgraph_threads_served_concurrently(target: Any) -> None:
    """A LangGraph graph whose node distills, many thread ids run at once with ainvoke."""
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, MessagesState, StateGraph

    db = target
    engine = ContextDistiller(open_archive(db), budget_tokens=400, token_counter=cheap_count)
    seen: dict[str, list[BaseMessage]] = {}

    async def agent(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
        thread_id = config["configurable"]["thread_id"]
        update = await engine.aupdate(thread_id, state["messages"])
        seen[thread_id] = update.view
        n = len(state["messages"])
        call = {"name": "lookup", "args": {"n": n}, "id": f"{thread_id}-c{n}"}
        return {
            "messages": [
                AIMessage(f"step {n} of {thread_id}", id=f"{thread_id}-a{n}", tool_calls=[call]),
                ToolMessage(f"value {n} zq{n}", tool_call_id=call["id"], id=f"{thread_id}-t{n}"),
            ]
        }

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_edge(START, "agent")
    app = graph.compile(checkpointer=InMemorySaver())

    async def main() -> None:
        for _ in range(10):
            await asyncio.gather(
                *(
                    app.ainvoke(
                        {"messages": session_start(f"g{i}") if _ == 0 else []},
                        {"configurable": {"thread_id": f"g{i}"}},
                    )
                    for i in range(20)
                )
            )

    asyncio.run(main())
    for i in range(20):
        tid = f"g{i}"
        state = app.get_state({"configurable": {"thread_id": tid}}).values["messages"]
        update = asyncio.run(engine.aupdate(tid, state))
        problems = ThreadChecker(engine, tid, cheap_count).check(state, update)
        assert not problems, problems[:5]
        assert all(m.id.startswith(tid) or m.id == "context-distill-memory" for m in update.view)
    assert not check_db(db)
    engine.store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_thread_handed_between_processes_distills_each_message_once(target: Any) -> None:
    """A LangGraph server runs each turn of a thread on whichever worker is free.

    Two processes serve one thread alternately, each sending the full history. A
    worker that served earlier turns must notice what the other distilled since.
    """
    db = target
    open_archive(db).close()
    builder = Session(
        ContextDistiller(budget_tokens=400, token_counter=cheap_count), "handoff", 3, check=False
    )
    blocks = []
    for _ in range(24):
        builder.history.extend(builder.next_messages())
        blocks.append(len(builder.history))
    history = builder.history
    # Each worker is a long-lived process; turn i goes to worker (i // 4) % 2.
    pipes = [os.pipe() for _ in range(2)]
    back = [os.pipe() for _ in range(2)]
    pids = []
    for w in range(2):
        pid = os.fork()
        if pid == 0:
            for other in range(2):  # keep only this worker's ends, so EOF reaches it
                os.close(pipes[other][1])
                os.close(back[other][0])
                if other != w:
                    os.close(pipes[other][0])
                    os.close(back[other][1])
            engine = ContextDistiller(
                open_archive(db), budget_tokens=400, token_counter=cheap_count
            )
            checker = ThreadChecker(engine, "handoff", cheap_count)
            found: list[str] = []
            with os.fdopen(pipes[w][0], "r") as inbox, os.fdopen(back[w][1], "w") as outbox:
                for line in inbox:
                    n = int(line)
                    try:
                        update = engine.update("handoff", history[:n])
                        found.extend(checker.check(history[:n], update))
                    except Exception as exc:
                        found.append(repr(exc))
                    outbox.write(f"{len(found)}\n")
                    outbox.flush()
                outbox.write(repr(found[:5]) + "\n")
            os._exit(0)
        pids.append(pid)
    inboxes = [os.fdopen(pipes[w][1], "w") for w in range(2)]
    outboxes = [os.fdopen(back[w][0], "r") for w in range(2)]
    for w in range(2):
        os.close(pipes[w][0])
        os.close(back[w][1])
    for i, n in enumerate(blocks):
        w = (i // 4) % 2
        inboxes[w].write(f"{n}\n")
        inboxes[w].flush()
        outboxes[w].readline()
    reports = []
    for w in range(2):
        inboxes[w].close()
        reports.append(outboxes[w].read().strip())
        outboxes[w].close()
        os.waitpid(pids[w], 0)
    assert reports == ["[]", "[]"], f"worker views broke the invariants: {reports}"
    with open_archive(db) as store:
        by_message: dict[str, set[int]] = {}
        for fact in store.facts("handoff"):
            for source in fact.source_ids:
                by_message.setdefault(source, set()).add(fact.distillation_id)
    twice = [(m, len(d)) for m, d in by_message.items() if len(d) > 1]
    assert not twice, f"{len(twice)} messages were distilled more than once, e.g. {twice[:3]}"
    assert not check_db(db)


def test_engines_taking_turns_on_a_thread_show_what_one_engine_shows(
    new_archive: NewArchive,
) -> None:
    """Two engines (two servers) serving one thread in turn: the same views, turn by turn,
    as one engine serving it alone (the memory block restored as it was last fitted)."""
    builder = Session(
        ContextDistiller(budget_tokens=400, token_counter=cheap_count), "alternate", 7, check=False
    )
    prefixes = []
    for _ in range(30):
        builder.history.extend(builder.next_messages())
        prefixes.append(list(builder.history))

    def views(engines: list[ContextDistiller]) -> list[list[tuple[Any, ...]]]:
        out = []
        for turn, history in enumerate(prefixes):
            view = engines[(turn // 2) % len(engines)].update("alternate", history).view
            out.append([(m.type, m.id, m.text) for m in view])
        return out

    alone = open_archive(new_archive("alone"))
    shared = new_archive("shared")
    pair = [open_archive(shared), open_archive(shared)]
    try:
        expected = views([ContextDistiller(alone, budget_tokens=400, token_counter=cheap_count)])
        got = views(
            [ContextDistiller(s, budget_tokens=400, token_counter=cheap_count) for s in pair]
        )
        assert alone.stats("alternate")["distillations"] >= 3
        for turn, (want, have) in enumerate(zip(expected, got, strict=True)):
            assert want == have, f"turn {turn}: the view differs from one engine's"
    finally:
        for store in (alone, *pair):
            store.close()
