"""LoCoMo through the engine: answer scores of the final view at a share of each conversation.

Each conversation is fed one message at a time, processing after each (as an agent
accumulates turns), with ``budget_tokens`` set to a share (default 25%) of that
conversation's tokens. The final view is scored loose and strict (bench/scoring.py),
category 5 left out. Conversations 0-4 were used to tune the extractive distiller;
5-9 were not, and are reported apart.

    python -m bench.locomo_engine [--data ../shared/data/locomo/locomo10.json]
        [--budget 0.25] [--distiller extractive] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages

from bench.datasets import LOCOMO_CATEGORIES, LOCOMO_PATH, load_locomo
from bench.scoring import QAResult, score_questions
from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.messages import MARKER_KEY, MEMORY_MARK
from context_distill.tokens import count_message, encoding_counter

TUNED_ON = range(0, 5)


def is_memory(message: Any) -> bool:
    """The engine's memory block: its lines are separate facts for the strict score."""
    extra = getattr(message, "additional_kwargs", None) or {}
    return extra.get(MARKER_KEY) == MEMORY_MARK


def replay_conversation(
    messages: Sequence[BaseMessage], budget: int, distiller: Any, **options: Any
) -> tuple[list[BaseMessage], float, Any]:
    engine = ContextDistiller(
        SQLiteMemoryStore(":memory:"), budget_tokens=budget, distiller=distiller, **options
    )
    started = time.perf_counter()
    update = None
    for end in range(1, len(messages) + 1):
        update = engine.update("locomo", messages[:end])
    assert update is not None
    return update.view, time.perf_counter() - started, update.stats


def engine_options(given: Sequence[str], flag: str = "--option") -> dict[str, float]:
    """``NAME=VALUE`` engine options from the command line (for sweeps); a ``*_tokens``
    value of 1 or more is a whole number of tokens."""
    options: dict[str, float] = {}
    for option in given:
        name, sep, value = option.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {option!r}: expected NAME=VALUE")
        number = float(value)
        options[name] = int(number) if name.endswith("_tokens") and number >= 1 else number
    return options


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(LOCOMO_PATH))
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--distiller", default="extractive")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an engine option, e.g. memory_share=0.5 (repeatable)",
    )
    args = parser.parse_args(argv)
    options = engine_options(args.option)

    count = encoding_counter("o200k_base")
    pooled = {"tuned": QAResult(), "held-out": QAResult()}
    totals = {"tokens_in": 0, "tokens_view": 0, "seconds": 0.0, "over": 0}
    print(
        f"{'conv':>4} {'tokens':>7} {'budget':>6} {'view':>6} {'loose':>6} {'strict':>6} {'s':>6}"
    )
    for index, replay in enumerate(load_locomo(args.data, args.limit)):
        messages = convert_to_messages(replay.messages)
        tokens = sum(count_message(m, count) for m in messages)
        budget = int(tokens * args.budget)
        view, seconds, stats = replay_conversation(messages, budget, args.distiller, **options)
        result = score_questions(view, replay.questions, is_memory)
        split = "tuned" if index in TUNED_ON else "held-out"
        pooled[split] = pooled[split].merge(result)
        totals["tokens_in"] += stats.tokens_in
        totals["tokens_view"] += stats.tokens_view
        totals["seconds"] += seconds
        totals["over"] += int(stats.tokens_view > budget)
        print(
            f"{index:>4} {tokens:>7} {budget:>6} {stats.tokens_view:>6} "
            f"{result.total.loose_score:>6.3f} {result.total.strict_score:>6.3f} {seconds:>6.2f}"
        )
    everything = pooled["tuned"].merge(pooled["held-out"])
    print()
    for name, result in (*pooled.items(), ("all", everything)):
        if result.total.n:
            print(
                f"{name:<9} loose {result.total.loose_score:.3f} strict "
                f"{result.total.strict_score:.3f} ({result.total.n} questions)"
            )
    ratio = totals["tokens_in"] / max(totals["tokens_view"], 1)
    rate = totals["tokens_in"] / max(totals["seconds"], 1e-9)
    print(
        f"compression {ratio:.2f}x; views over budget: {totals['over']}; "
        f"{totals['seconds']:.1f} s replaying ({rate:,.0f} history tokens/s)"
    )
    print("per category (all), loose / strict:")
    for category, tally in sorted(everything.by_category.items()):
        name = LOCOMO_CATEGORIES.get(int(category), category)
        print(f"  {name:<12} {tally.loose_score:.3f} / {tally.strict_score:.3f}  (n={tally.n})")


if __name__ == "__main__":
    main()
