"""LoCoMo reference figures of the baselines: full history, truncation, stop-word stripper.

Each conversation is replayed whole and its final view is built under a budget
of a fraction (default 25%) of that conversation's own tokens; the questions
(category 5 left out) are scored loose and strict on that view, pooled over all
conversations. These are the figures the scorer was calibrated against.

    python -m bench.locomo_baselines [--data ../shared/data/locomo/locomo10.json]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from bench.baselines import BASELINES, history_tokens
from bench.datasets import LOCOMO_CATEGORIES, LOCOMO_PATH, load_locomo
from bench.scoring import QAResult, score_questions

# The issue's figures for all 10 conversations at a 25% budget.
REFERENCE = {
    "full": (0.80, 0.48),
    "truncation": (0.28, 0.18),
    "stopwords": (0.39, 0.23),
}


def run(path: str, fraction: float, limit: int | None) -> dict[str, tuple[QAResult, int, int]]:
    """Per baseline: pooled result, history tokens and view tokens over all conversations."""
    results: dict[str, tuple[QAResult, int, int]] = {}
    for replay in load_locomo(path, limit):
        total = history_tokens(replay.messages)
        budget = int(total * fraction)
        for name, system in BASELINES.items():
            view = system(replay.messages, budget)
            result, hist, kept = results.get(name, (QAResult(), 0, 0))
            results[name] = (
                result.merge(score_questions(view, replay.questions)),
                hist + total,
                kept + history_tokens(view),
            )
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(LOCOMO_PATH), help="path to locomo10.json")
    parser.add_argument("--budget", type=float, default=0.25, help="budget, share of history")
    parser.add_argument("--limit", type=int, default=None, help="first N conversations only")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    results = run(args.data, args.budget, args.limit)
    n = next(iter(results.values()))[0].total.n
    print(f"LoCoMo, budget {args.budget:.0%} of each conversation, {n} questions (cat. 5 out)")
    print(f"{'system':<12} {'loose':>6} {'ref':>5} {'strict':>7} {'ref':>5} {'compr.':>7}")
    for name, (result, hist, kept) in results.items():
        ref_loose, ref_strict = REFERENCE.get(name, (float("nan"), float("nan")))
        print(
            f"{name:<12} {result.total.loose_score:6.3f} {ref_loose:5.2f} "
            f"{result.total.strict_score:7.3f} {ref_strict:5.2f} {hist / max(kept, 1):6.2f}x"
        )
    print("\nper category, loose / strict:")
    categories = sorted({c for r, _, _ in results.values() for c in r.by_category})
    header = "".join(f" {LOCOMO_CATEGORIES.get(int(c), c):>15}" for c in categories)
    print(f"{'system':<12}{header}")
    for name, (result, _, _) in results.items():
        cells = "".join(
            f" {t.loose_score:7.3f}/{t.strict_score:.3f}"
            for t in (result.by_category[c] for c in categories)
        )
        print(f"{name:<12}{cells}")
    counts = "".join(f" {results['full'][0].by_category[c].n:>15}" for c in categories)
    print(f"{'questions':<12}{counts}")
    print(f"\n({time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    main()
