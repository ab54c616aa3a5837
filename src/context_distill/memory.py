"""The memory block: one message listing a thread's facts, oldest first.

Each line names the archive numbers of the messages it came from (``#12`` or
``#12-14``), so the model can ask the recall tool for an original. Repeated facts
share one line, and neighbouring facts of one speaker, tool call or turn share one
line with their prefix written once. When the facts outgrow their share of the
budget, the block shows the ones that add the most per token to the rest of the
view (:mod:`._relevance`) and says how many more the archive holds; nothing is
deleted. The choice is made only when the owner fits the block (at a
distillation), so between distillations the block stays as it was; and a fit
writes new facts below what the block shows, keeping its start (:mod:`._memory_pages`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from langchain_core.messages import HumanMessage

from ._memory_choice import Greedy, Weights, clause_weights, search, value
from ._memory_cost import BlockCounter
from ._memory_held import HeldFacts
from ._memory_lines import (
    Line,
    RenderCache,
    footer,
    format_refs,
    header,
    render,
    shown_clauses,
)
from ._memory_pages import PAGE_LOSS, Page, Pages, freeze, write_page
from ._relevance import focus_terms, rarity
from .messages import MARKER_KEY, MEMORY_MARK
from .tokens import TextCounter

logger = logging.getLogger(__name__)

MEMORY_ID = "context-distill-memory"
__all__ = ["MEMORY_ID", "MemoryBlock", "format_refs"]


class MemoryBlock(HeldFacts):
    """The facts of one thread and the message that shows them.

    Only facts that may still be shown are held here: past a bound, a fact left out
    by several fits in a row is retired (it stays in the archive), so a thread of
    any length costs bounded memory.
    """

    def __init__(
        self, counter: TextCounter, *, recall_tool: str | None = None, relevance: float = 0.0
    ) -> None:
        super().__init__(counter)
        self.relevance = relevance  # how much more a clause naming the focus is worth, at most
        self._recall_tool = recall_tool
        self._shown: list[Line] | None = None  # None: all lines shown
        self._message: HumanMessage | None = None
        self._tokens = 0
        self._weights_cache: Weights = {}
        self._heap_cache: list[tuple[float, int, int]] = []
        self._greedy: Greedy | None = None  # the choice for the cached weights
        self._weights_for = (-1, -1, -1)  # (next order, retired, focus) the cache is for
        self._focus: dict[str, float] = {}
        self._focus_version = 0
        self._cost = BlockCounter(counter)
        self._rendered = RenderCache()  # emptied when a fact's text or sources change
        self.cap: int | None = None
        self._fitted: tuple[object, ...] | None = None  # what the last fit was made for
        self._fitted_chosen: frozenset[int] | None = None  # its chosen lines (None: all)
        self._pages: Pages | None = None  # what the last fit showed, kept below
        self._texts: tuple[str, ...] | None = None  # the body as frozen, while it stands
        self._paged_for = (0, relevance)  # the focus and relevance the pages were chosen for
        self.pages_written = 0  # bumped whenever the pages change (the owner stores them)

    @property
    def recall_tool(self) -> str | None:
        """The recall tool the header names, as of the next rendering."""
        return self._recall_tool

    @recall_tool.setter
    def recall_tool(self, name: str | None) -> None:
        if name != self._recall_tool:
            self._recall_tool = name
            self._message = None
            self._changes += 1

    @property
    def hidden(self) -> int:
        """Facts the view does not show at all."""
        return self.facts - len(self._visible())

    def _visible(self) -> list[Line]:
        if self._shown is not None:
            return self._shown
        self.settle()
        return [line for line in self._lines.values() if line.clauses]

    def focus(self, texts: Iterable[str] | str | None) -> None:
        """What the rest of the view shows (the task, the latest human turn, the recent
        turns). At the next :meth:`fit` a word it shows counts for less in a fact (it
        adds little beside it), and with ``relevance`` above 0 a clause that names what
        it names counts for more (measured on this project's benchmarks, that boost lost
        retention, so it is off by default).

        The owner calls it when a distillation changes the view anyway: the block does
        not change between distillations.
        """
        if texts is None:
            terms: dict[str, float] = {}
        else:
            terms = focus_terms([texts] if isinstance(texts, str) else texts)
        if terms != self._focus:
            self._focus = terms
            self._focus_version += 1

    def _joined(self) -> None:
        self._rendered.clear()  # a line's sources changed: its rendering and cost too
        self._weights_for = (-1, -1, -1)

    def _invalidate(self) -> None:
        """New facts: everything shows until the owner fits the block again."""
        self._changes += 1
        self._message = None
        self._shown = None
        self._texts = None
        for line in self._lines.values():
            line.shown = None

    @property
    def pages(self) -> str | None:
        """What the block shows as of its last fit, to store (None before any fit)."""
        return None if self._pages is None else self._pages.to_json()

    def resume(self, stored: str | None, where: str) -> None:
        """Take back stored pages (a restart): the next fit writes below them. Pages
        that cannot be read are let go (the next fit chooses anew) with a warning."""
        try:
            self._pages = None if stored is None else Pages.from_json(stored)
            self._paged_for = self._choice_terms()
        except ValueError as error:
            logger.warning("%s: %s; the memory block is chosen anew", where, error)
            self._pages = None

    def fit(self, cap: int | None) -> None:
        """Show what carries most per token within ``cap`` tokens (None: show everything).

        Clauses are chosen greedily by the information they add per token: rare,
        specific words weigh most, a word the rest of the view shows (:meth:`focus`)
        or the block shows already counts for less. Merged lines cost less than the
        choice assumed, so the room they leave is chosen again.
        """
        self.cap = cap
        self._retire_missed()
        fitted = (self._changes, self._focus_version, self.relevance, cap)
        if fitted == self._fitted:
            # Unchanged since the last fit: its choice stands; the lines left out miss again.
            if self._fitted_chosen is not None:
                self._missed(self._fitted_chosen)
            return
        self._fitted = None
        self._message = None
        page = None
        if cap is not None and self._pages is not None and self._paged_for == self._choice_terms():
            page = self._write_page(cap)
        if page is not None and page.same:  # nothing new: the pages stay as they are
            self._freeze(page.texts, page.sizes)
            self._count_misses()
            self._fitted = fitted
            return
        self.settle()  # what follows weighs every line
        worth = 0.0 if page is None else self._value()
        self._texts, self._message = None, None
        lines = list(self._lines.values())
        if cap is None:
            for line in lines:
                line.shown = None
            self._shown, self._pages = None, None
            self._fitted, self._fitted_chosen = fitted, None
            return
        for line in lines:
            self._cost.measure(line)
        total = sum(line.prefix_tokens + sum(line.clause_tokens) for line in lines)
        overhead = self._overhead(len(lines))
        everything = total + overhead <= cap
        for line in lines:
            line.shown = None
        if everything:
            chosen: dict[int, list[int]] = {
                line.order: list(range(len(line.clauses))) for line in lines
            }
            rendered = None
        else:
            chosen, rendered = self._search(cap, cap - overhead)
        self._greedy = None  # its saved states are for this fit's search only
        # The page keeps the block's start for the prompt cache, unless choosing
        # everything again (a compaction) shows clearly more.
        if page is not None and worth >= (1 - PAGE_LOSS) * self._picked_value(chosen):
            page.apply()
            self._freeze(page.texts, page.sizes)
        else:
            if everything:
                self._shown = None
            else:
                self._apply(chosen)
                if rendered is not None:
                    self._message, self._tokens = rendered
            self._freeze()
        self._count_misses()
        self._fitted = fitted

    def _count_misses(self) -> None:
        self._fitted_chosen = frozenset(line.order for line in self._visible())
        self._missed(self._fitted_chosen)

    def _overhead(self, trimmed: int) -> int:
        head, foot = header(self._recall_tool), footer(self.facts, trimmed)
        return self._cost.line(head) + self._cost.line(foot) + 8

    def _value(self) -> float:
        weights, _ = self._weights()
        return value(
            ((line.order, i) for line in self._visible() for i in shown_clauses(line)), weights
        )

    def _picked_value(self, picked: Mapping[int, Iterable[int]]) -> float:
        weights, _ = self._weights()
        return value(((order, i) for order, indexes in picked.items() for i in indexes), weights)

    def _freeze(self, texts: Sequence[str] = (), sizes: Sequence[int] = ()) -> None:
        """What the block shows now becomes its pages (``texts`` and ``sizes``: the body
        rendered so far, when the fit rendered it); the message stays as rendered."""
        shown = self._visible()
        if not texts:
            sizes = []
            texts = render(shown, self._rendered, sizes)
        self._pages = freeze(shown, texts, sizes, self._lines, self.cap)
        self.pages_written += 1
        self._texts = self._pages.texts
        self._paged_for = self._choice_terms()

    def _choice_terms(self) -> tuple[int, float]:
        """What a choice is made for besides the facts: pages written for other terms
        are chosen anew (a new focus asks for that)."""
        return self._focus_version, self.relevance

    def _write_page(self, cap: int) -> Page | None:
        """A page within ``cap`` (:func:`._memory_pages.write_page`), shown; None when
        a compaction is due. Restored pages that stand as they are need only the lines
        they show: the others are taken apart when the pages do not stand."""
        pages = self._pages
        assert pages is not None
        if (
            self._unparsed
            and (pages.cap or 0) >= cap
            and all(map(pages.placed, self._lines.values()))
        ):
            self.settle(first for first, _ in pages.shown)
            page = self._page(pages, cap)
            if page is not None and page.same:
                return page
        self.settle()
        return self._page(pages, cap)

    def _page(self, pages: Pages, cap: int) -> Page | None:
        def display(shown: list[Line], texts: tuple[str, ...]) -> int:
            self._shown, self._texts, self._message = shown, texts, None
            return self.tokens

        return write_page(
            pages,
            self._lines,
            cap,
            self._overhead(len(pages.shown)),
            self._cost.line,
            self._cost.measure,
            self._weights,
            display,
            self._rendered,
        )

    def _search(
        self, cap: int, room: int
    ) -> tuple[dict[int, list[int]], tuple[HumanMessage, int] | None]:
        """The fullest choice whose rendering fits ``cap`` (:func:`._memory_choice.search`),
        with its message and tokens as rendered while searching."""
        rendered: dict[int, tuple[HumanMessage, int]] = {}

        def attempt(room: int) -> tuple[dict[int, list[int]], int]:
            picked = self._choose(room)
            self._apply(picked)
            used = self.tokens
            message = self.message()
            if message is not None and used <= cap:
                rendered[room] = (message, used)
            return picked, used

        best, best_room = search(cap, room, attempt)
        return best, rendered.get(best_room) if best_room is not None else None

    def _apply(self, picked: dict[int, list[int]]) -> None:
        """Show the chosen clauses (no retiring: the choice may be made again)."""
        self._message = None
        shown: list[Line] = []
        for line in self._lines.values():
            indexes = picked.get(line.order)
            if indexes is None:
                line.shown = None
                continue
            line.shown = None if len(indexes) == len(line.clauses) else sorted(indexes)
            shown.append(line)
        self._shown = shown

    def _weights(self) -> tuple[Weights, list[tuple[float, int, int]]]:
        """Each clause's weighted words and the opening heap; kept until facts change."""
        self.settle()
        version = (self._next, self._retired, self._focus_version)
        if self._weights_for != version:
            for line in self._lines.values():
                self._cost.measure(line)  # the heap weighs clauses by their cost
            self._weights_cache, self._heap_cache = clause_weights(
                self._lines.values(),
                rarity(self._df, len(self._lines), self._idlike),
                self._focus,
                self._next,
                self.relevance,
            )
            self._weights_for = version
            self._greedy = None
        return self._weights_cache, self._heap_cache

    def _choose(self, room: int) -> dict[int, list[int]]:
        weights, opening = self._weights()
        if self._greedy is None:
            self._greedy = Greedy(self._lines, weights, opening)
        return self._greedy.choose(room)

    def message(self) -> HumanMessage | None:
        """The memory message for the view, or None while there are no facts."""
        if not self.facts:
            return None
        if self._message is None:
            shown = self._visible()
            rendered = (
                list(self._texts) if self._texts is not None else render(shown, self._rendered)
            )
            trimmed = sum(1 for line in shown if line.shown is not None)
            foot = footer(self.facts - len(shown), trimmed)
            rendered += [foot] if foot else []
            body = "\n".join(rendered)
            head = header(self._recall_tool)
            self._message = HumanMessage(
                content=f"{head}\n{body}" if body else head,
                id=MEMORY_ID,
                additional_kwargs={MARKER_KEY: MEMORY_MARK},
            )
            self._tokens = self._cost.message(self._message, [head, *rendered])
        return self._message

    @property
    def tokens(self) -> int:
        """Tokens of the memory message as the model sees it (0 without facts)."""
        return 0 if self.message() is None else self._tokens

    def held(self) -> list[tuple[str, str]]:
        """Each fact line held, oldest first, with how the block shows it now:
        ``"whole"``, ``"part"`` (some clauses left out for room) or ``"none"``."""
        visible = {line.order for line in self._visible()}
        out = []
        for line in self._lines.values():
            label = f"{format_refs(line.refs)} {line.text}".strip()
            if line.order not in visible:
                out.append((label, "none"))
            else:
                out.append((label, "whole" if line.shown is None else "part"))
        return out
