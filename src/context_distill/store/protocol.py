"""The ``MemoryStore`` protocol: everything the engine, the doors, the recall tool and
the command line ask of an archive, and nothing else.

A backend implements the sync methods and their ``a``-prefixed async twins with the
same behaviour. The promises each method makes are held by the contract suite
(tests/test_store_contract.py), run against every backend:

- ``archive`` and ``commit_distillation`` are atomic: all of a call or none of it.
- An id holds one message per thread: a different message under an archived id is
  refused with ``StoreError``; the same message again is a no-op.
- ``commit_distillation`` raises ``DistilledElsewhere`` when another writer distilled
  any of its originals first, and then writes nothing.
- Reads never see half a distillation; threads never see each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from langchain_core.messages import BaseMessage

from .records import (
    ARCHIVED,
    DISTILLED,
    Committed,
    DistillationLog,
    FactRecord,
    MessageRecord,
    SearchHit,
    StoredFact,
    ThreadSnapshot,
)

KINDS = ("message", "fact")


class SyncMemoryStore(Protocol):
    """The blocking half of :class:`MemoryStore`."""

    # -- writes ---------------------------------------------------------------

    def archive(
        self, thread_id: str, records: Sequence[MessageRecord], *, state: str = ARCHIVED
    ) -> dict[str, int]:
        """Archive messages not yet archived, in one transaction; every id's archive number."""
        ...

    def commit_distillation(
        self,
        thread_id: str,
        *,
        originals: Sequence[MessageRecord],
        facts: Sequence[FactRecord],
        log: DistillationLog,
        anchor: str | None,
        state: str = DISTILLED,
    ) -> Committed:
        """Originals archived (if not yet), facts stored, originals marked out of the
        view, log written: in one transaction."""
        ...

    def set_memory_cap(
        self,
        thread_id: str,
        cap: int | None,
        *,
        retired: Sequence[int] = (),
        retired_at: int = 0,
        pages: str | None = None,
    ) -> None:
        """Remember the memory block's room, the facts (by id) it stopped holding
        after distillation ``retired_at``, and what it shows (``pages``, opaque text),
        so a restart shows the same view."""
        ...

    def record_failure(self, thread_id: str, log: DistillationLog) -> int:
        """Log a distillation that did not happen; its log id."""
        ...

    def delete_thread(self, thread_id: str) -> None:
        """Forget a thread: its messages, facts and log."""
        ...

    # -- reads ----------------------------------------------------------------

    def load_thread(self, thread_id: str) -> ThreadSnapshot:
        """One consistent snapshot of what a process needs to continue a thread."""
        ...

    def last_distillation_id(self, thread_id: str) -> int:
        """The newest committed distillation of a thread (0 if none); cheap, asked often."""
        ...

    def distilled_digests(self, thread_id: str, message_ids: Sequence[str]) -> dict[str, str]:
        """Content digests of those of ``message_ids`` that are distilled."""
        ...

    def get_messages(
        self, thread_id: str, *, ids: Sequence[str] = (), refs: Sequence[int] = ()
    ) -> list[tuple[int, BaseMessage]]:
        """Archived originals exactly as they came in, by id or archive number, in order."""
        ...

    def search(
        self,
        query: str,
        *,
        thread_id: str | None = None,
        limit: int = 20,
        kinds: Sequence[str] = KINDS,
    ) -> list[SearchHit]:
        """Full-text search over originals and/or facts, best first; ``query`` is plain
        text (every word must occur, a ``"quoted phrase"`` in order), never syntax."""
        ...

    def message_index(self, thread_id: str, *, preview: int = 160) -> list[dict[str, Any]]:
        """Every archived message of a thread in archive order, without its full text:
        ``ref message_id role state tokens distillation_id archived_at chars preview``
        (``chars`` is the text's stored length: a size, not an exact character count)."""
        ...

    def threads(self) -> list[str]:
        """Every thread id, oldest first."""
        ...

    def stats(self, thread_id: str | None = None) -> dict[str, Any]:
        """Counts and token totals for one thread or the whole archive (records.stats_dict)."""
        ...

    def distillations(self, thread_id: str) -> list[dict[str, Any]]:
        """The distillation log of a thread, oldest first, failures included."""
        ...

    def facts(self, thread_id: str) -> list[StoredFact]:
        """A thread's facts, oldest first."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class MemoryStore(SyncMemoryStore, Protocol):
    """An archive of threads: transcript, facts with their sources, distillation log."""

    async def aarchive(
        self, thread_id: str, records: Sequence[MessageRecord], *, state: str = ARCHIVED
    ) -> dict[str, int]: ...

    async def acommit_distillation(
        self,
        thread_id: str,
        *,
        originals: Sequence[MessageRecord],
        facts: Sequence[FactRecord],
        log: DistillationLog,
        anchor: str | None,
        state: str = DISTILLED,
    ) -> Committed: ...

    async def aset_memory_cap(
        self,
        thread_id: str,
        cap: int | None,
        *,
        retired: Sequence[int] = (),
        retired_at: int = 0,
        pages: str | None = None,
    ) -> None: ...

    async def arecord_failure(self, thread_id: str, log: DistillationLog) -> int: ...

    async def adelete_thread(self, thread_id: str) -> None: ...

    async def aload_thread(self, thread_id: str) -> ThreadSnapshot: ...

    async def alast_distillation_id(self, thread_id: str) -> int: ...

    async def adistilled_digests(
        self, thread_id: str, message_ids: Sequence[str]
    ) -> dict[str, str]: ...

    async def aget_messages(
        self, thread_id: str, *, ids: Sequence[str] = (), refs: Sequence[int] = ()
    ) -> list[tuple[int, BaseMessage]]: ...

    async def asearch(
        self,
        query: str,
        *,
        thread_id: str | None = None,
        limit: int = 20,
        kinds: Sequence[str] = KINDS,
    ) -> list[SearchHit]: ...

    async def amessage_index(
        self, thread_id: str, *, preview: int = 160
    ) -> list[dict[str, Any]]: ...

    async def athreads(self) -> list[str]: ...

    async def astats(self, thread_id: str | None = None) -> dict[str, Any]: ...

    async def adistillations(self, thread_id: str) -> list[dict[str, Any]]: ...

    async def afacts(self, thread_id: str) -> list[StoredFact]: ...

    async def aclose(self) -> None: ...
