"""What the library needs to know about a single LangChain message.

Validation with errors that name the message, stable ids, a content digest, its
text (whole for search, its words for distillers, plain as a provider reads it),
who said it, and an exact JSON form for the archive.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Union, overload

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    MessageLikeRepresentation,
    ToolMessage,
    convert_to_messages,
    message_to_dict,
    messages_from_dict,
)
from langchain_core.prompt_values import PromptValue

from .errors import InvalidMessageError

#: Key in ``additional_kwargs`` that marks messages this library wrote.
MARKER_KEY = "context_distill"
MEMORY_MARK = "memory"
REDUCED_MARK = "reduced"

ROLES = ("system", "human", "ai", "tool")
_ROLE_LABELS = {"human": "User", "ai": "Assistant", "system": "System", "tool": "Tool"}
_CHAT_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
# Blocks that hold no words said to the reader: calls, and a model's hidden reasoning.
_UNSAID_BLOCKS = ("tool_use", "tool_call", "reasoning", "thinking")
UNARCHIVABLE_KEY = "context_distill_unarchivable_repr"

logger = logging.getLogger(__name__)


def describe(message: Any, index: int | None) -> str:
    """'message 7 (id abc, ai)' for error texts."""
    where = f"message {index}" if index is not None else "message"
    mid = getattr(message, "id", None)
    kind = getattr(message, "type", type(message).__name__)
    return f"{where} ({'id ' + repr(mid) + ', ' if mid else ''}{kind})"


def _check_text(value: str, what: str, message: Any, index: int | None) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidMessageError(
            f"{describe(message, index)}: {what} is not valid Unicode "
            f"(unpaired surrogate at character {exc.start})"
        ) from None


def _check_json(value: Any, what: str, message: Any, index: int | None) -> None:
    """Refuse, on arrival, what the archive could not keep exactly."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise InvalidMessageError(
            f"{describe(message, index)}: {what} is nested too deeply"
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidMessageError(
            f"{describe(message, index)}: {what} cannot be archived exactly as JSON ({exc})"
        ) from None
    _check_text(text, what, message, index)


def validate(message: Any, index: int | None = None) -> None:
    """Raise InvalidMessageError unless the message is one the library can hold.

    Checks the role, the content's shape, text encodability and the fields tool
    calls and tool results need. Pairing of calls and results is checked per group.
    """
    if not isinstance(message, BaseMessage):
        raise InvalidMessageError(
            f"message {index} is a {type(message).__name__}, not a LangChain message"
        )
    if message.type not in ROLES:
        role = getattr(message, "role", None) or message.type
        raise InvalidMessageError(
            f"{describe(message, index)}: unknown role {role!r}; expected one of {', '.join(ROLES)}"
        )
    if message.id is not None and (not isinstance(message.id, str) or not message.id):
        raise InvalidMessageError(f"{describe(message, index)}: id must be a non-empty string")
    content = message.content
    if isinstance(content, str):
        _check_text(content, "content", message, index)
    elif isinstance(content, list):
        _check_json(content, "content", message, index)
        for position, block in enumerate(content):
            if isinstance(block, str):
                _check_text(block, f"content block {position}", message, index)
            elif isinstance(block, dict):
                text = block_text(block)
                if text is not None:
                    _check_text(text, f"content block {position}", message, index)
            else:
                raise InvalidMessageError(
                    f"{describe(message, index)}: content block {position} is a "
                    f"{type(block).__name__}; expected a string or a dict"
                )
    else:
        raise InvalidMessageError(
            f"{describe(message, index)}: content is a {type(content).__name__}; "
            "expected a string or a list of content blocks"
        )
    if isinstance(message, AIMessage):
        seen: set[str] = set()
        for position, call in enumerate(message.tool_calls):
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                raise InvalidMessageError(
                    f"{describe(message, index)}: tool call {position} has no id"
                )
            if call_id in seen:
                raise InvalidMessageError(
                    f"{describe(message, index)}: tool call id {call_id!r} appears twice"
                )
            seen.add(call_id)
            _check_text(call_id, f"tool call {position} id", message, index)
            _check_text(call.get("name") or "", f"tool call {position} name", message, index)
            _check_json(call.get("args"), f"tool call {position} arguments", message, index)
    if isinstance(message, ToolMessage) and (
        not isinstance(message.tool_call_id, str) or not message.tool_call_id
    ):
        raise InvalidMessageError(f"{describe(message, index)}: tool result has no tool_call_id")
    if message.additional_kwargs:
        _check_json(message.additional_kwargs, "additional_kwargs", message, index)
    if message.response_metadata:
        _check_json(message.response_metadata, "response_metadata", message, index)


def marker(message: BaseMessage) -> str | None:
    """The mark this library left on a message it wrote (memory block, reduced result)."""
    mark = message.additional_kwargs.get(MARKER_KEY)
    return mark if isinstance(mark, str) else None


def digest(message: BaseMessage) -> str:
    """A short content hash: what the message says, not where it sits."""
    h = hashlib.blake2b(digest_size=12)
    h.update(message.type.encode())
    content = message.content
    if isinstance(content, str):
        h.update(b"\x00s")
        h.update(content.encode("utf-8", "surrogatepass"))
    else:  # repr is exact for JSON-like values and much cheaper than a JSON dump
        h.update(b"\x00l")
        h.update(repr(content).encode("utf-8", "surrogatepass"))
    calls = message.tool_calls if isinstance(message, AIMessage) else None
    if calls:
        h.update(b"\x00c")
        h.update(repr(calls).encode("utf-8", "surrogatepass"))
    tool_call_id = message.tool_call_id if isinstance(message, ToolMessage) else None
    if tool_call_id:
        h.update(b"\x00t")
        h.update(tool_call_id.encode("utf-8", "surrogatepass"))
    name = getattr(message, "name", None)
    if name:
        h.update(b"\x00n")
        h.update(name.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def derived_id(message: BaseMessage, position: int) -> str:
    """An id for a message that has none: its position in the thread and its digest."""
    return f"m{position}-{digest(message)[:12]}"


def text_of(message: BaseMessage) -> str:
    """Plain text of a message: text blocks joined, media named, tool calls spelled out."""
    content = message.content
    if isinstance(content, str):
        text = content
    else:
        parts = []
        for block in content:
            value = block_text(block)
            if value is None:
                kind = block.get("type", "media") if isinstance(block, dict) else "media"
                parts.append(f"[{kind}]")
            else:
                parts.append(value)
        text = "\n".join(parts)
    calls = message.tool_calls if isinstance(message, AIMessage) else None
    if calls:
        rendered = "; ".join(
            f"{call.get('name')}({_dumps(call.get('args') or {})})" for call in calls
        )
        text = f"{text}\n{rendered}" if text else rendered
    return text


def block_text(block: Any) -> str | None:
    """The text a content block carries, or None for media blocks."""
    if isinstance(block, str):
        return block
    if isinstance(block, dict):
        kind = block.get("type")
        if kind in ("text", "text-plain", "reasoning", "thinking") or (
            kind is None and "text" in block
        ):
            value = block.get("text", block.get("reasoning", block.get("thinking", "")))
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if kind in ("json", "tool_use", "tool_result", "tool_call"):
            return json.dumps(block, ensure_ascii=False, sort_keys=True, default=str)
    return None


def prose_of(message: BaseMessage) -> str:
    """The text a message says in words: text blocks, media named, tool calls and
    reasoning left out (what a distiller condenses)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in (None, "text"):
            value = block_text(block)
            if value:
                parts.append(value)
        elif isinstance(block, dict) and block.get("type") not in _UNSAID_BLOCKS:
            parts.append(f"[{block.get('type', 'media')}]")
    return "\n".join(parts)


def plain_text(message: BaseMessage) -> str:
    """Text blocks joined as they stand (LangChain's ``message.text``): how a provider
    reads a message, and a model's answer, which may split a sentence over blocks."""
    return str(message.text)


def role_label(message: BaseMessage) -> str:
    """Who said it, as facts and prompts name them: the sender's name, else the role."""
    name = getattr(message, "name", None)
    return name if isinstance(name, str) and name else _ROLE_LABELS.get(message.type, message.type)


def chat_role(message: BaseMessage) -> str:
    """The role chat templates and OpenAI-style APIs name: user, assistant, system, tool."""
    return _CHAT_ROLES.get(message.type, message.type)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def to_json(message: BaseMessage, index: int | None = None) -> str:
    """The exact archive form of a message; refuses what JSON cannot hold exactly.

    A tool result's ``artifact`` (never sent to the model) is the one exception: if
    JSON cannot hold it, the archive keeps its ``repr`` instead, and says so.
    """
    record = message_to_dict(message)
    data = record.get("data", {})
    artifact = data.get("artifact") if isinstance(data, dict) else None
    if artifact is not None:
        try:
            json.dumps(artifact, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            logger.warning("%s: artifact archived as its repr", describe(message, index))
            data["artifact"] = {UNARCHIVABLE_KEY: repr(artifact)[:2000]}
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidMessageError(
            f"{describe(message, index)}: cannot be archived exactly as JSON ({exc})"
        ) from None


def from_json(data: str) -> BaseMessage:
    """Inverse of :func:`to_json`."""
    return messages_from_dict([json.loads(data)])[0]


def is_human(message: BaseMessage) -> bool:
    return isinstance(message, HumanMessage) or message.type == "human"


# -- what the doors accept -----------------------------------------------------------

_OPENAI_ROLES = ("user", "assistant", "system", "developer", "tool", "human", "ai")


def _message_problem(item: Any, exc: BaseException) -> str:
    """Why LangChain could not read ``item`` as a message, in this library's words."""
    if isinstance(item, dict):
        role = item.get("role", item.get("type"))
        if role is None:
            return (
                "a dict needs a 'role' (OpenAI chat format) or a 'type' (LangChain), "
                f"and 'content'; it has {', '.join(repr(k) for k in item) or 'no keys'}"
            )
        if role not in _OPENAI_ROLES and role != "function":
            return f"unknown role {role!r}; expected one of {', '.join(_OPENAI_ROLES)}"
        if role == "tool" and "tool_call_id" not in item:
            return "a tool message needs a 'tool_call_id'"
        if "content" not in item and "data" not in item and not item.get("tool_calls"):
            return "it has no 'content'"
    if isinstance(item, (tuple, list)):
        if len(item) != 2 or not isinstance(item[0], str):
            return f"a {type(item).__name__} must be (role, content), not {len(item)} items"
        return f"unknown role {item[0]!r}; expected one of {', '.join(_OPENAI_ROLES)}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot be read as a message ({first})"


def coerce_message(item: Any, index: int) -> BaseMessage:
    """One item of a history as a LangChain message, or InvalidMessageError naming it.

    Accepts what ``langchain_core.messages.convert_to_messages`` accepts (messages,
    OpenAI chat dicts, ``(role, content)`` tuples, strings) and the archive's own
    dict form (``{"type": ..., "data": {...}}``).
    """
    if isinstance(item, BaseMessage):
        return item
    if not isinstance(item, (str, dict, tuple, list)):
        raise InvalidMessageError(
            f"message {index} is a {type(item).__name__}; expected a LangChain message, "
            "an OpenAI chat dict, a (role, content) tuple or a string"
        )
    try:
        if isinstance(item, dict) and isinstance(item.get("data"), dict) and "role" not in item:
            return messages_from_dict([item])[0]
        return convert_to_messages([item])[0]
    except Exception as exc:  # LangChain raises ValueError, KeyError, NotImplementedError...
        raise InvalidMessageError(f"message {index}: {_message_problem(item, exc)}") from None


class _Coerced(Sequence[BaseMessage]):
    """A history read lazily: an item is converted when first looked at, then kept.

    The engine looks only at the messages that are new since its last call, so a
    long history of messages costs nothing here, and one of dicts costs only its
    new items.
    """

    __slots__ = ("_converted", "_items")

    def __init__(self, items: Sequence[Any]) -> None:
        self._items = items
        self._converted: dict[int, BaseMessage] = {}

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> BaseMessage: ...

    @overload
    def __getitem__(self, index: slice) -> list[BaseMessage]: ...

    def __getitem__(self, index: int | slice) -> BaseMessage | list[BaseMessage]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._items)))]
        if index < 0:
            index += len(self._items)
        item = self._items[index]
        if isinstance(item, BaseMessage):
            return item
        found = self._converted.get(index)
        if found is None:
            found = self._converted[index] = coerce_message(item, index)
        return found


#: What the engine and the doors take as a history: what ``convert_to_messages`` reads.
MessagesInput = Union[Sequence[MessageLikeRepresentation], PromptValue]  # noqa: UP007


def coerce_messages(messages: Any) -> Sequence[BaseMessage]:
    """A history as LangChain messages, converted as the engine reads it.

    Takes a sequence (or other iterable, or a ``PromptValue``) of what
    ``convert_to_messages`` accepts; a bad item raises InvalidMessageError naming
    its index when it is read. A bare string or dict is refused: a history is a list.
    """
    if isinstance(messages, _Coerced):
        return messages
    if isinstance(messages, (str, bytes, dict, BaseMessage)):
        raise InvalidMessageError(
            f"messages must be a list of messages, not a {type(messages).__name__}; "
            "put a single message in a list"
        )
    to_messages = getattr(messages, "to_messages", None)
    if callable(to_messages):  # a PromptValue
        return list(to_messages())
    if not isinstance(messages, Sequence):
        if not isinstance(messages, Iterable):
            raise InvalidMessageError(
                f"messages must be a list of messages, not a {type(messages).__name__}"
            )
        messages = list(messages)
    return _Coerced(messages)
