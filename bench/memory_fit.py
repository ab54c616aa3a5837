"""The memory block alone: every fact of a session, one fit at a fixed room, the block scored.

The engine's final view mixes what the memory block chooses with when the last
distillation happened and how the budget is split. This isolates the first: each
session's turns (all but its newest ones) are distilled by the extractive distiller,
the facts go into one memory block, which is focused on the rest (the task and the
newest turns) and fitted to ``share`` of the session's tokens (o200k_base); the
block alone is scored (LoCoMo loose/strict, conversations 0-4 and 5-9 apart; SWE
agent runs: gold identifiers kept, see bench/swe_agent.py).

    python -m bench.memory_fit [--shares 0.08,0.15] [--datasets locomo,swe]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from langchain_core.messages import BaseMessage, convert_to_messages

from bench.datasets import load_locomo
from bench.scoring import QAResult, score_questions
from bench.swe_agent import holds, load_swe_agent
from bench.trajectories import scored_text
from context_distill._relevance import focus_of
from context_distill.distillers.extractive import distill_group
from context_distill.memory import MemoryBlock
from context_distill.store import StoredFact
from context_distill.tokens import count_message, encoding_counter
from context_distill.types import Group

COUNT = encoding_counter("o200k_base")
LOCOMO_RECENT = 20  # newest messages left verbatim (the focus)
SWE_RECENT_SHARE = 0.3


def fitted_block(messages: Sequence[BaseMessage], upto: int, cap: int) -> MemoryBlock:
    """The facts of ``messages[1:upto]`` (whole groups) in a block focused on the rest."""
    facts: list[StoredFact] = []
    index = 1
    while index < upto:
        stop = index + 1
        while stop < len(messages) and messages[stop].type == "tool":
            stop += 1
        group = Group(
            "s",
            tuple(messages[index:stop]),
            tuple(f"m{i}" for i in range(index, stop)),
            tokens=1,
        )
        refs = tuple(range(index + 1, stop + 1))
        for fact in distill_group(group):
            text = " ".join(fact.text.split())
            facts.append(StoredFact(len(facts), text, fact.source_ids, refs, 0, 1))
        index = stop
    block = MemoryBlock(COUNT)
    block.add(facts)
    block.focus(focus_of([*messages[1:2], *messages[upto:]]))
    block.fit(cap)
    return block


def tokens_of(messages: Sequence[BaseMessage]) -> int:
    return sum(count_message(m, COUNT) for m in messages)


def locomo(share: float) -> str:
    parts = []
    for name, numbers in (("0-4", range(0, 5)), ("5-9", range(5, 10))):
        result = QAResult()
        for replay in [r for i, r in enumerate(load_locomo()) if i in numbers]:
            messages = list(convert_to_messages(replay.messages))
            cap = int(tokens_of(messages) * share)
            block = fitted_block(messages, len(messages) - LOCOMO_RECENT, cap)
            result = result.merge(score_questions([block.message()], replay.questions))
        parts.append(
            f"LoCoMo {name}: loose {result.total.loose_score:.3f} "
            f"strict {result.total.strict_score:.3f}"
        )
    return "; ".join(parts)


def swe(share: float) -> str:
    found = total = 0
    for replay in [r for r in load_swe_agent() if r.gold_values]:
        messages = list(convert_to_messages(replay.messages))
        upto = int(len(messages) * (1 - SWE_RECENT_SHARE))
        block = fitted_block(messages, upto, int(tokens_of(messages) * share))
        text = scored_text([block.message()])
        found += sum(holds(text, ident) for ident in replay.gold_values)
        total += len(replay.gold_values)
    return f"SWE agent (django): {found}/{total} = {found / max(total, 1):.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shares", default="0.08,0.15")
    parser.add_argument("--datasets", default="locomo,swe")
    args = parser.parse_args(argv)
    for share in (float(s) for s in args.shares.split(",")):
        if "locomo" in args.datasets:
            print(f"share {share:.0%}: {locomo(share)}")
        if "swe" in args.datasets:
            print(f"share {share:.0%}: {swe(share)}")


if __name__ == "__main__":
    main()
