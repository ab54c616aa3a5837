"""Shared by the door tests: tools, a scripted agent policy, graph builders, checks.

The policy reads only what the model is sent, so it behaves the same whatever
was distilled, in any thread, and after a restart in a new process:

* the latest human message says what to do ("turn 3: make 30 tool calls",
  "recall: req-...");
* the ids of the last assistant tool calls in the view say how far the turn got.

Run as a script (``python tests/agent_kit.py continue ...``) it is the second
process of the restart test.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.tools import BaseTool, tool

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.testing import ScriptedChatModel, check_model_input
from context_distill.tokens import count_message, resolve_counter

SYSTEM = "You are a field agent. Use the tools; answer tersely."
TASK = "Survey the weather, docs and test logs for the Q3 rollout; keep every request id."
BUDGET = 3000

_TURN = re.compile(r"turn (\d+): make (\d+) tool calls")
_RECALL = re.compile(r"recall: (.+)")
_CALL_ID = re.compile(r"^t(\d+)s(\d+)k(\d+)-")
_CITIES = ["Berlin", "Paris", "Oslo", "Lima", "Quito", "Hanoi", "Perth", "Accra", "Riga", "Bern"]

counter = resolve_counter("o200k_base")


def request_id(*parts: object) -> str:
    """Deterministic per tool call arguments, so any process derives the same one."""
    return "req-" + hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:10]


@tool
def get_weather(city: str, key: str) -> str:
    """Current weather for a city."""
    return json.dumps(
        {
            "location": f"{city}, EU",
            "temp_c": round(5 + (sum(map(ord, key)) % 200) / 10, 1),
            "conditions": ["light rain", "overcast", "sunny", "fog"][len(key) % 4],
            "humidity_pct": 40 + sum(map(ord, key)) % 55,
            "wind_kph": 3 + len(city) * 2,
            "request_id": request_id("weather", city, key),
            "source": f"https://weather.example.com/v2/{city.lower()}?units=metric",
            "observed_at": "2024-09-03T10:00:00Z",
        }
    )


@tool
def search_docs(query: str, key: str) -> str:
    """Search the rollout documentation."""
    rid = request_id("docs", query, key)
    return (
        f"Result {rid} for '{query}': The Q3 rollout plan requires that every region "
        "completes the staged deployment checklist before traffic is shifted. Staging must "
        "run for at least 48 hours with error rates below 0.2 percent, and the on-call "
        f"engineer signs off in ticket OPS-{sum(map(ord, key)) % 9000 + 1000}. Rollback is "
        "automatic when p99 latency exceeds 850 ms for five consecutive minutes. Owners: "
        "platform team (primary), SRE (secondary). Last reviewed 2024-08-28."
    )


@tool
def run_tests(target: str, key: str) -> str:
    """Run a test suite and return its log."""
    rid = request_id("tests", target, key)
    lines = [f"== test session starts ({rid}) =="]
    for index in range(60):
        lines.append(f"{target}/test_case_{index:03d}.py::test_path_{index} PASSED [{index}%]")
    lines.append(f"FAILED {target}/test_api.py::test_login - KeyError: 'token' ({rid})")
    lines.append("== 1 failed, 60 passed in 12.31s ==")
    return "\n".join(lines)


TOOLS: list[BaseTool] = [get_weather, search_docs, run_tests]


def calls_in_step(step: int) -> int:
    """Tool calls issued at a step of a turn: single and parallel ones, in a cycle."""
    return (1, 3, 1, 2)[step % 4]


def _latest_human(messages: Sequence[BaseMessage]) -> tuple[int, str]:
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, HumanMessage) and not message.additional_kwargs.get(
            "context_distill"
        ):
            return index, message.text
    raise AssertionError("no human message in the model input")


def respond(messages: list[BaseMessage]) -> Any:
    """The scripted agent: decides the next step from the model input alone."""
    human_at, human = _latest_human(messages)
    last_calls: list[ToolCall] = []
    last_result = ""
    for message in messages[human_at + 1 :]:
        if isinstance(message, AIMessage) and message.tool_calls:
            last_calls = list(message.tool_calls)
        if isinstance(message, ToolMessage):
            last_result = message.text
    recall = _RECALL.search(human)
    if recall:
        if not last_calls:
            return [ToolCall(name="recall", args={"query": recall.group(1)}, id=_id(0, 0, 0))]
        return f"Recalled: {last_result}"
    match = _TURN.search(human)
    if match is None:
        return "Noted."
    turn, wanted = int(match.group(1)), int(match.group(2))
    step = 0
    if last_calls:
        found = _CALL_ID.match(last_calls[0]["id"] or "")
        assert found is not None, f"unexpected tool call id {last_calls[0]['id']}"
        step = int(found.group(2)) + 1
    done = min(sum(calls_in_step(s) for s in range(step)), wanted)
    if done >= wanted:
        return f"Turn {turn} done: {done} tool calls made."
    calls = []
    for k in range(min(calls_in_step(step), wanted - done)):
        number = done + k
        key = f"T{turn}-{step}-{k}"
        city = _CITIES[number % len(_CITIES)]
        if number % 25 == 24:
            calls.append(
                ToolCall(
                    name="run_tests",
                    args={"target": city.lower(), "key": key},
                    id=_id(turn, step, k),
                )
            )
        elif number % 5 == 2:
            calls.append(
                ToolCall(
                    name="search_docs",
                    args={"query": f"rollout {city}", "key": key},
                    id=_id(turn, step, k),
                )
            )
        else:
            calls.append(
                ToolCall(name="get_weather", args={"city": city, "key": key}, id=_id(turn, step, k))
            )
    return calls


def _id(turn: int, step: int, k: int) -> str:
    return f"t{turn}s{step}k{k}-{uuid.uuid4().hex[:8]}"


def turns(count: int, calls_each: int, first: int = 1) -> list[str]:
    return [f"turn {n}: make {calls_each} tool calls" for n in range(first, first + count)]


def first_weather_id() -> str:
    """The request id of the very first tool result of a thread run with ``turns``."""
    return request_id("weather", _CITIES[0], "T1-0-0")


def make_model(*, system: bool = True) -> ScriptedChatModel:
    """The scripted model, checking every request it is sent."""

    def check(messages: list[BaseMessage]) -> None:
        check_model_input(messages, system_prompt=SYSTEM if system else None, task=TASK)

    return ScriptedChatModel(respond=respond, check=check)


def view_tokens(messages: Sequence[BaseMessage], *, skip_system: bool = False) -> int:
    return sum(
        count_message(m, counter)
        for m in messages
        if not (skip_system and isinstance(m, SystemMessage))
    )


# -- a LangGraph ReAct graph with the node ----------------------------------------


def build_graph(
    engine: ContextDistiller, model: ScriptedChatModel, *, mode: str, checkpointer: Any = None
) -> Any:
    from langchain_core.runnables import RunnableLambda
    from langgraph.graph import START, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from context_distill.langgraph import DistillNode, DistillState
    from context_distill.tools import make_recall_tool

    tools = [*TOOLS, make_recall_tool(engine)]
    bound = model.bind_tools(tools)

    def agent(state: DistillState) -> dict[str, Any]:
        messages = state["messages"]
        if mode == "view":
            messages = state["llm_input_messages"] or messages
        return {"messages": [bound.invoke(messages)]}

    async def aagent(state: DistillState) -> dict[str, Any]:
        messages = state["messages"]
        if mode == "view":
            messages = state["llm_input_messages"] or messages
        return {"messages": [await bound.ainvoke(messages)]}

    builder = StateGraph(DistillState)
    builder.add_node("distill", DistillNode(engine, mode=mode))  # type: ignore[arg-type]
    builder.add_node("agent", RunnableLambda(agent, afunc=aagent))
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "distill")
    builder.add_edge("distill", "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "distill")
    return builder.compile(checkpointer=checkpointer)


def build_agent(
    engine: ContextDistiller, model: ScriptedChatModel, *, mode: str, checkpointer: Any = None
) -> Any:
    from langchain.agents import create_agent

    from context_distill.middleware import ContextDistillMiddleware

    return create_agent(
        model,
        TOOLS,
        system_prompt=SYSTEM,
        middleware=[ContextDistillMiddleware(engine, mode=mode, recall_tool=True)],
        checkpointer=checkpointer,
    )


def config(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": 10_000}


def first_input(text: str, *, graph: bool) -> dict[str, Any]:
    """The first input of a thread: the system prompt (in state for graphs) and the task."""
    messages: list[BaseMessage] = [SystemMessage(SYSTEM)] if graph else []
    return {"messages": [*messages, HumanMessage(TASK), HumanMessage(text)]}


def engine_for(path: str | Path, budget: int = BUDGET) -> ContextDistiller:
    return ContextDistiller(SQLiteMemoryStore(path), budget_tokens=budget)


def _continue(kind: str, archive: str, checkpoints: str, thread_id: str, *texts: str) -> None:
    """Second process of the restart test: continue a thread from the SQLite files."""
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    engine = engine_for(archive)
    graph_door = kind == "graph-rewrite"
    model = make_model(system=True)
    finals: list[str] = []
    with sqlite3.connect(checkpoints, check_same_thread=False) as conn:
        saver = SqliteSaver(conn)
        if graph_door:
            app = build_graph(engine, model, mode="rewrite", checkpointer=saver)
        else:
            app = build_agent(engine, model, mode="view", checkpointer=saver)
        for text in texts:
            state = app.invoke({"messages": [HumanMessage(text)]}, config(thread_id))
            finals.append(state["messages"][-1].text)
    first = model.calls[0]
    memory = [m for m in first if m.additional_kwargs.get("context_distill") == "memory"]
    stats = engine.stats(thread_id)
    print(
        json.dumps(
            {
                "model_calls": len(model.calls),
                "memory_in_first_call": memory[0].text if memory else None,
                "max_call_tokens": max(
                    view_tokens(call, skip_system=not graph_door) for call in model.calls
                ),
                "finals": finals,
                "distillations": stats.distillations,
                "tokens_in": stats.tokens_in,
                "facts": stats.facts,
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) >= 7 and sys.argv[1] == "continue":
        _continue(*sys.argv[2:])
    else:
        raise SystemExit("usage: agent_kit.py continue KIND ARCHIVE CHECKPOINTS THREAD TEXT...")
