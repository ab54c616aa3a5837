"""A LangChain ``create_agent`` agent with context-distill middleware and the recall tool.

    python examples/agent_middleware.py

The middleware hands the model a compact view on every call (``view`` mode: the
agent state keeps everything). ``recall_tool=True`` gives the agent a tool to read
back, word for word, what was distilled out of its view. The agent's answers are
streamed with ``stream_mode="messages"``: distillation never shows up in the
stream. The chat model is scripted so the example runs offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.middleware import ContextDistillMiddleware
from context_distill.testing import ScriptedChatModel, check_model_input, tool_call

ORDERS = [f"ORD-{n:04d}" for n in range(1, 41)]


@tool
def get_order(order_id: str) -> str:
    """Look up an order."""
    n = int(order_id.split("-")[1])
    return json.dumps(
        {
            "order_id": order_id,
            "status": ["shipped", "pending", "returned", "delivered"][n % 4],
            "carrier": ["DHL", "UPS", "PostNL"][n % 3],
            "tracking": f"TRK{n * 7919:08d}",
            "items": n % 5 + 1,
            "total_eur": round(19.9 * (n % 7 + 1), 2),
            "warehouse": f"WH-{n % 4}",
        }
    )


def scripted_model() -> ScriptedChatModel:
    """Checks four orders at a time (in parallel), answers, and uses recall when asked."""

    def respond(messages: list[BaseMessage]) -> Any:
        last = messages[-1]
        if isinstance(last, HumanMessage):
            wanted = [order for order in ORDERS if order in last.text]
            if last.text.startswith("Which carrier"):
                return [tool_call("recall", query=f"{wanted[0]} carrier")]
            return [tool_call("get_order", order_id=order) for order in wanted]
        if last.name == "recall":
            original = next(
                line for line in last.text.splitlines() if line.startswith('{"order_id"')
            )
            return f"The archive has it word for word: carrier {json.loads(original)['carrier']}."
        done = []
        for message in reversed(messages):
            if isinstance(message, AIMessage):
                break
            data = json.loads(message.text)
            done.append(f"{data['order_id']} {data['status']}")
        return "Checked: " + ", ".join(reversed(done)) + "."

    # Every request the model gets is checked against what providers accept.
    return ScriptedChatModel(respond=respond, check=check_model_input)


def main() -> None:
    engine = ContextDistiller(SQLiteMemoryStore(":memory:"), budget_tokens=1500)
    agent = create_agent(
        scripted_model(),
        [get_order],
        system_prompt="You are an order desk agent.",
        middleware=[ContextDistillMiddleware(engine, recall_tool=True)],
        checkpointer=InMemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": "order-desk"}}
    agent.invoke({"messages": [HumanMessage("Audit all forty open orders.")]}, config)
    for first in range(0, len(ORDERS), 4):
        batch = " ".join(ORDERS[first : first + 4])
        agent.invoke({"messages": [HumanMessage(f"Check {batch}")]}, config)
    stats = engine.stats("order-desk")
    history = len(agent.get_state(config).values["messages"])
    print(
        f"{history} messages, {stats.tokens_in} tokens in the agent state; the model's last "
        f"view: {stats.tokens_view} tokens (budget 1500, peak {stats.peak_view_tokens}); "
        f"{stats.distillations} distillations"
    )
    print("\nstreaming the agent's answer:")
    question = "Which carrier did ORD-0001 use?"
    stream = agent.stream({"messages": [HumanMessage(question)]}, config, stream_mode="messages")
    for token, meta in cast(Iterator[tuple[BaseMessage, dict[str, Any]]], stream):
        if meta["langgraph_node"] == "model" and token.text:
            print(token.text, end="", flush=True)
        elif meta["langgraph_node"] == "tools":
            print(f"[{token.name} tool result]\n{token.text}\n[end of tool result]")
    print()


if __name__ == "__main__":
    main()
