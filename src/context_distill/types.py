"""The small data types that cross module boundaries: groups in, facts out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from langchain_core.messages import BaseMessage

from .errors import InvalidThreadIdError


@dataclass(frozen=True, slots=True)
class Fact:
    """One telegraphic statement, with the ids of the messages it came from."""

    text: str
    source_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Group:
    """An atomic piece of history handed to a distiller.

    A group is one message, or an assistant message with tool calls together with
    all of its tool results; it is distilled whole or not at all.
    """

    thread_id: str
    messages: tuple[BaseMessage, ...]
    message_ids: tuple[str, ...]
    tokens: int
    # Conversation date in force when the group starts (from a session header or a
    # message timestamp seen earlier); lets distillers resolve "yesterday".
    anchor: datetime | None = None
    # How many tokens of facts the policy hopes for; budget-aware distillers aim at it.
    target_tokens: int | None = None


@dataclass(slots=True)
class GroupFacts:
    """What a distiller made of one group, and what went wrong on the way."""

    facts: list[Fact]
    dropped: int = 0  # facts rejected by the grounding check
    fallback: str | None = None  # distiller that wrote the facts instead, if not the asked one
    notes: list[str] = field(default_factory=list)


def check_thread_id(thread_id: object) -> str:
    """The one thread-id rule: a non-empty string that UTF-8 (and so any store) can hold."""
    if not isinstance(thread_id, str) or not thread_id:
        raise InvalidThreadIdError(f"thread_id must be a non-empty string, not {thread_id!r}")
    try:
        thread_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidThreadIdError(
            f"thread_id {thread_id!r} is not valid Unicode "
            f"(unpaired surrogate at character {exc.start})"
        ) from None
    return thread_id
