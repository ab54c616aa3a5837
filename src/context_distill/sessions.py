"""Session files: JSONL of OpenAI chat messages or LangChain message dicts.

Each line is read, decoded and checked before anything is written anywhere; an
error names the line. The format is detected per line, so a file may mix both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
    convert_to_openai_messages,
    messages_from_dict,
)

from .errors import InputFormatError, InvalidMessageError
from .ledger import Ledger, TokenCache
from .messages import ROLES
from .tokens import approximate_count

_OPENAI_ROLES = {"system", "developer", "user", "assistant", "tool"}


def _from_openai(record: dict[str, Any], where: str) -> BaseMessage:
    role = record.get("role")
    if role not in _OPENAI_ROLES:
        raise InputFormatError(
            f"{where}: unknown role {role!r}; expected one of {', '.join(sorted(_OPENAI_ROLES))}"
        )
    content = record.get("content")
    if content is None:
        content = ""
    if not isinstance(content, (str, list)):
        raise InputFormatError(
            f"{where}: content is a {type(content).__name__}; expected a string or a list"
        )
    fields: dict[str, Any] = {"content": content}
    if record.get("id") is not None:
        fields["id"] = record["id"]
    if record.get("name") is not None:
        fields["name"] = record["name"]
    if role in ("system", "developer"):
        return SystemMessage(**fields)
    if role == "user":
        return HumanMessage(**fields)
    if role == "tool":
        call_id = record.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise InputFormatError(f"{where}: tool message without a tool_call_id")
        return ToolMessage(tool_call_id=call_id, **fields)
    raw_calls = record.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise InputFormatError(f"{where}: tool_calls must be a list")
    calls = []
    for index, raw in enumerate(raw_calls):
        function = raw.get("function") if isinstance(raw, dict) else None
        if not isinstance(function, dict) or not isinstance(raw.get("id"), str):
            raise InputFormatError(f"{where}: tool call {index} needs an id and a function")
        arguments = function.get("arguments") or "{}"
        try:
            args = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError as exc:
            raise InputFormatError(
                f"{where}: tool call {index} arguments are not JSON ({exc})"
            ) from None
        if not isinstance(args, dict):
            raise InputFormatError(f"{where}: tool call {index} arguments must be a JSON object")
        calls.append({"name": function.get("name") or "", "args": args, "id": raw["id"]})
    return AIMessage(tool_calls=calls, **fields)


def _from_record(record: Any, where: str) -> BaseMessage:
    if not isinstance(record, dict):
        raise InputFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "role" in record:
        return _from_openai(record, where)
    kind = record.get("type")
    if kind in ROLES:
        try:
            if isinstance(record.get("data"), dict):
                return messages_from_dict([record])[0]
            return convert_to_messages([record])[0]
        except Exception as exc:
            raise InputFormatError(f"{where}: not a valid LangChain message ({exc})") from None
    raise InputFormatError(
        f"{where}: neither an OpenAI chat message (no 'role') nor a LangChain message "
        f"(type {kind!r})"
    )


def parse_lines(lines: Iterable[bytes], name: str = "<input>") -> list[BaseMessage]:
    """Messages of a JSONL session; every line checked, ids given where missing."""
    messages: list[BaseMessage] = []
    numbers: list[int] = []
    for number, raw in enumerate(lines, start=1):
        where = f"{name}, line {number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputFormatError(f"{where}: not valid UTF-8 (byte {exc.start})") from None
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise InputFormatError(f"{where}: malformed JSON ({exc})") from None
        message = _from_record(record, where)
        if message.id is None:
            message.id = f"L{number}"
        messages.append(message)
        numbers.append(number)
    check_history(messages, name, numbers)
    return messages


def read_session(path: str | Path) -> list[BaseMessage]:
    """Read and check a session file; raises InputFormatError naming the line."""
    file = Path(path)
    try:
        with file.open("rb") as handle:
            return parse_lines(handle, str(file))
    except OSError as exc:
        raise InputFormatError(f"cannot read {file}: {exc.strerror or exc}") from None


def check_history(
    messages: Sequence[BaseMessage], name: str = "<input>", lines: Sequence[int] | None = None
) -> None:
    """Validate a whole history the way the engine will, without touching any store."""
    ledger = Ledger()
    tokens = TokenCache(approximate_count, size=16)
    for position, message in enumerate(messages):
        try:
            ledger.add(message, position, tokens)
        except InvalidMessageError as exc:
            where = f"{name}, line {lines[position]}" if lines else name
            raise InputFormatError(f"{where}: {exc}") from None


def to_openai(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """Messages as OpenAI chat dicts."""
    return list(convert_to_openai_messages(list(messages)))
