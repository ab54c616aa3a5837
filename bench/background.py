"""Latency of the turn that crosses the budget, with distillation in the foreground or background.

The demo's scripted agent session is replayed turn by turn (one model call per
turn). The distiller is the extractive one behind a fixed delay that stands in for
a model (``--delay``, default 0.5 s per batch), or any named distiller. With
``background=True`` the groups the next crossing needs are distilled once the view
passes 80% of the budget, so the crossing turn only commits facts made earlier.

    python -m bench.background [--budget 6000] [--delay 0.5] [--distiller NAME]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage

from context_distill import ContextDistiller, Distiller, GroupFacts, SQLiteMemoryStore
from context_distill.demo import build_session
from context_distill.distillers import ExtractiveDistiller, resolve_distiller
from context_distill.types import Group


class Delayed(Distiller):
    """A distiller that answers after a fixed delay, as a model server would."""

    name = "delayed-extractive"

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.inner = ExtractiveDistiller()

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        time.sleep(self.delay)
        return self.inner.distill(groups)


def run(
    messages: list[BaseMessage],
    distiller: Distiller,
    budget: int,
    background: bool,
    folder: Path,
    think: float,
) -> tuple[list[float], list[float], dict[tuple[str, ...], str], list[int]]:
    """Seconds of crossing turns and of other turns, the final view, and idle time between."""
    engine = ContextDistiller(
        SQLiteMemoryStore(folder / f"bg-{background}.db"),
        budget_tokens=budget,
        distiller=distiller,
        background=background,
    )
    crossing: list[float] = []
    plain: list[float] = []
    for end in range(1, len(messages) + 1):
        nxt = messages[end] if end < len(messages) else None
        if nxt is not None and not isinstance(nxt, AIMessage):
            continue
        started = time.perf_counter()
        update = engine.update("bench", messages[:end])
        elapsed = time.perf_counter() - started
        (crossing if update.distilled else plain).append(elapsed)
        time.sleep(think)  # the model's own turn, during which a background job can run
    log = engine.store.distillations("bench")
    prefetched = [entry["details"].get("prefetched_groups", 0) for entry in log]
    facts = {fact.source_ids: fact.text for fact in engine.store.facts("bench")}
    engine.store.close()
    return crossing, plain, facts, prefetched


def _ms(values: list[float], fn: str) -> str:
    if not values:
        return "-"
    value = statistics.median(values) if fn == "p50" else max(values)
    return f"{value * 1000:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=6000)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--think", type=float, default=0.3, help="seconds the model takes a turn")
    parser.add_argument("--distiller", default=None, help="a named distiller instead of a delay")
    args = parser.parse_args(argv)

    messages = build_session()
    distiller = resolve_distiller(args.distiller) if args.distiller else Delayed(args.delay)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        fg = run(messages, distiller, args.budget, False, folder, args.think)
        bg = run(messages, distiller, args.budget, True, folder, args.think)
    print(
        f"demo session, {len(messages)} messages, budget {args.budget}, distiller {distiller.name}"
    )
    print(f"{'mode':<12}{'crossings':>10}{'p50 ms':>10}{'max ms':>10}{'other p50 ms':>14}")
    for name, (crossing, plain, _, _) in (("foreground", fg), ("background", bg)):
        print(
            f"{name:<12}{len(crossing):>10}{_ms(crossing, 'p50'):>10}{_ms(crossing, 'max'):>10}"
            f"{_ms(plain, 'p50'):>14}"
        )
    added = statistics.median(bg[0]) - statistics.median(bg[1]) if bg[0] and bg[1] else 0.0
    common = fg[2].keys() & bg[2].keys()
    same = sum(fg[2][key] == bg[2][key] for key in common)
    print(f"background: a crossing turn adds {added * 1000:.2f} ms over a plain turn (median)")
    print(
        f"facts identical to the foreground's for {same} of {len(common)} groups distilled by "
        f"both; groups made ahead per crossing: {bg[3]}"
    )


if __name__ == "__main__":
    main()
