"""The facts a memory block holds: arrival, repeats joining their line, retirement.

What the block shows of them is memory.py's business; this keeps the lines and the
word counts the choice weighs them by, and which facts it let go (for the store).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._memory_lines import Line, vocabulary
from ._memory_parse import EMPTY, FactParser
from ._relevance import WordNotes, key
from .store import StoredFact
from .tokens import TextCounter

# Past this many held facts, those left out by _RETIRE_AFTER fits in a row are no longer
# considered (they stay archived): bounded memory, while a fact the work needs again
# later can come back until then.
_HOLD = 512
_RETIRE_AFTER = 3


class HeldFacts:
    """A thread's held fact lines, oldest first, and the words they use."""

    def __init__(self, counter: TextCounter) -> None:
        self._lines: dict[int, Line] = {}  # by order of arrival
        self._next = 0
        self._retired = 0
        self._by_key: dict[str, Line] = {}
        self._df: dict[str, int] = {}  # in how many held facts each word occurs
        self._idlike: dict[str, bool] = {}  # words known to be identifiers, or not
        self._parser = FactParser(counter)
        self._newly_retired: list[int] = []  # fact ids let go since take_retired()
        self._changes = 0  # bumped whenever the lines held or their costs change
        # Restored lines not taken apart yet, by order (see settle()): a cold process
        # whose pages stand needs only the lines they show.
        self._unparsed: dict[int, Line] = {}

    def _joined(self) -> None:
        """A repeated fact joined a held line (its sources changed)."""

    def _invalidate(self) -> None:
        """New facts were taken in."""

    def __len__(self) -> int:
        return self.facts

    @property
    def facts(self) -> int:
        return len(self._lines) + self._retired

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
        for distillation in sorted(by_distillation):
            self._add(by_distillation[distillation], doomed, None)
            gone = let_go.get(distillation)
            if gone:
                for line in [ln for ln in self._lines.values() if gone & set(ln.fact_ids)]:
                    self._retire(line)
        self._newly_retired.clear()
        self._invalidate()

    def settle(self, firsts: Iterable[int] | None = None) -> None:
        """Take apart restored lines (those opened by the fact ids ``firsts``, or all),
        their words then counted as :meth:`add` counts them: the same lines as an
        eager restore, parsed only once something needs them."""
        if not self._unparsed:
            return
        if firsts is None:
            lines = list(self._unparsed.values())
        else:
            wanted = set(firsts)
            lines = [ln for ln in self._unparsed.values() if ln.fact_ids[0] in wanted]
        notes: WordNotes = {}  # each spelling read once
        for line in lines:
            del self._unparsed[line.order]
            if self._lines.get(line.order) is not line:
                continue  # retired meanwhile: never looked at
            parsed = self._parser.take(line.text, notes)
            line.prefix, line.clauses, line.words = parsed.prefix, parsed.clauses, parsed.words
            line.clause_tokens = list(parsed.clause_tokens)
            line.prefix_tokens = 0  # measured anew with its prefix
            for word in vocabulary(line):
                self._df[word] = self._df.get(word, 0) + 1
        self._changes += 1

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
        self.settle()
        self._add(facts, doomed, {})

    def _add(
        self, facts: Sequence[StoredFact], doomed: frozenset[int], notes: WordNotes | None
    ) -> None:
        """``notes`` None: a restore, whose lines are taken apart later (settle())."""
        for fact in facts:
            fact_key = key(fact.text)
            line = self._by_key.get(fact_key)
            if line is not None:
                line.refs = sorted(set(line.refs) | set(fact.refs))
                line.fact_ids.append(fact.fact_id)
                line.prefix_tokens = 0
                self._joined()
                continue
            doomed_line = fact.fact_id in doomed
            later = notes is None and not doomed_line
            parsed = EMPTY if notes is None or doomed_line else self._parser.take(fact.text, notes)
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
            if later:
                self._unparsed[line.order] = line
        self._invalidate()

    def _missed(self, shown: frozenset[int]) -> None:
        """A fit showed the lines of these orders: the others miss once more."""
        for line in self._lines.values():
            line.misses = 0 if line.order in shown else line.misses + 1

    def _retire_missed(self) -> None:
        """Lines the last fits kept leaving out go (past the bound) before a fit chooses,
        so that what it shows depends only on the lines held while it chose (see
        :meth:`restore`)."""
        excess = len(self._lines) - _HOLD
        for line in list(self._lines.values()):
            if excess <= 0:
                break
            if line.misses >= _RETIRE_AFTER:
                self._retire(line)
                excess -= 1

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

    @property
    def retired(self) -> int:
        """Facts the block let go (still archived and searchable)."""
        return self._retired
