"""Prefix reuse of context-distill's view, split at the calls that follow a view change.

Between distillations the view should only grow at its end, so a call that follows
no view change should reuse all but its new messages. This replays the django
trajectories (as bench.trajectories does) and prints the reuse of calls after a
view change, of the others, and the ceiling of the others (all but new messages).

    python -m bench.prefix_split [--budget 0.25] [--limit N]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

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
    tokens = reused = changed_tokens = changed_reused = appended_new = breaks = 0
    for session in sessions:
        system = Distill()
        budget = session.budget(args.budget)
        memo = MemoCounter(session.count)
        meter = PrefixMeter(lambda m, memo=memo: memo([m]))
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
            elif appended:
                appended_new += total - kept
            else:
                breaks += 1
    quiet = tokens - changed_tokens
    print(f"{len(sessions)} django runs at {args.budget:.0%}: {calls} calls")
    print(f"prefix reuse, all calls:               {reused / tokens:.1%}")
    print(
        f"calls after a view change:             {changed_calls / calls:.1%} of calls, "
        f"reuse {changed_reused / max(changed_tokens, 1):.1%}"
    )
    print(
        f"other calls:                           reuse {(reused - changed_reused) / quiet:.1%}"
        f" (ceiling {1 - appended_new / quiet:.1%}; {breaks} changed before their end)"
    )


if __name__ == "__main__":
    main()
