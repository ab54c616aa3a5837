"""Test runs and Python tracebacks: which tests failed, with what error, and the totals.

A pytest failure report quotes the failing test's source (``def test_login():``),
so a test run must be read as a test run before anything reads it as code: what
carries is the failing ids, the ``E`` lines, ``path:line: Error`` locations and the
counts. A traceback keeps each frame as ``path:line function`` (the first and last
frames with their source line) and every error line of the chain.
"""

from __future__ import annotations

import re

from ._code import compact

_TEST_SIGNAL = re.compile(
    r"^=+ (?:FAILURES|ERRORS|short test summary info|test session starts)|"
    r"^=*\s*\d+ (?:passed|failed|errors?)\b.* in [\d.]+s|"
    r"^Ran \d+ tests? in |^(?:FAIL|ERROR): \w|^(?:FAILED|ERROR|PASSED) \S+::",
    re.M,
)
_TOTALS = re.compile(
    r"^=*\s*(\d+ (?:passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)"
    r"(?:, \d+ \w+)*)(?: in [\d.]+s)?|^Ran \d+ tests? in [\d.]+s|^(?:OK|FAILED)(?: \(.*\))?$|"
    r"^collected \d+ items?"
)
_FAILED_ID = re.compile(r"^(?:FAILED|ERROR|XPASS) (\S+::\S+)(?: - (.*))?$|^(?:FAIL|ERROR): (.+)$")
_E_LINE = re.compile(r"^E\s+(.+)$")
_LOCATION = re.compile(r"^(\S+\.py):(\d+): (\w+(?:Error|Exception|Failure|Exit)\w*)$")
_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+)(?:, in (.+))?$')
_ERROR_LINE = re.compile(
    r"^(?:[\w.]+\.)?[A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt|DoesNotExist|"
    r"NotFound|Failure)\b.*$|^(?:[\w.]+\.)?[A-Z]\w*: .+$"
)
_MAX_FAILED = 12
_MAX_E_LINES = 8
_MAX_FRAMES = 8


def looks_like_test_run(text: str) -> bool:
    return _TEST_SIGNAL.search(text) is not None


def _add(out: list[str], seen: set[str], item: str) -> None:
    if item and item not in seen:
        seen.add(item)
        out.append(item)


def summarize_test_run(text: str) -> str:
    """Failing test ids with their errors, ``E`` lines, error locations and totals."""
    failed: list[str] = []
    errors: list[str] = []
    totals: list[str] = []
    seen: set[str] = set()
    lines = text.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        match = _FAILED_ID.match(stripped)
        if match:
            if match.group(1):
                reason = match.group(2)
                item = match.group(1) + (f" - {compact(reason, 120)}" if reason else "")
            else:
                item = compact(stripped, 160)
            if len(failed) < _MAX_FAILED:
                _add(failed, seen, item)
            continue
        e_line = _E_LINE.match(line)
        if e_line and len(errors) < _MAX_E_LINES:
            _add(errors, seen, "E " + compact(e_line.group(1), 160))
            continue
        location = _LOCATION.match(stripped)
        if location:
            _add(errors, seen, compact(stripped, 160))
            continue
        if _ERROR_LINE.match(stripped) and index > 0 and _in_traceback(lines, index):
            if len(errors) < _MAX_E_LINES:
                _add(errors, seen, compact(stripped, 160))
            continue
        total = _TOTALS.match(stripped.strip("= "))
        if total:
            _add(totals, seen, compact(stripped.strip("= "), 120))
    return "; ".join([*failed, *errors, *totals]) or compact(lines[-1] if lines else "", 120)


def _in_traceback(lines: list[str], index: int) -> bool:
    """Whether the line follows a traceback frame (an error line, not prose)."""
    for back in range(index - 1, max(index - 4, -1), -1):
        previous = lines[back]
        if _FRAME.match(previous) or previous.startswith("    ") or previous.startswith("\t"):
            return True
        if previous.strip():
            return False
    return False


def looks_like_traceback(text: str) -> bool:
    return "Traceback (most recent call last)" in text or ('File "' in text and ", line " in text)


def summarize_traceback(text: str) -> str:
    """Frames as ``path:line function`` (first and last with their source) and errors."""
    lines = text.splitlines()
    frames: list[tuple[str, str]] = []  # (location, source line)
    errors: list[str] = []
    seen: set[str] = set()
    for index, line in enumerate(lines):
        match = _FRAME.match(line)
        if match:
            path, number, where = match.groups()
            location = f"{path}:{number}" + (f" {where}" if where else "")
            source = ""
            if index + 1 < len(lines) and not _FRAME.match(lines[index + 1]):
                following = lines[index + 1].strip()
                if following and not _ERROR_LINE.match(following):
                    source = compact(following, 140)
            frames.append((location, source))
            continue
        stripped = line.strip()
        if stripped and not line.startswith(" ") and _ERROR_LINE.match(stripped):
            _add(errors, seen, compact(stripped, 200))
    if len(frames) > _MAX_FRAMES:
        frames = [*frames[:3], ("…", ""), *frames[-(_MAX_FRAMES - 4) :]]
    rendered = []
    for position, (location, source) in enumerate(frames):
        edge = position == 0 or position == len(frames) - 1
        rendered.append(f"{location}: {source}" if source and edge else location)
    return "; ".join([*errors, *rendered])
