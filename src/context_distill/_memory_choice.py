"""Which clauses the memory block shows: weighted words, then a lazy greedy choice.

A clause is worth its words (weighed by :mod:`._relevance`), more for a newer fact,
less for a word the rest of the view shows (the focus) or the block shows already;
the choice takes the most new information per token first until the room is spent.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from ._memory_lines import Line

Weights = dict[tuple[int, int], dict[str, float]]

# A word the view already shows still counts this much: facts are asked about as wholes.
REPEAT_WEIGHT = 0.6
# A word the rest of the view shows (the focus) counts this much in a fact: it adds little.
SEEN_WEIGHT = 0.6
# The focus weight (identifiers 1.5, names 0.6, words 0.3) at which a clause's relevance
# boost is full.
FOCUS_FULL = 3.0


def clause_weights(
    lines: Iterable[Line],
    rarity: Mapping[str, float],
    focus: Mapping[str, float],
    next_order: int,
    relevance: float,
) -> tuple[Weights, list[tuple[float, int, int]]]:
    """Each clause's weighted words, and the heap of clauses by gain per token."""
    n = max(next_order, 1)
    weights: Weights = {}
    heap: list[tuple[float, int, int]] = []
    for line in lines:
        recency = 1.0 + 0.25 * line.order / n
        half_prefix = line.prefix_tokens / 2
        for index, base in enumerate(line.words):
            # Words the rest of the view shows are worth less in a fact; with
            # ``relevance``, a clause that names them is worth more.
            shared = sum(focus.get(word, 0.0) for word, _ in base)
            boost = recency * (1.0 + relevance * min(1.0, shared / FOCUS_FULL))
            words = {
                word: w * rarity.get(word, 1.0) * boost * (SEEN_WEIGHT if word in focus else 1.0)
                for word, w in base
            }
            weights[(line.order, index)] = words
            gain = sum(words.values())
            if gain > 0:
                heap.append((-gain / (line.clause_tokens[index] + half_prefix), line.order, index))
    heapq.heapify(heap)
    return weights, heap


def choose(
    lines: Mapping[int, Line],
    weights: Weights,
    opening: list[tuple[float, int, int]],
    room: int,
) -> dict[int, list[int]]:
    """Lazy greedy selection of clauses: most new information per token first."""
    covered: set[str] = set()
    heap = list(opening)
    smallest = min(
        (min(line.clause_tokens) for line in lines.values() if line.clause_tokens),
        default=room,
    )
    picked: dict[int, list[int]] = {}
    used = 0
    while heap and room - used >= smallest:
        _, order, index = heapq.heappop(heap)
        line = lines[order]
        cost = line.clause_tokens[index] + (0 if order in picked else line.prefix_tokens)
        if used + cost > room:
            continue  # the room only shrinks: it will not fit later either
        words = weights[(order, index)]
        gain = sum(w if word not in covered else w * REPEAT_WEIGHT for word, w in words.items())
        if gain <= 0:
            continue
        ratio = gain / (line.clause_tokens[index] + line.prefix_tokens / 2)
        if heap and ratio < -heap[0][0]:
            heapq.heappush(heap, (-ratio, order, index))
            continue
        used += cost
        picked.setdefault(order, []).append(index)
        covered.update(words)
    return picked
