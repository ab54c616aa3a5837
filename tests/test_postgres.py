"""What only the PostgreSQL backend has: its schema and migrations, the connections it
accepts, reconnecting after a dropped connection or a restarted server, and
``open_store``. Everything the backends share is in test_store_contract.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from invariants import check_after_crash, check_db, crash_writer
from langchain_core.messages import HumanMessage
from pg_kit import (
    REPO_ROOT,
    PgTarget,
    admin,
    crash_server,
    drop_schema,
    new_schema,
    restartable_dsn,
    schema_version,
    start_server,
    stop_server,
)
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from context_distill import SQLiteMemoryStore, StoreError
from context_distill.messages import digest, to_json
from context_distill.postgres import SCHEMA_VERSION, PostgresMemoryStore
from context_distill.store import DistillationLog, FactRecord, MessageRecord, open_store

OK_LOG = DistillationLog("extractive", "ok", groups=1, messages=1, facts=1)


def plain(message_id: str, text: str) -> MessageRecord:
    message = HumanMessage(text, id=message_id)
    return MessageRecord(message_id, "human", digest(message), 3, text, to_json(message))


def store_sessions(target: PgTarget, name: str = "context-distill") -> list[int]:
    """Backend pids of the sessions stores hold under the application name ``name``."""
    with admin(target.dsn) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            (name,),
        ).fetchall()
    return [row[0] for row in rows]


def settled_sessions(target: PgTarget, name: str, count: int) -> list[int]:
    """The sessions under ``name`` once ``count`` are left (a closed session leaves
    pg_stat_activity a moment after its client let go), or as they are after 10 s."""
    deadline = time.monotonic() + 10
    while len(sessions := store_sessions(target, name)) != count and time.monotonic() < deadline:
        time.sleep(0.05)
    return sessions


def named(target: PgTarget) -> tuple[PgTarget, str]:
    """``target`` reached under an application name of its own, so that a test ends only
    its own store's sessions (other tests may be using the server at the same time)."""
    name = f"cd-{target.schema}"
    return PgTarget(make_conninfo(target.dsn, application_name=name), target.schema), name


def terminate(pids: list[int], dsn: str) -> None:
    with admin(dsn) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


# -- schema -----------------------------------------------------------------------------


def test_schema_has_its_own_namespace_and_a_version(pg_target: PgTarget) -> None:
    with pg_target.open() as store:
        assert store.schema_version == SCHEMA_VERSION
        store.archive("t", [plain("a", "hello")])
    assert schema_version(pg_target) == SCHEMA_VERSION
    with admin(pg_target.dsn) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (pg_target.schema,),
            )
        }
    assert tables == {"threads", "messages", "facts", "distillations", "schema_version"}
    with pg_target.open() as again:  # reopening keeps everything
        assert again.stats("t")["messages_archived"] == 1


def test_processes_racing_to_create_the_schema_migrate_it_once(pg_target: PgTarget) -> None:
    pids = []
    for n in range(4):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                with pg_target.open() as store:
                    store.archive(f"p{n}", [plain("a", f"from {n}")])
            except BaseException:
                code = 3
            os._exit(code)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    assert codes == [0, 0, 0, 0]
    with pg_target.open() as store:
        assert sorted(store.threads()) == ["p0", "p1", "p2", "p3"]
    assert schema_version(pg_target) == SCHEMA_VERSION


def test_a_newer_schema_is_refused(pg_target: PgTarget) -> None:
    pg_target.open().close()
    with admin(pg_target.dsn) as conn:
        conn.execute(
            sql.SQL("UPDATE {} SET version = %s").format(
                sql.Identifier(pg_target.schema, "schema_version")
            ),
            (SCHEMA_VERSION + 1,),
        )
    with pytest.raises(StoreError, match="newer than this library"):
        pg_target.open()
    with pytest.raises(StoreError, match="schema version"):
        pg_target.open(read_only=True)


def test_read_only_never_creates_a_schema(pg_target: PgTarget) -> None:
    with pytest.raises(StoreError, match="no context-distill archive"):
        pg_target.open(read_only=True)
    assert schema_version(pg_target) == 0


def test_a_wrong_password_is_a_store_error_that_hides_it(pg_target: PgTarget) -> None:
    bad = pg_target.dsn.replace(":context_distill@", ":wrong-secret@")
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        PostgresMemoryStore(bad, schema=pg_target.schema)
    assert "wrong-secret" not in str(caught.value)
    assert time.monotonic() - started < 30
    with pytest.raises(StoreError, match="connection string"):
        PostgresMemoryStore("host=localhost bogus_option=1")
    with pytest.raises(ValueError, match="schema"):
        PostgresMemoryStore(pg_target.dsn, schema='bad"name')


# -- what the store accepts ---------------------------------------------------------------


def test_a_pool_like_a_checkpointers_is_borrowed_not_owned(pg_target: PgTarget) -> None:
    for kwargs in (
        {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},  # PostgresSaver's
        {"autocommit": False},  # a plain pool: every call still commits
    ):
        pool: ConnectionPool[Any] = ConnectionPool(
            pg_target.dsn, min_size=1, max_size=2, kwargs=kwargs, open=True
        )
        try:
            store = PostgresMemoryStore(pool, schema=pg_target.schema)
            store.archive("pooled", [plain(f"m{len(kwargs)}", "pooled words")])
            store.commit_distillation(
                "pooled", originals=[MessageRecord.archived(f"m{len(kwargs)}")],
                facts=[FactRecord("f", (f"m{len(kwargs)}",), 1)], log=OK_LOG, anchor=None,
            )  # fmt: skip
            store.close()
            assert not pool.closed
            with pool.connection() as conn:  # the pool's connections are left clean
                assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        finally:
            pool.close()
    with pg_target.open() as store:  # committed, seen from another connection
        assert store.stats("pooled")["distillations"] == 2


def test_a_checkpointers_single_connection(pg_target: PgTarget) -> None:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(pg_target.dsn) as saver:
        saver.setup()
        store = PostgresMemoryStore(saver.conn, schema=pg_target.schema)
        store.archive("lg", [plain("a", "words from the graph")])
        # The store has sessions of its own: a rollback of its can never undo the saver's.
        assert store_sessions(pg_target)
        assert saver.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert [h.message_id for h in store.search("graph")] == ["a"]
        store.close()
        assert not saver.conn.closed
        assert list(saver.list(None)) == []


# -- connections lost ----------------------------------------------------------------


def test_killed_sessions_are_replaced_without_an_error(pg_target: PgTarget) -> None:
    target, name = named(pg_target)
    with target.open(pool_size=3) as store:
        store.archive("t", [plain("a", "before")])
        for round_ in range(3):
            sessions = store_sessions(pg_target, name)
            assert sessions
            terminate(sessions, pg_target.dsn)
            store.archive("t", [plain(f"b{round_}", f"after {round_}")])
            assert store.last_distillation_id("t") == 0
            assert store.load_thread("t").transcript
        assert store.stats("t")["messages_archived"] == 4
        ids = list(store.load_thread("t").transcript)
        assert sorted(r for r, _ in store.get_messages("t", ids=ids)) == [1, 2, 3, 4]


def test_a_call_made_while_the_server_is_down_goes_through_once_it_is_back() -> None:
    """The call keeps trying to connect itself, every half second at most, so the
    server's return ends the wait. Left to psycopg_pool's reconnection schedule (1, 2,
    4, 8, 16 s between attempts) the same call gave up at 28 s with no connection."""
    base = new_schema(restartable_dsn())
    target, name = named(base)
    try:
        with target.open(retry_s=28) as store:
            store.archive("t", [plain("a", "before the outage")])
            stop_server()
            back = threading.Timer(20, start_server)
            back.start()
            try:
                store.archive("t", [plain("b", "while the server was down")])
            finally:
                back.join()
            assert [r for r, _ in store.get_messages("t", ids=["a", "b"])] == [1, 2]
            assert len(settled_sessions(base, name, 1)) == 1  # the dead session was let go
    finally:
        start_server()
        drop_schema(base)


def test_threads_share_at_most_pool_size_sessions(pg_target: PgTarget) -> None:
    target, name = named(pg_target)
    store = target.open(pool_size=2)
    counts: list[int] = []

    def work(i: int) -> None:
        for j in range(10):
            store.archive(f"t{i}", [plain(f"m{i}-{j}", f"words {i} {j}")])
            counts.append(len(store_sessions(pg_target, name)))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(counts) == 50 and 1 <= max(counts) <= 2
    assert [store.stats(f"t{i}")["messages_archived"] for i in range(5)] == [10] * 5
    store.close()
    assert settled_sessions(pg_target, name, 0) == []  # closing let every session go
    with pytest.raises(StoreError, match="closed"):
        store.archive("t0", [plain("late", "after close")])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_the_parents_sessions_alone(pg_target: PgTarget) -> None:
    """A child forked from a process using the store (a preloading server's workers)
    connects on its own; closing its store never ends the parent's session, which
    shares its socket with the child."""
    target, name = named(pg_target)
    with target.open() as store:
        store.archive("t", [plain("a", "parent before the fork")])
        (parent_session,) = store_sessions(pg_target, name)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                store.archive("t", [plain("b", "child")])
                if parent_session not in store_sessions(pg_target, name):
                    code = 4
                store.close()
            except BaseException:
                code = 3
            os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert settled_sessions(pg_target, name, 1) == [parent_session]
        store.archive("t", [plain("c", "parent after the child")])
        assert store_sessions(pg_target, name) == [parent_session]  # the same, still alive
        assert [r for r, _ in store.get_messages("t", ids=["a", "b", "c"])] == [1, 2, 3]


def test_a_session_killed_mid_transaction_is_retried_once(pg_target: PgTarget) -> None:
    with pg_target.open() as store:
        store.archive("t", [plain("a", "first")])
        blocker = admin(pg_target.dsn)
        blocker.execute("BEGIN")
        blocker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE thread_id = 't' FOR UPDATE").format(
                sql.Identifier(pg_target.schema, "threads")
            )
        )
        outcome: list[Any] = []
        writer = threading.Thread(
            target=lambda: outcome.append(store.archive("t", [plain("b", "second")]))
        )
        writer.start()
        waiting: list[int] = []
        for _ in range(200):  # the writer waits on the thread's row lock
            with admin(pg_target.dsn) as conn:
                waiting = [
                    row[0]
                    for row in conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = "
                        "'context-distill' AND wait_event_type = 'Lock'"
                    )
                ]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the writer never waited on the lock"
        terminate(waiting, pg_target.dsn)
        time.sleep(0.2)
        blocker.execute("COMMIT")
        blocker.close()
        writer.join(timeout=60)
        assert outcome == [{"b": 2}]
        assert store.stats("t")["messages_archived"] == 2


def test_a_commit_whose_answer_was_lost_is_found_not_repeated(
    pg_target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server committed, the connection broke before the client heard: the retry must
    return that commit, not distil again (nor raise DistilledElsewhere at itself)."""
    original = psycopg.Transaction.__exit__
    lose = {"left": 0}

    def exit_then_lose(self: Any, *exc: Any) -> Any:
        result = original(self, *exc)
        if exc[0] is None and lose["left"] > 0:
            lose["left"] -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly (test)")
        return result

    monkeypatch.setattr(psycopg.Transaction, "__exit__", exit_then_lose)
    with pg_target.open() as store:
        lose["left"] = 1
        assert store.archive("t", [plain("a", "one"), plain("b", "two")]) == {"a": 1, "b": 2}
        lose["left"] = 1
        committed = store.commit_distillation(
            "t", originals=[MessageRecord.archived("a"), plain("c", "three")],
            facts=[FactRecord("f1", ("a",), 1), FactRecord("f2", ("c", "a"), 1)],
            log=DistillationLog("x", "ok", messages=2, facts=2), anchor="2024-01-01",
        )  # fmt: skip
        assert lose["left"] == 0
        assert committed.refs == {"a": 1, "c": 3}
        assert [(f.text, f.refs) for f in committed.facts] == [("f1", (1,)), ("f2", (1, 3))]
        assert committed.facts == store.facts("t")
        lose["left"] = 1
        failure = store.record_failure("t", DistillationLog("x", "failed"))
        log = store.distillations("t")
        assert [e["id"] for e in log] == [committed.log_id, failure]
    assert not check_db(pg_target)


def test_a_server_restart_mid_run_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """Writers keep going while the server stops as a power cut would and comes back:
    no error reaches them, and every write they were told was done is there."""
    target = new_schema(restartable_dsn())
    try:
        target.open().close()
        children = []
        for n in range(2):
            ack = tmp_path / f"w{n}.ack"
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    crash_writer(target, str(ack), 40 + n, 2, 30, "none", 0)
                except BaseException as exc:
                    Path(f"{ack}.err").write_text(repr(exc))
                    code = 3
                os._exit(code)
            children.append((pid, ack, 40 + n))
        time.sleep(1.5)
        crash_server()
        time.sleep(0.5)
        crash_server()  # and once more, while they reconnect
        for pid, ack, seed in children:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            error = Path(f"{ack}.err")
            assert code == 0, error.read_text() if error.exists() else code
            report = check_after_crash(target, ack, seed, 2)
            assert not report.problems, report.problems[:5]
            assert report.writes_checked > 0
    finally:
        drop_schema(target)


# -- open_store -------------------------------------------------------------------------


def test_open_store_picks_the_backend(pg_target: PgTarget, tmp_path: Path) -> None:
    sqlite = open_store(str(tmp_path / "m.db"))
    assert isinstance(sqlite, SQLiteMemoryStore)
    sqlite.archive("t", [plain("a", "file")])
    sqlite.close()
    assert isinstance(open_store(tmp_path / "m.db", read_only=True), SQLiteMemoryStore)
    # A URL opens PostgreSQL (its default schema: use a database of its own here).
    from pg_kit import drop_database, new_database

    dsn = new_database(pg_target.dsn)
    try:
        for url in (dsn, dsn.replace("postgresql://", "postgres://", 1)):
            store = open_store(url)
            assert isinstance(store, PostgresMemoryStore)
            store.archive("t", [plain("a", "server")])
            store.close()
        ro = open_store(dsn.replace("postgresql://", "PostgreSQL://", 1), read_only=True)
        assert isinstance(ro, PostgresMemoryStore) and ro.read_only
        with pytest.raises(StoreError, match="read-only"):
            ro.archive("t", [plain("b", "x")])
        assert ro.stats("t")["messages_archived"] == 1
        ro.close()
    finally:
        drop_database(dsn)


def test_open_store_without_the_extra_names_it() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from context_distill.errors import MissingExtraError\n"
        "from context_distill.store import open_store\n"
        "try:\n"
        "    open_store('postgresql://u@localhost/db')\n"
        "except MissingExtraError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert "pip install 'context-distill[postgres]'" in done.stdout
