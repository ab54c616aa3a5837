"""Resource bounds: memory stays flat over a long session; the archive grows linearly.

The caller works in rewrite style (it keeps only the compact view, as a LangGraph
graph with ``DistillNode(mode="rewrite")`` does), so anything that grows with the
session's length is held by the library. Measured with tracemalloc after a warm-up.
"""

from __future__ import annotations

import gc
import itertools
import os
import sqlite3
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from invariants import cheap_count
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from context_distill import ContextDistiller, SQLiteMemoryStore

TURNS = 10_000
MEASURED = 2_000  # the last turns, traced (tracing all 10,000 would take minutes)
# "Flat": what the library keeps may grow by at most ~125 bytes a turn over the measured
# turns, far less than one message's worth (they add ~2,500 messages, over a MB as
# LangChain objects). Growth that is linear in the session shows in any window.
FLAT_BYTES = 250_000
WARM_UP = TURNS - MEASURED


def turns(start: int, stop: int) -> Iterator[list[BaseMessage]]:
    """One new message a turn, a tool call with its result every fourth turn."""
    for turn in range(start, stop):
        if turn % 4 == 0:
            call = {"name": "grep", "args": {"q": f"item {turn}"}, "id": f"c{turn}"}
            yield [
                AIMessage("", id=f"a{turn}", tool_calls=[call]),
                ToolMessage(
                    f"found item {turn} in src/mod_{turn % 97}.py line {turn % 311}",
                    tool_call_id=f"c{turn}",
                    id=f"t{turn}",
                ),
            ]
        else:
            yield [AIMessage(f"Checked item {turn}; value {turn * 7}; next.", id=f"r{turn}")]


def test_memory_flat_over_a_10000_turn_rewrite_session(tmp_path: Path) -> None:
    engine = ContextDistiller(
        SQLiteMemoryStore(tmp_path / "long.db"), budget_tokens=4000, token_counter=cheap_count
    )
    held: list[BaseMessage] = [
        SystemMessage("You are a careful agent.", id="sys"),
        HumanMessage("Task: check every item.", id="task"),
    ]
    # Trace from the start: a cache that replaces entries made before tracing began
    # would otherwise look like growth (their frees are not traced, their
    # replacements are).
    tracemalloc.start(1)
    try:
        for new in turns(1, WARM_UP):
            held = engine.update("long", held + new).view
        gc.collect()
        base = tracemalloc.take_snapshot()
        peak_view = 0
        for new in turns(WARM_UP, TURNS + 1):
            update = engine.update("long", held + new)
            held = update.view
            peak_view = max(peak_view, len(held))
        del update
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    stats = engine.store.stats("long")
    assert stats["messages_archived"] > 10_000, "setup: the session should archive a lot"
    assert peak_view < 400, "setup: the caller keeps only the compact view"
    growth = after.compare_to(base, "filename")
    total = sum(s.size_diff for s in growth)
    top = ", ".join(
        f"{os.path.basename(s.traceback[0].filename)} {s.size_diff // 1024} KB"
        for s in sorted(growth, key=lambda s: -s.size_diff)[:4]
    )
    engine.store.close()
    assert total <= FLAT_BYTES, (
        f"memory grew by {total // 1024} KB over {TURNS - WARM_UP} turns "
        f"({total // (TURNS - WARM_UP)} bytes a turn); most in: {top}"
    )


def _db_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return int((pages - free) * size)


def test_archive_grows_in_proportion_to_what_is_archived(tmp_path: Path) -> None:
    db = tmp_path / "grow.db"
    engine = ContextDistiller(SQLiteMemoryStore(db), budget_tokens=1000, token_counter=cheap_count)
    held: list[BaseMessage] = [HumanMessage("Task: check every item.", id="task")]
    points = []
    step = 1000
    for start in range(1, 4 * step, step):
        for new in turns(start, start + step):
            held = engine.update("grow", held + new).view
        stats = engine.store.stats("grow")
        archived = engine.store.db.execute(
            "SELECT SUM(LENGTH(data)) FROM messages WHERE thread_id = 'grow'"
        ).fetchone()[0]
        points.append((_db_bytes(db), int(archived), stats["messages_archived"]))
    engine.store.close()
    sizes = [p[0] for p in points]
    archived = [p[1] for p in points]
    # Bytes on disk per byte archived: bounded (indexes, facts and FTS on top) and steady.
    ratios = [s / a for s, a in zip(sizes, archived, strict=True)]
    assert all(1.0 <= r <= 6.0 for r in ratios), ratios
    increments = [b - a for a, b in itertools.pairwise(sizes)]
    archived_inc = [b - a for a, b in itertools.pairwise(archived)]
    per_byte = [i / a for i, a in zip(increments, archived_inc, strict=True)]
    assert max(per_byte) <= 1.5 * min(per_byte), f"growth not linear: {per_byte}"
    wal = Path(f"{db}-wal")
    assert not wal.exists() or wal.stat().st_size < 64 * 1024 * 1024
