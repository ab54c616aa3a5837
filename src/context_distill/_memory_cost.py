"""What the memory block costs in tokens: each line's parts measured once, and the
message counted as a sum of its rendered lines, each counted once while it recurs.

A fit renders many candidate blocks that share most of their lines, so counting
each whole would tokenise the same text again and again.
"""

from __future__ import annotations

from langchain_core.messages import HumanMessage

from ._memory_lines import Line, Recent, format_refs
from .tokens import TextCounter, count_message


class BlockCounter:
    """Token counts for one memory block, with the rendered lines it has counted."""

    def __init__(self, count: TextCounter) -> None:
        self.count = count
        self._counted: Recent[str, int] = Recent()  # rendered lines (with their newline)
        self._framing: int | None = None  # an empty message's tokens

    def __len__(self) -> int:
        return len(self._counted)

    def line(self, piece: str) -> int:
        """Tokens of one rendered piece (a line with its newline, a header)."""
        tokens = self._counted.get(piece)
        if tokens is None:
            tokens = self.count(piece)
            self._counted.put(piece, tokens)
        return tokens

    def measure(self, line: Line) -> None:
        """What a fact line costs shown: its refs and prefix, and each clause."""
        if line.prefix_tokens:
            return
        refs = format_refs(line.refs)
        line.prefix_tokens = self.count(f"{refs} {line.prefix}".strip()) + 1
        if len(line.clause_tokens) != len(line.clauses):
            line.clause_tokens = [self.count(c) + 1 for c in line.clauses]

    def message(self, message: HumanMessage, lines: list[str]) -> int:
        """Tokens of ``message``, whose text is ``lines`` joined by newlines.

        Summed over the lines for counters whose pre-tokeniser never joins a newline to
        the text after it (tiktoken's encodings), since no line starts with whitespace;
        o200k joins "\\n/" (a line starting with "/"), so such a block is counted whole.
        """
        body = "\n".join(lines[1:])
        if not getattr(self.count, "line_additive", False) or "\n/" in f"\n{body}" or not body:
            return count_message(message, self.count)
        if self._framing is None:
            self._framing = count_message(HumanMessage(content=""), self.count)
        pieces = [f"{line}\n" for line in lines[:-1]] + lines[-1:]
        return self._framing + sum(self.line(piece) for piece in pieces)
