"""The ``context-distill`` command: replay a session, search and inspect an archive, demo.

Every subcommand is a thin layer over the same small API a program uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from langchain_core.messages import AIMessage, BaseMessage

from .engine import ContextDistiller, ContextStats
from .errors import ContextDistillError
from .messages import text_of
from .sessions import read_session, to_openai
from .store import SQLiteMemoryStore


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


def _emit(out: TextIO, text: str = "") -> None:
    out.write(text + "\n")


def _engine(args: argparse.Namespace, store: SQLiteMemoryStore) -> ContextDistiller:
    return ContextDistiller(
        store,
        budget_tokens=args.budget,
        target_tokens=args.target,
        keep_recent_tokens=args.keep_recent,
        distiller=args.distiller,
    )


def replay(
    engine: ContextDistiller, thread_id: str, messages: Sequence[BaseMessage]
) -> tuple[list[BaseMessage], ContextStats, float]:
    """Feed messages one at a time, as an agent accumulates them, processing after each."""
    started = time.perf_counter()
    view: list[BaseMessage] = []
    stats: ContextStats | None = None
    for end in range(1, len(messages) + 1):
        update = engine.update(thread_id, messages[:end])
        view, stats = update.view, update.stats
    if stats is None:
        stats = engine.stats(thread_id)
    return view, stats, time.perf_counter() - started


def _cmd_replay(args: argparse.Namespace, out: TextIO) -> int:
    messages = read_session(args.session)
    with SQLiteMemoryStore(args.db) as store:
        engine = _engine(args, store)
        view, stats, seconds = replay(engine, args.thread, messages)
        if args.json:
            payload = {
                "context": to_openai(view),
                "stats": {
                    "messages": stats.messages,
                    "tokens_in": stats.tokens_in,
                    "tokens_view": stats.tokens_view,
                    "peak_view_tokens": stats.peak_view_tokens,
                    "distillations": stats.distillations,
                    "facts": stats.facts,
                    "seconds": round(seconds, 4),
                },
            }
            _emit(out, json.dumps(payload, ensure_ascii=False))
            return 0
        calls = sum(len(m.tool_calls) for m in messages if isinstance(m, AIMessage))
        ratio = stats.tokens_in / max(stats.tokens_view, 1)
        _emit(out, f"replayed {stats.messages} messages ({calls} tool calls) in {seconds:.2f} s")
        _emit(
            out,
            f"tokens: history {stats.tokens_in:,} -> view {stats.tokens_view:,} ({ratio:.1f}x); "
            f"peak view {stats.peak_view_tokens:,} (budget {args.budget:,})",
        )
        _emit(
            out,
            f"distillations {stats.distillations} ({stats.failures} failed); "
            f"facts {stats.facts} ({stats.facts_shown} shown)",
        )
        if stats.over_budget:
            _emit(out, f"over budget: {stats.reason}")
        if args.db != ":memory:":
            _emit(out, f"archive: {args.db} (thread {args.thread!r})")
    return 0


def _cmd_search(args: argparse.Namespace, out: TextIO) -> int:
    with SQLiteMemoryStore(args.db) as store:
        hits = store.search(args.query, thread_id=args.thread, limit=args.limit)
        if args.json:
            rows = [
                {
                    "kind": h.kind,
                    "thread_id": h.thread_id,
                    "ref": h.ref,
                    "message_id": h.message_id,
                    "source_ids": list(h.source_ids),
                    "role": h.role,
                    "text": h.text,
                }
                for h in hits
            ]
            _emit(out, json.dumps(rows, ensure_ascii=False))
            return 0
        if not hits:
            _emit(out, "no matches")
            return 1
        for hit in hits:
            if hit.kind == "message":
                head = f"[{hit.thread_id}] #{hit.ref} {hit.role} {hit.message_id}"
            else:
                head = f"[{hit.thread_id}] fact from {', '.join(hit.source_ids)}"
            _emit(out, head)
            _emit(out, "    " + hit.text.replace("\n", "\n    "))
    return 0


def _cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    with SQLiteMemoryStore(args.db) as store:
        stats = store.stats(args.thread)
        if args.json:
            _emit(out, json.dumps(stats))
            return 0
        for key, value in stats.items():
            _emit(out, f"{key:>20}  {value:,}" if isinstance(value, int) else f"{key:>20}  {value}")
    return 0


def _cmd_show(args: argparse.Namespace, out: TextIO) -> int:
    with SQLiteMemoryStore(args.db) as store:
        if args.thread not in store.threads():
            _emit(out, f"no thread {args.thread!r} in {args.db}")
            return 1
        stats = store.stats(args.thread)
        _emit(
            out,
            f"thread {args.thread!r}: {stats['messages_archived']} messages archived, "
            f"{stats['messages_distilled']} distilled into {stats['facts']} facts, "
            f"{stats['tokens_saved']:,} tokens saved",
        )
        _emit(out, "distillations:")
        for entry in store.distillations(args.thread):
            _emit(
                out,
                f"  #{entry['id']} {entry['outcome']:<8} {entry['distiller']:<10} "
                f"{entry['messages']:>4} msgs {entry['source_tokens']:>6} -> "
                f"{entry['fact_tokens']:>5} tokens  {entry['duration_s'] * 1000:7.1f} ms"
                + (f"  error: {entry['error']}" if entry["error"] else ""),
            )
        _emit(out, "facts:")
        for fact in store.facts(args.thread):
            refs = ",".join(str(r) for r in fact.refs)
            _emit(out, f"  #{refs} {fact.text}")
    return 0


def _progress(out: TextIO, done: int, total: int, view: int, full: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    out.write(f"\r[{bar}] {done}/{total} calls  view {view:>6,} tokens  history {full:>7,} ")
    out.flush()


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo import EARLY_DETAIL, build_session, tool_calls_in

    model = SERVING_MODELS[args.serving_model]
    messages = build_session()
    total_calls = tool_calls_in(messages)
    with tempfile.TemporaryDirectory() as scratch:
        db_path = args.db or str(Path(scratch) / "demo.db")
        store = SQLiteMemoryStore(db_path)
        engine = ContextDistiller(store, budget_tokens=args.budget, distiller=args.distiller)
        _emit(
            out,
            f"context-distill demo: a scripted coding agent makes {total_calls} tool calls "
            f"under a budget of {args.budget:,} tokens ({engine.distiller.name} distiller)",
        )
        tty = out.isatty()
        per_call_full: list[int] = []
        per_call_view: list[int] = []
        calls_done = 0
        started = time.perf_counter()
        stats: ContextStats | None = None
        for end in range(1, len(messages) + 1):
            nxt = messages[end] if end < len(messages) else None
            if nxt is not None and not isinstance(nxt, AIMessage):
                continue  # the model is called only once the tool results are in
            update = engine.update("demo", messages[:end])
            stats = update.stats
            per_call_full.append(stats.tokens_in)
            per_call_view.append(stats.tokens_view)
            calls_done = tool_calls_in(messages[:end])
            if tty:
                _progress(out, calls_done, total_calls, stats.tokens_view, stats.tokens_in)
            elif len(per_call_view) % 40 == 0:
                _emit(
                    out,
                    f"  {calls_done:>4}/{total_calls} tool calls: model sees "
                    f"{stats.tokens_view:,} tokens of a {stats.tokens_in:,}-token history",
                )
        seconds = time.perf_counter() - started
        if tty:
            out.write("\n")
        assert stats is not None
        archive = store.stats("demo")
        hits = store.search(EARLY_DETAIL, thread_id="demo", limit=50, kinds=("message",))
        _demo_table(out, model, per_call_full, per_call_view, stats, archive, seconds)
        _demo_recall(out, store, hits)
        store.close()
    return 0


def _demo_table(
    out: TextIO,
    model: ServingModel,
    full: list[int],
    view: list[int],
    stats: ContextStats,
    archive: dict[str, Any],
    seconds: float,
) -> None:
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
    _emit(out)
    _emit(out, f"{'':<40}{'without':>16}{'with context-distill':>24}")
    for label, a, b in rows:
        _emit(out, f"{label:<40}{a:>16}{b:>24}")
    _emit(out)
    _emit(
        out,
        f"compression: {full[-1] / max(view[-1], 1):.1f}x at the end, "
        f"{sum(full) / max(sum(view), 1):.1f}x over all calls",
    )
    _emit(
        out,
        f"KV cache: {model.name} holds {kv // 1024} KiB per token "
        f"(2 x {model.layers} layers x {model.kv_heads} KV heads x {model.head_dim} dims x "
        f"{model.bytes_per_value} bytes); saved at peak: "
        f"{(max(full) - max(view)) * kv / gib:.2f} GiB per session",
    )
    _emit(
        out,
        f"archive: {archive['messages_archived']} messages, {archive['facts']} facts, "
        f"{stats.distillations} distillations ({stats.failures} failed), "
        f"{archive['distill_seconds'] * 1000:.0f} ms distilling, {seconds:.2f} s in all",
    )


def _demo_recall(out: TextIO, store: SQLiteMemoryStore, hits: list[Any]) -> None:
    from .demo import EARLY_DETAIL

    _emit(out)
    _emit(out, f"recall: search {EARLY_DETAIL!r} in the archive")
    originals = [hit for hit in hits if hit.kind == "message"]
    if not originals:
        _emit(out, "  (not found)")
        return
    first = min(originals, key=lambda hit: hit.ref or 0)
    ((_, message),) = store.get_messages("demo", refs=[first.ref])
    line = next((ln for ln in text_of(message).splitlines() if EARLY_DETAIL in ln), "")
    _emit(out, f"  #{first.ref} ({message.type}, id {message.id}), word for word:")
    _emit(out, f"    {line.strip()}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="context-distill",
        description="Context memory for long-running agents: distill, archive, recall.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="replay a JSONL session through the engine")
    p.add_argument("session", help="JSONL of OpenAI chat messages or LangChain message dicts")
    p.add_argument("--budget", type=int, required=True, help="token budget of the view")
    p.add_argument("--target", type=int, default=None, help="tokens to distill down to")
    p.add_argument("--keep-recent", type=int, default=None, help="newest tokens kept verbatim")
    p.add_argument("--distiller", default="extractive", help="extractive, lingua or generative")
    p.add_argument("--db", default=":memory:", help="SQLite archive file (default: in memory)")
    p.add_argument("--thread", default="session", help="thread id to archive under")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_cmd_replay)

    p = sub.add_parser("search", help="full-text search over an archive")
    p.add_argument("db")
    p.add_argument("query")
    p.add_argument("--thread", default=None)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_search)

    p = sub.add_parser("stats", help="what an archive holds")
    p.add_argument("db")
    p.add_argument("--thread", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_stats)

    p = sub.add_parser("show", help="one thread's distillations and facts")
    p.add_argument("db")
    p.add_argument("--thread", required=True)
    p.set_defaults(run=_cmd_show)

    p = sub.add_parser("demo", help="a scripted 200+ tool-call agent session, offline")
    p.add_argument("--budget", type=int, default=6000)
    p.add_argument("--distiller", default="extractive")
    p.add_argument("--db", default=None, help="keep the demo archive in this file")
    p.add_argument("--serving-model", choices=sorted(SERVING_MODELS), default="llama-3.1-8b")
    p.set_defaults(run=_cmd_demo)
    return parser


def _check_db(args: argparse.Namespace) -> str | None:
    """Read-only commands must not create an archive where none exists."""
    read_only = args.command in ("search", "stats", "show") and args.db != ":memory:"
    if read_only and not Path(args.db).exists():
        return f"no archive at {args.db}"
    return None


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``context-distill`` command."""
    stream = out if out is not None else sys.stdout
    args = build_parser().parse_args(argv)
    problem = _check_db(args)
    if problem:
        sys.stderr.write(f"context-distill: {problem}\n")
        return 2
    try:
        code: int = args.run(args, stream)
        return code
    except ContextDistillError as exc:
        sys.stderr.write(f"context-distill: {exc}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"context-distill: {exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
