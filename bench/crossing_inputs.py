"""What the crossing turn's memory fit depends on, and whether the turn before could know it.

A fit made in the background ahead of the crossing would take the fit (most of the
crossing's cost, see bench/background.py) off the turn, but only if the worker knew
its inputs: the facts committed (which groups) and the block's room (the cap). This
replays the demo session with background distillation, as bench/background.py
does, and prints for each crossing how many groups it committed, its cap, the cap
the previous turn's view gives for those same groups (what a worker that guessed
the groups right would have fitted for) and the guaranteed share (the one room
known before the crossing turn arrives). It also prints how often the previous
turn's growth, repeated, predicts the crossing.

    python -m bench.crossing_inputs [--budget 6000] [--verbose]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage

from bench.background import Delayed
from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill import commit as commit_module
from context_distill import engine as engine_module
from context_distill.demo import build_session
from context_distill.policy import _memory_cap, memory_cap


@dataclass
class Crossing:
    turn: int
    groups: int  # groups committed
    cap: int  # the memory block's room after the commit
    previous_turn_cap: int  # the room the previous turn's view gives for the same groups
    guaranteed: int  # the memory share's room
    predicted: bool  # the previous turn's growth, repeated, would have crossed


def replay(budget_tokens: int) -> tuple[list[Crossing], int, int]:
    """The crossings of the demo session, the turns, and the false alarms."""
    messages = build_session()
    turn_state: dict[str, int] = {}
    commit_original = commit_module.Committer._commit
    begin_original = engine_module.ContextDistiller._begin

    def committing(self: Any, thread: Any, job: Any, records: Any, log: Any) -> str:
        moved = sum(group.tokens for group in job.live + job.done)
        turn_state["moved"] = turn_state.get("moved", 0) + moved
        turn_state["groups"] = turn_state.get("groups", 0) + len(job.live)
        result: str = commit_original(self, thread, job, records, log)
        turn_state["cap"] = memory_cap(self._budget, thread.ledger)
        return result

    def beginning(self: Any, thread: Any, messages: Any) -> Any:
        job = begin_original(self, thread, messages)
        turn_state["view_in"] = thread.ledger.view_tokens(thread.memory.tokens)
        return job

    commit_module.Committer._commit = committing
    engine_module.ContextDistiller._begin = beginning
    crossings: list[Crossing] = []
    false_alarms = turns = 0
    try:
        with tempfile.TemporaryDirectory() as scratch:
            engine = ContextDistiller(
                SQLiteMemoryStore(Path(scratch) / "inputs.db"),
                budget_tokens=budget_tokens,
                distiller=Delayed(0.01),
                background=True,
            )
            before: tuple[int, int, int] | None = None  # view, others, pinned after a turn
            growth: int | None = None
            for end in range(1, len(messages) + 1):
                following = messages[end] if end < len(messages) else None
                if following is not None and not isinstance(following, AIMessage):
                    continue
                turn_state.clear()
                update = engine.update("inputs", messages[:end])
                turns += 1
                ledger = engine._threads["inputs"].ledger
                if before is not None:
                    view, others, pinned = before
                    predicted = growth is not None and view + growth > budget_tokens
                    if update.distilled:
                        crossings.append(
                            Crossing(
                                turn=turns,
                                groups=turn_state["groups"],
                                cap=turn_state["cap"],
                                previous_turn_cap=_memory_cap(
                                    engine.budget, pinned, others - turn_state["moved"]
                                ),
                                guaranteed=engine.budget.memory_room(pinned),
                                predicted=predicted,
                            )
                        )
                    elif predicted:
                        false_alarms += 1
                    growth = turn_state["view_in"] - view
                before = (update.stats.tokens_view, ledger.view_tokens(0), ledger.pinned_tokens)
                time.sleep(0.02)  # the model's turn: the worker makes facts meanwhile
            engine.wait_background(10)
            engine.store.close()
    finally:
        commit_module.Committer._commit = commit_original
        engine_module.ContextDistiller._begin = begin_original
    return crossings, turns, false_alarms


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=6000)
    parser.add_argument("--verbose", action="store_true", help="one line per crossing")
    args = parser.parse_args(argv)
    crossings, turns, false_alarms = replay(args.budget)
    n = len(crossings)
    if args.verbose:
        print(f"{'turn':>6}{'groups':>8}{'cap':>8}{'prev-turn cap':>15}{'guaranteed':>12}")
        for c in crossings:
            print(f"{c.turn:>6}{c.groups:>8}{c.cap:>8}{c.previous_turn_cap:>15}{c.guaranteed:>12}")
    same_cap = sum(c.cap == c.previous_turn_cap for c in crossings)
    at_share = sum(c.cap == c.guaranteed for c in crossings)
    groups = Counter(c.groups for c in crossings)
    hits = sum(c.predicted for c in crossings)
    print(f"demo session, budget {args.budget}: {turns} turns, {n} crossings")
    print(f"groups committed per crossing: {dict(sorted(groups.items()))}")
    print(
        f"cap equal to the previous turn's (same groups): {same_cap} of {n}; "
        f"equal to the guaranteed share: {at_share} of {n}; "
        f"cap range {min(c.cap for c in crossings)}-{max(c.cap for c in crossings)}"
    )
    print(
        f"crossing predicted by the previous turn's growth: {hits} of {n}; "
        f"false alarms (predicted, no crossing): {false_alarms}"
    )


if __name__ == "__main__":
    main()
