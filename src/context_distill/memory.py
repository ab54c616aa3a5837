"""The memory block: one message listing a thread's facts, oldest first.

Each line names the archive numbers of the messages it came from (``#12`` or
``#12-14``), so the model can ask the recall tool for an original. Repeated facts
share one line, and neighbouring facts of one speaker, tool call or turn share one
line with their prefix written once. When the facts outgrow their share of the
budget, the block shows the ones that add the most per token to the rest of the
view (:mod:`._relevance`) and says how many more the archive holds; nothing is
deleted. The choice is made only when the owner fits the block (at a
distillation), so between distillations the block stays as it was.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from langchain_core.messages import HumanMessage

from ._memory_choice import Greedy, Weights, clause_weights, search, value
from ._memory_lines import (
    Line,
    RenderCache,
    count_by_line,
    footer,
    format_refs,
    header,
    render,
    shown_clauses,
    vocabulary,
)
from ._memory_pages import PAGE_LEAST, PAGE_LOSS, Pages, freeze
from ._memory_parse import EMPTY, FactParser
from ._relevance import WordNotes, focus_terms, key, rarity
from .messages import MARKER_KEY, MEMORY_MARK
from .store import StoredFact
from .tokens import TextCounter, count_message

logger = logging.getLogger(__name__)

MEMORY_ID = "context-distill-memory"
__all__ = ["MEMORY_ID", "MemoryBlock", "format_refs"]

# Past this many held facts, those left out by _RETIRE_AFTER fits in a row are no longer
# considered (they stay archived): bounded memory, while a fact the work needs again
# later can come back until then.
_HOLD = 512
_RETIRE_AFTER = 3


class MemoryBlock:
    """The facts of one thread and the message that shows them.

    Only facts that may still be shown are held here: past a bound, a fact left out
    by several fits in a row is retired (it stays in the archive), so a thread of
    any length costs bounded memory.
    """

    def __init__(
        self, counter: TextCounter, *, recall_tool: str | None = None, relevance: float = 0.0
    ) -> None:
        self._count = counter
        self.relevance = relevance  # how much more a clause naming the focus is worth, at most
        self._recall_tool = recall_tool
        self._lines: dict[int, Line] = {}  # by order of arrival
        self._next = 0
        self._retired = 0
        self._by_key: dict[str, Line] = {}
        self._shown: list[Line] | None = None  # None: all lines shown
        self._message: HumanMessage | None = None
        self._tokens = 0
        self._df: dict[str, int] = {}  # in how many held facts each word occurs
        self._idlike: dict[str, bool] = {}  # words known to be identifiers, or not
        self._parser = FactParser(counter)
        self._weights_cache: Weights = {}
        self._heap_cache: list[tuple[float, int, int]] = []
        self._greedy: Greedy | None = None  # the choice for the cached weights
        self._weights_for = (-1, -1, -1)  # (next order, retired, focus) the cache is for
        self._focus: dict[str, float] = {}
        self._focus_version = 0
        # Rendered lines (with their newline) -> tokens, since the last fit and before it.
        self._line_counts: dict[str, int] = {}
        self._counted_before: dict[str, int] = {}
        self._rendered = RenderCache()  # emptied when a fact's text or sources change
        self._newly_retired: list[int] = []  # fact ids let go since take_retired()
        self.cap: int | None = None
        self._changes = 0  # bumped whenever the lines held or their costs change
        self._fitted: tuple[object, ...] | None = None  # what the last fit was made for
        self._fitted_chosen: frozenset[int] | None = None  # its chosen lines (None: all)
        self._pages: Pages | None = None  # what the last fit showed, kept below
        self._texts: tuple[str, ...] | None = None  # the body as frozen, while it stands
        self._paged_for = (0, relevance)  # the focus and relevance the pages were chosen for

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

    def __len__(self) -> int:
        return len(self._lines) + self._retired

    @property
    def facts(self) -> int:
        return len(self._lines) + self._retired

    @property
    def hidden(self) -> int:
        """Facts the view does not show at all."""
        return self.facts - len(self._visible())

    def _visible(self) -> list[Line]:
        if self._shown is not None:
            return self._shown
        return [line for line in self._lines.values() if line.clauses]

    def restore(self, facts: Sequence[StoredFact]) -> None:
        """Take in a thread's stored facts as its distillations added them, letting go
        of each fact where the block let it go before: the same lines as then."""
        by_distillation: dict[int, list[StoredFact]] = {}
        for fact in facts:
            by_distillation.setdefault(fact.distillation_id, []).append(fact)
        let_go: dict[int, set[int]] = {}
        for fact in facts:
            if fact.retired_at is not None:
                let_go.setdefault(fact.retired_at, set()).add(fact.fact_id)
        doomed = frozenset(i for ids in let_go.values() for i in ids)
        notes: WordNotes = {}  # the words of all these facts, each spelling read once
        for distillation in sorted(by_distillation):
            self._add(by_distillation[distillation], doomed, notes)
            gone = let_go.get(distillation)
            if gone:
                for line in [ln for ln in self._lines.values() if gone & set(ln.fact_ids)]:
                    self._retire(line)
        self._newly_retired.clear()
        self._invalidate()

    @property
    def retired_pending(self) -> bool:
        return bool(self._newly_retired)

    def take_retired(self) -> list[int]:
        """Fact ids the block let go since the last call (for the store to remember)."""
        retired, self._newly_retired = self._newly_retired, []
        return retired

    def add(self, facts: Sequence[StoredFact], *, doomed: frozenset[int] = frozenset()) -> None:
        """Take in newly stored facts; a repeated fact joins the line it repeats.

        A line opened by a fact in ``doomed`` is let go before anyone looks at it
        (a restore): it keeps its place and its key but is not taken apart.
        """
        self._add(facts, doomed, {})

    def _add(self, facts: Sequence[StoredFact], doomed: frozenset[int], notes: WordNotes) -> None:
        for fact in facts:
            fact_key = key(fact.text)
            line = self._by_key.get(fact_key)
            if line is not None:
                line.refs = sorted(set(line.refs) | set(fact.refs))
                self._rendered.clear()
                line.fact_ids.append(fact.fact_id)
                line.prefix_tokens = 0
                self._weights_for = (-1, -1, -1)  # its cost changed
                continue
            parsed = EMPTY if fact.fact_id in doomed else self._parser.take(fact.text, notes)
            line = Line(
                text=fact.text,
                refs=sorted(set(fact.refs)),
                order=self._next,
                prefix=parsed.prefix,
                clauses=parsed.clauses,
                clause_tokens=list(parsed.clause_tokens),
                words=parsed.words,
                fact_ids=[fact.fact_id],
            )
            self._next += 1
            for word in vocabulary(line):
                self._df[word] = self._df.get(word, 0) + 1
            self._lines[line.order] = line
            self._by_key[fact_key] = line
        self._invalidate()

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

    def _retire(self, line: Line) -> None:
        """Stop holding a fact the fits keep leaving out; the archive keeps it."""
        del self._lines[line.order]
        self._changes += 1
        self._by_key.pop(key(line.text), None)
        self._newly_retired.extend(line.fact_ids)
        for word in vocabulary(line):
            left = self._df.get(word, 0) - 1
            if left > 0:
                self._df[word] = left
            else:
                self._df.pop(word, None)
                self._idlike.pop(word, None)
        self._retired += 1

    def fact_tokens(self, text: str) -> int:
        """Tokens of a fact's text, counted ahead of time when it was prepared."""
        return self._parser.tokens(text)

    def prepare(self, texts: Iterable[str]) -> None:
        """Parse facts ahead of :meth:`add` (from any thread), so adding them is cheap."""
        self._parser.prepare(texts)

    def _invalidate(self) -> None:
        """New facts: everything shows until the owner fits the block again."""
        self._changes += 1
        self._message = None
        self._age()
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

    def _age(self) -> None:
        """Renderings and counts of two generations are kept (a fit, the one before):
        what the view still shows is found again, the rest let go."""
        self._rendered.age()
        self._counted_before, self._line_counts = self._line_counts, {}

    def _measure(self, line: Line) -> None:
        if line.prefix_tokens:
            return
        refs = format_refs(line.refs)
        line.prefix_tokens = self._count(f"{refs} {line.prefix}".strip()) + 1
        if len(line.clause_tokens) != len(line.clauses):
            line.clause_tokens = [self._count(c) + 1 for c in line.clauses]

    def fit(self, cap: int | None) -> None:
        """Show what carries most per token within ``cap`` tokens (None: show everything).

        Clauses are chosen greedily by the information they add per token: rare,
        specific words weigh most, a word the rest of the view shows (:meth:`focus`)
        or the block shows already counts for less. Merged lines cost less than the
        choice assumed, so the room they leave is chosen again.
        """
        self.cap = cap
        # Lines the last fits kept leaving out go now (past the bound), before choosing,
        # so that what a fit shows depends only on the lines held while it chose (see
        # restore()).
        excess = len(self._lines) - _HOLD
        for line in list(self._lines.values()):
            if excess <= 0:
                break
            if line.misses >= _RETIRE_AFTER:
                self._retire(line)
                excess -= 1
        fitted = (self._changes, self._focus_version, self.relevance, cap)
        if fitted == self._fitted:
            # Unchanged since the last fit: its choice stands; the lines left out miss again.
            kept = self._fitted_chosen
            if kept is not None:
                for line in self._lines.values():
                    line.misses = 0 if line.order in kept else line.misses + 1
            return
        self._fitted = None
        self._message = None
        self._age()
        page = None
        if cap is not None and self._pages is not None and self._paged_for == self._choice_terms():
            page = self._write_page(cap)
        self._texts, self._message = None, None
        lines = list(self._lines.values())
        for line in lines:
            line.shown = None
        if cap is None:
            self._shown, self._pages = None, None
            self._fitted, self._fitted_chosen = fitted, None
            return
        for line in lines:
            self._measure(line)
        total = sum(line.prefix_tokens + sum(line.clause_tokens) for line in lines)
        overhead = self._overhead(len(lines))
        if total + overhead <= cap:
            self._shown = None
        else:
            chosen, rendered = self._search(cap, cap - overhead)
            self._apply(chosen)
            if rendered is not None:
                self._message, self._tokens = rendered
            self._greedy = None  # its saved states are for this fit's search only
        # The page keeps the block's start for the prompt cache, unless choosing
        # everything again (a compaction) shows clearly more.
        if page is not None and page[0] >= (1 - PAGE_LOSS) * self._value():
            page[1]()
        else:
            self._freeze()
        shown = frozenset(line.order for line in self._visible())
        for line in lines:
            line.misses = 0 if line.order in shown else line.misses + 1
        self._fitted, self._fitted_chosen = fitted, shown

    def _overhead(self, trimmed: int) -> int:
        return self._count(header(self._recall_tool)) + self._count(footer(self.facts, trimmed)) + 8

    def _value(self) -> float:
        weights, _ = self._weights()
        return value(
            ((line.order, i) for line in self._visible() for i in shown_clauses(line)), weights
        )

    def _freeze(self, texts: Sequence[str] = (), sizes: Sequence[int] = ()) -> None:
        """What the block shows now becomes its pages (``texts`` and ``sizes``: the body
        rendered so far, when the fit rendered it); the message stays as rendered."""
        shown = self._visible()
        if not texts:
            sizes = []
            texts = render(shown, self._rendered, sizes)
        self._pages = freeze(shown, texts, sizes, self._lines, self.cap)
        self._texts = self._pages.texts
        self._paged_for = self._choice_terms()

    def _choice_terms(self) -> tuple[int, float]:
        """What a choice is made for besides the facts: pages written for other terms
        are chosen anew (a new focus asks for that)."""
        return self._focus_version, self.relevance

    def _write_page(self, cap: int) -> tuple[float, Callable[[], None]] | None:
        """A page: the longest start of the pages that leaves room for the facts new
        since they were written, and below it the most informative of the facts it
        does not show, within ``cap``. Its value, and how to show it; None when no
        start leaves that room (a compaction is due)."""
        pages = self._pages
        assert pages is not None
        frozen = pages.lines(self._lines.values())
        if frozen is None:
            return None
        new = [line for line in self._lines.values() if not pages.placed(line) and line.clauses]
        for line in new:
            self._measure(line)
        wanted = PAGE_LEAST * sum(line.prefix_tokens + sum(line.clause_tokens) for line in new)
        fixed = self._overhead(len(frozen))
        costs = [self._count(f"{text}\n") for text in pages.texts]
        keep = len(pages.texts)
        while new and keep and cap - fixed - sum(costs[:keep]) < wanted:
            keep -= 1
        if keep == 0:
            return None
        kept = frozen[: sum(pages.sizes[:keep])]
        texts, sizes = pages.texts[:keep], pages.sizes[:keep]
        shown_before = {id(line) for line in kept}
        rest = [
            line for line in self._lines.values() if line.clauses and id(line) not in shown_before
        ]
        for line in rest:
            self._measure(line)
        page_sizes: list[int] = []

        def attempt(picked: Mapping[int, Sequence[int]]) -> int:
            shown = []
            for line in rest:
                indexes = picked.get(line.order)
                line.shown = None
                if indexes is not None:
                    if len(indexes) < len(line.clauses):
                        line.shown = sorted(indexes)
                    shown.append(line)
            self._shown = kept + shown
            page_sizes.clear()
            self._texts = texts + tuple(render(shown, self._rendered, page_sizes))
            self._message = None
            return self.tokens

        best: Mapping[int, Sequence[int]] = {line.order: range(len(line.clauses)) for line in rest}
        # Nothing new and no more room than they were written for: they stay as they are.
        same = not new and (pages.cap or 0) >= cap and attempt({}) <= cap
        if same:
            best = {}
        elif attempt(best) > cap:
            room = cap - attempt({})
            if room <= 0:
                return None
            weights, opening = self._weights()
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
        worth = float("inf") if same else self._value()

        def show() -> None:
            pages.lines(kept)
            attempt(best)
            self._freeze(self._texts or (), (*sizes, *page_sizes))

        return worth, show

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
        version = (self._next, self._retired, self._focus_version)
        if self._weights_for != version:
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
            # o200k joins "\n/" (a line starting with "/"): such a block is counted whole.
            if getattr(self._count, "line_additive", False) and body and "\n/" not in f"\n{body}":
                self._tokens, counts = count_by_line(
                    [head, *rendered], self._count, self._line_counts, self._counted_before
                )
                self._line_counts.update(counts)  # a fit's search counts lines again
            else:
                self._tokens = count_message(self._message, self._count)
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

    @property
    def retired(self) -> int:
        """Facts the block let go (still archived and searchable)."""
        return self._retired
