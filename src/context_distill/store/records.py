"""What crosses the store boundary: records in, records out, and message states.

Plain frozen data, shared by every backend, so that the engine, the doors and the
command line never see a row or a connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import StoreError

# Message states in the archive.
ARCHIVED = "archived"  # stored, still in the view
REDUCED = "reduced"  # in the view only as a shortened copy
DISTILLED = "distilled"  # out of the view, replaced by facts


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """One message as the archive keeps it."""

    message_id: str
    role: str
    digest: str
    tokens: int
    text: str
    data: str | None  # exact JSON form (messages.to_json); None: archived already

    @classmethod
    def archived(cls, message_id: str) -> MessageRecord:
        """A message archived earlier, named only (its row must exist)."""
        return cls(message_id, "", "", 0, "", None)


@dataclass(frozen=True, slots=True)
class FactRecord:
    text: str
    source_ids: tuple[str, ...]
    tokens: int


@dataclass(frozen=True, slots=True)
class StoredFact:
    """A fact read back, with the archive numbers of its sources."""

    fact_id: int
    text: str
    source_ids: tuple[str, ...]
    refs: tuple[int, ...]
    tokens: int
    distillation_id: int
    retired_at: int | None = None  # distillation after which the memory block let it go


@dataclass(slots=True)
class DistillationLog:
    """One line of the distillation log; failures are logged too."""

    distiller: str
    outcome: str  # ok | failed | timeout | empty | rejected | reduced
    groups: int = 0
    messages: int = 0
    facts: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    source_tokens: int = 0
    fact_tokens: int = 0
    duration_s: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ArchivedMessage:
    """What the store knows of one archived message without reading its text."""

    digest: str
    tokens: int
    state: str


class Committed(NamedTuple):
    """A committed distillation: its log id, the originals' archive numbers, its facts."""

    log_id: int
    refs: dict[str, int]
    facts: list[StoredFact]


@dataclass(frozen=True, slots=True)
class ThreadSnapshot:
    """What a process needs to pick a thread up again after a restart."""

    thread_id: str
    distilled: frozenset[str]
    reduced: frozenset[str]
    facts: tuple[StoredFact, ...]
    anchor: str | None
    memory_cap: int | None  # tokens the memory block was last fitted to; None: no limit
    last_distillation_id: int  # newest committed distillation (0: none)
    distilled_tokens: int
    distillations: int
    failures: int
    # Every archived message of the thread by id: what the caller's history is
    # reconciled against, so a cold process re-counts and re-archives nothing it holds.
    transcript: Mapping[str, ArchivedMessage] = field(default_factory=dict)
    memory_pages: str | None = None  # what the memory block showed (MemoryBlock.pages)


@dataclass(frozen=True, slots=True)
class SearchHit:
    kind: str  # "message" or "fact"
    thread_id: str
    text: str
    ref: int | None  # archive number of a message; None for facts
    message_id: str | None
    source_ids: tuple[str, ...]
    role: str | None
    state: str | None


class DistilledElsewhere(StoreError):
    """Another writer distilled some of these messages first; reload the thread and retry."""


def storable(value: object) -> bool:
    """Whether a value is text that every backend can store (valid UTF-8)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_same(thread_id: str, record: MessageRecord, archived_digest: str) -> None:
    """Refuse a different message under an id the thread's archive already holds.

    Keeping the archived one would silently lose the new message's content.
    """
    if record.digest and archived_digest and record.digest != archived_digest:
        raise StoreError(
            f"message id {record.message_id!r} of thread {thread_id!r} is archived already "
            "with other content; each message of a thread needs an id of its own"
        )


def stats_dict(
    *,
    threads: int,
    messages: tuple[Any, ...],
    facts: tuple[Any, ...],
    log: tuple[Any, ...],
) -> dict[str, Any]:
    """The archive's counts in the one shape every backend reports them."""
    return {
        "threads": int(threads),
        "messages_archived": int(messages[0]),
        "tokens_archived": int(messages[1]),
        "messages_distilled": int(messages[2]),
        "tokens_distilled": int(messages[3]),
        "facts": int(facts[0]),
        "fact_tokens": int(facts[1]),
        "tokens_saved": int(messages[3]) - int(facts[1]),
        "distillations": int(log[1]),
        "failures": int(log[2]),
        "distill_seconds": round(float(log[3]), 4),
    }
