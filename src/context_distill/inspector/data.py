"""What the inspector shows, read from an archive: plain data, no web server.

Everything here only reads, through the store's read methods, so it serves any
``MemoryStore`` that has them. The per-turn chart is rebuilt from the archive:
the tokens of each archived message and the distillation log, which records the
view's size before and after every distillation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from langchain_core.messages import BaseMessage

from ..memory import MemoryBlock
from ..messages import text_of
from ..snippets import page, snippets
from ..store import SearchHit, StoredFact
from ..tokens import resolve_counter

PAGE_CHARS = 20_000
# characters of an original sent at once; the page asks for more
_PREFIX = re.compile(r"^[^;:\n]{1,40}?: (?=\S)")  # "Speaker: " before a fact's first clause


class ReadableStore(Protocol):
    """The reads the inspector needs (the store protocol's, plus ``message_index``)."""

    def threads(self) -> list[str]: ...

    def stats(self, thread_id: str | None = None) -> dict[str, Any]: ...

    def distillations(self, thread_id: str) -> list[dict[str, Any]]: ...

    def facts(self, thread_id: str) -> list[StoredFact]: ...

    def get_messages(
        self, thread_id: str, *, ids: Sequence[str] = (), refs: Sequence[int] = ()
    ) -> list[tuple[int, BaseMessage]]: ...

    def search(
        self,
        query: str,
        *,
        thread_id: str | None = None,
        limit: int = 20,
        kinds: Sequence[str] = ("message", "fact"),
    ) -> list[SearchHit]: ...

    def load_thread(self, thread_id: str) -> Any: ...

    def message_index(self, thread_id: str, *, preview: int = 160) -> list[dict[str, Any]]: ...


def thread_summaries(store: ReadableStore) -> list[dict[str, Any]]:
    """Every thread with its counts, oldest first (the numbers ``stats`` gives)."""
    rows = []
    for thread in store.threads():
        s = store.stats(thread)
        rows.append(
            {
                "thread_id": thread,
                "messages": s["messages_archived"],
                "distilled": s["messages_distilled"],
                "facts": s["facts"],
                "distillations": s["distillations"],
                "failures": s["failures"],
                "tokens_archived": s["tokens_archived"],
                "tokens_saved": s["tokens_saved"],
            }
        )
    return rows


def timeline(store: ReadableStore, thread: str) -> dict[str, Any]:
    """The thread's messages in archive order and its distillations, for one list."""
    return {
        "thread_id": thread,
        "stats": store.stats(thread),
        "messages": store.message_index(thread),
        "distillations": store.distillations(thread),
    }


def chart(store: ReadableStore, thread: str, budget: int | None = None) -> dict[str, Any]:
    """Tokens the model saw at each model call, with and without distillation, rebuilt.

    A model call is an assistant message of the archive; the history before it is
    what it was given. Without distillation that is every archived message before
    it. With distillation it is the messages not yet distilled plus the memory
    block (the facts so far, up to the block's room). A distillation is placed at
    the call that made it: the last one before the first assistant message archived
    after it (a turn may run several, reductions among them; the clocks of the
    servers that wrote the thread are trusted). The messages it took (the archive
    names them) leave the view there. Without ``budget`` the line is inferred: just
    below the smallest view a turn's first distillation began at.
    """
    index = store.message_index(thread, preview=0)
    log = [e for e in store.distillations(thread) if e["outcome"] in ("ok", "reduced")]
    cap = store.load_thread(thread).memory_cap
    taken: dict[int, int] = {}  # distillation id -> tokens of the messages it took
    for row in index:
        if row["distillation_id"] is not None and row["state"] != "archived":
            key = int(row["distillation_id"])
            taken[key] = taken.get(key, 0) + int(row["tokens"])
    turns: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    crossings: list[int] = []  # the view a turn's first distillation began at
    full = live = memory = facts = 0
    applied = 0

    def point(ref: int, archived_at: float | None = None) -> None:
        """The call before the assistant message ``ref``, archived at ``archived_at``
        (None: the history as it stands, after every distillation)."""
        nonlocal live, memory, facts, applied
        first = applied
        while applied < len(log) and (
            archived_at is None or float(log[applied]["created_at"]) < archived_at
        ):
            entry = log[applied]
            live -= taken.get(int(entry["id"]), 0)
            facts += int(entry["fact_tokens"])
            memory = facts if cap is None else min(facts, cap)
            applied += 1
        if applied > first:
            events.append({"turn": len(turns), "ref": ref, "distillations": applied - first})
            if log[first]["outcome"] == "ok":
                crossings.append(int(log[first]["tokens_before"]))
        turns.append({"ref": ref, "without": full, "with": min(live + memory, full)})

    for row in index:
        if row["role"] == "ai":
            point(int(row["ref"]), float(row["archived_at"]))
        full += int(row["tokens"])
        live += int(row["tokens"])
    if index:
        point(int(index[-1]["ref"]) + 1)  # the history as it stands
    inferred = budget is None and bool(crossings)
    if budget is None and crossings:
        budget = min(crossings) - 1
    return {
        "turns": turns,
        "events": events,
        "budget": budget,
        "budget_inferred": inferred,
        "complete": bool(index) and index[0]["role"] == "system",
    }


def facts_with_sources(store: ReadableStore, thread: str) -> list[dict[str, Any]]:
    """Every fact of the thread with the archive numbers of its originals."""
    return [
        {
            "id": f.fact_id,
            "text": f.text,
            "refs": list(f.refs),
            "source_ids": list(f.source_ids),
            "distillation_id": f.distillation_id,
            "tokens": f.tokens,
        }
        for f in store.facts(thread)
    ]


def memory_now(store: ReadableStore, thread: str) -> dict[str, Any]:
    """The memory block as a process opening this archive now would show it.

    Facts the block shows whole, in part (some clauses left out for room), and not
    at all; all of them stay archived.
    """
    snapshot = store.load_thread(thread)
    block = MemoryBlock(resolve_counter("o200k_base"))
    block.restore(snapshot.facts)
    block.resume(snapshot.memory_pages, f"thread {thread}")
    block.fit(snapshot.memory_cap)
    message = block.message()
    text = message.text if message is not None else ""
    held = block.held()
    return {
        "text": text,
        "tokens": block.tokens,
        "cap": snapshot.memory_cap,
        "shown": [label for label, how in held if how == "whole"],
        "shown_in_part": [label for label, how in held if how == "part"],
        "left_out": [label for label, how in held if how == "none"],
        "let_go": block.retired,
    }


def _part_of(shown: str, line: str) -> bool:
    """Whether ``shown`` is ``line`` with some of its clauses left out."""
    body = shown.split(" ", 1)[1] if " " in shown else shown
    clauses = [c.strip() for c in body.split("; ") if c.strip()]
    if clauses:
        clauses[0] = _PREFIX.sub("", clauses[0])
    return bool(clauses) and all(c in line for c in clauses)


def original(store: ReadableStore, thread: str, ref: int, offset: int = 0) -> dict[str, Any] | None:
    """One archived original, a page of its text from ``offset``."""
    found = store.get_messages(thread, refs=[ref])
    if not found:
        return None
    message = found[0][1]
    text = text_of(message)
    chunk, next_offset = page(text, min(max(offset, 0), len(text)), PAGE_CHARS)
    return {
        "ref": ref,
        "role": message.type,
        "message_id": message.id,
        "name": getattr(message, "name", None),
        "tool_call_id": getattr(message, "tool_call_id", None),
        "chars": len(text),
        "offset": offset,
        "text": chunk,
        "next_offset": next_offset,
    }


def search(
    store: ReadableStore, query: str, thread: str | None = None, limit: int = 30
) -> list[dict[str, Any]]:
    """Full-text search with snippets and the offsets of the words that matched."""
    out = []
    for hit in store.search(query, thread_id=thread, limit=limit):
        out.append(
            {
                "kind": hit.kind,
                "thread_id": hit.thread_id,
                "ref": hit.ref,
                "role": hit.role,
                "state": hit.state,
                "message_id": hit.message_id,
                "source_ids": list(hit.source_ids),
                "chars": len(hit.text),
                "snippets": [
                    {
                        "offset": s.start,
                        "text": s.text,
                        "matches": [[a - s.start, b - s.start] for a, b in s.matches],
                        "cut_before": s.cut_before,
                        "cut_after": s.cut_after,
                    }
                    for s in snippets(hit.text, query, width=200)
                ],
            }
        )
    return out
