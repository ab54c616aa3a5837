"""Which clauses the memory block shows: weighted words, then a lazy greedy choice.

A clause is worth its words (weighed by :mod:`._relevance`), more for a newer fact,
less for a word the rest of the view shows (the focus) or the block shows already;
the choice takes the most new information per token first until the room is spent.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping

from ._memory_lines import Line

Weights = dict[tuple[int, int], dict[str, float]]

# A word the view already shows still counts this much: facts are asked about as wholes.
REPEAT_WEIGHT = 0.6
# A word the rest of the view shows (the focus) counts this much in a fact: it adds little.
SEEN_WEIGHT = 0.6
# The focus weight (identifiers 1.5, names 0.6, words 0.3) at which a clause's relevance
# boost is full.
FOCUS_FULL = 3.0
_REFILLS = 4  # re-choices that bring a rendering to its cap


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
    # Without a focus every factor but rarity and recency is exactly 1: the same floats.
    plain = not focus and math.isfinite(relevance)
    get = rarity.get
    for line in lines:
        order = line.order
        recency = 1.0 + 0.25 * order / n
        half_prefix = line.prefix_tokens / 2
        tokens = line.clause_tokens
        for index, base in enumerate(line.words):
            if plain:
                words = {word: w * get(word, 1.0) * recency for word, w in base}
            else:
                # Words the rest of the view shows are worth less in a fact; with
                # ``relevance``, a clause that names them is worth more.
                boost = recency
                if relevance:
                    shared = sum(focus.get(word, 0.0) for word, _ in base)
                    boost = recency * (1.0 + relevance * min(1.0, shared / FOCUS_FULL))
                words = {
                    word: w * get(word, 1.0) * boost * (SEEN_WEIGHT if word in focus else 1.0)
                    for word, w in base
                }
            weights[(order, index)] = words
            gain = sum(words.values())
            if gain > 0:
                heap.append((-gain / (tokens[index] + half_prefix), order, index))
    heapq.heapify(heap)
    return weights, heap


def value(clauses: Iterable[tuple[int, int]], weights: Weights) -> float:
    """The information a set of clauses shows: each word's best weight, and its other
    appearances at the weight of a repeat (as the greedy choice counts them)."""
    best: dict[str, float] = {}
    total = 0.0
    for clause in clauses:
        for word, weight in weights.get(clause, {}).items():
            total += weight
            if weight > best.get(word, 0.0):
                best[word] = weight
    top = sum(best.values())
    return top + REPEAT_WEIGHT * (total - top)


def choose(
    lines: Mapping[int, Line],
    weights: Weights,
    opening: list[tuple[float, int, int]],
    room: int,
) -> dict[int, list[int]]:
    """Lazy greedy selection of clauses: most new information per token first."""
    return Greedy(lines, weights, opening).choose(room)


_SNAPSHOT_EVERY = 16  # greedy steps between saved states to resume from, at least
_SNAPSHOTS = 32  # saved states per run, about, at most (each holds a copy of the heap)


class Greedy:
    """The lazy greedy choice for one set of weights, remembering its last run.

    The search for the fullest rendering asks for several nearby rooms in a row; two
    runs take the same steps until a clause fits one room and not the other (or one
    room is full), so the next run resumes from a state saved before that step.
    """

    def __init__(
        self,
        lines: Mapping[int, Line],
        weights: Weights,
        opening: list[tuple[float, int, int]],
        covered: Iterable[str] = (),
    ) -> None:
        """``covered``: words the view shows already (they count as repeats)."""
        self._lines = lines
        self._weights = weights
        self._smallest = min(
            (min(line.clause_tokens) for line in lines.values() if line.clause_tokens),
            default=None,
        )
        self._room: int | None = None
        # The last run, step by step: tokens used before the step, the cost it checked.
        self._used: list[int] = []
        self._cost: list[int] = []
        self._picks: list[tuple[int, int]] = []
        self._covered: list[str] = list(dict.fromkeys(covered))
        # (step, heap, picks, covered words, used) at every _SNAPSHOT_EVERY-th step.
        self._saved: list[tuple[int, list[tuple[float, int, int]], int, int, int]] = [
            (0, list(opening), 0, len(self._covered), 0)
        ]
        self._every = max(_SNAPSHOT_EVERY, len(opening) // _SNAPSHOTS)
        self._end_used = 0
        self._drained = False  # the last run ended with nothing left to take

    def _parting(self, room: int) -> int:
        """The first step at which a run for ``room`` leaves the last run's path."""
        last = self._room
        if last is None:
            return 0
        low, high = min(room, last), max(room, last)
        smallest = self._smallest if self._smallest is not None else room
        for step, used in enumerate(self._used):
            if low - used < smallest <= high - used:
                return step  # one room is full here, the other is not
            if low < used + self._cost[step] <= high:
                return step  # the clause fits one room only
        end = len(self._used)
        if not self._drained:
            smallest = self._smallest if self._smallest is not None else room
            if (room - self._end_used >= smallest) != (last - self._end_used >= smallest):
                return end
        return end + 1  # the same run

    def choose(self, room: int) -> dict[int, list[int]]:
        parting = self._parting(room)
        if parting <= len(self._used):
            self._resume(room, parting)
        self._room = room
        picked: dict[int, list[int]] = {}
        for order, index in self._picks:
            picked.setdefault(order, []).append(index)
        return picked

    def _resume(self, room: int, parting: int) -> None:
        while self._saved[-1][0] > parting:
            self._saved.pop()
        step, saved_heap, n_picks, n_covered, used = self._saved[-1]
        del self._used[step:]
        del self._cost[step:]
        del self._picks[n_picks:]
        del self._covered[n_covered:]
        heap = list(saved_heap)
        covered = set(self._covered)
        in_picks = {order for order, _ in self._picks}
        lines, weights = self._lines, self._weights
        smallest = self._smallest if self._smallest is not None else room
        while heap and room - used >= smallest:
            if step % self._every == 0 and step > self._saved[-1][0]:
                self._saved.append((step, list(heap), len(self._picks), len(self._covered), used))
            step += 1
            _, order, index = heapq.heappop(heap)
            line = lines[order]
            cost = line.clause_tokens[index] + (0 if order in in_picks else line.prefix_tokens)
            self._used.append(used)
            self._cost.append(cost)
            if used + cost > room:
                continue  # the room only shrinks: it will not fit later either
            words = weights[(order, index)]
            # A clause none of whose words is covered yet still has the gain it entered
            # the heap with: it was the best left, so it is taken as it is. (Covered
            # words only grow, so its entry was never pushed back.)
            if not covered.isdisjoint(words):
                gain = sum(
                    w if word not in covered else w * REPEAT_WEIGHT for word, w in words.items()
                )
                if gain <= 0:
                    continue
                ratio = gain / (line.clause_tokens[index] + line.prefix_tokens / 2)
                if heap and ratio < -heap[0][0]:
                    heapq.heappush(heap, (-ratio, order, index))
                    continue
            used += cost
            self._picks.append((order, index))
            in_picks.add(order)
            covered.update(words)
            self._covered.extend(words)
        self._end_used = used
        self._drained = not heap


def search(
    cap: int, room: int, attempt: Callable[[int], tuple[dict[int, list[int]], int]]
) -> tuple[dict[int, list[int]], int | None]:
    """The fullest choice whose rendering fits ``cap``, and the room it was chosen for
    (None: nothing fits). ``attempt`` chooses for a room and renders: the tokens used.

    The estimate of a line's cost is off by merged lines (cheaper) and token boundaries
    (dearer), so the room is moved towards the cap between the largest that fit and the
    least that did not.
    """
    best: dict[int, list[int]] = {}
    best_room: int | None = None
    best_used = -1
    fits: int | None = None
    over: int | None = None
    for _ in range(_REFILLS + 2):
        picked, used = attempt(room)
        if used <= cap:
            if used > best_used:
                best, best_used, best_room = picked, used, room
            fits = room
            step = room + (cap - used)
        else:
            over = room
            step = room - (used - cap) - 2
        if fits is not None and over is not None:
            step = (fits + over) // 2
        if step == room or step <= 0 or (best_used >= 0 and cap - best_used < 4):
            break
        room = step
    return best, best_room
