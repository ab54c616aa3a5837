"""What one under-budget turn costs, beside LangChain's SummarizationMiddleware and trim_messages.

For agent histories of 100, 1,000 and 5,000 messages, each system is asked for the
model's context after one new message arrives; the history stays under the budget,
so nobody summarizes and the figure is pure bookkeeping. context-distill counts
exactly (o200k_base); the LangChain figures are given with their default approximate
counter and with an exact per-message counter, measured in the same run.

Then what re-processing a history the store already holds costs: a new engine on
the same SQLite file (a cold process) given the whole history, the same engine given
it again (warm), and warm with one new message, beside the first processing.

    python -m bench.overhead [--turns 200] [--sizes 100 1000 5000]
                             [--reprocess-sizes 100 1000 5000 20000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
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
    parser.add_argument("--reprocess-sizes", type=int, nargs="+", default=[100, 1000, 5000, 20000])
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
            "context-distill (SQLite file)",
            lambda: _engine_step(
                ContextDistiller(SQLiteMemoryStore(_scratch_db("turns")), budget_tokens=budget)
            ),
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
    reprocess(args.reprocess_sizes)


def _scratch_db(name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="cd-overhead-"))
    return folder / f"{name}.db"


def reprocess(sizes: Sequence[int], budget: int = 8_000) -> None:
    """A history the store holds, processed again: cold (new engine), warm, warm + 1."""
    print(f"\nre-processing a history the store holds (ms; budget {budget:,}, SQLite file)")
    print(f"{'messages':>10}{'first':>12}{'cold':>12}{'warm':>12}{'warm + 1':>12}")
    for size in sizes:
        history = agent_history(size + 1)
        db = _scratch_db(f"reprocess-{size}")
        first_engine = ContextDistiller(SQLiteMemoryStore(db), budget_tokens=budget)
        started = time.perf_counter()
        first_engine.update("t", history[:size])
        first = time.perf_counter() - started
        first_engine.store.close()
        engine = ContextDistiller(SQLiteMemoryStore(db), budget_tokens=budget)
        started = time.perf_counter()
        cold_view = engine.update("t", history[:size]).view
        cold = time.perf_counter() - started
        started = time.perf_counter()
        warm_view = engine.update("t", history[:size]).view
        warm = time.perf_counter() - started
        started = time.perf_counter()
        engine.update("t", history[: size + 1])
        plus_one = time.perf_counter() - started
        assert cold_view == warm_view
        engine.store.close()
        print(f"{size:>10,}" + "".join(f"{f * 1000:>12.3f}" for f in (first, cold, warm, plus_one)))


def _engine_step(engine: ContextDistiller) -> Callable[[list[BaseMessage]], Any]:
    return lambda history: engine.process("bench", history)


def _middleware_step(middleware: Any) -> Callable[[list[BaseMessage]], Any]:
    return lambda history: middleware.before_model({"messages": history}, None)


if __name__ == "__main__":
    main()
