"""Async twins for a store whose driver is blocking: each call runs in a worker
thread, so the event loop never waits on the database."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage

from .protocol import KINDS, SyncMemoryStore
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


class ThreadedAsync:
    """Mixin: ``aname(...)`` is ``name(...)`` in ``asyncio.to_thread``."""

    async def aarchive(
        self: SyncMemoryStore,
        thread_id: str,
        records: Sequence[MessageRecord],
        *,
        state: str = ARCHIVED,
    ) -> dict[str, int]:
        return await asyncio.to_thread(self.archive, thread_id, records, state=state)

    async def acommit_distillation(
        self: SyncMemoryStore,
        thread_id: str,
        *,
        originals: Sequence[MessageRecord],
        facts: Sequence[FactRecord],
        log: DistillationLog,
        anchor: str | None,
        state: str = DISTILLED,
    ) -> Committed:
        return await asyncio.to_thread(
            self.commit_distillation,
            thread_id,
            originals=originals,
            facts=facts,
            log=log,
            anchor=anchor,
            state=state,
        )

    async def aset_memory_cap(
        self: SyncMemoryStore,
        thread_id: str,
        cap: int | None,
        *,
        retired: Sequence[int] = (),
        retired_at: int = 0,
        pages: str | None = None,
    ) -> None:
        await asyncio.to_thread(
            self.set_memory_cap,
            thread_id,
            cap,
            retired=retired,
            retired_at=retired_at,
            pages=pages,
        )

    async def arecord_failure(self: SyncMemoryStore, thread_id: str, log: DistillationLog) -> int:
        return await asyncio.to_thread(self.record_failure, thread_id, log)

    async def adelete_thread(self: SyncMemoryStore, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def aload_thread(self: SyncMemoryStore, thread_id: str) -> ThreadSnapshot:
        return await asyncio.to_thread(self.load_thread, thread_id)

    async def alast_distillation_id(self: SyncMemoryStore, thread_id: str) -> int:
        return await asyncio.to_thread(self.last_distillation_id, thread_id)

    async def adistilled_digests(
        self: SyncMemoryStore, thread_id: str, message_ids: Sequence[str]
    ) -> dict[str, str]:
        return await asyncio.to_thread(self.distilled_digests, thread_id, message_ids)

    async def aget_messages(
        self: SyncMemoryStore, thread_id: str, *, ids: Sequence[str] = (), refs: Sequence[int] = ()
    ) -> list[tuple[int, BaseMessage]]:
        return await asyncio.to_thread(self.get_messages, thread_id, ids=ids, refs=refs)

    async def asearch(
        self: SyncMemoryStore,
        query: str,
        *,
        thread_id: str | None = None,
        limit: int = 20,
        kinds: Sequence[str] = KINDS,
    ) -> list[SearchHit]:
        return await asyncio.to_thread(
            self.search, query, thread_id=thread_id, limit=limit, kinds=kinds
        )

    async def amessage_index(
        self: SyncMemoryStore, thread_id: str, *, preview: int = 160
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.message_index, thread_id, preview=preview)

    async def athreads(self: SyncMemoryStore) -> list[str]:
        return await asyncio.to_thread(self.threads)

    async def astats(self: SyncMemoryStore, thread_id: str | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self.stats, thread_id)

    async def adistillations(self: SyncMemoryStore, thread_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.distillations, thread_id)

    async def afacts(self: SyncMemoryStore, thread_id: str) -> list[StoredFact]:
        return await asyncio.to_thread(self.facts, thread_id)

    async def aclose(self: SyncMemoryStore) -> None:
        await asyncio.to_thread(self.close)
