"""mini-swe-agent trajectories as tool-calling sessions, and the identifier score.

A trajectory is a system prompt, the task, then assistant turns that each hold a
THOUGHT and one bash block, each answered by a user message with the command's
output. Replayed here the way a tool-calling agent holds it: the bash block becomes
a ``bash`` tool call (the THOUGHT stays the message's text) and its output the
tool result. A turn with no block or several (mini-swe-agent refuses those) stays
plain text, and so does the format error that answers it.

The score asks what a coding agent needs from its older context: each run is cut
at an assistant turn at 80% of its messages; the identifiers (file paths, names
with underscores, numbers of 3+ digits) that the commands after the cut use and
that the history showed only in early tool output (the first 60% of the history,
not in the task, not repeated later) are the gold; a view keeps an identifier
when it holds it word for word.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.datasets import DATA_ROOT, Message, Replay

SWE_AGENT_DIR = DATA_ROOT / "swe_agent"
SWE_AGENT_PATH = SWE_AGENT_DIR / "mini-swe-agent-gemini-3-pro-django.jsonl.gz"
#: The repository the project develops on; every other one is held out.
DEV_REPO = "django"
CUT_AT = 0.8
EARLY = 0.6
BASH_TOOL = "bash"

_BASH = re.compile(r"```bash[ \t]*\n(.*?)\n?```", re.S)
_EXT = (
    "py|pyi|txt|html|js|ts|json|cfg|toml|ini|yml|yaml|md|rst|sh|sql|po|css|xml|c|h|"
    "rs|go|java|rb|php|lock|csv"
)
_IDENT = re.compile(
    r"(?:[\w.-]+/)+[\w.-]*\w"  # a path with a slash
    rf"|[\w-]+\.(?:{_EXT})\b"  # a file name
    r"|\b[A-Za-z_]\w*_\w*\b"  # a name with an underscore
    r"|\b\d{3,}\b"  # a number of 3+ digits
)


def identifiers(text: str) -> set[str]:
    """File paths, names with underscores and numbers of 3+ digits in ``text``."""
    found = set()
    for match in _IDENT.findall(text):
        token = match.strip("./-")
        if len(token) >= 3 and token.strip("_"):
            found.add(token)
    return found


def holds(text: str, identifier: str) -> bool:
    """``identifier`` word for word in ``text``, not inside a longer name or number."""
    pattern = r"(?<![\w])" + re.escape(identifier) + r"(?![\w])"
    return re.search(pattern, text) is not None


def commands(text: str) -> list[str]:
    """The bash blocks of an assistant message."""
    return [block.strip() for block in _BASH.findall(text)]


def repo_of(instance_id: str) -> str:
    """``django__django-11099`` → ``django``; ``psf__requests-2317`` → ``requests``."""
    name = instance_id.split("__", 1)[-1]
    return re.sub(r"-\d+$", "", name)


def to_tool_calls(messages: Sequence[dict[str, Any]], run_id: str) -> list[Message]:
    """mini-swe-agent messages as OpenAI chat messages with ``bash`` tool calls."""
    out: list[Message] = []
    pending: str | None = None  # the call id awaiting its output
    for index, message in enumerate(messages):
        role, content = message["role"], str(message.get("content") or "")
        if role == "assistant" and pending is not None:  # a call left unanswered
            out.append({"role": "tool", "content": "", "tool_call_id": pending})
            pending = None
        if role == "assistant":
            blocks = commands(content)
            if len(blocks) == 1:
                pending = f"{run_id}-call{index}"
                thought = _BASH.sub("", content).strip()
                out.append(
                    {
                        "role": "assistant",
                        "content": thought,
                        "tool_calls": [
                            {
                                "id": pending,
                                "type": "function",
                                "function": {
                                    "name": BASH_TOOL,
                                    "arguments": json.dumps({"command": blocks[0]}),
                                },
                            }
                        ],
                    }
                )
                continue
            pending = None
            out.append({"role": "assistant", "content": content})
        elif role == "user" and pending is not None:
            out.append({"role": "tool", "content": content, "tool_call_id": pending})
            pending = None
        else:
            out.append({"role": role, "content": content})
    return out


def gold_identifiers(
    messages: Sequence[dict[str, Any]], cut: int, early: float = EARLY
) -> list[str]:
    """Identifiers the commands from ``cut`` on use that the history before ``cut``
    showed only in early tool output (raw mini-swe-agent messages)."""
    history = messages[:cut]
    task = "\n".join(str(m.get("content") or "") for m in history[:2])
    early_end = int(len(history) * early)
    early_output = "\n".join(
        str(m.get("content") or "") for m in history[2:early_end] if m["role"] == "user"
    )
    later = "\n".join(str(m.get("content") or "") for m in history[early_end:])
    wanted: list[str] = []
    for message in messages[cut:]:
        if message["role"] != "assistant":
            continue
        for command in commands(str(message.get("content") or "")):
            for ident in sorted(identifiers(command)):
                if ident in wanted or not holds(early_output, ident):
                    continue
                if holds(task, ident) or holds(later, ident):
                    continue
                wanted.append(ident)
    return wanted


def cut_index(messages: Sequence[dict[str, Any]], at: float = CUT_AT) -> int | None:
    """The first assistant turn at or after ``at`` of the run (None if there is none)."""
    for index in range(int(len(messages) * at), len(messages)):
        if messages[index]["role"] == "assistant":
            return index
    return None


def read_runs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Trajectories from JSONL files (gzipped or not), in file order."""
    runs = []
    for path in paths:
        opener: Any = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            runs.extend(json.loads(line) for line in handle if line.strip())
    return runs


def load_swe_agent(
    paths: Iterable[str | Path] = (SWE_AGENT_PATH,), cut_at: float = CUT_AT, early: float = EARLY
) -> list[Replay]:
    """Each run of the files, cut at ``cut_at``, as a tool-calling session with its gold."""
    return load_swe_agent_runs(read_runs(paths), cut_at, early)


def load_swe_agent_runs(
    runs: Iterable[dict[str, Any]], cut_at: float = CUT_AT, early: float = EARLY
) -> list[Replay]:
    """Runs cut at ``cut_at``, as tool-calling sessions with their gold identifiers.

    Every run is returned (those without gold identifiers too: they still count
    for compression and prefix reuse); ``meta["repo"]`` names its repository.
    """
    replays = []
    for run in runs:
        raw = run["messages"]
        cut = cut_index(raw, cut_at)
        if cut is None or cut < 4:
            continue
        run_id = str(run.get("instance_id", f"run{len(replays)}"))
        replays.append(
            Replay(
                id=run_id,
                messages=to_tool_calls(raw[:cut], run_id),
                gold_values=gold_identifiers(raw, cut, early),
                meta={"repo": repo_of(run_id), "cut": cut, "messages": len(raw)},
            )
        )
    return replays


def split(replays: Sequence[Replay], dev_repo: str = DEV_REPO) -> dict[str, list[Replay]]:
    """The development set (``dev_repo``) and the held-out set (every other repository)."""
    return {
        "dev": [r for r in replays if r.meta.get("repo") == dev_repo],
        "held-out": [r for r in replays if r.meta.get("repo") != dev_repo],
    }
