"""The recall tool: verbatim originals by search, by #number and by id; thread scoping; limits."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.tokens import count_message, resolve_counter
from context_distill.tools import make_recall_tool


def _result(n: int, thread: str) -> str:
    return json.dumps(
        {
            "order": f"ORD-{thread}-{n:04d}",
            "status": ["shipped", "pending", "returned"][n % 3],
            "carrier": "DHL" if n % 2 else "UPS",
            "tracking": f"TRK{n:06d}{thread.upper()}",
            "notes": f"customer {thread} asked about parcel {n}; signature required at door",
        }
    )


def _history(thread: str, orders: int) -> list[BaseMessage]:
    messages: list[BaseMessage] = [
        SystemMessage("You are an order desk agent.", id=f"{thread}-sys"),
        HumanMessage(f"Check all orders of customer {thread}.", id=f"{thread}-task"),
    ]
    for n in range(orders):
        call = f"{thread}-call-{n}"
        messages.append(
            AIMessage(
                "",
                id=f"{thread}-ai-{n}",
                tool_calls=[{"name": "get_order", "args": {"n": n}, "id": call}],
            )
        )
        messages.append(
            ToolMessage(
                _result(n, thread), tool_call_id=call, name="get_order", id=f"{thread}-r{n}"
            )
        )
    return messages


def _cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


@pytest.fixture()
def engine() -> ContextDistiller:
    engine = ContextDistiller(SQLiteMemoryStore(":memory:"), budget_tokens=600)
    for thread in ("alpha", "beta"):
        update = engine.update(thread, _history(thread, 40))
        assert update.stats.distillations > 0
    return engine


def test_search_returns_the_original_verbatim(engine: ContextDistiller) -> None:
    tool = make_recall_tool(engine, max_chars=4000)
    out = tool.invoke({"query": "ORD-alpha-0003"}, config=_cfg("alpha"))
    assert _result(3, "alpha") in out
    # The original is labelled with its archive number and id.
    assert re.search(
        r"\[#\d+ tool get_order result for call alpha-call-3 id=alpha-r3 distilled\]", out
    )


def test_archive_numbers_and_ranges(engine: ContextDistiller) -> None:
    tool = make_recall_tool(engine, max_chars=4000)
    refs = [ref for ref, _ in engine.store.get_messages("alpha", ids=["alpha-r0", "alpha-r1"])]
    first, second = refs
    out = tool.invoke({"query": f"#{first}"}, config=_cfg("alpha"))
    assert _result(0, "alpha") in out and _result(1, "alpha") not in out
    assert "result for call alpha-call-0" in out
    both = tool.invoke({"query": f"#{first}-{second}"}, config=_cfg("alpha"))
    assert _result(0, "alpha") in both and _result(1, "alpha") in both
    assert "get_order" in both  # the assistant's call between them
    missing = tool.invoke({"query": "#99999"}, config=_cfg("alpha"))
    assert "not in this thread's archive: #99999" in missing


def test_message_id_lookup(engine: ContextDistiller) -> None:
    tool = make_recall_tool(engine, max_chars=4000)
    out = tool.invoke({"query": "alpha-r2"}, config=_cfg("alpha"))
    assert out.startswith("[#") and _result(2, "alpha") in out


def test_results_stay_in_their_thread(engine: ContextDistiller) -> None:
    tool = make_recall_tool(engine, max_chars=4000)
    assert "Nothing in this conversation's archive" in tool.invoke(
        {"query": "ORD-alpha-0003"}, config=_cfg("beta")
    )
    out = tool.invoke({"query": "signature required"}, config=_cfg("beta"))
    assert "beta" in out and "alpha" not in out
    ref = engine.store.get_messages("alpha", ids=["alpha-r0"])[0][0]
    assert _result(0, "alpha") not in tool.invoke({"query": f"#{ref}"}, config=_cfg("beta"))


def test_output_is_limited(engine: ContextDistiller) -> None:
    tool = make_recall_tool(engine, max_chars=600, max_results=20)
    out = tool.invoke({"query": "signature required"}, config=_cfg("alpha"))
    assert len(out) <= 600
    assert "more result(s) not shown" in out
    with pytest.raises(ValueError):
        make_recall_tool(engine, max_chars=10)


def test_words_that_do_not_all_match_still_find_something(engine: ContextDistiller) -> None:
    tool = make_recall_tool(engine, max_chars=4000)
    out = tool.invoke({"query": "where is ORD-alpha-0005 parcel today"}, config=_cfg("alpha"))
    assert _result(5, "alpha") in out


def test_facts_name_their_sources(engine: ContextDistiller) -> None:
    tool = make_recall_tool(engine, max_chars=4000, max_results=20)
    out = tool.invoke({"query": "TRK000004ALPHA"}, config=_cfg("alpha"))
    assert re.search(r"\[fact from #\d+", out)


def test_its_own_calls_and_results_are_left_out() -> None:
    engine = ContextDistiller(SQLiteMemoryStore(":memory:"), budget_tokens=600)
    history = _history("delta", 40)
    call = {"name": "recall", "args": {"query": "ORD-delta-0001"}, "id": "rc1"}
    history.append(AIMessage("", id="delta-rc", tool_calls=[call]))
    history.append(
        ToolMessage(f"[#3 tool]\n{_result(1, 'delta')}", tool_call_id="rc1", name="recall")
    )
    history += _history("delta2", 30)[2:]
    engine.update("delta", history)
    assert engine.store.get_messages("delta", ids=["delta-rc"])  # archived, distilled
    tool = make_recall_tool(engine, max_chars=4000)
    out = tool.invoke({"query": "ORD-delta-0001"}, config=_cfg("delta"))
    assert out.count(_result(1, "delta")) == 1
    assert "recall result" not in out and "delta-rc" not in out


def test_default_size_stays_under_what_the_engine_would_shorten(
    engine: ContextDistiller,
) -> None:
    tool = make_recall_tool(engine)
    out = tool.invoke({"query": "signature required"}, config=_cfg("alpha"))
    assert len(out) <= max(300, 2 * engine.max_tool_result_tokens)
    message = ToolMessage(out, tool_call_id="x", name="recall")
    assert count_message(message, resolve_counter("o200k_base")) <= engine.max_tool_result_tokens


def test_async_and_missing_thread(engine: ContextDistiller) -> None:
    tool = make_recall_tool(engine, max_chars=4000)
    out = asyncio.run(tool.ainvoke({"query": "ORD-beta-0007"}, config=_cfg("beta")))
    assert _result(7, "beta") in out
    assert "no thread id" in tool.invoke({"query": "ORD"}, config={})
    assert "Give a query" in tool.invoke({"query": "  "}, config=_cfg("beta"))


def test_memory_block_announces_the_tool() -> None:
    engine = ContextDistiller(SQLiteMemoryStore(":memory:"), budget_tokens=600)
    tool = make_recall_tool(engine, name="recall_archive")
    assert tool.name == "recall_archive" and engine.recall_tool == "recall_archive"
    view = engine.process("gamma", _history("gamma", 40))
    memory = [m for m in view if m.additional_kwargs.get("context_distill") == "memory"]
    assert memory and "recall_archive tool" in memory[0].text
    # The schema the model sees has one argument; the run config is injected.
    assert list(tool.args) == ["query"]
