"""Facts taken apart for the memory block, ahead of time where the worker can.

Parsing is most of what adding a fact costs: the background worker parses the facts
it made, so the crossing turn that commits them only looks them up. What each word
is gets noted once per block, so a block rebuilt from many facts reads each spelling
once
while it is added (the notes are let go after: held, they would grow with every
spelling the thread ever used).
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
        # prepare() fills this from the worker thread: a dict's get, set and pop are
        # atomic, and a parse is the same whichever thread made it.
        self._ready: dict[str, Parsed] = {}

    def parse(self, text: str, notes: WordNotes | None = None) -> Parsed:
        prefix, clauses = split_fact(text, notes)
        return Parsed(
            prefix=prefix,
            clauses=clauses,
            clause_tokens=[self._count(clause) + 1 for clause in clauses],
            words=[base_words(clause, notes) for clause in clauses],
        )

    def take(self, text: str, notes: WordNotes) -> Parsed:
        """The fact parsed, ahead of time if it was prepared (and then forgotten)."""
        ready = self._ready.pop(text, None)
        return ready if ready is not None else self.parse(text, notes)

    def tokens(self, text: str) -> int:
        parsed = self._ready.get(text)
        if parsed is not None and parsed.tokens is not None:
            return parsed.tokens
        return self._count(text)

    def prepare(self, texts: Iterable[str]) -> None:
        notes: WordNotes = {}
        for text in texts:
            if len(self._ready) < _MAX_PREPARED and text not in self._ready:
                parsed = self.parse(text, notes)
                self._ready[text] = replace(parsed, tokens=self._count(text))
