"""What the engine remembers of one thread between turns, in small records.

Everything here can be rebuilt from the store (``ThreadState.reset`` then intake),
so losing it costs time, never data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ._idset import IdSet
from ._lock import DualLock
from .ledger import Ledger
from .memory import MemoryBlock
from .prefetch import Prefetch
from .tokens import TextCounter


@dataclass(slots=True)
class Cursor:
    """Where the caller's history stood at the end of the last turn."""

    n_seen: int = 0  # length of the input last time
    last_id: str | None = None  # id of its last message
    view_len: int = 0  # length of the view we returned
    view_last_id: str | None = None


@dataclass(slots=True)
class Health:
    """Distillation failures and when to try again."""

    turn: int = 0
    retry_turn: int = 0
    failures_in_row: int = 0
    failures: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class Totals:
    """Counts that cover distilled history the ledger no longer holds."""

    distillations: int = 0
    base_tokens: int = 0  # tokens of distilled messages not passed in again
    base_messages: int = 0
    peak: int = 0
    ratio: float = 0.35  # facts per source token, learned as we go


@dataclass(frozen=True, slots=True)
class Inline:
    """How a crossing reduced a tool result the view still shows: to its facts, or
    (``limit`` set) to its facts, head and tail within ``limit`` tokens."""

    facts: tuple[str, ...] = ()
    limit: int | None = None


@dataclass(slots=True)
class Archive:
    """What this process knows the store holds for the thread."""

    loaded: bool = False
    last_log_id: int = 0  # newest committed distillation we know of
    distilled: IdSet = field(default_factory=IdSet)  # ids out of the view for good
    skip: set[str] = field(default_factory=set)  # distilled ids an input still holds
    shown_again: set[str] = field(default_factory=set)  # distilled, yet shown (rewound)
    anchor: datetime | None = None  # conversation date where distillation stopped
    anchor_ready: bool = False
    saved_cap: int | None = None  # the memory cap the store holds
    saved_pages: int = 0  # MemoryBlock.pages_written as of the pages the store holds
    inline: dict[str, Inline] = field(default_factory=dict)  # reduced results still shown
    unreducible: set[str] = field(default_factory=set)  # results whose facts saved nothing


@dataclass(slots=True)
class ThreadState:
    thread_id: str
    ledger: Ledger
    memory: MemoryBlock
    lock: DualLock = field(default_factory=DualLock)
    cursor: Cursor = field(default_factory=Cursor)
    health: Health = field(default_factory=Health)
    totals: Totals = field(default_factory=Totals)
    archive: Archive = field(default_factory=Archive)
    prefetch: Prefetch = field(default_factory=Prefetch)
    version: int = 0  # bumped whenever the view departs from a plain append

    @classmethod
    def new(cls, thread_id: str, counter: TextCounter, recall_tool: str | None) -> ThreadState:
        return cls(thread_id, Ledger(), MemoryBlock(counter, recall_tool=recall_tool))

    def reset(self, counter: TextCounter) -> None:
        """Forget everything cached; the next intake rebuilds from the store."""
        self.ledger = Ledger()
        # The recall tool's name is part of the header a rebuilt block is fitted with.
        self.memory = MemoryBlock(counter, recall_tool=self.memory.recall_tool)
        self.cursor = Cursor()
        self.totals = Totals(ratio=self.totals.ratio)
        self.archive = Archive()
        self.prefetch.clear()
