"""The demo: the scripted agent session through the engine, with and without distillation.

``run_demo`` calls the engine once per model call of the session, as an agent
would, and reports what the model would have seen without context-distill and
with it, the KV cache that costs on a serving model, and one early detail
recalled word for word from the archive. The session itself is in
``demo_session``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage

from .demo_session import EARLY_DETAIL, SYSTEM_PROMPT, TASK, build_session, tool_calls_in
from .engine import ContextDistiller, ContextStats
from .errors import StoreError
from .messages import text_of
from .store import SQLiteMemoryStore

__all__ = [
    "EARLY_DETAIL",
    "SERVING_MODELS",
    "SYSTEM_PROMPT",
    "TASK",
    "DemoResult",
    "ServingModel",
    "build_session",
    "run_demo",
    "tool_calls_in",
]

DEMO_THREAD = "demo"


@dataclass(frozen=True)
class ServingModel:
    """Enough of a model's shape to know its KV-cache bytes per token."""

    name: str
    layers: int
    kv_heads: int
    head_dim: int
    bytes_per_value: int = 2  # bf16

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_value


SERVING_MODELS = {
    "llama-3.1-8b": ServingModel("Llama-3.1-8B-Instruct", 32, 8, 128),
    "llama-3.1-70b": ServingModel("Llama-3.1-70B-Instruct", 80, 8, 128),
    "qwen2.5-7b": ServingModel("Qwen2.5-7B-Instruct", 28, 4, 128),
    "mistral-7b": ServingModel("Mistral-7B-Instruct-v0.3", 32, 8, 128),
}


@dataclass
class DemoResult:
    """What one run of the demo measured."""

    model: ServingModel
    budget: int
    distiller: str
    tool_calls: int
    full: list[int] = field(default_factory=list)  # tokens of the history at each model call
    view: list[int] = field(default_factory=list)  # tokens the model saw at each call
    stats: ContextStats | None = None
    archive: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    recall_ref: int | None = None
    recall_role: str = ""
    recall_id: str | None = None
    recall_line: str = ""
    db: str | None = None  # where the archive was kept (None: discarded)

    def as_dict(self) -> dict[str, Any]:
        kv = self.model.kv_bytes_per_token
        gib = 1024**3
        stats = self.stats
        return {
            "budget": self.budget,
            "distiller": self.distiller,
            "tool_calls": self.tool_calls,
            "model_calls": len(self.full),
            "tokens_at_last_call": {"without": self.full[-1], "with": self.view[-1]},
            "peak_tokens": {"without": max(self.full), "with": max(self.view)},
            "total_tokens": {"without": sum(self.full), "with": sum(self.view)},
            "kv_cache_peak_gib": {
                "model": self.model.name,
                "without": round(max(self.full) * kv / gib, 3),
                "with": round(max(self.view) * kv / gib, 3),
            },
            "archive": self.archive,
            "distillations": stats.distillations if stats else 0,
            "failures": stats.failures if stats else 0,
            "seconds": round(self.seconds, 3),
            "recall": {
                "query": EARLY_DETAIL,
                "ref": self.recall_ref,
                "role": self.recall_role,
                "message_id": self.recall_id,
                "line": self.recall_line,
            },
            "db": self.db,
        }


def _fresh_store(path: str) -> SQLiteMemoryStore:
    """The demo's archive: a new file, or one that holds nothing but an earlier demo."""
    store = SQLiteMemoryStore(path)
    others = [t for t in store.threads() if t != DEMO_THREAD]
    if others:
        store.close()
        raise StoreError(
            f"{path!r} holds other threads ({', '.join(others[:3])}); the demo writes only to "
            "a new file or an earlier demo's"
        )
    store.delete_thread(DEMO_THREAD)  # a rerun starts from nothing
    return store


def run_demo(
    *,
    budget: int = 6000,
    distiller: str = "extractive",
    db: str | None = None,
    model: ServingModel = SERVING_MODELS["llama-3.1-8b"],
    progress: Callable[[int, int, ContextStats], None] | None = None,
) -> DemoResult:
    """Run the scripted session through a fresh engine; keep the archive in ``db`` if given."""
    messages = build_session()
    total_calls = tool_calls_in(messages)
    with tempfile.TemporaryDirectory() as scratch:
        path = db or str(Path(scratch) / "demo.db")
        store = _fresh_store(path)
        try:
            engine = ContextDistiller(store, budget_tokens=budget, distiller=distiller)
            result = DemoResult(model, budget, engine.distiller.name, total_calls, db=db)
            started = time.perf_counter()
            for end in range(1, len(messages) + 1):
                nxt = messages[end] if end < len(messages) else None
                if nxt is not None and not isinstance(nxt, AIMessage):
                    continue  # the model is called only once the tool results are in
                update = engine.update(DEMO_THREAD, messages[:end])
                result.stats = update.stats
                result.full.append(update.stats.tokens_in)
                result.view.append(update.stats.tokens_view)
                if progress is not None:
                    progress(tool_calls_in(messages[:end]), total_calls, update.stats)
            result.seconds = time.perf_counter() - started
            result.archive = store.stats(DEMO_THREAD)
            _recall(store, result)
        finally:
            store.close()
    return result


def _recall(store: SQLiteMemoryStore, result: DemoResult) -> None:
    hits = store.search(EARLY_DETAIL, thread_id=DEMO_THREAD, limit=50, kinds=("message",))
    refs = [hit.ref for hit in hits if hit.ref is not None]
    if not refs:
        return
    ((ref, message),) = store.get_messages(DEMO_THREAD, refs=[min(refs)])
    line = next((ln for ln in text_of(message).splitlines() if EARLY_DETAIL in ln), "")
    result.recall_ref, result.recall_role, result.recall_id = ref, message.type, message.id
    result.recall_line = line.strip()


def report(result: DemoResult) -> list[str]:
    """The demo's table and notes, as lines of text."""
    model, full, view = result.model, result.full, result.view
    kv = model.kv_bytes_per_token
    gib = 1024**3
    rows = [
        ("model calls", f"{len(full):,}", f"{len(view):,}"),
        ("tokens at the last call", f"{full[-1]:,}", f"{view[-1]:,}"),
        ("peak tokens of one call", f"{max(full):,}", f"{max(view):,}"),
        ("total tokens, all calls", f"{sum(full):,}", f"{sum(view):,}"),
        (
            f"KV cache at peak ({model.name})",
            f"{max(full) * kv / gib:.2f} GiB",
            f"{max(view) * kv / gib:.2f} GiB",
        ),
    ]
    lines = ["", f"{'':<40}{'without':>16}{'with context-distill':>24}"]
    lines += [f"{label:<40}{a:>16}{b:>24}" for label, a, b in rows]
    stats, archive = result.stats, result.archive
    lines += [
        "",
        f"compression: {full[-1] / max(view[-1], 1):.1f}x at the end, "
        f"{sum(full) / max(sum(view), 1):.1f}x over all calls",
        f"KV cache: {model.name} holds {kv // 1024} KiB per token "
        f"(2 x {model.layers} layers x {model.kv_heads} KV heads x {model.head_dim} dims x "
        f"{model.bytes_per_value} bytes); saved at peak: "
        f"{(max(full) - max(view)) * kv / gib:.2f} GiB per session",
        f"archive: {archive['messages_archived']} messages, {archive['facts']} facts, "
        f"{stats.distillations if stats else 0} distillations "
        f"({stats.failures if stats else 0} failed), "
        f"{archive['distill_seconds'] * 1000:.0f} ms distilling, {result.seconds:.2f} s in all",
        "",
        f"recall: search {EARLY_DETAIL!r} in the archive",
    ]
    if result.recall_ref is None:
        lines.append("  (not found)")
    else:
        lines.append(
            f"  #{result.recall_ref} ({result.recall_role}, id {result.recall_id}), word for word:"
        )
        lines.append(f"    {result.recall_line}")
    return lines
