"""Code-shaped tool output: source files, numbered listings, grep hits, file listings.

What an agent re-reads of these is names and where they are: defined names with
their line numbers, the lines a search hit, the files a directory holds. Each is
written once, grouped under its file or folder, as clauses joined by ``; `` so the
memory block can show some of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .._relevance import collapse_alike

DEF = re.compile(
    r"^\s*(?:async\s+)?(?:def|class|function|func|fn|interface|struct|enum|type|trait|impl)"
    r"\s+[\w$<>]+[^{:]*|^\s*(?:export\s+)?(?:const|let|var)\s+\w+\s*=\s*(?:async\s*)?\(|"
    r"^\s*(?:public|private|protected|static)\s+[\w<>\[\], ]+\s+\w+\s*\(",
)
_CONSTANT = re.compile(r"^(?: {0,4})([A-Z_][A-Z0-9_]{2,}|__\w+__)\s*=\s*(.*)$")
_NOTE = re.compile(r"\b(?:TODO|FIXME|XXX|HACK|BUG)\b.*")
_NUMBERED = re.compile(r"^\s*(\d+)(?:\t| {2,}|[:-](?=\S| ))(.*)$")
_GREP_HIT = re.compile(
    r"^((?:\.{0,2}/)?[\w.@+-]+(?:/[\w.@+-]+)*\.\w+|[\w.-]+/[\w./@+-]+):(\d+)[:-](.*)$"
)
_LS_LONG = re.compile(
    r"^[-dlcbps][-rwxsStT@+.]{9,10}\s+\d+\s+\S+\s+\S+\s+[\d,]+\s+\w{3}\s+\d+\s+[\d:]+\s+(.+)$"
)
_NAME = re.compile(r"^[\w.@+~-][\w./@+~-]*/?$")
_MAX_ITEMS = 24
_MAX_HITS = 16
_MAX_NAMES = 160
_MAX_LINES = 120
_LINE_CHARS = 80
_NAMES_PER_CLAUSE = 16


def compact(line: str, limit: int = 120) -> str:
    """One line, spaces collapsed, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(line.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _definition(line: str) -> str | None:
    match = DEF.match(line)
    if match:
        return compact(match.group(0).strip().rstrip(":{ "))
    constant = _CONSTANT.match(line)
    if constant:
        return compact(f"{constant.group(1)} = {constant.group(2)}", 80)
    note = _NOTE.search(line)
    return compact(note.group(0), 100) if note else None


def _capped(items: list[str], most: int) -> list[str]:
    items = collapse_alike(items)
    if len(items) <= most:
        return items
    return [*items[: most - 4], f"…+{len(items) - most + 1} more", *items[-3:]]


def summarize_code(text: str, first_line: int = 1) -> str:
    """Defined names with their line numbers, module constants and notes of a source file."""
    lines = text.splitlines()
    items = []
    for offset, line in enumerate(lines):
        found = _definition(line)
        if found:
            items.append(f"{first_line + offset}: {found}")
    head = f"{len(lines)} lines"
    return "; ".join([head, *_capped(items, _MAX_ITEMS)])


def numbered_lines(text: str) -> list[tuple[int, str]] | None:
    """``(number, text)`` of each line when the text is a numbered listing (nl, cat -n)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    parsed = []
    for line in lines:
        match = _NUMBERED.match(line)
        if match:
            parsed.append((int(match.group(1)), match.group(2)))
    return parsed if len(parsed) >= 0.8 * len(lines) else None


def summarize_numbered(rows: Sequence[tuple[int, str]], colon: bool) -> str:
    """A numbered listing (``nl``, ``cat -n``, ``grep -n``): its range, then each line
    that says something with its number (what a later edit names), one clause each so
    the memory block can show some; a long listing keeps its definitions in between."""
    first, last = rows[0][0], rows[-1][0]
    lines = [(n, compact(body, _LINE_CHARS)) for n, body in rows if body.strip()]
    if len(lines) > _MAX_LINES:
        edge = _MAX_LINES // 4
        middle = [(n, found) for n, body in rows[edge:-edge] if (found := _definition(body))]
        lines = [*lines[:edge], *middle[: _MAX_LINES // 2], *lines[-edge:]]
    items = [f"{n}: {body}" for n, body in lines]
    if colon:  # grep -n: every line is a hit
        return "; ".join(_capped(items, _MAX_HITS))
    head = f"lines {first}-{last}" if last != first else f"line {first}"
    return "; ".join([head, *items])


def grep_hits(text: str) -> list[tuple[str, int, str]] | None:
    """``(path, line, text)`` of each hit when the text is ``grep -rn`` output."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    hits = []
    for line in lines:
        match = _GREP_HIT.match(line)
        if match:
            hits.append((match.group(1), int(match.group(2)), match.group(3)))
    return hits if len(hits) >= 0.8 * len(lines) else None


def summarize_grep(hits: Sequence[tuple[str, int, str]]) -> str:
    """Search hits grouped by file, each file named once."""
    by_file: dict[str, list[str]] = {}
    for path, number, body in hits:
        by_file.setdefault(path, []).append(f"{number}: {compact(body, 90)}")
    clauses = []
    for path, items in by_file.items():
        shown = _capped(items, 6)
        clauses.append(f"{path}: " + "; ".join(shown))
    return "; ".join(_capped(clauses, _MAX_HITS))


def listed_names(text: str) -> list[str] | None:
    """The names a file listing shows (``ls``, ``ls -l``, ``find``), folders as headers."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    if len(lines) < 3:
        return None
    names: list[str] = []
    matched = 0
    for line in lines:
        stripped = line.strip()
        long_form = _LS_LONG.match(stripped)
        if long_form:
            name = long_form.group(1).split(" -> ")[0]
            if name not in (".", ".."):
                names.append(name)
            matched += 1
        elif stripped.startswith("total ") and stripped[6:].isdigit():
            matched += 1
        elif stripped.endswith(":") and _NAME.match(stripped[:-1]):
            names.append(stripped)  # a folder header of ls -R
            matched += 1
        elif _NAME.match(stripped):
            names.append(stripped)
            matched += 1
    return names if matched >= 0.9 * len(lines) and names else None


def summarize_listing(names: Sequence[str]) -> str:
    """File names as the listing printed them (a path stays whole: it is what a later
    command types), in clauses of a few names; ``ls -R`` folders head their names."""
    clauses: list[str] = []
    chunk: list[str] = []
    folder = ""
    shown = 0

    def flush() -> None:
        if chunk:
            body = ", ".join(chunk)
            clauses.append(f"{folder} {body}" if folder else body)
            chunk.clear()

    for name in names:
        if name.endswith(":"):
            flush()
            folder = name
            continue
        if shown >= _MAX_NAMES:
            break
        chunk.append(name)
        shown += 1
        if len(chunk) >= _NAMES_PER_CLAUSE:
            flush()
    flush()
    count = sum(1 for name in names if not name.endswith(":"))
    head = f"{count} names" + (f" ({count - shown} not listed here)" if count > shown else "")
    return "; ".join([head, *clauses])
