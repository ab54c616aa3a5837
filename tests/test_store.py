"""The archive: exact round trips, atomic distillations, scoped search, schema versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from context_distill import SQLiteMemoryStore, StoreError
from context_distill.messages import digest, text_of, to_json
from context_distill.store import SCHEMA_VERSION, DistillationLog, FactRecord, MessageRecord


def record(message, tokens: int = 10) -> MessageRecord:  # type: ignore[no-untyped-def]
    return MessageRecord(
        message.id, message.type, digest(message), tokens, text_of(message), to_json(message)
    )


MESSAGES = [
    HumanMessage(
        content=[{"type": "text", "text": "find flights"}, "to Oslo"], id="h1", name="ann"
    ),
    AIMessage(
        "",
        id="a1",
        tool_calls=[{"name": "search", "args": {"to": "OSL", "max": 2}, "id": "c1"}],
        additional_kwargs={"trace": {"n": [1, 2]}},
    ),
    ToolMessage('{"flight": "SK4021", "eur": 129}', tool_call_id="c1", id="t1", status="success"),
]


def test_wal_and_schema_version(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.db")
    assert store.schema_version == SCHEMA_VERSION
    mode = store.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()
    # reopening migrates nothing and keeps the data
    again = SQLiteMemoryStore(tmp_path / "m.db")
    assert again.schema_version == SCHEMA_VERSION


def test_commit_round_trips_messages_exactly(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.db")
    log = DistillationLog("extractive", "ok", groups=2, messages=3)
    _, refs, facts = store.commit_distillation(
        "t",
        originals=[record(m) for m in MESSAGES],
        facts=[FactRecord("search(to=OSL) → SK4021, 129 EUR", ("a1", "t1"), 12)],
        log=log,
        anchor=None,
    )
    assert sorted(refs.values()) == [1, 2, 3]
    assert facts[0].refs == (refs["a1"], refs["t1"])
    back = [message for _, message in store.get_messages("t", ids=["h1", "a1", "t1"])]
    assert back == MESSAGES
    snapshot = store.load_thread("t")
    assert snapshot.distilled == {"h1", "a1", "t1"}
    assert snapshot.facts[0].source_ids == ("a1", "t1")


def test_a_failed_commit_leaves_nothing_behind(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.db")
    bad = FactRecord("fact", ("a1",), 3)
    with pytest.raises(StoreError):
        store.commit_distillation(
            "t",
            originals=[record(m) for m in MESSAGES],
            facts=[bad, FactRecord(None, ("a1",), 3)],  # type: ignore[arg-type]
            log=DistillationLog("x", "ok"),
            anchor=None,
        )
    stats = store.stats("t")
    assert stats["messages_archived"] == 0 and stats["facts"] == 0
    assert store.distillations("t") == []
    assert store.integrity_ok()


def test_search_is_scoped_and_handles_any_query(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.db")
    store.archive("alpha", [record(m) for m in MESSAGES])
    store.archive("beta", [record(HumanMessage("Oslo hotel please", id="x"))])
    assert {h.thread_id for h in store.search("Oslo")} == {"alpha", "beta"}
    assert {h.thread_id for h in store.search("Oslo", thread_id="alpha")} == {"alpha"}
    for hostile in ['"', "NOT", "a AND (", "x' OR 1=1 --", "*", "", "   "]:
        store.search(hostile, thread_id="alpha")  # no exception
    assert store.search("SK4021", thread_id="beta") == []


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SQLiteMemoryStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this library"):
        SQLiteMemoryStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database at all " * 100)
    with pytest.raises(StoreError, match="not a usable"):
        SQLiteMemoryStore(path)


def test_delete_thread(tmp_path: Path) -> None:
    store = SQLiteMemoryStore(tmp_path / "m.db")
    store.archive("alpha", [record(m) for m in MESSAGES])
    store.archive("beta", [record(HumanMessage("keep me", id="k"))])
    store.delete_thread("alpha")
    assert store.threads() == ["beta"]
    assert store.search("SK4021") == []
