"""Tool output to telegraphic text, by what the output is: JSON, logs, code, prose.

JSON keeps its informative leaves as ``key=value`` (transport noise such as
request ids and cursors goes); logs and test runs keep commands, errors, counts
and paths; source files keep their definitions; anything else is telegraphed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ._code import (
    DEF,
    grep_hits,
    listed_names,
    numbered_lines,
    summarize_code,
    summarize_grep,
    summarize_listing,
    summarize_numbered,
)
from ._telegraph import telegraph
from ._testrun import (
    looks_like_test_run,
    looks_like_traceback,
    summarize_test_run,
    summarize_traceback,
)

# Keys that describe the transport, not the answer.
_NOISE_KEYS = frozenset(
    """request_id requestid x_request_id trace_id traceid span_id spanid correlation_id
    etag cursor next_cursor prev_cursor page_token next_page_token nextpagetoken _links
    links source api_version object""".split()
)
_OK_STATUS = frozenset({"ok", "success", "succeeded", "200", "true"})
_MAX_STRING = 240
_MAX_JSON_CHARS = 1600
_MAX_LOG_LINES = 14

_LOG_SIGNAL = re.compile(
    r"error|exception|traceback|fail|fatal|panic|assert|denied|refused|not found|no such|"
    r"timeout|timed out|warning|warn\b|exit (?:code|status)|returned non-zero|killed|"
    r"\b\d+ (?:passed|failed|errors?|skipped|warnings?|tests?|xfailed|deselected)\b|"
    r"^\s*(?:\$|>|#) \S|^\s*FAILED|^\s*PASSED|^\s*ERROR|^\s*=+ .* =+\s*$|"
    r"File \"[^\"]+\", line \d+|\w+Error\b|\w+Exception\b|^\s*at \S+\(.*:\d+\)",
    re.I,
)
_CODE_HINT = re.compile(
    r"^\s*(?:import |from \S+ import |#include|package |using |def |class )", re.M
)
# Cheap hints that a line may matter; _LOG_SIGNAL then decides per line.
_HINT_WORDS = (
    "error", "exception", "traceback", "fail", "fatal", "panic", "assert", "denied",
    "refused", "not found", "no such", "timeout", "timed out", "warn", "exit code",
    "exit status", "non-zero", "killed", "passed", "skipped", "deselected", "xfail",
    " test", "line ",
)  # fmt: skip
_LINE_START_HINT = re.compile(r"\n[ \t]*(?:[$>#] |at |=+ |FAILED|PASSED|ERROR)")
_NUMBER = re.compile(r"\d+")
_SHORT_CHARS = 240
_MAX_PROSE_CHARS = 64_000  # prose beyond this is in the archive, not in the facts


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            repr(value)
            if value != int(value)
            else str(int(value))
            if abs(value) < 1e15
            else repr(value)
        )
    text = str(value)
    if len(text) > _MAX_STRING:
        compact = " ".join(telegraph(text)) or text
        text = compact if len(compact) <= _MAX_STRING else compact[: _MAX_STRING - 1] + "…"
    return text


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _flatten(value: Any, key: str | None, out: list[str], skip: frozenset[str]) -> None:
    if isinstance(value, dict):
        inner: list[str] = []
        for child_key, child in value.items():
            name = str(child_key)
            lower = name.lower().replace("-", "_")
            if _is_empty(child) or lower in _NOISE_KEYS:
                continue
            if lower == "status" and str(child).lower() in _OK_STATUS:
                continue
            _flatten(child, name, inner, skip)
        if key is not None and inner and len(value) > 1 and len(inner) > 1:
            out.append(f"{key}: (" + ", ".join(inner) + ")")
        else:
            out.extend(inner)
        return
    if isinstance(value, list):
        items: list[str] = []
        for item in value:
            if _is_empty(item):
                continue
            if isinstance(item, (dict, list)):
                sub: list[str] = []
                _flatten(item, None, sub, skip)
                if sub:
                    items.append("(" + ", ".join(sub) + ")" if len(sub) > 1 else sub[0])
            else:
                items.append(_scalar(item))
        if items:
            out.append(f"{key}=[{'; '.join(items)}]" if key else "; ".join(items))
        return
    text = _scalar(value)
    if text in skip:
        return
    out.append(f"{key}={text}" if key else text)


def summarize_json(value: Any, skip_values: frozenset[str] = frozenset()) -> str:
    """Informative leaves of a JSON value, compact; values already stated are skipped."""
    parts: list[str] = []
    _flatten(value, None, parts, skip_values)
    text = ", ".join(parts)
    if len(text) > _MAX_JSON_CHARS:
        cut = text.rfind(", ", 0, _MAX_JSON_CHARS)
        shown = text[: cut if cut > 0 else _MAX_JSON_CHARS]
        text = f"{shown} …(+{text.count(', ', len(shown))} more)"
    return text


def parse_json(text: str) -> Any:
    """The JSON value a text holds, or None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return None


def _signal_lines(text: str) -> list[str]:
    """Lines that say what happened, in order, found with C-speed scans.

    Literal hints are found with ``str.find`` on the lower-cased text and line-start
    hints with one anchored pattern; only the lines they land on get the full check.
    """
    lower = text.lower()
    starts: set[int] = set()
    for hint in _HINT_WORDS:
        at = lower.find(hint)
        while at >= 0:
            starts.add(lower.rfind("\n", 0, at) + 1)
            end = lower.find("\n", at)
            if end < 0:
                break
            at = lower.find(hint, end)
    starts.update(match.start() + 1 for match in _LINE_START_HINT.finditer(text))
    if _LINE_START_HINT.match("\n" + text[:200]):
        starts.add(0)
    lines = []
    for start in sorted(starts):
        end = text.find("\n", start)
        line = text[start : end if end >= 0 else len(text)]
        if _LOG_SIGNAL.search(line):
            lines.append(line)
    return lines


def summarize_log(text: str, signal: list[str] | None = None) -> str:
    """Commands, errors, counts and paths of a log or test run."""
    kept: list[str] = []
    seen: set[str] = set()
    for line in _signal_lines(text) if signal is None else signal:
        compact = " ".join(line.strip(" =-*").split())
        key = _NUMBER.sub("#", compact)
        if key in seen or not compact:
            continue
        seen.add(key)
        kept.append(compact if len(compact) <= 200 else compact[:199] + "…")
    if not kept:
        edges = text[:4000].splitlines() + text[-4000:].splitlines()
        lines = [line for line in edges if line.strip()]
        first = " ".join(lines[0].split())[:200] if lines else ""
        last = " ".join(lines[-1].split())[:200] if len(lines) > 1 else ""
        kept = [part for part in (first, last) if part]
    if len(kept) > _MAX_LOG_LINES:
        head = kept[: _MAX_LOG_LINES - 4]
        tail = kept[-4:]
        kept = [*head, f"…{len(kept) - _MAX_LOG_LINES} more…", *tail]
    count = text.count("\n") + 1
    prefix = f"{count} lines: " if count > 3 else ""
    return prefix + "; ".join(kept)


def looks_like_log(text: str) -> bool:
    return text.count("\n", 0, 100_000) >= 2 and bool(_signal_lines(text))


def looks_like_code(text: str) -> bool:
    if text.count("\n") < 3:
        return False
    sample = text[:20000]
    return (
        bool(_CODE_HINT.search(sample))
        or sum(1 for line in sample.splitlines() if DEF.match(line)) >= 2
    )


# A tag alone at the end of a line that a closing tag alone at a line start matches:
# a wrapper a harness put around the output (<output>, <output_head>), not content.
_OPEN_TAG = re.compile(r"<([A-Za-z_][\w-]{0,30})>[ \t]*(?=\n)")
_VALUE_TAG = re.compile(r"<([A-Za-z_][\w-]{0,30})>[ \t]*([^<>\n]{0,40}?)[ \t]*</\1>")
_QUIET_VALUE = re.compile(r"(?:code|status)$", re.I)


def unwrap(text: str) -> str:
    """The output without a harness's wrapper tags; ``<returncode>0</returncode>``
    goes (success says nothing), another value stays as ``name value``; a
    ``<warning>`` block keeps only its first line."""
    if "<" not in text:
        return text
    for name in {match.group(1) for match in _OPEN_TAG.finditer(text)}:
        closing = re.compile(rf"(?:^|\n)[ \t]*</{re.escape(name)}>", re.M)
        if not closing.search(text):
            continue
        if name.lower() == "warning":
            text = re.sub(
                rf"<{name}>\s*\n([^\n]*)\n.*?</{name}>",
                lambda m: m.group(1).strip() + "\n",
                text,
                flags=re.S,
            )
        text = re.sub(rf"</?{re.escape(name)}>", "\n", text)

    def value(match: re.Match[str]) -> str:
        name, content = match.group(1), match.group(2).strip()
        if _QUIET_VALUE.search(name) and content in ("0", ""):
            return ""
        return f"{name} {content}"

    text = _VALUE_TAG.sub(value, text)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _shaped(text: str) -> str | None:
    """The summary of output with a recognisable shape, or None."""
    if looks_like_test_run(text):
        return summarize_test_run(text)
    if "Traceback (most recent call last)" in text:
        return summarize_traceback(text)
    rows = numbered_lines(text)
    if rows is not None:
        colon = all(re.match(r"^\s*\d+[:-]", line) for line in text.splitlines() if line.strip())
        return summarize_numbered(rows, colon)
    hits = grep_hits(text)
    if hits is not None:
        return summarize_grep(hits)
    names = listed_names(text)
    if names is not None:
        return summarize_listing(names)
    if looks_like_code(text):
        return summarize_code(text)
    if looks_like_traceback(text):
        return summarize_traceback(text)
    return None


def summarize_output(text: str, skip_values: frozenset[str] = frozenset()) -> str:
    """Telegraphic form of any tool output."""
    value = parse_json(text)
    if value is not None:
        return summarize_json(value, skip_values)
    text = unwrap(text)
    if not text.strip():
        return ""
    shaped = _shaped(text) if text.count("\n", 0, 100_000) >= 1 else None
    if shaped:
        return shaped
    if len(text) <= _SHORT_CHARS and text.count("\n") < 3:
        # Short output is cheap word for word; telegraph would strip code's punctuation.
        return "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())
    if text.count("\n", 0, 100_000) >= 2:
        signal = _signal_lines(text)
        if signal:
            return summarize_log(text, signal)
    parts = telegraph(text[:_MAX_PROSE_CHARS])
    if not parts:
        return " ".join(text[:1000].split())[:200]
    joined = "; ".join(parts)
    if len(joined) > _MAX_JSON_CHARS:
        joined = joined[: _MAX_JSON_CHARS - 1] + "…"
    return joined
