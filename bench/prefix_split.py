"""Prefix reuse of context-distill's view, split at the calls that follow a view change.

Between distillations the view should only grow at its end, so a call that follows
no view change should reuse all but its new messages. This replays the django
trajectories (as bench.trajectories does) and prints the reuse of calls after a
view change, of the others, and the ceiling of the others (all but new messages).

    python -m bench.prefix_split [--budget 0.25] [--limit N]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence

from langchain_core.messages import SystemMessage

from bench.scoring import is_memory_message
from bench.step_systems import Distill, MemoCounter, PrefixMeter, text_counter
from bench.swe_agent import load_swe_agent, split
from bench.trajectories import sessions_of


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    count = text_counter("chars4")
    sessions = sessions_of(split(load_swe_agent())["dev"], "swe", count, False)[: args.limit]
    calls = changed_calls = 0
    tokens = reused = changed_tokens = changed_reused = appended_new = breaks = whole = 0
    parts: Counter[str] = Counter()  # tokens of the calls after a view change, by part
    for session in sessions:
        system = Distill()
        budget = session.budget(args.budget)
        memo = MemoCounter(session.count)
        meter = PrefixMeter(lambda m, memo=memo: memo([m]), session.count)
        state = system.start(session, budget)
        for end in session.steps:
            total, kept, appended = meter.observe(system.view(state, session, end, budget))
            if meter.calls == 1:
                continue
            calls += 1
            tokens += total
            reused += kept
            if state.update.changed:
                changed_calls += 1
                changed_tokens += total
                changed_reused += kept
                for message in state.update.view:
                    part = (
                        "pinned"
                        if isinstance(message, SystemMessage) or message is session.messages[1]
                        else "memory"
                        if is_memory_message(message)
                        else "other"
                    )
                    parts[part] += memo([message])
            elif appended:
                appended_new += total - kept
            else:
                breaks += 1
        whole += meter.reused_messages
    quiet = tokens - changed_tokens
    shares = ", ".join(f"{name} {n / max(changed_tokens, 1):.0%}" for name, n in parts.items())
    print(f"{len(sessions)} django runs at {args.budget:.0%}: {calls} calls")
    print(f"prefix reuse, all calls:               {reused / tokens:.1%}")
    print(f"  counted in whole leading messages:   {whole / tokens:.1%}")
    print(
        f"calls after a view change:             {changed_calls / calls:.1%} of calls, "
        f"reuse {changed_reused / max(changed_tokens, 1):.1%}"
    )
    print(f"  their tokens: {shares}")
    print(
        f"other calls:                           reuse {(reused - changed_reused) / quiet:.1%}"
        f" (ceiling {1 - appended_new / quiet:.1%}; {breaks} changed before their end)"
    )


if __name__ == "__main__":
    main()
