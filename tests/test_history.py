"""DistillingChatMessageHistory over in-memory and file-backed chat histories."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytest
from langchain_core.chat_history import BaseChatMessageHistory, InMemoryChatMessageHistory
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
    messages_to_dict,
)

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.history import DistillingChatMessageHistory
from context_distill.testing import check_model_input
from context_distill.tokens import count_message, resolve_counter
from context_distill.tools import make_recall_tool

SYSTEM = "You are a concise support agent."
TASK = "Help me plan the data-centre migration for ACME; keep every ticket number."
BUDGET = 600
count = resolve_counter("o200k_base")


class JsonFileHistory(BaseChatMessageHistory):
    """A chat history in one JSON file, as file-backed histories keep it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        if not self.path.exists():
            return []
        return messages_from_dict(json.loads(self.path.read_text("utf-8")))

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        self.path.write_text(json.dumps(messages_to_dict([*self.messages, *messages])), "utf-8")

    def clear(self) -> None:
        self.path.write_text("[]", "utf-8")


def _in_memory() -> InMemoryChatMessageHistory:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return InMemoryChatMessageHistory()


def _engine(path: str | Path = ":memory:") -> ContextDistiller:
    return ContextDistiller(SQLiteMemoryStore(path), budget_tokens=BUDGET)


def _exchange(n: int) -> list[BaseMessage]:
    return [
        HumanMessage(f"Step {n}: which rack holds server srv-{n:03d} and what is its ticket?"),
        AIMessage(
            f"Server srv-{n:03d} sits in rack R{n % 7}-{n % 11}, row {n % 5}; migration ticket "
            f"MIG-{4000 + n}. It runs the billing service, 64 GB RAM, and moves in wave "
            f"{n % 3 + 1}. Downtime window: Saturday 02:00-04:00 UTC."
        ),
    ]


def _tokens(messages: Sequence[BaseMessage]) -> int:
    return sum(count_message(m, count) for m in messages)


def _chat(history: DistillingChatMessageHistory, exchanges: range) -> None:
    for n in exchanges:
        history.add_messages(_exchange(n))
        view = history.messages
        check_model_input(view, system_prompt=SYSTEM, task=TASK)
        assert _tokens(view) <= BUDGET


def _start(history: DistillingChatMessageHistory) -> None:
    history.add_messages([SystemMessage(SYSTEM), HumanMessage(TASK)])


def test_view_mode_keeps_everything_and_returns_the_view() -> None:
    inner = _in_memory()
    engine = _engine()
    history = DistillingChatMessageHistory(inner, engine, thread_id="s1")
    _start(history)
    _chat(history, range(40))
    assert len(inner.messages) == 82  # every message kept
    assert _tokens(inner.messages) > 5 * BUDGET
    view = history.messages
    assert view[2].additional_kwargs.get("context_distill") == "memory"
    assert "srv-0" in view[2].text
    assert view[-1].text.startswith("Server srv-039")
    # Messages stored without ids were given ids, so they stay recognisable.
    assert all(m.id for m in inner.messages)
    assert engine.stats("s1").distillations > 0


def test_rewrite_mode_keeps_a_file_small_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    archive = tmp_path / "archive.sqlite"
    history = DistillingChatMessageHistory(
        JsonFileHistory(path), _engine(archive), thread_id="s2", mode="rewrite"
    )
    _start(history)
    _chat(history, range(40))
    stored = JsonFileHistory(path).messages
    assert len(stored) < 40
    assert _tokens(stored) <= BUDGET + 100
    assert any(m.additional_kwargs.get("context_distill") == "memory" for m in stored)
    # A new process: new engine, new store object on the same files.
    engine = _engine(archive)
    again = DistillingChatMessageHistory(
        JsonFileHistory(path), engine, thread_id="s2", mode="rewrite"
    )
    view = again.messages
    assert view[2].additional_kwargs.get("context_distill") == "memory"
    _chat(again, range(40, 50))
    assert engine.stats("s2").messages == 2 + 2 * 50
    # The first exchange, distilled long ago, is one recall away, word for word.
    first_answer = _exchange(0)[1].text
    tool = make_recall_tool(engine, max_chars=1000)
    found = tool.invoke({"query": "srv-000 MIG-4000"}, config={"configurable": {"thread_id": "s2"}})
    assert first_answer in found


def test_messages_without_ids_in_an_existing_history(tmp_path: Path) -> None:
    path = tmp_path / "legacy.json"
    legacy = JsonFileHistory(path)
    legacy.add_messages([SystemMessage(SYSTEM), HumanMessage(TASK)])
    for n in range(30):
        legacy.add_messages(_exchange(n))
    assert not any(m.id for m in legacy.messages)
    history = DistillingChatMessageHistory(legacy, _engine(), thread_id="s3", mode="rewrite")
    view = history.messages
    check_model_input(view, system_prompt=SYSTEM, task=TASK)
    assert _tokens(view) <= BUDGET
    # The rewritten file carries explicit ids, so later turns line up with the archive.
    assert all(m.id for m in JsonFileHistory(path).messages)
    _chat(history, range(30, 36))


def test_tool_calls_stay_whole() -> None:
    history = DistillingChatMessageHistory(_in_memory(), thread_id="s4", budget_tokens=BUDGET)
    _start(history)
    for n in range(25):
        history.add_user_message(f"Look up rack for srv-{n:03d}")
        call_id = f"call-{n}"
        history.add_messages(
            [
                AIMessage("", tool_calls=[{"name": "lookup", "args": {"n": n}, "id": call_id}]),
                ToolMessage(
                    json.dumps({"server": f"srv-{n:03d}", "rack": f"R{n % 7}", "ticket": n}),
                    tool_call_id=call_id,
                ),
                AIMessage(f"srv-{n:03d} is in rack R{n % 7}."),
            ]
        )
        check_model_input(history.messages, system_prompt=SYSTEM, task=TASK)
    assert history.engine.stats("s4").distillations > 0


def test_clear_clears_history_and_archive() -> None:
    inner = _in_memory()
    engine = _engine()
    history = DistillingChatMessageHistory(inner, engine, thread_id="s5")
    _start(history)
    _chat(history, range(30))
    assert engine.store.search("MIG", thread_id="s5")
    history.clear()
    assert inner.messages == [] and history.messages == []
    assert engine.store.search("MIG", thread_id="s5") == []
    _start(history)
    _chat(history, range(3))


def test_async_twins(tmp_path: Path) -> None:
    engine = _engine()
    history = DistillingChatMessageHistory(
        JsonFileHistory(tmp_path / "a.json"), engine, thread_id="s6", mode="rewrite"
    )

    async def main() -> list[BaseMessage]:
        await history.aadd_messages([SystemMessage(SYSTEM), HumanMessage(TASK)])
        for n in range(40):
            await history.aadd_messages(_exchange(n))
            check_model_input(await history.aget_messages(), system_prompt=SYSTEM, task=TASK)
        view = await history.aget_messages()
        await history.aclear()
        return view

    view = asyncio.run(main())
    assert _tokens(view) <= BUDGET
    assert view[2].additional_kwargs.get("context_distill") == "memory"
    assert history.messages == []
    assert engine.store.search("MIG", thread_id="s6") == []


def test_arguments_are_checked() -> None:
    with pytest.raises(TypeError):
        DistillingChatMessageHistory([], _engine(), thread_id="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DistillingChatMessageHistory(_in_memory(), _engine(), thread_id="")
    with pytest.raises(TypeError):
        DistillingChatMessageHistory(_in_memory(), _engine(), thread_id="x", budget_tokens=5)
