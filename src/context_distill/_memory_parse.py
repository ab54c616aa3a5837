"""Facts taken apart for the memory block, ahead of time where the worker can.

Parsing is most of what adding a fact costs: the background worker parses the facts
it made, so the crossing turn that commits them only looks them up. What each word
is gets noted once per block, so a block rebuilt from many facts reads each spelling
once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from ._memory_lines import Parsed, split_fact
from ._relevance import WordNotes, base_words
from .tokens import TextCounter

_MAX_PREPARED = 4096

EMPTY = Parsed(prefix="", clauses=[], clause_tokens=[], words=[])


class FactParser:
    """Takes facts apart, remembering those parsed ahead until they are added."""

    def __init__(self, counter: TextCounter) -> None:
        self._count = counter
        # prepare() fills these from the worker thread too: a dict's get and set are
        # atomic, and a note or a parse is the same whichever thread made it.
        self._notes: WordNotes = {}
        self._ready: dict[str, Parsed] = {}

    def parse(self, text: str) -> Parsed:
        notes = self._notes
        prefix, clauses = split_fact(text, notes)
        return Parsed(
            prefix=prefix,
            clauses=clauses,
            clause_tokens=[self._count(clause) + 1 for clause in clauses],
            words=[base_words(clause, notes) for clause in clauses],
        )

    def take(self, text: str) -> Parsed:
        """The fact parsed, ahead of time if it was prepared (and then forgotten)."""
        ready = self._ready.pop(text, None)
        return ready if ready is not None else self.parse(text)

    def tokens(self, text: str) -> int:
        parsed = self._ready.get(text)
        if parsed is not None and parsed.tokens is not None:
            return parsed.tokens
        return self._count(text)

    def prepare(self, texts: Iterable[str]) -> None:
        for text in texts:
            if len(self._ready) < _MAX_PREPARED and text not in self._ready:
                self._ready[text] = replace(self.parse(text), tokens=self._count(text))
