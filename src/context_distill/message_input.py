"""What the doors accept as a history: whatever LangChain's ``convert_to_messages``
reads (messages, OpenAI chat dicts, ``(role, text)`` tuples, strings, a
``PromptValue``), converted lazily, with the library's own error naming the item."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Union, overload

from langchain_core.messages import (
    BaseMessage,
    MessageLikeRepresentation,
    convert_to_messages,
    messages_from_dict,
)
from langchain_core.prompt_values import PromptValue

from .errors import InvalidMessageError

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
