"""The store contract: every promise of ``MemoryStore``, held by every backend alike.

Each test runs against an SQLite file and a PostgreSQL schema on a real server
(``target`` in conftest.py). Engine-level crash and concurrency campaigns run on
both backends in test_crash_safety.py and test_concurrency.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from invariants import check_db, open_archive, raw_connect
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from context_distill import InvalidThreadIdError, StoreError
from context_distill.messages import digest, text_of, to_json
from context_distill.store import (
    DISTILLED,
    REDUCED,
    DistillationLog,
    DistilledElsewhere,
    FactRecord,
    MemoryStore,
    MessageRecord,
)


@contextmanager
def opened(target: Any, **options: Any) -> Iterator[Any]:
    store = open_archive(target) if not options else _open_with(target, options)
    try:
        yield store
    finally:
        store.close()


def _open_with(target: Any, options: dict[str, Any]) -> Any:
    from context_distill import SQLiteMemoryStore

    if isinstance(target, Path):
        return SQLiteMemoryStore(target, **options)
    return target.open(**options)


def record(message: Any, tokens: int = 10) -> MessageRecord:
    return MessageRecord(
        message.id, message.type, digest(message), tokens, text_of(message), to_json(message)
    )


def plain(message_id: str, text: str, tokens: int = 3) -> MessageRecord:
    return record(HumanMessage(text, id=message_id), tokens)


MESSAGES = [
    SystemMessage("You are terse.", id="s1"),
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
    # Text PostgreSQL cannot hold as it is (NUL), the escape itself, controls, non-BMP.
    HumanMessage("nul\x00inside \x01\x02 and \x01\x00\x01 tail\x00", id="n\x00ul-id\x01"),
    AIMessage(
        "é ü 中文 😀 \u200b \x7f\x1b[0m",
        id="u1",
        tool_calls=[{"name": "echo", "args": {"s": "arg\x00nul"}, "id": "c\x002"}],
    ),
    ToolMessage("tool says \x00", tool_call_id="c\x002", id="t\x002", artifact={"k": "v\x00"}),
]

OK_LOG = DistillationLog("extractive", "ok", groups=1, messages=2, facts=1)


# -- messages round trip ------------------------------------------------------------


def test_every_message_round_trips_exactly(target: Any) -> None:
    with opened(target) as store:
        assert isinstance(store, MemoryStore)
        refs = store.archive("t", [record(m) for m in MESSAGES])
        assert list(refs.values()) == list(range(1, len(MESSAGES) + 1))
        got = store.get_messages("t", ids=[m.id for m in MESSAGES])
        assert [ref for ref, _ in got] == list(range(1, len(MESSAGES) + 1))
        assert [m for _, m in got] == MESSAGES
        assert [m for _, m in store.get_messages("t", refs=[5, 1, 99])] == [
            MESSAGES[0],
            MESSAGES[4],
        ]
        snapshot = store.load_thread("t")
        assert set(snapshot.transcript) == {m.id for m in MESSAGES}
        for m in MESSAGES:
            archived = snapshot.transcript[m.id]
            assert (archived.digest, archived.tokens, archived.state) == (digest(m), 10, "archived")
    with opened(target) as again:  # and from a fresh connection
        assert [m for _, m in again.get_messages("t", ids=[m.id for m in MESSAGES])] == MESSAGES


def test_message_index_lists_every_message_without_its_text(target: Any) -> None:
    with opened(target) as store:
        store.archive("t", [record(m) for m in MESSAGES])
        index = store.message_index("t", preview=6)
        assert [row["ref"] for row in index] == list(range(1, len(MESSAGES) + 1))
        assert [row["message_id"] for row in index] == [m.id for m in MESSAGES]
        assert [row["role"] for row in index] == [m.type for m in MESSAGES]
        assert {row["state"] for row in index} == {"archived"}
        assert index[0]["preview"] == "You ar" and index[0]["chars"] == len("You are terse.")
        assert index[5]["preview"] == "é ü 中文"
        assert index[4]["preview"] == "nul\x00in"
        assert store.message_index("nobody") == []


def test_thread_ids_with_nul_and_tricky_characters(target: Any) -> None:
    ids = ["a\x00b", "a", "a\x01", "a\x01\x02", "'; DROP TABLE threads; --", "a%", "A", "a "]
    with opened(target) as store:
        for n, tid in enumerate(ids):
            store.archive(tid, [plain("m", f"zqword{n} hello")])
        assert store.threads() == ids
        for n, tid in enumerate(ids):
            hits = store.search(f"zqword{n}")
            assert [(h.thread_id, h.message_id) for h in hits] == [(tid, "m")]
            assert store.stats(tid)["messages_archived"] == 1
        store.delete_thread("a\x00b")
        assert store.threads() == ids[1:]


def test_archive_is_idempotent_and_numbers_are_dense(target: Any) -> None:
    with opened(target) as store:
        first = store.archive("t", [plain("a", "one"), plain("b", "two")])
        assert first == {"a": 1, "b": 2}
        again = store.archive("t", [plain("b", "two"), plain("c", "three"), plain("a", "one")])
        assert again == {"b": 2, "c": 3, "a": 1}
        assert store.archive("t", [MessageRecord.archived("c")]) == {"c": 3}
        assert store.archive("other", [plain("a", "one")]) == {"a": 1}  # numbers per thread
        assert store.stats("t")["messages_archived"] == 3
        assert store.archive("empty", []) == {}
        assert "empty" in store.threads()


def test_another_message_under_an_archived_id_is_refused(target: Any) -> None:
    with opened(target) as store:
        store.archive("t", [plain("a", "one")])
        with pytest.raises(StoreError, match="archived already with other content"):
            store.archive("t", [plain("b", "two"), plain("a", "not one")])
        assert store.stats("t")["messages_archived"] == 1  # all of the call or none
        with pytest.raises(StoreError, match="should be archived already"):
            store.archive("t", [MessageRecord.archived("nope")])


def test_a_reduced_message_is_distilled_as_its_original(target: Any) -> None:
    with opened(target) as store:
        store.archive("t", [plain("r", "short copy")], state=REDUCED)
        assert store.load_thread("t").reduced == {"r"}
        committed = store.commit_distillation(
            "t",
            originals=[plain("r", "the original, longer")],
            facts=[FactRecord("r fact", ("r",), 2)],
            log=OK_LOG,
            anchor=None,
        )
        assert committed.refs == {"r": 1}
        snapshot = store.load_thread("t")
        assert snapshot.reduced == frozenset() and snapshot.distilled == {"r"}


# -- distillations ---------------------------------------------------------------


def test_commit_distillation_stores_everything_at_once(target: Any) -> None:
    with opened(target) as store:
        store.archive("t", [record(MESSAGES[0]), record(MESSAGES[1])])
        log_id, refs, facts = store.commit_distillation(
            "t",
            originals=[record(m) for m in MESSAGES[1:4]],
            facts=[
                FactRecord("search(to=OSL) → SK4021, 129 EUR", ("a1", "t1"), 12),
                FactRecord("asked for Oslo \x00 flights", ("h1",), 5),
            ],
            log=DistillationLog("extractive", "ok", groups=2, messages=3, details={"k": "\x00"}),
            anchor="2024-05-07T10:00:00",
        )
        assert refs == {"h1": 2, "a1": 3, "t1": 4}
        assert [f.refs for f in facts] == [(3, 4), (2,)]
        assert store.facts("t") == facts
        assert store.last_distillation_id("t") == log_id
        snapshot = store.load_thread("t")
        assert snapshot.distilled == {"h1", "a1", "t1"}
        assert snapshot.facts == tuple(facts)
        assert snapshot.anchor == "2024-05-07T10:00:00"
        assert snapshot.last_distillation_id == log_id
        assert snapshot.distilled_tokens == 30 and snapshot.distillations == 1
        assert snapshot.transcript["a1"].state == DISTILLED
        assert snapshot.transcript["s1"].state == "archived"
        assert store.distilled_digests("t", ["h1", "s1", "zz", "\ud800"]) == {
            "h1": digest(MESSAGES[1])
        }
        [entry] = store.distillations("t")
        assert entry["id"] == log_id and entry["details"] == {"k": "\x00"}
        assert entry["outcome"] == "ok" and entry["messages"] == 3
        store.set_memory_cap("t", 321, retired=[facts[1].fact_id, 10**9], retired_at=log_id)
        snapshot = store.load_thread("t")
        assert snapshot.memory_cap == 321
        assert [f.retired_at for f in snapshot.facts] == [None, log_id]
        store.set_memory_cap("t", None, retired=[facts[1].fact_id], retired_at=log_id + 7)
        snapshot = store.load_thread("t")
        assert snapshot.memory_cap is None
        assert [f.retired_at for f in store.facts("t")] == [None, log_id]  # retired once


def test_a_failed_commit_leaves_nothing_behind(target: Any) -> None:
    with opened(target) as store:
        with pytest.raises(StoreError):
            store.commit_distillation(
                "t",
                originals=[record(m) for m in MESSAGES[:4]],
                facts=[FactRecord("fact", ("a1",), 3), FactRecord(None, ("a1",), 3)],  # type: ignore[arg-type]
                log=OK_LOG,
                anchor="2024-01-01",
            )
        stats = store.stats("t")
        assert stats["messages_archived"] == 0 and stats["facts"] == 0
        assert store.distillations("t") == []
        assert store.last_distillation_id("t") == 0
    assert not check_db(target)


def test_distilled_elsewhere_writes_nothing(target: Any) -> None:
    with opened(target) as a, opened(target) as b:
        originals = [plain("x", "first"), plain("y", "second")]
        a.commit_distillation(
            "t", originals=originals, facts=[FactRecord("f", ("x",), 1)], log=OK_LOG, anchor=None
        )
        before = b.stats("t")
        with pytest.raises(DistilledElsewhere):
            b.commit_distillation(
                "t",
                originals=[plain("z", "third"), plain("y", "second")],
                facts=[FactRecord("g", ("y",), 1)],
                log=OK_LOG,
                anchor="2030-01-01",
            )
        assert b.stats("t") == before
        assert b.load_thread("t").anchor is None
        with pytest.raises(StoreError, match="other content"):  # not DistilledElsewhere
            b.commit_distillation(
                "t", originals=[plain("x", "changed")], facts=[], log=OK_LOG, anchor=None
            )


def test_failures_are_logged_but_are_not_distillations(target: Any) -> None:
    with opened(target) as store:
        failed = store.record_failure("t", DistillationLog("x", "failed", error="boom \x00"))
        assert store.last_distillation_id("t") == 0
        store.commit_distillation(
            "t", originals=[plain("a", "one")], facts=[FactRecord("f", ("a",), 1)], log=OK_LOG,
            anchor=None,
        )  # fmt: skip
        store.record_failure("t", DistillationLog("x", "timeout"))
        snapshot = store.load_thread("t")
        assert (snapshot.distillations, snapshot.failures) == (1, 2)
        assert snapshot.last_distillation_id > failed
        log = store.distillations("t")
        assert [e["outcome"] for e in log] == ["failed", "ok", "timeout"]
        assert log[0]["error"] == "boom \x00"
        stats = store.stats()
        assert (stats["distillations"], stats["failures"], stats["facts"]) == (1, 2, 1)
        assert store.last_distillation_id("unknown") == 0


# -- search ---------------------------------------------------------------------


def _search_fixture(store: Any) -> None:
    store.archive(
        "alpha",
        [
            plain("m1", "The refund policy: return within 30 business days; KeyError 'token'."),
            plain("m2", "policy of the refund desk, café au lait, tests/test_api.py passed"),
            plain("m3", "NOT this OR that AND (other) NEAR stuff* ^caret text:column"),
        ],
    )
    store.archive("beta", [plain("m1", "Oslo hotel refund please")])
    store.commit_distillation(
        "alpha", originals=[MessageRecord.archived("m1")],
        facts=[FactRecord("refund: 30 business days, receipt required", ("m1",), 8)],
        log=OK_LOG, anchor=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("refund", {"m1", "m2"}),
        ("REFUND Policy", {"m1", "m2"}),  # every word, any case
        ("refunds policies", {"m1", "m2"}),  # stemmed
        ("refund desk", {"m2"}),
        ('"refund policy"', {"m1"}),  # a phrase, in order
        ('"policy refund"', set()),
        ('"policy of the refund"', {"m2"}),  # no stop words dropped
        ("the", {"m1", "m2"}),
        ("keyerror", {"m1"}),
        ("cafe", {"m2"}),  # diacritics fold
        ("test_api", {"m2"}),
        ("tests/test_api.py", {"m2"}),
        ("refund ...", {"m1", "m2"}),  # a term without a word adds nothing
        ("NOT", {"m3"}),  # operators are words
        ("this OR nothing", set()),
        ("refund OR nothing", set()),
        ("stuff*", {"m3"}),
        ("text:column", {"m3"}),
        ("(other)", {"m3"}),
        ("ref*", set()),  # no prefix syntax
        ("...", set()),
        ("", set()),
        ('"', set()),
        ("   ", set()),
        ("x' OR 1=1 --", set()),
        ("a AND (", set()),
        ("\x00refund\x00", {"m1", "m2"}),
    ],
)
def test_search_semantics(target: Any, query: str, expected: set[str]) -> None:
    with opened(target) as store:
        _search_fixture(store)
        hits = store.search(query, thread_id="alpha", kinds=("message",))
        assert {h.message_id for h in hits} == expected
        for hit in hits:
            assert hit.kind == "message" and hit.thread_id == "alpha" and hit.role == "human"
            assert hit.source_ids == (hit.message_id,) and hit.ref in (1, 2, 3)


def test_search_scopes_kinds_and_limits(target: Any) -> None:
    with opened(target) as store:
        _search_fixture(store)
        assert {h.thread_id for h in store.search("refund")} == {"alpha", "beta"}
        assert {h.thread_id for h in store.search("refund", thread_id="beta")} == {"beta"}
        facts = store.search("receipt", kinds=("fact",))
        assert [(h.kind, h.text, h.source_ids, h.ref) for h in facts] == [
            ("fact", "refund: 30 business days, receipt required", ("m1",), None)
        ]
        assert store.search("receipt", kinds=("message",)) == []
        both = store.search("refund", thread_id="alpha")
        assert {h.kind for h in both} == {"message", "fact"}
        assert len(store.search("refund", limit=2)) == 2
        m1 = next(h for h in both if h.message_id == "m1")
        assert m1.state == DISTILLED and m1.text.startswith("The refund policy")
        assert store.search("SK4021 refund") == []


def test_search_finds_words_deep_in_a_large_message(target: Any) -> None:
    rng = random.Random(5)
    body = " ".join(f"w{rng.randrange(10**9):09d}" for _ in range(60_000))  # ~600 KB
    with opened(target) as store:
        store.archive("big", [plain("big", body + " zqneedle tail")])
        assert [h.message_id for h in store.search("zqneedle", thread_id="big")] == ["big"]
        [(_, message)] = store.get_messages("big", ids=["big"])
        assert message.content.endswith("tail")
        # Over 1 MB of distinct words (past what one PostgreSQL tsvector holds): archived
        # whole all the same, and found by its words (PostgreSQL: the first 900 KB of them).
        huge = "zqfirst " + " ".join(f"v{n:011d}" for n in range(100_000))
        store.archive("big", [plain("huge", huge)])
        assert [h.message_id for h in store.search("zqfirst", thread_id="big")] == ["huge"]
        [(_, message)] = store.get_messages("big", ids=["huge"])
        assert message.content == huge


# -- isolation and validation -----------------------------------------------------


def test_threads_never_see_each_other(target: Any) -> None:
    with opened(target) as store:
        for tid in ("alpha", "Alpha", "alpha%", "alph_"):
            store.archive(tid, [plain("same", f"words of {tid} zq{len(tid)}x")])
            store.commit_distillation(
                tid, originals=[plain("same", f"words of {tid} zq{len(tid)}x")],
                facts=[FactRecord(f"fact of {tid}", ("same",), 2)], log=OK_LOG, anchor=tid,
            )  # fmt: skip
        for tid in ("alpha", "Alpha", "alpha%", "alph_"):
            assert [f.text for f in store.facts(tid)] == [f"fact of {tid}"]
            assert [m.content for _, m in store.get_messages(tid, ids=["same"])] == [
                f"words of {tid} zq{len(tid)}x"
            ]
            assert {h.thread_id for h in store.search("words", thread_id=tid)} == {tid}
            assert store.load_thread(tid).anchor == tid
            assert store.stats(tid)["threads"] == 1
        store.delete_thread("alpha%")
        assert store.stats("alpha%")["messages_archived"] == 0
        assert store.stats("alpha")["messages_archived"] == 1
        assert store.stats()["threads"] == 3


@pytest.mark.parametrize("bad", ["", None, "bad\ud800id", 7])
def test_bad_thread_ids_are_refused_by_every_method(target: Any, bad: Any) -> None:
    with opened(target) as store:
        calls = [
            lambda: store.archive(bad, [plain("a", "x")]),
            lambda: store.commit_distillation(bad, originals=[], facts=[], log=OK_LOG, anchor=None),
            lambda: store.set_memory_cap(bad, 3),
            lambda: store.record_failure(bad, OK_LOG),
            lambda: store.delete_thread(bad),
            lambda: store.load_thread(bad),
            lambda: store.last_distillation_id(bad),
            lambda: store.distilled_digests(bad, ["a"]),
            lambda: store.get_messages(bad, ids=["a"]),
            lambda: store.distillations(bad),
            lambda: store.facts(bad),
            lambda: store.stats(bad) if bad is not None else store.stats(""),
            lambda: store.search("x", thread_id=bad if bad is not None else ""),
        ]
        for call in calls:
            with pytest.raises(InvalidThreadIdError):
                call()
        assert store.threads() == []


def test_unstorable_ids_are_simply_not_there(target: Any) -> None:
    with opened(target) as store:
        store.archive("t", [plain("a", "x")])
        assert store.get_messages("t", ids=["\ud800"]) == []
        assert store.distilled_digests("t", ["\ud800"]) == {}
        with pytest.raises(StoreError, match="not valid Unicode"):
            store.archive("t", [dataclasses.replace(plain("b", "x"), text="\ud800")])


def test_read_only_reads_and_refuses_writes(target: Any) -> None:
    with opened(target) as store:
        store.archive("t", [plain("a", "hello zqro")])
    with opened(target, read_only=True) as ro:
        assert [h.message_id for h in ro.search("zqro")] == ["a"]
        assert ro.load_thread("t").transcript["a"].state == "archived"
        with pytest.raises(StoreError, match="read-only"):
            ro.archive("t", [plain("b", "x")])
        with pytest.raises(StoreError, match="read-only"):
            ro.delete_thread("t")
    with opened(target) as store:
        assert store.stats("t")["messages_archived"] == 1


# -- async twins ------------------------------------------------------------------


def test_async_twins_behave_like_the_sync_methods(target: Any) -> None:
    async def main(store: Any) -> None:
        assert await store.aarchive("t", [plain("a", "alpha zqasync"), plain("b", "beta")]) == {
            "a": 1,
            "b": 2,
        }
        committed = await store.acommit_distillation(
            "t", originals=[plain("a", "alpha zqasync")],
            facts=[FactRecord("fact zqasync", ("a",), 2)], log=OK_LOG, anchor=None,
        )  # fmt: skip
        with pytest.raises(DistilledElsewhere):
            await store.acommit_distillation(
                "t", originals=[plain("a", "alpha zqasync")], facts=[], log=OK_LOG, anchor=None
            )
        await store.aset_memory_cap("t", 9)
        await store.arecord_failure("t", DistillationLog("x", "failed"))
        assert await store.aload_thread("t") == store.load_thread("t")
        assert await store.alast_distillation_id("t") == committed.log_id
        assert await store.adistilled_digests("t", ["a", "b"]) == store.distilled_digests(
            "t", ["a", "b"]
        )
        assert await store.aget_messages("t", refs=[1, 2]) == store.get_messages("t", refs=[1, 2])
        assert await store.asearch("zqasync") == store.search("zqasync")
        assert await store.athreads() == ["t"]
        assert await store.astats() == store.stats()
        assert await store.adistillations("t") == store.distillations("t")
        assert await store.afacts("t") == store.facts("t")
        with pytest.raises(InvalidThreadIdError):
            await store.aarchive("", [])
        await store.adelete_thread("t")
        assert await store.athreads() == []
        await store.aclose()

    asyncio.run(main(open_archive(target)))


# -- concurrency: processes and threads on one thread id ------------------------------


def _fork(work: Any) -> tuple[int, Any]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            out = repr(work())
        except BaseException as exc:
            out, code = repr(("crashed", repr(exc))), 3
        with os.fdopen(write, "w") as pipe:
            pipe.write(out)
        os._exit(code)
    os.close(write)
    return pid, os.fdopen(read)


def _join(pid: int, pipe: Any) -> Any:
    import ast

    with pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return ast.literal_eval(text)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_processes_archiving_one_thread_number_each_message_once(target: Any) -> None:
    with opened(target):
        pass  # created before the workers race
    ids = [f"m{i}" for i in range(120)]

    def work(seed: int) -> Any:
        rng = random.Random(seed)
        seen: dict[str, int] = {}
        with opened(target) as store:
            for _ in range(25):
                batch = rng.sample(ids, rng.randint(1, 12))
                seen.update(store.archive("shared", [plain(i, f"text of {i}") for i in batch]))
        return seen

    children = [_fork(lambda s=s: work(s)) for s in range(4)]
    results = [_join(pid, pipe) for pid, pipe in children]
    assert all(isinstance(r, dict) for r in results), results
    with opened(target) as store:
        numbers = {m: ref for m, ref in store.load_thread("shared").transcript.items()}
        got = store.get_messages("shared", ids=list(numbers))
    refs = sorted(ref for ref, _ in got)
    assert refs == list(range(1, len(refs) + 1)), "archive numbers are not dense"
    by_id = {m.id: ref for ref, m in got}
    for seen in results:
        for message_id, ref in seen.items():
            assert by_id[message_id] == ref, f"{message_id} numbered twice"
    assert set(numbers) == {m for seen in results for m in seen}
    assert not check_db(target)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_processes_racing_to_distill_the_same_messages_distill_them_once(target: Any) -> None:
    with opened(target) as store:
        store.archive("race", [plain(f"m{i}", f"text {i}") for i in range(10)])
    rounds = 5
    read, write = os.pipe()  # the start signal: closing it releases every worker at once

    def work(n: int) -> Any:
        os.close(write)
        outcomes = []
        with opened(target) as store:
            os.read(read, 1)
            for r in range(rounds):
                originals = [
                    plain(f"m{r * 2}", f"text {r * 2}"),
                    plain(f"m{r * 2 + 1}", f"text {r * 2 + 1}"),
                ]
                try:
                    store.commit_distillation(
                        "race", originals=originals,
                        facts=[FactRecord(f"fact {r} by {n}", (originals[0].message_id,), 2)],
                        log=OK_LOG, anchor=None,
                    )  # fmt: skip
                    outcomes.append("ok")
                except DistilledElsewhere:
                    outcomes.append("elsewhere")
        return outcomes

    children = [_fork(lambda n=n: work(n)) for n in range(4)]
    os.close(read)
    os.close(write)
    results = [_join(pid, pipe) for pid, pipe in children]
    for r in range(rounds):
        column = [result[r] for result in results]
        assert sorted(column) == ["elsewhere"] * 3 + ["ok"], (r, results)
    with opened(target) as store:
        assert store.stats("race")["distillations"] == rounds
        assert len(store.facts("race")) == rounds
    assert not check_db(target)


def test_python_threads_sharing_one_store(target: Any) -> None:
    import threading

    errors: list[str] = []
    with opened(target) as store:

        def work(n: int) -> None:
            try:
                for i in range(30):
                    store.archive(
                        "shared", [plain(f"m{i}", f"text {i}"), plain(f"own{n}-{i}", "x")]
                    )
                    store.last_distillation_id("shared")
                    store.load_thread("shared")
            except Exception as exc:
                errors.append(repr(exc))

        workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors, errors[:3]
        snapshot = store.load_thread("shared")
        assert len(snapshot.transcript) == 30 + 4 * 30
        refs = sorted(ref for ref, _ in store.get_messages("shared", ids=list(snapshot.transcript)))
        assert refs == list(range(1, 151))


# -- crash safety: the client killed mid-write ------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_killed_client_loses_no_acknowledged_write(target: Any, tmp_path: Path) -> None:
    with opened(target):
        pass
    ack = tmp_path / "acks"
    rng = random.Random(3)
    for run in range(4):
        pid = os.fork()
        if pid == 0:
            fd = os.open(ack, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            with opened(target) as store:
                for n in range(10_000):
                    tid = f"k{n % 3}"
                    batch = [plain(f"r{run}-{n}-{j}", f"zq{run}x{n}x{j} words") for j in range(5)]
                    store.archive(tid, batch)
                    if n % 4 == 3:
                        store.commit_distillation(
                            tid, originals=batch[:2],
                            facts=[FactRecord(f"fact {run} {n}", (batch[0].message_id,), 2)],
                            log=OK_LOG, anchor=None,
                        )  # fmt: skip
                    os.write(fd, f"{tid} {' '.join(r.message_id for r in batch)}\n".encode())
            os._exit(0)
        time.sleep(rng.uniform(0.3, 1.2))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), "the writer finished before it was killed"
    conn = raw_connect(target)
    try:
        acked = 0
        for line in ack.read_text().splitlines():
            tid, *ids = line.split()
            states = dict(
                conn.execute(
                    "SELECT message_id, state FROM messages WHERE thread_id = ?", (tid,)
                ).fetchall()
            )
            for message_id in ids:
                acked += 1
                assert message_id in states, f"acknowledged {message_id} of {tid} is lost"
    finally:
        conn.close()
    assert acked > 0
    assert not check_db(target)
    with opened(target) as store:  # and it goes on
        store.archive("k0", [plain("after", "after the crash")])
        for tid in ("k0", "k1", "k2"):
            ids = list(store.load_thread(tid).transcript)
            refs = sorted(r for r, _ in store.get_messages(tid, ids=ids))
            assert refs == list(range(1, len(refs) + 1))
