"""What one under-budget turn costs, beside LangChain's SummarizationMiddleware and trim_messages.

For agent histories of 100, 1,000 and 5,000 messages, each system is asked for the
model's context after one new message arrives; the history stays under the budget,
so nobody summarizes and the figure is pure bookkeeping. context-distill counts
exactly (o200k_base); the LangChain figures are given with their default approximate
counter and with an exact per-message counter, measured in the same run.

    python -m bench.overhead [--turns 200] [--sizes 100 1000 5000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    trim_messages,
)
from langchain_core.messages.utils import count_tokens_approximately

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.tokens import count_message, encoding_counter


def agent_history(n: int) -> list[BaseMessage]:
    """System prompt, task, then tool calls with ~60-token JSON results."""
    history: list[BaseMessage] = [
        SystemMessage("You are a coding agent.", id="sys"),
        HumanMessage("Fix the flaky test in tests/test_api.py.", id="task"),
    ]
    i = 0
    while len(history) < n:
        history.append(
            AIMessage(
                "", id=f"a{i}", tool_calls=[{"name": "read", "args": {"i": i}, "id": f"c{i}"}]
            )
        )
        body = {"path": f"src/m{i}.py", "lines": i % 300, "text": "def f(x): return x " * 8}
        history.append(ToolMessage(json.dumps(body), tool_call_id=f"c{i}", id=f"r{i}"))
        i += 1
    return history[:n]


def per_turn(
    step: Callable[[list[BaseMessage]], Any], history: list[BaseMessage], base: int, turns: int
) -> float:
    """Median seconds of ``step`` over histories of base+1 .. base+turns messages."""
    slices = [history[: base + k] for k in range(1, turns + 1)]
    step(history[:base])  # warm: the first call may build state
    times = []
    for piece in slices:
        started = time.perf_counter()
        step(piece)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def exact_counter() -> Callable[[Sequence[BaseMessage]], int]:
    count = encoding_counter("o200k_base")

    def messages_tokens(messages: Sequence[BaseMessage]) -> int:
        return sum(count_message(m, count) for m in messages)

    return messages_tokens


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    args = parser.parse_args(argv)

    from langchain.agents.middleware import SummarizationMiddleware
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    fake = GenericFakeChatModel(messages=iter(()))
    exact = exact_counter()
    budget = 10**9
    rows: list[tuple[str, list[float]]] = []
    systems: list[tuple[str, Callable[[], Callable[[list[BaseMessage]], Any]]]] = [
        (
            "context-distill (exact o200k)",
            lambda: _engine_step(ContextDistiller(SQLiteMemoryStore(), budget_tokens=budget)),
        ),
        (
            "SummarizationMiddleware (approx.)",
            lambda: _middleware_step(SummarizationMiddleware(fake, trigger=("tokens", budget))),
        ),
        (
            "SummarizationMiddleware (exact)",
            lambda: _middleware_step(
                SummarizationMiddleware(fake, trigger=("tokens", budget), token_counter=exact)
            ),
        ),
        (
            "trim_messages (approx.)",
            lambda: (
                lambda h: trim_messages(
                    h, max_tokens=budget, token_counter=count_tokens_approximately, strategy="last"
                )
            ),
        ),
        (
            "trim_messages (exact)",
            lambda: (
                lambda h: trim_messages(h, max_tokens=budget, token_counter=exact, strategy="last")
            ),
        ),
    ]
    for name, make in systems:
        figures = []
        for size in args.sizes:
            history = agent_history(size + args.turns)
            figures.append(per_turn(make(), history, size, args.turns))
        rows.append((name, figures))

    print(f"one under-budget turn, median of {args.turns} turns (ms)")
    header = "".join(f"{size:>12,}" for size in args.sizes)
    print(f"{'system':<36}{header}   messages")
    for name, figures in rows:
        print(f"{name:<36}" + "".join(f"{f * 1000:>12.3f}" for f in figures))


def _engine_step(engine: ContextDistiller) -> Callable[[list[BaseMessage]], Any]:
    return lambda history: engine.process("bench", history)


def _middleware_step(middleware: Any) -> Callable[[list[BaseMessage]], Any]:
    return lambda history: middleware.before_model({"messages": history}, None)


if __name__ == "__main__":
    main()
