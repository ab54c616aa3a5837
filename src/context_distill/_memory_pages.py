"""The memory block in pages: what a fit showed stays, byte for byte, until a compaction.

A provider's prompt cache serves the longest prefix a call shares with the one
before. Re-choosing every fact at each distillation rewrites the block from its
first line, so every token after the system prompt is paid again. Instead a fit
writes the newly distilled facts below what the block already shows (a page),
keeping the longest start that leaves them room (``PAGE_LEAST``) and filling the
room below it with the most informative facts it does not show, new or not.
The whole block is chosen again (a compaction) only when no start leaves that room,
or when a new choice would show clearly more (``PAGE_LOSS``).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ._memory_choice import Greedy, Weights, search
from ._memory_lines import Line, RenderCache, render, shown_clauses

# A page keeps the longest start of the pages before it that leaves it room for this
# share of its new facts' tokens; the new facts then compete for that room with the
# facts not shown (measured: 0.25 kept more than 1.0 on LoCoMo and django, and more
# of the block's start; the new facts are archived either way).
PAGE_LEAST = 0.25
# A page is shown unless a compaction would show this much more information.
PAGE_LOSS = 0.05


@dataclass(frozen=True, slots=True)
class Pages:
    """What the block shows, frozen: its body lines as rendered, which line shows
    which clauses (by the line's first fact id), and the newest fact id placed."""

    texts: tuple[str, ...]
    sizes: tuple[int, ...]  # how many shown lines each text holds (merged lines)
    shown: tuple[tuple[int, tuple[int, ...] | None], ...]
    upto: int
    cap: int | None  # the room they were written for

    def lines(self, held: Iterable[Line]) -> list[Line] | None:
        """The held lines these pages show, their shown clauses set back as frozen;
        None when one of them is no longer held (the pages cannot be kept)."""
        by_first = {line.fact_ids[0]: line for line in held if line.fact_ids}
        out: list[Line] = []
        for first, clauses in self.shown:
            line = by_first.get(first)
            if line is None or (clauses is not None and max(clauses) >= len(line.clauses)):
                return None
            line.shown = None if clauses is None else list(clauses)
            out.append(line)
        return out

    def placed(self, line: Line) -> bool:
        """Whether the line was held when these pages were written (shown or not)."""
        return bool(line.fact_ids) and line.fact_ids[0] <= self.upto

    def to_json(self) -> str:
        return json.dumps(
            {
                "texts": list(self.texts),
                "sizes": list(self.sizes),
                "shown": [[first, None if c is None else list(c)] for first, c in self.shown],
                "upto": self.upto,
                "cap": self.cap,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Pages:
        """Pages as stored; ValueError naming what is wrong when they are not."""
        try:
            data = json.loads(text)
            texts = tuple(str(t) for t in data["texts"])
            sizes = tuple(int(n) for n in data["sizes"])
            shown = tuple(
                (int(first), None if c is None else tuple(int(i) for i in c))
                for first, c in data["shown"]
            )
            upto = int(data["upto"])
            cap = None if data["cap"] is None else int(data["cap"])
            if len(sizes) != len(texts) or sum(sizes) != len(shown):
                raise ValueError("texts, sizes and shown lines do not agree")
            if any(c is not None and not c for _, c in shown):
                raise ValueError("a shown line shows no clause")
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"stored memory pages are malformed: {error}") from error
        return cls(texts, sizes, shown, upto, cap)


def freeze(
    shown: Iterable[Line],
    texts: Iterable[str],
    sizes: Iterable[int],
    held: Mapping[int, Line],
    cap: int | None,
) -> Pages:
    """Pages for what a fit shows now, every held line counted as placed."""
    return Pages(
        texts=tuple(texts),
        sizes=tuple(sizes),
        shown=tuple(
            (line.fact_ids[0], None if line.shown is None else tuple(line.shown)) for line in shown
        ),
        upto=max((line.fact_ids[-1] for line in held.values() if line.fact_ids), default=-1),
        cap=cap,
    )


@dataclass(slots=True)
class Page:
    """A page chosen (and shown by :func:`write_page`): the start of the pages kept,
    the lines below it, and the whole body as rendered."""

    same: bool  # nothing new and no more room: the pages stay as they were
    texts: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    apply: Callable[[], None] = field(default=lambda: None)


def write_page(
    pages: Pages,
    held: Mapping[int, Line],
    cap: int,
    fixed: int,
    count_line: Callable[[str], int],
    measure: Callable[[Line], None],
    weights_of: Callable[[], tuple[Weights, list[tuple[float, int, int]]]],
    display: Callable[[list[Line], tuple[str, ...]], int],
    cache: RenderCache,
) -> Page | None:
    """The longest start of ``pages`` that leaves room for ``PAGE_LEAST`` of the facts
    new since they were written, and below it the most informative of the facts it does not show,
    within ``cap``; shown through ``display`` (the lines shown and the body; it
    returns the message's tokens). None when no start leaves that room or nothing
    fits (a compaction is due). ``fixed``: tokens of the header and footer, about;
    ``count_line``: a rendered line's tokens."""
    frozen = pages.lines(held.values())
    if frozen is None:
        return None
    new = [line for line in held.values() if not pages.placed(line) and line.clauses]
    for line in new:
        measure(line)
    wanted = PAGE_LEAST * sum(line.prefix_tokens + sum(line.clause_tokens) for line in new)
    costs = [count_line(f"{text}\n") for text in pages.texts]
    keep = len(pages.texts)
    while new and keep and cap - fixed - sum(costs[:keep]) < wanted:
        keep -= 1
    if keep == 0:
        return None
    kept = frozen[: sum(pages.sizes[:keep])]
    texts, sizes = pages.texts[:keep], pages.sizes[:keep]
    shown_before = {id(line) for line in kept}
    rest = [line for line in held.values() if line.clauses and id(line) not in shown_before]
    for line in rest:
        measure(line)
    page = Page(same=False)

    def attempt(picked: Mapping[int, Sequence[int]]) -> int:
        shown = []
        for line in rest:
            indexes = picked.get(line.order)
            line.shown = None
            if indexes is not None:
                if len(indexes) < len(line.clauses):
                    line.shown = sorted(indexes)
                shown.append(line)
        page_sizes: list[int] = []
        page.texts = texts + tuple(render(shown, cache, page_sizes))
        page.sizes = (*sizes, *page_sizes)
        return display(kept + shown, page.texts)

    best: Mapping[int, Sequence[int]] = {line.order: range(len(line.clauses)) for line in rest}
    # Nothing new and no more room than they were written for: they stay as they are.
    page.same = not new and (pages.cap or 0) >= cap and attempt({}) <= cap
    if page.same:
        best = {}
    elif (
        # Far more than the room (even were every merge and token boundary to halve it):
        # no need to render it all to know that.
        sum(costs[:keep]) + fixed + sum(sum(line.clause_tokens) for line in rest) // 2 > cap
        or attempt(best) > cap
    ):
        room = cap - attempt({})
        if room <= 0:
            return None
        weights, opening = weights_of()
        among = {line.order: line for line in rest}
        heap = [entry for entry in opening if entry[1] in among]
        heapq.heapify(heap)
        covered = (
            word
            for line in kept
            for index in shown_clauses(line)
            for word in weights.get((line.order, index), ())
        )
        greedy = Greedy(among, weights, heap, covered)

        def sized(room: int) -> tuple[dict[int, list[int]], int]:
            picked = greedy.choose(room)
            return picked, attempt(picked)

        found, found_room = search(cap, room, sized)
        if found_room is None or attempt(found) > cap:
            return None
        best = found

    def apply() -> None:
        pages.lines(kept)
        attempt(best)

    page.apply = apply
    return page
