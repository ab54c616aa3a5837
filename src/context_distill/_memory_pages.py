"""The memory block in pages: what a fit showed stays, byte for byte, until a compaction.

A provider's prompt cache serves the longest prefix a call shares with the one
before. Re-choosing every fact at each distillation rewrites the block from its
first line, so every token after the system prompt is paid again. Instead a fit
writes the newly distilled facts below what the block already shows (a page),
choosing among them for the room left; only when the room left would show too
little of them is the whole block chosen again (a compaction), and then to less
than its room, so that the next few pages fit below it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._memory_lines import Line

# A page keeps the longest start of the pages before it that leaves it room for this
# share of its new facts' tokens.
PAGE_LEAST = 1.0
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
