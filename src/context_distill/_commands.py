"""The bodies of the command-line commands; ``cli`` parses and handles errors.

Reading commands open the archive read-only, so they work on a file the user may
not write and can never change one. Counts come from the archive, the same
numbers in every command.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TextIO

from langchain_core.messages import AIMessage, BaseMessage

from .demo import SERVING_MODELS, build_session, report, run_demo, tool_calls_in
from .engine import ContextDistiller, ContextStats
from .errors import StoreError
from .inspector.data import thread_summaries
from .messages import text_of
from .sessions import read_session, to_openai
from .snippets import Snippet, render, snippets
from .store import MemoryStore, SearchHit, open_store

_OPTIONS = {
    "budget_tokens": "--budget",
    "target_tokens": "--target",
    "keep_recent_tokens": "--keep-recent",
    "distiller": "--distiller",
}
_BOLD = ("\x1b[1m", "\x1b[0m")


def _emit(out: TextIO, text: str = "") -> None:
    out.write(text + "\n")


def _json(out: TextIO, value: Any) -> None:
    _emit(out, json.dumps(value, ensure_ascii=False))


def open_for_reading(path: str) -> MemoryStore:
    """An archive opened read-only (an SQLite file or a ``postgresql://`` URL); a
    missing file is an error, never a new archive."""
    if path == ":memory:":
        raise StoreError("an in-memory archive holds nothing to read; give the file")
    return open_store(path, read_only=True)


def _option_error(args: argparse.Namespace, message: str) -> str:
    """An engine option error in the words of the options the user typed."""
    named = message
    for param, option in _OPTIONS.items():
        named = re.sub(rf"\b{param}\b", option, named)
    for param, option in _OPTIONS.items():
        attr = option[2:].replace("-", "_")
        if param in message and getattr(args, attr, None) is None:
            return (
                f"--budget {args.budget} is too small: the default {option} it implies is out "
                f"of range ({named}); use a larger --budget or pass {option}"
            )
    return named


def _engine(args: argparse.Namespace, store: MemoryStore) -> ContextDistiller:
    try:
        return ContextDistiller(
            store,
            budget_tokens=args.budget,
            target_tokens=args.target,
            keep_recent_tokens=args.keep_recent,
            distiller=args.distiller,
        )
    except ValueError as exc:
        raise ValueError(_option_error(args, str(exc))) from None


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


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def replay_command(args: argparse.Namespace, out: TextIO) -> int:
    messages = read_session(args.session)
    with closing(open_store(args.db)) as store:
        engine = _engine(args, store)
        view, stats, seconds = replay(engine, args.thread, messages)
        archive = store.stats(args.thread)
    summary = {
        "messages": stats.messages,
        "tokens_in": stats.tokens_in,
        "tokens_view": stats.tokens_view,
        "peak_view_tokens": stats.peak_view_tokens,
        "budget": args.budget,
        "distillations": archive["distillations"],
        "failures": archive["failures"],
        "facts": archive["facts"],
        "memory_lines": stats.facts,
        "memory_lines_shown": stats.facts_shown,
        "tokens_saved": archive["tokens_saved"],
        "over_budget": stats.over_budget,
        "reason": stats.reason,
        "seconds": round(seconds, 4),
    }
    if args.json:
        _json(out, {"context": to_openai(view), "stats": summary})
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
        f"distillations {archive['distillations']} ({archive['failures']} failed); "
        f"facts {archive['facts']} in {stats.facts} memory lines, {stats.facts_shown} shown",
    )
    if stats.over_budget:
        _emit(out, f"over budget: {stats.reason}")
    if args.db != ":memory:":
        _emit(out, f"archive: {args.db} (thread {args.thread!r})")
    _emit(out, f"final view, {len(view)} messages (--json prints them whole):")
    for index, message in enumerate(view):
        _emit(out, f"  {index:>3} {message.type:<6} {_one_line(text_of(message), 96)}")
    return 0


def threads_command(args: argparse.Namespace, out: TextIO) -> int:
    with closing(open_for_reading(args.db)) as store:
        rows = thread_summaries(store)
    if args.json:
        _json(out, rows)
        return 0
    if not rows:
        _emit(out, f"no threads in {args.db}")
        return 0
    width = max(12, *(len(r["thread_id"]) for r in rows))
    _emit(
        out,
        f"{'thread':<{width}} {'messages':>9} {'distilled':>9} {'facts':>7} "
        f"{'distillations':>13} {'failed':>6} {'tokens saved':>13}",
    )
    for r in rows:
        _emit(
            out,
            f"{r['thread_id']:<{width}} {r['messages']:>9,} {r['distilled']:>9,} "
            f"{r['facts']:>7,} {r['distillations']:>13,} {r['failures']:>6,} "
            f"{r['tokens_saved']:>13,}",
        )
    return 0


def _snippet_json(part: Snippet) -> dict[str, Any]:
    return {
        "offset": part.start,
        "end": part.end,
        "text": part.text,
        "matches": [[s, e] for s, e in part.matches],
    }


def _hit_json(
    hit: SearchHit, query: str, full: bool, refs: dict[tuple[str, str], int]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": hit.kind,
        "thread_id": hit.thread_id,
        "ref": hit.ref,
        "message_id": hit.message_id,
        "role": hit.role,
        "state": hit.state,
        "source_ids": list(hit.source_ids),
        "source_refs": [
            refs[(hit.thread_id, i)] for i in hit.source_ids if (hit.thread_id, i) in refs
        ],
        "chars": len(hit.text),
        "snippets": [_snippet_json(p) for p in snippets(hit.text, query)],
    }
    if full or hit.kind == "fact":
        row["text"] = hit.text
    return row


def _source_refs(store: MemoryStore, hits: list[SearchHit]) -> dict[tuple[str, str], int]:
    """Archive numbers of the messages facts came from (by thread and message id)."""
    refs: dict[tuple[str, str], int] = {}
    for thread in {h.thread_id for h in hits if h.kind == "fact"}:
        for row in store.message_index(thread, preview=0):
            refs[(thread, row["message_id"])] = int(row["ref"])
    return refs


def search_command(args: argparse.Namespace, out: TextIO) -> int:
    with closing(open_for_reading(args.db)) as store:
        hits = store.search(args.query, thread_id=args.thread, limit=args.limit)
        refs = _source_refs(store, hits)
    if args.json:
        _json(out, [_hit_json(h, args.query, args.full, refs) for h in hits])
        return 0
    if not hits:
        _emit(out, "no matches")
        return 1
    mark = _BOLD if out.isatty() else ("", "")
    for hit in hits:
        if hit.kind == "fact":
            numbers = [
                refs[(hit.thread_id, i)] for i in hit.source_ids if (hit.thread_id, i) in refs
            ]
            source = ",".join(f"#{n}" for n in numbers) or ", ".join(hit.source_ids)
            (part,) = snippets(hit.text, args.query, width=max(len(hit.text), 20), limit=1)
            _emit(out, f"[{hit.thread_id}] fact from {source}: {render(part, mark=mark)}")
            continue
        parts = snippets(hit.text, args.query)
        head = (
            f"[{hit.thread_id}] #{hit.ref} {hit.role} {hit.message_id} ({hit.state}, "
            f"{len(hit.text):,} chars)"
        )
        _emit(out, head)
        if args.full:
            _emit(out, "    " + hit.text.replace("\n", "\n    "))
            continue
        for part in parts:
            _emit(out, f"  @{part.start:<7} {render(part, mark=mark)}")
    return 0


def stats_command(args: argparse.Namespace, out: TextIO) -> int:
    with closing(open_for_reading(args.db)) as store:
        stats = store.stats(args.thread)
    if args.json:
        _json(out, stats)
        return 0
    for key, value in stats.items():
        _emit(out, f"{key:>20}  {value:,}" if isinstance(value, int) else f"{key:>20}  {value}")
    return 0


def pick_thread(store: MemoryStore, wanted: str | None, db: str) -> str:
    """The thread a command is about: the one named, or the archive's only one."""
    threads = store.threads()
    if wanted is not None:
        if wanted not in threads:
            raise StoreError(
                f"--thread {wanted!r}: no such thread in {db} (it has: "
                f"{', '.join(threads[:10]) or 'none'})"
            )
        return wanted
    if len(threads) != 1:
        raise StoreError(
            f"{db} has {len(threads)} threads; name one with --thread "
            f"({', '.join(threads[:10]) or 'none'})"
        )
    return threads[0]


def show_command(args: argparse.Namespace, out: TextIO) -> int:
    with closing(open_for_reading(args.db)) as store:
        thread = pick_thread(store, args.thread, args.db)
        stats = store.stats(thread)
        log = store.distillations(thread)
        facts = store.facts(thread)
    if args.json:
        _json(
            out,
            {
                "thread_id": thread,
                "stats": stats,
                "distillations": log,
                "facts": [
                    {
                        "id": f.fact_id,
                        "text": f.text,
                        "refs": list(f.refs),
                        "source_ids": list(f.source_ids),
                        "distillation_id": f.distillation_id,
                        "tokens": f.tokens,
                    }
                    for f in facts
                ],
            },
        )
        return 0
    _emit(
        out,
        f"thread {thread!r}: {stats['messages_archived']} messages archived, "
        f"{stats['messages_distilled']} distilled into {stats['facts']} facts, "
        f"{stats['tokens_saved']:,} tokens saved",
    )
    _emit(out, "distillations:")
    for entry in log:
        _emit(
            out,
            f"  #{entry['id']} {entry['outcome']:<8} {entry['distiller']:<10} "
            f"{entry['messages']:>4} msgs {entry['source_tokens']:>6} -> "
            f"{entry['fact_tokens']:>5} tokens  {entry['duration_s'] * 1000:7.1f} ms"
            + (f"  error: {entry['error']}" if entry["error"] else ""),
        )
    _emit(out, "facts:")
    for fact in facts:
        refs = ",".join(str(r) for r in fact.refs)
        _emit(out, f"  #{refs} {fact.text}")
    return 0


def inspect_command(args: argparse.Namespace, out: TextIO) -> int:
    from .inspector import serve

    store = open_for_reading(args.db)
    try:
        serve(
            store,
            port=args.port,
            budget=args.budget,
            out=out,
            json_out=args.json,
            open_browser=args.open,
        )
    finally:
        store.close()
    return 0


def _program() -> str:
    """How the user ran this command, to repeat in a hint (``.venv/bin/context-distill``)."""
    path = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if path is None or path.name != "context-distill":
        return "context-distill"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path) if path.parent != Path(".") else "context-distill"


def _progress(out: TextIO, done: int, total: int, stats: ContextStats) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    out.write(
        f"\r[{bar}] {done}/{total} calls  view {stats.tokens_view:>6,} tokens  "
        f"history {stats.tokens_in:>7,} "
    )
    out.flush()


def demo_command(args: argparse.Namespace, out: TextIO) -> int:
    model = SERVING_MODELS[args.serving_model]
    tty = out.isatty() and not args.json
    if not args.json:
        _emit(
            out,
            f"context-distill demo: a scripted coding agent makes "
            f"{tool_calls_in(build_session())} tool calls under a "
            f"budget of {args.budget:,} tokens ({args.distiller} distiller)",
        )
    calls: list[int] = []

    def progress(done: int, total: int, stats: ContextStats) -> None:
        calls.append(done)
        if tty:
            _progress(out, done, total, stats)
        elif not args.json and len(calls) % 40 == 0:
            _emit(
                out,
                f"  {done:>4}/{total} tool calls: model sees {stats.tokens_view:,} tokens of "
                f"a {stats.tokens_in:,}-token history",
            )

    result = run_demo(
        budget=args.budget, distiller=args.distiller, db=args.db, model=model, progress=progress
    )
    if args.json:
        _json(out, result.as_dict())
        return 0
    if tty:
        out.write("\n")
    for line in report(result):
        _emit(out, line)
    if args.db:
        _emit(out)
        _emit(out, f"archive kept in {args.db}; look inside it: {_program()} inspect {args.db}")
    return 0
