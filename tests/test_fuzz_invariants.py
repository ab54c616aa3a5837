"""Hostile and broken input, through every door: handled correctly or refused clearly.

Hypothesis generates message sequences with random roles, mismatched and duplicated
tool-call ids, huge and empty contents, control characters, lone surrogates,
nested content blocks and thread ids with quotes, slashes and SQL. Each call either
returns a view that satisfies every invariant (``invariants.ThreadChecker``) or
raises a ``ContextDistillError`` subclass with a clear message; anything else is a
bug. The archive must pass its checks after every example.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from invariants import (
    ThreadChecker,
    cheap_count,
    check_db,
    check_idempotent,
    mark_of,
    raw_connect,
    tool_pairing,
)
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.errors import ContextDistillError
from context_distill.messages import REDUCED_MARK

# bench/soak.py runs these campaigns at size: it sets the examples a call and no database.
_SOAK = os.environ.get("CONTEXT_DISTILL_FUZZ_EXAMPLES")
EXAMPLES = int(_SOAK) if _SOAK else 40
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    **({"database": None} if _SOAK else {}),
)

# -- strategies -------------------------------------------------------------------

CONTROL = ["\x00", "\x1b[31m", "\r\n", "\u202e", "\ufeff", "\x7f", "\t\v\f", "\u2028", "\\"]
HOSTILE_IDS = [
    "'; DROP TABLE messages; --",
    '"quoted" thread',
    "../../etc/passwd",
    "a/b\\c",
    "%_*",
    "thread\x00nul",
    "Robert'); DELETE FROM facts WHERE ('1'='1",
    "🧵 thread",
    " ",
    "x" * 300,
    'MATCH NEAR("a" b) OR NOT *',
]

plain_text = st.text(st.characters(codec="utf-8"), max_size=40)
any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # lone surrogates too
huge_text = st.builds(
    lambda piece, n: piece * n,
    st.sampled_from(["a", "word ", "\x00", "é", "{", "€ 3 "]),
    st.integers(2_000, 40_000),
)
texts = st.one_of(
    plain_text,
    plain_text,
    st.just(""),
    st.sampled_from(CONTROL),
    st.builds(lambda a, c, b: a + c + b, plain_text, st.sampled_from(CONTROL), plain_text),
    huge_text,
    any_text,
)


def nested(depth: int) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": "deep"}
    for _ in range(depth):
        block = {"type": "json", "json": block}
    return block


blocks = st.one_of(
    texts,
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.just({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
    st.builds(lambda d: nested(d), st.integers(1, 40)),
    st.builds(lambda t: {"type": "json", "json": {"k": t, "n": [1, 2.5, None]}}, plain_text),
)
contents = st.one_of(texts, st.lists(blocks, max_size=4))


def _encodable(block: Any) -> bool:
    try:
        json.dumps(block, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        return False
    return True


call_ids = st.sampled_from(["c1", "c2", "c3", "call-'\"", "c/4"])
ODD_IDS = ["'--", "a b", "x/y\\z", '"', "é", "\x00", "%_", "DROP TABLE x;"]


valid_text = st.one_of(
    plain_text,
    plain_text,
    plain_text,
    st.just(""),
    st.sampled_from(CONTROL),
    st.builds(lambda a, c, b: a + c + b, plain_text, st.sampled_from(CONTROL), plain_text),
    huge_text,
)
valid_content = st.one_of(
    valid_text, valid_text, st.lists(st.one_of(blocks.filter(_encodable)), max_size=4)
)


@st.composite
def units(draw: st.DrawFn, with_ids: bool, junk: bool = True) -> list[BaseMessage | Any]:
    """A few messages: mostly a well-formed unit with hostile content, sometimes broken."""

    used: list[str] = []

    def mid() -> str | None:
        roll = draw(st.integers(0, 11))
        if roll == 0 and used:  # a duplicate within the batch: must be refused
            return draw(st.sampled_from(used))
        if roll == 1:  # odd but unique (reusing a distilled id is a bug of its own)
            found = f"{draw(st.sampled_from(ODD_IDS))}{next(_counter)}"
        elif with_ids or draw(st.booleans()):
            found = f"u{next(_counter)}"
        else:
            return None
        used.append(found)
        return found

    def content(hostile: bool = False) -> Any:
        return draw(contents if hostile else valid_content)

    kind = draw(
        st.sampled_from(
            ["human", "ai", "calls", "calls", "calls", "system", "orphan", "broken"]
            + (["junk"] if junk else [])
        )
    )
    hostile = draw(st.integers(0, 7)) == 0
    try:
        if kind == "human":
            return [HumanMessage(content=content(hostile), id=mid())]
        if kind == "ai":
            return [AIMessage(content=content(hostile), id=mid())]
        if kind == "system":
            return [SystemMessage(content=content(hostile), id=mid())]
        if kind in ("calls", "broken"):
            width = draw(st.integers(1, 3))
            ids = [f"call{next(_counter)}" for _ in range(width)]
            if kind == "broken" or hostile:
                ids = [draw(st.one_of(call_ids, st.sampled_from(ids))) for _ in ids]
            args = [{"q": draw(valid_text)} for _ in ids]
            call = AIMessage(
                content=content(),
                id=mid(),
                tool_calls=[
                    {"name": draw(st.sampled_from(["f", "g", "run tests"])), "args": a, "id": i}
                    for i, a in zip(ids, args, strict=True)
                ],
            )
            results = [ToolMessage(content=content(hostile), id=mid(), tool_call_id=i) for i in ids]
            results = draw(st.permutations(results))
            if kind == "broken":
                results = draw(st.lists(st.sampled_from(results), max_size=4))
            return [call, *results]
        if kind == "orphan":
            return [ToolMessage(content=content(), id=mid(), tool_call_id=draw(call_ids))]
    except Exception:
        assume(False)  # LangChain itself refuses to build it: not an input we can get
    # What convert_to_messages cannot read either (dicts, tuples and strings are messages).
    return [draw(st.sampled_from([{"content": "no role"}, ("robot", "x"), None, 42]))]


def _batch(parts: list[list[Any]]) -> list[Any]:
    return [m for part in parts for m in part]


@st.composite
def turns(draw: st.DrawFn, with_ids: bool, junk: bool = True) -> list[list[BaseMessage]]:
    """A first batch with the task (after an optional system prompt), then anything.

    The task comes first because a thread that opens with an assistant message hits
    a known reordering bug (``test_assistant_greeting_before_the_task_keeps_its_place``);
    everything after it is arbitrary.
    """
    start: list[BaseMessage] = [HumanMessage(draw(valid_text), id="task")]
    if draw(st.booleans()):
        start.insert(0, SystemMessage(draw(valid_text), id="system"))
    rest = draw(
        st.lists(st.lists(units(with_ids, junk), min_size=1, max_size=4).map(_batch), max_size=8)
    )
    return [start, *rest]


thread_ids = st.one_of(
    st.sampled_from(HOSTILE_IDS), st.text(st.characters(codec="utf-8"), min_size=1, max_size=20)
)

# -- the harness ------------------------------------------------------------------

_counter = itertools.count()


@pytest.fixture(scope="module")
def archive() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.db"
        SQLiteMemoryStore(path).close()
        yield path
        assert not check_db(path), "the shared fuzz archive failed its checks"


def clear_error(exc: ContextDistillError) -> None:
    text = str(exc)
    assert text.strip(), f"{type(exc).__name__} without a message"
    assert len(text) < 2_000, f"error message of {len(text)} characters"


def drive(
    engine: ContextDistiller,
    tid: str,
    batches: list[list[BaseMessage]],
    *,
    style: str,
    door: Any = None,
) -> tuple[int, int]:
    """Feed batches turn by turn; a refused batch is dropped, as a caller would."""
    checker = ThreadChecker(engine, tid, cheap_count)
    history: list[BaseMessage] = []
    held: list[BaseMessage] = []
    accepted = refused = 0
    update = None
    try:
        for batch in batches:
            sent = (history if style == "view" else held) + batch
            try:
                update = engine.update(tid, sent) if door is None else door(tid, sent)
            except ContextDistillError as exc:
                clear_error(exc)
                event(f"refused: {type(exc).__name__}")
                refused += 1
                continue
            accepted += 1
            if update.distilled:
                event("distilled")
            if any(mark_of(m) == REDUCED_MARK for m in update.view):
                event("reduced a tool result")
            history = history + batch
            held = list(update.view)
            problems = checker.check(history, update)
            assert not problems, problems[:5]
        if update is not None and style == "view" and door is None:
            assert not check_idempotent(engine, tid, history, update)
    finally:
        checker.close()
    return accepted, refused


def engine_for(path: Path, budget: int, reduce_at: int | None) -> ContextDistiller:
    return ContextDistiller(
        SQLiteMemoryStore(path),
        budget_tokens=budget,
        token_counter=cheap_count,
        max_tool_result_tokens=reduce_at,
    )


# -- the engine door ----------------------------------------------------------------


@SETTINGS
@given(
    tid=thread_ids,
    batches=turns(with_ids=False),
    budget=st.sampled_from([120, 400, 3000]),
    reduce_at=st.sampled_from([None, 30, 200]),
)
def test_engine_view_style(
    archive: Path, tid: str, batches: list[list[BaseMessage]], budget: int, reduce_at: int | None
) -> None:
    tid = f"{tid}#{next(_counter)}"
    engine = engine_for(archive, budget, reduce_at)
    try:
        drive(engine, tid, batches, style="view")
        conn = raw_connect(archive)
        from invariants import check_thread

        assert not check_thread(conn, tid)
        conn.close()
    finally:
        engine.store.close()


@SETTINGS
@given(
    tid=thread_ids,
    batches=turns(with_ids=True),
    budget=st.sampled_from([120, 400]),
    reduce_at=st.sampled_from([None, 30]),
)
def test_engine_rewrite_style(
    archive: Path, tid: str, batches: list[list[BaseMessage]], budget: int, reduce_at: int | None
) -> None:
    tid = f"{tid}#{next(_counter)}"
    engine = engine_for(archive, budget, reduce_at)
    try:
        drive(engine, tid, batches, style="rewrite")
    finally:
        engine.store.close()


@SETTINGS
@given(tid=thread_ids, batches=turns(with_ids=False), budget=st.sampled_from([120, 400]))
def test_engine_async_twin(
    archive: Path, tid: str, batches: list[list[BaseMessage]], budget: int
) -> None:
    tid = f"{tid}#{next(_counter)}"
    engine = engine_for(archive, budget, 60)
    try:
        drive(
            engine,
            tid,
            batches,
            style="view",
            door=lambda t, sent: asyncio.run(engine.aupdate(t, sent)),
        )
    finally:
        engine.store.close()


# -- the other doors ----------------------------------------------------------------


@SETTINGS
@given(tid=thread_ids, batches=turns(with_ids=True), mode=st.sampled_from(["view", "rewrite"]))
def test_langgraph_node(
    archive: Path, tid: str, batches: list[list[BaseMessage]], mode: str
) -> None:
    from context_distill.langgraph import LLM_INPUT_KEY, DistillNode

    tid = f"{tid}#{next(_counter)}"
    engine = engine_for(archive, 120, 60)
    node = DistillNode(engine, mode=mode)  # type: ignore[arg-type]
    state: list[BaseMessage] = []
    config = {"configurable": {"thread_id": tid}}
    try:
        for batch in batches:
            try:
                out = node.invoke({"messages": state + batch}, config)
            except ContextDistillError as exc:
                clear_error(exc)
                continue
            if mode == "view":
                state = state + batch
                view = out[LLM_INPUT_KEY].value
            else:
                state = list(out["messages"].value) if "messages" in out else state + batch
                view = state
            assert not tool_pairing(view)
    finally:
        engine.store.close()


@settings(SETTINGS, max_examples=max(EXAMPLES // 2, 1))
@given(
    tid=thread_ids,
    batches=turns(with_ids=True, junk=False),  # LangGraph coerces junk before any door
    mode=st.sampled_from(["view", "rewrite"]),
)
def test_agent_middleware(
    archive: Path, tid: str, batches: list[list[BaseMessage]], mode: str
) -> None:
    tid = f"{tid}#{next(_counter)}"
    agent, seen = _agent(archive, mode)
    config = {"configurable": {"thread_id": tid}}
    for batch in batches:
        seen.clear()
        try:
            agent.invoke({"messages": batch}, config)
        except ContextDistillError as exc:
            clear_error(exc)
            event(f"refused: {type(exc).__name__}")
            break  # the thread's state now holds the refused batch: stop here
        assert seen, "the model was not called"
        assert not tool_pairing(seen[-1])


_AGENTS: dict[tuple[Path, str], tuple[Any, list[list[BaseMessage]]]] = {}


def _agent(archive: Path, mode: str) -> tuple[Any, list[list[BaseMessage]]]:
    """One create_agent app per archive and mode (building one is slow); threads differ."""
    key = (archive, mode)
    if key not in _AGENTS:
        from langchain.agents import create_agent
        from langgraph.checkpoint.memory import InMemorySaver

        from context_distill.middleware import ContextDistillMiddleware
        from context_distill.testing import ScriptedChatModel

        seen: list[list[BaseMessage]] = []

        def respond(messages: list[BaseMessage]) -> str:
            seen.append(list(messages))
            return "noted"

        engine = engine_for(archive, 120, 60)
        agent = create_agent(
            ScriptedChatModel(respond=respond, record=False),
            [],
            middleware=[ContextDistillMiddleware(engine, mode=mode)],  # type: ignore[arg-type]
            checkpointer=InMemorySaver(),
        )
        _AGENTS[key] = (agent, seen)
    return _AGENTS[key]


@settings(SETTINGS, max_examples=max(EXAMPLES // 2, 1))
@given(
    tid=thread_ids,
    batches=turns(with_ids=False, junk=False),  # junk: test_chat_history_refuses_non_messages
    mode=st.sampled_from(["view", "rewrite"]),
)
def test_chat_history(archive: Path, tid: str, batches: list[list[BaseMessage]], mode: str) -> None:
    from context_distill.history import DistillingChatMessageHistory

    tid = f"{tid}#{next(_counter)}"
    engine = engine_for(archive, 120, 60)
    inner = InMemoryChatMessageHistory()
    history = DistillingChatMessageHistory(inner, engine, thread_id=tid, mode=mode)  # type: ignore[arg-type]
    try:
        for batch in batches:
            before = list(inner.messages)
            try:
                history.add_messages(batch)
            except ContextDistillError as exc:
                clear_error(exc)
                # A refused batch is in the wrapped history now; take it out again.
                inner.clear()
                inner.add_messages(before)
                continue
            assert not tool_pairing(history.messages)
    finally:
        engine.store.close()


@contextlib.contextmanager
def recall_engine() -> Iterator[ContextDistiller]:
    """Two threads in one archive; the recall tool serves thread A."""
    with tempfile.TemporaryDirectory() as folder:
        engine = engine_for(Path(folder) / "recall.db", 120, 60)
        for tid, secret in (("A", "zqalpha"), ("B", "zqbravo")):
            history: list[BaseMessage] = [
                SystemMessage("be brief", id="s"),
                HumanMessage("task: find the invoice", id="t"),
            ]
            for i in range(12):
                history.append(
                    AIMessage(f"{secret} step {i} invoice 'x' \"y\" NEAR OR * #3", id=f"a{i}")
                )
                engine.update(tid, history)
        try:
            yield engine
        finally:
            engine.store.close()


@pytest.fixture(scope="module")
def recall_archive() -> Iterator[ContextDistiller]:
    with recall_engine() as engine:
        yield engine


@settings(SETTINGS, max_examples=max(EXAMPLES * 2 // 3, 1))
@given(
    query=st.one_of(
        any_text,
        st.sampled_from(HOSTILE_IDS),
        huge_text,
        st.sampled_from(["#1-#99999", "#0", "# 3 - 1", "a0", "zqbravo", "invoice zqbravo"]),
        st.builds(lambda a, b: a + " invoice " + b, any_text, st.sampled_from(CONTROL)),
    )
)
def test_recall_tool_and_search(recall_archive: ContextDistiller, query: str) -> None:
    from context_distill.tools import make_recall_tool

    tool = make_recall_tool(recall_archive)
    answer = tool.invoke({"query": query}, {"configurable": {"thread_id": "A"}})
    assert isinstance(answer, str) and answer
    assert "zqbravo" not in answer.replace(query, ""), "recall in A shows thread B"
    hits = recall_archive.store.search(query, thread_id="A")
    assert all(hit.thread_id == "A" for hit in hits)


# -- single hostile values, spelled out ---------------------------------------------


def test_thread_ids_with_quotes_slashes_and_sql_round_trip(tmp_path: Path) -> None:
    engine = engine_for(tmp_path / "ids.db", 60, None)
    for n, raw in enumerate(HOSTILE_IDS):
        history: list[BaseMessage] = [HumanMessage(f"task {n}", id=f"t{n}")]
        for i in range(10):
            history.append(AIMessage(f"zqhostile{n}x{i} some words here", id=f"a{n}-{i}"))
            update = engine.update(raw, history)
            assert not ThreadChecker(engine, raw, cheap_count).check(history, update)
        assert engine.store.stats(raw)["distillations"] > 0
        assert raw in engine.store.threads()
        hits = engine.store.search(f"zqhostile{n}x0", thread_id=raw)
        assert hits and all(hit.thread_id == raw for hit in hits)
    assert len(engine.store.threads()) == len(HOSTILE_IDS)
    assert not check_db(tmp_path / "ids.db")
    engine.store.close()


@pytest.mark.parametrize("tid", ["", "bad\ud800id", 7, None])
def test_unusable_thread_ids_are_refused_with_the_documented_error(
    tmp_path: Path, tid: Any
) -> None:
    engine = engine_for(tmp_path / "bad.db", 60, None)
    with pytest.raises(ContextDistillError, match="thread"):
        engine.update(tid, [HumanMessage("hi", id="h")])
    engine.store.close()


@pytest.mark.parametrize("depth", [200, 5_000])
def test_deeply_nested_content_is_handled_or_refused(tmp_path: Path, depth: int) -> None:
    engine = engine_for(tmp_path / "deep.db", 60, None)
    history: list[BaseMessage] = [HumanMessage("task", id="t")]
    history.append(AIMessage(content=[nested(depth)], id="deep"))
    for i in range(8):
        history.append(AIMessage(f"filler number {i} " * 4, id=f"f{i}"))
    try:
        update = engine.update("deep", history)
    except ContextDistillError as exc:
        clear_error(exc)
        assert "deep" in str(exc) or "message 1" in str(exc)
        return
    assert not ThreadChecker(engine, "deep", cheap_count).check(history, update)
    engine.store.close()


@pytest.mark.parametrize(
    "extra",
    [
        {"when": __import__("datetime").datetime(2024, 1, 1)},
        {"blob": b"\x00\xff"},
        {"score": float("nan")},
        {"ids": {1, 2}},
    ],
    ids=["datetime", "bytes", "nan", "set"],
)
def test_message_that_cannot_be_archived_is_refused_when_it_arrives(
    tmp_path: Path, extra: dict[str, Any]
) -> None:
    """Refuse at arrival, naming the message, not turns later when it is distilled.

    Otherwise every later turn of the thread raises and the thread cannot move on.
    """
    engine = engine_for(tmp_path / "kw.db", 60, None)
    history: list[BaseMessage] = [HumanMessage("task", id="t")]
    odd = AIMessage("a reply", id="odd", additional_kwargs=extra)
    with pytest.raises(ContextDistillError, match="odd"):
        engine.update("kw", [*history, odd])
    # The thread goes on without it.
    for i in range(10):
        history.append(AIMessage(f"filler number {i} " * 4, id=f"f{i}"))
        update = engine.update("kw", history)
    assert update.stats.distillations > 0
    engine.store.close()


def test_reused_id_of_a_distilled_message_is_not_silently_lost(tmp_path: Path) -> None:
    """A new message that reuses the id of one already distilled must not vanish."""
    engine = engine_for(tmp_path / "reuse.db", 60, None)
    history: list[BaseMessage] = [HumanMessage("task", id="t")]
    for i in range(8):
        history.append(AIMessage(f"filler number {i} " * 4, id=f"f{i}"))
        update = engine.update("reuse", history)
    assert "f0" not in {m.id for m in update.view}, "setup: f0 should be distilled by now"
    reused = AIMessage("zqsecret the deploy key is K-42 " * 3, id="f0")
    history.append(reused)
    try:
        engine.update("reuse", history)
    except ContextDistillError as exc:
        clear_error(exc)
        return  # refusing the reused id is fine
    for i in range(8, 16):
        history.append(AIMessage(f"more filler {i} " * 4, id=f"f{i}"))
        update = engine.update("reuse", history)
    shown = any(m is reused for m in update.view)
    hits = engine.store.search("zqsecret", thread_id="reuse")
    assert shown or any(h.kind == "message" and "K-42" in h.text for h in hits), (
        "the message was neither shown nor archived: lost"
    )
    engine.store.close()


def test_store_refuses_other_content_under_an_archived_id(tmp_path: Path) -> None:
    """The archive never keeps the old message and drops a new one that reuses its id."""
    from context_distill.errors import StoreError
    from context_distill.messages import digest, text_of, to_json
    from context_distill.store import DistillationLog, FactRecord, MessageRecord

    def record(message: BaseMessage) -> MessageRecord:
        assert message.id is not None
        return MessageRecord(
            message.id, message.type, digest(message), 5, text_of(message), to_json(message)
        )

    store = SQLiteMemoryStore(tmp_path / "reuse-store.db")
    first = AIMessage("the original text", id="m1")
    store.archive("t", [record(first)])
    store.archive("t", [record(first)])  # the same message again: fine
    log = DistillationLog(distiller="x", outcome="ok", groups=1, messages=1, facts=1)
    other = AIMessage("different text under the same id", id="m1")
    with pytest.raises(StoreError, match="other content"):
        store.archive("t", [record(other)])
    with pytest.raises(StoreError, match="other content"):
        store.commit_distillation(
            "t",
            originals=[record(other)],
            facts=[FactRecord("f", ("m1",), 2)],
            log=log,
            anchor=None,
        )
    store.commit_distillation(
        "t", originals=[record(first)], facts=[FactRecord("f", ("m1",), 2)], log=log, anchor=None
    )
    with pytest.raises(StoreError, match="other content"):
        store.commit_distillation(
            "t",
            originals=[record(other)],
            facts=[FactRecord("g", ("m1",), 2)],
            log=log,
            anchor=None,
        )
    [(_, kept)] = store.get_messages("t", ids=["m1"])
    assert kept.content == "the original text"
    assert not check_db(tmp_path / "reuse-store.db")
    store.close()


def test_rewound_history_keeps_the_latest_human_message(tmp_path: Path) -> None:
    """LangGraph time travel: the caller resumes from an earlier checkpoint."""
    engine = engine_for(tmp_path / "rewind.db", 200, None)
    history: list[BaseMessage] = [SystemMessage("sys", id="s"), HumanMessage("task", id="t")]
    marks = []
    for i in range(30):
        if i % 5 == 0:
            history.append(HumanMessage(f"question {i}: what about {i}?", id=f"h{i}"))
        history.append(AIMessage(f"answer part {i} " * 6, id=f"a{i}"))
        engine.update("rewind", history)
        marks.append(len(history))
    earlier = history[: marks[6]]
    update = engine.update("rewind", earlier)
    assert not ThreadChecker(engine, "rewind", cheap_count).check(earlier, update)
    engine.store.close()


def test_assistant_greeting_before_the_task_keeps_its_place(tmp_path: Path) -> None:
    """A chat that opens with the assistant's greeting: the view must not reorder it.

    Moving the user's first message in front of the greeting makes the greeting look
    like the answer to it.
    """
    engine = engine_for(tmp_path / "greet.db", 400, None)
    history: list[BaseMessage] = [
        AIMessage("Hello! How can I help you today?", id="greeting"),
        HumanMessage("What is the refund policy?", id="question"),
    ]
    update = engine.update("greet", history)
    assert [m.id for m in update.view] == ["greeting", "question"]
    engine.store.close()


def test_cli_refuses_bad_files_with_line_number_and_writes_nothing(tmp_path: Path) -> None:
    from context_distill.cli import main

    good = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": "ok"},
    ]
    bad_lines = [
        b"{not json",
        b'{"role": "robot", "content": "x"}',
        b'{"role": "user", "content": "\\ud800"}',
        b"\xff\xfe",
        b'{"role": "tool", "content": "r", "tool_call_id": "nope"}',
        b"[1, 2]",
        b'{"role": "user", "content": 5}',
    ]
    for n, bad in enumerate(bad_lines):
        path = tmp_path / f"bad{n}.jsonl"
        lines = [json.dumps(x).encode() for x in good]
        lines.insert(2, bad)
        path.write_bytes(b"\n".join(lines) + b"\n")
        db = tmp_path / f"out{n}.db"
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["replay", str(path), "--db", str(db), "--budget", "50"])
        text = err.getvalue()
        assert code != 0, f"bad line {bad!r} accepted"
        assert "line 3" in text, f"bad line {bad!r}: message does not name line 3: {text!r}"
        if db.exists():
            conn = raw_connect(db)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
                rows = (
                    conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
                    if "messages" in tables
                    else 0
                )
            finally:
                conn.close()
            assert rows == 0, f"bad line {bad!r}: {rows} messages written"


def test_cli_console_script_exit_code(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"role": "user", "content": "hi"}\n{oops\n')
    db = tmp_path / "never.db"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from context_distill.cli import main; sys.exit(main())",
            "replay",
            str(path),
            "--db",
            str(db),
            "--budget",
            "50",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "line 2" in done.stderr
    assert not db.exists() or raw_connect(db).execute(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'messages'"
    ).fetchone()[0] in (0, 1)


# -- the checker itself must be able to fail ------------------------------------------


def test_chat_history_refuses_non_messages(tmp_path: Path) -> None:
    from context_distill.history import DistillingChatMessageHistory

    engine = engine_for(tmp_path / "junk.db", 120, None)
    history = DistillingChatMessageHistory(InMemoryChatMessageHistory(), engine, thread_id="j")
    history.add_messages([HumanMessage("task", id="t")])
    for junk in ({"content": "no role"}, ("robot", "x"), None, 42):
        with pytest.raises(ContextDistillError):
            history.add_messages([junk])  # type: ignore[list-item]
    engine.store.close()


def test_checker_catches_broken_views(tmp_path: Path) -> None:
    from dataclasses import replace

    engine = engine_for(tmp_path / "self.db", 300, None)
    history: list[BaseMessage] = [SystemMessage("sys", id="s"), HumanMessage("task", id="t")]
    for i in range(10):
        history.append(
            AIMessage("", id=f"a{i}", tool_calls=[{"name": "f", "args": {}, "id": f"c{i}"}])
        )
        history.append(ToolMessage(f"result {i} zqr{i}", tool_call_id=f"c{i}", id=f"r{i}"))
        history.append(AIMessage(f"looked at result {i}", id=f"x{i}"))
        update = engine.update("self", history)
    checker = ThreadChecker(engine, "self", cheap_count)
    assert not checker.check(history, update)
    view = update.view

    def broken(new_view: list[BaseMessage], what: str) -> None:
        found = ThreadChecker(engine, "self", cheap_count).check(
            history, replace(update, view=new_view)
        )
        assert any(what in p for p in found), f"missed {what!r}: {found}"

    broken([m for m in view if m.type != "system"], "leading system")
    broken([m for m in view if m.id != "t"], "first human")
    broken([m for m in view if m.id != "r9"], "without all")
    broken([m for m in view if m.id != "a9"], "without its call")
    broken(list(reversed(view)), "reorders")
    broken([*view, HumanMessage("invented", id="zz")], "not in the history")
    # A message dropped from the view without being archived (every message the
    # engine saw is archived on arrival, so this one comes from outside the engine).
    extra = AIMessage("never archived", id="never-seen")
    found = ThreadChecker(engine, "self", cheap_count).check([*history, extra], update)
    assert any("not archived" in p for p in found), found
    # Stats that lie.
    lying = replace(update, stats=replace(update.stats, tokens_view=1))
    assert any("tokens_view" in p for p in checker.check(history, lying))
    engine.store.close()
