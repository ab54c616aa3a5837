"""A LangGraph ReAct agent whose context stays within a budget, checkpointed in SQLite.

    python examples/langgraph_agent.py                 # fresh run in a temporary folder
    python examples/langgraph_agent.py --dir ./demo    # run twice: the second run continues

The graph is the usual agent ⇄ tools loop with one extra node, ``distill``, in
front of the model. In ``rewrite`` mode the graph state itself is the compact
view, so the SQLite checkpointer stores a state that stays small however long the
thread grows. The chat model is scripted so the example runs offline; swap in any
tool-calling chat model (``init_chat_model("openai:gpt-4.1")``) to use it for real.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.langgraph import DistillNode, DistillState
from context_distill.testing import ScriptedChatModel, tool_call
from context_distill.tools import make_recall_tool

CITIES = ["Berlin", "Paris", "Oslo", "Lima", "Quito", "Hanoi", "Perth", "Accra", "Riga"]


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    seed = sum(map(ord, city))
    return json.dumps(
        {
            "location": city,
            "temp_c": round(seed % 300 / 10, 1),
            "conditions": ["rain", "sun", "fog", "snow"][seed % 4],
            "humidity_pct": 30 + seed % 60,
            "request_id": f"wx-{seed:05d}-{len(city)}",
            "source": f"https://weather.example.com/v2/{city.lower()}",
        }
    )


def scripted_model() -> ScriptedChatModel:
    """Looks up every city named in the latest question at once, then answers."""

    def respond(messages: list[BaseMessage]) -> Any:
        last = messages[-1]
        if isinstance(last, HumanMessage):
            named = [city for city in CITIES if city in last.text]
            if last.text.startswith("What did the first lookup"):
                # The memory block names archived messages as #n: ask for the original.
                memory = next(m.text for m in messages if m.id == "context-distill-memory")
                lines = [ln for ln in memory.splitlines() if f"city={named[0]})" in ln]
                query = lines[0].split()[0].split(",")[0] if lines else f"location {named[0]}"
                return [tool_call("recall", query=query)]
            return [tool_call("get_weather", city=city) for city in named] or "Which city?"
        answers = []
        for message in reversed(messages):
            if isinstance(message, AIMessage):
                break
            if message.name == "recall":
                return f"From the archive:\n{message.text}"
            data = json.loads(message.text)
            answers.append(f"{data['location']} {data['temp_c']}°C {data['conditions']}")
        return "; ".join(reversed(answers)) + "."

    return ScriptedChatModel(respond=respond)


def build(engine: ContextDistiller, checkpointer: SqliteSaver) -> Any:
    tools = [get_weather, make_recall_tool(engine)]
    model = scripted_model().bind_tools(tools)

    def agent(state: DistillState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(DistillState)
    builder.add_node("distill", DistillNode(engine, mode="rewrite"))
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "distill")
    builder.add_edge("distill", "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "distill")
    return builder.compile(checkpointer=checkpointer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="folder for the SQLite files (kept)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="context-distill-"))
    folder.mkdir(parents=True, exist_ok=True)

    engine = ContextDistiller(SQLiteMemoryStore(folder / "memory.sqlite"), budget_tokens=1200)
    with sqlite3.connect(folder / "checkpoints.sqlite", check_same_thread=False) as conn:
        graph = build(engine, SqliteSaver(conn))
        config = {"configurable": {"thread_id": "weather-desk"}}
        if not graph.get_state(config).values:
            graph.invoke(
                {
                    "messages": [
                        SystemMessage("You are a weather desk. Use the tools."),
                        HumanMessage("Track the weather in our nine office cities."),
                    ]
                },
                config,
            )
            print(f"new thread in {folder}")
        else:
            print(f"continuing the thread stored in {folder}")
        for round_ in range(4):
            for first in range(0, len(CITIES), 3):
                cities = ", ".join(CITIES[first : first + 3])
                question = f"Round {round_ + 1}: weather in {cities}?"
                graph.invoke({"messages": [HumanMessage(question)]}, config)
            stats = engine.stats("weather-desk")
            state = graph.get_state(config).values["messages"]
            print(
                f"round {round_ + 1}: history {stats.tokens_in} tokens in {stats.messages} "
                f"messages; model sees {stats.tokens_view} (budget 1200); checkpointed state "
                f"{len(state)} messages; {stats.distillations} distillations, {stats.facts} facts"
            )
        memory = next(
            m
            for m in graph.get_state(config).values["messages"]
            if m.additional_kwargs.get("context_distill") == "memory"
        )
        print("\nmemory block (first lines):")
        print("\n".join(memory.text.splitlines()[:4]))
        question = "What did the first lookup for Berlin return?"
        answer = graph.invoke({"messages": [HumanMessage(question)]}, config)
        print(f"\n{question}\n{answer['messages'][-1].text}")


if __name__ == "__main__":
    main()
