"""Event-loop stalls while many agent threads share one loop.

N conversation threads run concurrently on one asyncio event loop, each growing a
tool-calling history turn by turn through ``ContextDistiller.aupdate`` on one
SQLite file (distilling as they cross the budget). A ticker coroutine asks to wake
every millisecond and records how late it wakes: any time the loop spent blocked
(in the store, in bookkeeping) shows as lateness, and so does waiting for the GIL
while worker threads run Python, and a busy machine. The CPU time the loop's own
thread spent per turn tells them apart: with ``aupdate`` the store and the
bookkeeping run in worker threads. For contrast, the same run with
the blocking ``update`` called from the coroutines, which is what a door without an
async path would do.

    python -m bench.async_stall [--threads 64] [--turns 60] [--budget 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from context_distill import ContextDistiller, SQLiteMemoryStore


def turn_messages(thread: int, turn: int) -> list[BaseMessage]:
    """One assistant tool call and its ~150-token JSON result."""
    call = f"c{thread}-{turn}"
    body = {
        "path": f"src/pkg/module_{turn}.py",
        "status": "ok" if turn % 7 else "error",
        "lines": [f"def handler_{turn}_{k}(request): return respond({k})" for k in range(6)],
        "request_id": f"req-{thread:03d}-{turn:04d}",
    }
    return [
        AIMessage(
            "", id=f"a{call}", tool_calls=[{"name": "read", "args": {"n": turn}, "id": call}]
        ),
        ToolMessage(json.dumps(body), tool_call_id=call, id=f"r{call}"),
    ]


async def agent(engine: ContextDistiller, thread: int, turns: int, blocking: bool) -> int:
    history: list[BaseMessage] = [
        SystemMessage("You are a coding agent.", id=f"s{thread}"),
        HumanMessage(f"Fix issue {thread} in the handlers.", id=f"h{thread}"),
    ]
    distilled = 0
    for turn in range(turns):
        history.extend(turn_messages(thread, turn))
        if blocking:
            update = engine.update(f"t{thread}", history)
        else:
            update = await engine.aupdate(f"t{thread}", history)
        distilled += update.distilled
        await asyncio.sleep(0)  # the model call would yield here
    return distilled


async def ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(0.001)
        lateness.append(time.perf_counter() - asked - 0.001)


async def run(threads: int, turns: int, budget: int, blocking: bool, db: Path) -> dict[str, float]:
    engine = ContextDistiller(SQLiteMemoryStore(db), budget_tokens=budget)
    lateness: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(stop, lateness))
    started = time.perf_counter()
    loop_cpu = time.thread_time()
    distilled = await asyncio.gather(*(agent(engine, t, turns, blocking) for t in range(threads)))
    elapsed = time.perf_counter() - started
    loop_cpu = time.thread_time() - loop_cpu
    stop.set()
    await tick
    engine.store.close()
    lateness.sort()
    return {
        "turns_per_s": threads * turns / elapsed,
        "distillations": float(sum(distilled)),
        "p50_ms": statistics.median(lateness) * 1000,
        "p99_ms": lateness[int(0.99 * (len(lateness) - 1))] * 1000,
        "max_ms": lateness[-1] * 1000,
        "loop_cpu_ms_per_turn": loop_cpu / (threads * turns) * 1000,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--budget", type=int, default=3000)
    args = parser.parse_args(argv)
    print(
        f"{args.threads} threads x {args.turns} turns on one event loop, budget {args.budget}, "
        "one SQLite file; ticker lateness (ms)"
    )
    print(
        f"{'path':<28}{'turns/s':>9}{'distill':>9}{'p50':>8}{'p99':>8}{'max':>8}"
        f"{'loop CPU ms/turn':>18}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for name, blocking in (
            ("aupdate (async door)", False),
            ("update called on the loop", True),
        ):
            figures = asyncio.run(
                run(
                    args.threads,
                    args.turns,
                    args.budget,
                    blocking,
                    Path(scratch) / f"{name[:6]}.db",
                )
            )
            print(
                f"{name:<28}{figures['turns_per_s']:>9.0f}{figures['distillations']:>9.0f}"
                f"{figures['p50_ms']:>8.2f}{figures['p99_ms']:>8.2f}{figures['max_ms']:>8.2f}"
                f"{figures['loop_cpu_ms_per_turn']:>18.3f}"
            )


if __name__ == "__main__":
    main()
