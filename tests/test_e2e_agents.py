"""End to end: 300 tool calls through a real LangGraph graph and a real create_agent agent.

Each run: two threads in one archive and one checkpoint database, parallel tool
calls, every model request checked against what providers accept, the view within
the budget while the history grows past ten times it, the recall tool returning
the first tool result word for word, and a restart in a new process that carries
on the thread with its memory intact.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import agent_kit as kit
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from context_distill import ContextDistiller
from context_distill.testing import ScriptedChatModel, check_model_input

HERE = Path(__file__).resolve().parent
A_TURNS = kit.turns(10, 30)  # 300 tool calls
B_TURNS = kit.turns(3, 20, first=101)  # 60 tool calls, other request ids


def _schedule() -> list[tuple[str, str]]:
    """Thread A's ten turns with thread B's three woven in between."""
    order = [("A", A_TURNS[0]), ("B", B_TURNS[0])]
    order += [("A", A_TURNS[1]), ("B", B_TURNS[1]), ("A", A_TURNS[2]), ("B", B_TURNS[2])]
    order += [("A", text) for text in A_TURNS[3:]]
    return order


def _first_weather_result() -> str:
    return str(kit.get_weather.invoke({"city": "Berlin", "key": "T1-0-0"}))


def _check_every_call(model: ScriptedChatModel) -> dict[str, int]:
    """Re-check every recorded request; return figures for the report."""
    parallel: set[str] = set()
    for request in model.calls:
        check_model_input(request, system_prompt=kit.SYSTEM, task=kit.TASK)
        assert kit.view_tokens(request, skip_system=True) <= kit.BUDGET
        for message in request:
            if isinstance(message, AIMessage) and len(message.tool_calls) > 1:
                parallel.add(str(message.id))
    return {
        "model_calls": len(model.calls),
        "parallel_call_messages": len(parallel),
        "peak_request_tokens": max(kit.view_tokens(r, skip_system=True) for r in model.calls),
    }


def _finals(states: dict[str, list[str]]) -> None:
    assert states["A"] == [f"Turn {n} done: 30 tool calls made." for n in range(1, 11)]
    assert states["B"] == [f"Turn {n} done: 20 tool calls made." for n in range(101, 104)]


def _separation(engine: ContextDistiller, app: Any) -> None:
    """Nothing of thread A in thread B: archive, memory, state, recall."""
    a_first = kit.first_weather_id()
    assert engine.store.search(a_first, thread_id="A")
    assert engine.store.search(a_first, thread_id="B") == []
    b_state = app.get_state(kit.config("B")).values["messages"]
    assert not any("turn 1:" in m.text or "T1-" in m.text for m in b_state)
    assert all("T1-" not in line for line in _memory_lines(b_state))


def _memory_lines(messages: list[Any]) -> list[str]:
    return [
        line
        for m in messages
        if m.additional_kwargs.get("context_distill") == "memory"
        for line in m.text.splitlines()
    ]


def _recall(app: Any, thread: str) -> tuple[str, str]:
    """Ask the agent to recall thread A's first request id; the tool result and the answer."""
    query = f"recall: {kit.first_weather_id()}"
    state = app.invoke({"messages": [HumanMessage(query)]}, kit.config(thread))
    results = [m for m in state["messages"] if isinstance(m, ToolMessage) and m.name == "recall"]
    return results[-1].text, state["messages"][-1].text


def _restart(kind: str, archive: Path, checkpoints: Path, *texts: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "agent_kit.py"),
            "continue",
            kind,
            str(archive),
            str(checkpoints),
            "A",
            *texts,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _after_restart(result: dict[str, Any], before: int, facts: int) -> None:
    print(
        f"after restart: {result['model_calls']} model calls, peak request "
        f"{result['max_call_tokens']} tokens, history {result['tokens_in']} tokens, "
        f"{result['facts']} facts"
    )
    # The new process starts from the archive: the memory block is there on its first call.
    memory = result["memory_in_first_call"]
    assert memory and memory.startswith("[Memory]") and len(memory.splitlines()) > 10
    assert result["facts"] >= facts
    assert result["max_call_tokens"] <= kit.BUDGET
    assert result["finals"][0] == "Turn 11 done: 20 tool calls made."
    assert _first_weather_result() in result["finals"][1]
    assert result["tokens_in"] > before


def test_langgraph_graph_rewrite_mode(tmp_path: Path) -> None:
    archive, checkpoints = tmp_path / "archive.sqlite", tmp_path / "checkpoints.sqlite"
    engine = kit.engine_for(archive)
    model = kit.make_model()
    finals: dict[str, list[str]] = {"A": [], "B": []}
    with sqlite3.connect(checkpoints, check_same_thread=False) as conn:
        app = kit.build_graph(engine, model, mode="rewrite", checkpointer=SqliteSaver(conn))
        started: set[str] = set()
        for thread, text in _schedule():
            payload = (
                {"messages": [HumanMessage(text)]}
                if thread in started
                else kit.first_input(text, graph=True)
            )
            started.add(thread)
            state = app.invoke(payload, kit.config(thread))
            finals[thread].append(state["messages"][-1].text)
        _finals(finals)
        stats = engine.stats("A")
        figures = _check_every_call(model)
        assert figures["parallel_call_messages"] > 50
        assert stats.tokens_in > 10 * kit.BUDGET
        assert stats.peak_view_tokens <= kit.BUDGET
        # The checkpointer holds the compact state, not the history.
        state_a = app.get_state(kit.config("A")).values["messages"]
        assert kit.view_tokens(state_a) <= kit.BUDGET + 100
        assert len(state_a) < 40
        _separation(engine, app)
        tool_result, answer = _recall(app, "A")
        assert _first_weather_result() in tool_result and _first_weather_result() in answer
        assert "Nothing in this conversation's archive" in _recall(app, "B")[0]
    print(
        f"\ngraph/rewrite: history {stats.tokens_in} tokens, peak view {stats.peak_view_tokens} "
        f"(budget {kit.BUDGET}), {figures}, checkpoints "
        f"{checkpoints.stat().st_size / 1e6:.1f} MB"
    )
    result = _restart(
        "graph-rewrite",
        archive,
        checkpoints,
        "turn 11: make 20 tool calls",
        f"recall: {kit.first_weather_id()}",
    )
    _after_restart(result, stats.tokens_in, stats.facts)


def test_create_agent_view_mode_async(tmp_path: Path) -> None:
    archive, checkpoints = tmp_path / "archive.sqlite", tmp_path / "checkpoints.sqlite"
    engine = kit.engine_for(archive)
    model = kit.make_model()
    finals: dict[str, list[str]] = {"A": [], "B": []}
    streamed: list[Any] = []

    async def main() -> None:
        async with AsyncSqliteSaver.from_conn_string(str(checkpoints)) as saver:
            app = kit.build_agent(engine, model, mode="view", checkpointer=saver)
            started: set[str] = set()
            for thread, text in _schedule():
                payload = (
                    {"messages": [HumanMessage(text)]}
                    if thread in started
                    else kit.first_input(text, graph=False)
                )
                started.add(thread)
                if thread == "A" and text == A_TURNS[-1]:
                    stream = app.astream(payload, kit.config(thread), stream_mode="messages")
                    async for item in stream:
                        streamed.append(item)
                    state = (await app.aget_state(kit.config(thread))).values
                else:
                    state = await app.ainvoke(payload, kit.config(thread))
                finals[thread].append(state["messages"][-1].text)

    asyncio.run(main())
    _finals(finals)
    stats = engine.stats("A")
    figures = _check_every_call(model)
    assert figures["parallel_call_messages"] > 50
    assert stats.tokens_in > 10 * kit.BUDGET
    assert stats.peak_view_tokens <= kit.BUDGET
    # The last turn streamed: the agent's tokens and tool results, no distillation.
    kinds = {(meta["langgraph_node"], type(m).__name__) for m, meta in streamed}
    assert kinds == {("model", "AIMessageChunk"), ("tools", "ToolMessage")}
    text = "".join(m.text for m, meta in streamed if meta["langgraph_node"] == "model")
    assert text.endswith("Turn 10 done: 30 tool calls made.")
    with sqlite3.connect(checkpoints, check_same_thread=False) as conn:
        app = kit.build_agent(engine, model, mode="view", checkpointer=SqliteSaver(conn))
        # View mode: the state keeps the whole history; the model saw the view.
        state_a = app.get_state(kit.config("A")).values["messages"]
        assert kit.view_tokens(state_a) >= stats.tokens_in  # (plus the last answer)
        _separation(engine, app)
        tool_result, answer = _recall(app, "A")
        assert _first_weather_result() in tool_result and _first_weather_result() in answer
    print(
        f"\nagent/view: history {stats.tokens_in} tokens, peak view {stats.peak_view_tokens} "
        f"(budget {kit.BUDGET}), {figures}, checkpoints "
        f"{checkpoints.stat().st_size / 1e6:.1f} MB"
    )
    result = _restart(
        "agent-view",
        archive,
        checkpoints,
        "turn 11: make 20 tool calls",
        f"recall: {kit.first_weather_id()}",
    )
    _after_restart(result, stats.tokens_in, stats.facts)
