"""Soak: the crash, concurrency and fuzz campaigns of the reliability tests, at size.

    python bench/soak.py --minutes 5
    python bench/soak.py --kills 200 --fuzz-examples 3000 --workers 4 --turns 40

Crash: writer processes SIGKILLed at random moments, at random SQLite statements
inside archive and distillation transactions, and at every statement of creating
an archive and of upgrading an old one; after each kill the archive must open, pass
``integrity_check``, hold every acknowledged write, show no half-done distillation,
and let a fresh process continue every thread with the invariants intact.
Concurrency: threads and processes archiving and distilling into one file at once;
throughput in archived messages per second, then every thread and the file checked.
Fuzz: the hypothesis campaigns of ``tests/test_fuzz_invariants.py`` through every door
(engine sync/async/view/rewrite, DistillNode, middleware, chat history, recall tool);
"inputs tried" counts examples (each a whole hostile conversation), "writes checked"
the engine turns whose views were checked.

Prints one table. Violations should be zero; each one is listed after the table.
Needs ``os.fork`` (Linux, macOS).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import invariants as inv  # noqa: E402  (the reliability tests' own checker)

from context_distill import ContextDistiller, SQLiteMemoryStore  # noqa: E402


@dataclass
class Row:
    campaign: str
    runs: int = 0
    kills: int = 0
    survived: int = 0
    writes: int = 0
    inputs: int = 0
    violations: list[str] = field(default_factory=list)
    archived: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.archived / self.seconds if self.archived and self.seconds else None


# -- crash --------------------------------------------------------------------------

THREADS, TURNS = 2, 12


def _fork_writer(db: Path, ack: Path, seed: int, phase: str, at: int, kill_s: float | None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        errors = os.open(f"{ack}.stderr", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(errors, 2)
        try:
            inv.crash_writer(str(db), str(ack), seed, THREADS, TURNS, phase, at)
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    done, status = 0, 0
    if kill_s is not None:
        deadline = time.monotonic() + kill_s
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.002)
        else:
            os.kill(pid, signal.SIGKILL)
    if not done:
        _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _old_archive(path: Path) -> None:
    import sqlite3

    from context_distill.store import MessageRecord

    with SQLiteMemoryStore(path) as store:
        store.archive("old", [MessageRecord("m1", "human", "d", 3, "hello old archive", "{}")])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ALTER TABLE threads DROP COLUMN memory_cap")
    conn.execute("PRAGMA user_version = 1")
    conn.close()


def crash_campaign(seconds: float, kills: int | None, folder: Path, rng: random.Random) -> Row:
    row = Row("crash (SIGKILL)")
    started = time.monotonic()
    counts: dict[tuple[str, int], int] = {}

    def statements(phase: str, seed: int) -> int:
        key = (phase, seed)
        if key not in counts:
            db = folder / f"count-{phase}-{seed}.db"
            if phase == "work":
                SQLiteMemoryStore(db).close()
            elif phase == "upgrade":
                _old_archive(db)
            counts[key] = inv.crash_writer(
                str(db),
                str(folder / "count.ack"),
                seed,
                THREADS,
                TURNS,
                "migrate" if phase == "upgrade" else phase,
                0,
            )
        return counts[key]

    modes = ["random", "random", "statement", "statement", "migrate", "upgrade"]
    n = 0
    while (kills is None and time.monotonic() - started < seconds) or (
        kills is not None and row.kills < kills
    ):
        n += 1
        mode = modes[n % len(modes)]
        seed = rng.randrange(10_000)
        db, ack = folder / f"c{n}.db", folder / f"c{n}.ack"
        if mode == "random":
            code = _fork_writer(db, ack, seed, "none", 0, rng.uniform(0.01, 0.8))
        elif mode == "statement":
            total = statements("work", seed % 8)
            seed %= 8
            SQLiteMemoryStore(db).close()
            code = _fork_writer(db, ack, seed, "work", rng.randint(1, total), None)
        else:
            total = statements(mode, 1)
            if mode == "upgrade":
                _old_archive(db)
            code = _fork_writer(db, ack, 1, "migrate", rng.randint(1, total), None)
        row.runs += 1
        killed = code == -signal.SIGKILL
        row.kills += killed
        if code not in (0, -signal.SIGKILL):
            errors = Path(f"{ack}.stderr")
            output = errors.read_text()[-1500:] if errors.exists() else ""
            row.violations.append(
                f"crash run {n} ({mode}, seed {seed}): writer failed with exit code {code}\n"
                f"{output}"
            )
            continue
        if mode in ("migrate", "upgrade"):
            problems = inv.check_db(db)
            try:
                with SQLiteMemoryStore(db) as store:
                    if not store.integrity_ok():
                        problems.append("integrity_check failed after reopening")
                problems += inv.check_db(db)
            except Exception as exc:
                problems.append(f"archive does not open: {exc!r}")
            row.writes += 1
        else:
            report = inv.check_after_crash(db, ack, seed, THREADS, resume_turns=1)
            problems = report.problems
            row.writes += report.writes_checked
        row.violations += [f"crash run {n} ({mode}, seed {seed}): {p}" for p in problems]
        row.survived += killed and not problems
        for path in folder.glob(f"c{n}.*"):
            path.unlink()
    row.seconds = time.monotonic() - started
    return row


# -- concurrency ----------------------------------------------------------------------


def _verify(db: Path, results: list[inv.WorkerResult], row: Row) -> None:
    row.violations += [e for r in results for e in r.errors]
    row.violations += [p for r in results for p in r.problems]
    row.violations += inv.check_db(db)
    conn = inv.raw_connect(db)
    try:
        for r in results:
            if r.direct_ids:
                tid = r.direct_ids[0].split("-d")[0] + "-direct"
                got = sorted(
                    x[0]
                    for x in conn.execute(
                        "SELECT message_id FROM messages WHERE thread_id = ?", (tid,)
                    )
                )
                if got != sorted(r.direct_ids):
                    row.violations.append(f"{tid}: archived ids differ from the ids written")
                row.writes += len(r.direct_ids)
        threads = [t[0] for t in conn.execute("SELECT thread_id FROM threads")]
    finally:
        conn.close()
    # A fresh process picks every thread up: the archive alone must be consistent.
    engine = ContextDistiller(
        SQLiteMemoryStore(db), budget_tokens=500, token_counter=inv.cheap_count
    )
    try:
        for tid in threads:
            if tid.endswith("-direct"):
                continue
            snapshot = engine.store.load_thread(tid)
            row.writes += len(snapshot.distilled) + len(snapshot.reduced)
    finally:
        engine.store.close()


def _worker(db: Path, name: str, threads: int, turns: int, check: bool) -> inv.WorkerResult:
    return inv.concurrency_worker(str(db), name, threads, turns, check=check)


def concurrency_campaign(
    kind: str, workers: int, threads: int, turns: int, folder: Path, check: bool
) -> Row:
    row = Row(f"concurrency ({workers} {kind})")
    db = folder / f"conc-{kind}.db"
    SQLiteMemoryStore(db).close()
    started = time.monotonic()
    results: list[inv.WorkerResult] = []
    if kind == "threads":
        box: list[inv.WorkerResult] = [inv.WorkerResult() for _ in range(workers)]

        def run(i: int) -> None:
            box[i] = _worker(db, f"th{i}", threads, turns, check)

        pool = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        results = box
    else:
        children = [
            inv.fork_worker(lambda i=i: _worker(db, f"pr{i}", threads, turns, check))
            for i in range(workers)
        ]
        results = [inv.join_worker(pid, pipe) for pid, pipe in children]
    row.seconds = time.monotonic() - started
    row.runs = workers
    row.inputs = sum(r.turns for r in results)
    row.archived = sum(r.archived for r in results)
    _verify(db, results, row)
    return row


# -- fuzz -----------------------------------------------------------------------------


def fuzz_campaign(seconds: float, examples: int | None, folder: Path) -> Row:
    batch = 50
    os.environ["CONTEXT_DISTILL_FUZZ_EXAMPLES"] = str(batch)
    import test_fuzz_invariants as fz

    row = Row("fuzz (hypothesis, every door)")
    tried = {"n": 0}
    drive = fz.drive

    def counting(*args: Any, **kwargs: Any) -> tuple[int, int]:
        accepted, refused = drive(*args, **kwargs)
        tried["n"] += accepted + refused
        return accepted, refused

    fz.drive = counting
    archive = folder / "fuzz.db"
    SQLiteMemoryStore(archive).close()
    campaigns: list[tuple[str, Callable[..., None], dict[str, Any]]] = [
        ("engine view", fz.test_engine_view_style, {"archive": archive}),
        ("engine rewrite", fz.test_engine_rewrite_style, {"archive": archive}),
        ("engine async", fz.test_engine_async_twin, {"archive": archive}),
        ("langgraph node", fz.test_langgraph_node, {"archive": archive}),
        ("chat history", fz.test_chat_history, {"archive": archive}),
        ("agent middleware", fz.test_agent_middleware, {"archive": archive}),
    ]
    recall = contextlib.ExitStack()
    engine = recall.enter_context(fz.recall_engine())
    campaigns.append(("recall tool", fz.test_recall_tool_and_search, {"recall_archive": engine}))
    started = time.monotonic()
    done_examples = 0
    try:
        while True:
            for name, test, kwargs in campaigns:
                if examples is None and time.monotonic() - started > seconds:
                    break
                if examples is not None and done_examples >= examples:
                    break
                before = tried["n"]
                try:
                    test(**kwargs)
                except BaseException as exc:  # a falsified invariant, already shrunk
                    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                    where = [
                        f"{f.filename.split('/')[-1]}:{f.lineno} {f.name}"
                        for f in traceback.extract_tb(exc.__traceback__)[-6:]
                    ]
                    row.violations.append(f"fuzz {name}: {text[:2000]}\n at {' < '.join(where)}")
                done_examples += batch
                row.runs += 1
                row.inputs += batch  # hypothesis examples: a whole conversation each
                row.writes += tried["n"] - before  # turns fed to the engine by drive()
            else:
                continue
            break
    finally:
        fz.drive = drive
        recall.close()
    row.violations += inv.check_db(archive)
    row.seconds = time.monotonic() - started
    return row


# -- a long session -----------------------------------------------------------------------


def long_session(turns: int, folder: Path) -> str:
    """Turn cost early and late in one long rewrite-style session (should not grow)."""
    import gc

    import test_resource_bounds as rb
    from langchain_core.messages import HumanMessage, SystemMessage

    engine = ContextDistiller(
        SQLiteMemoryStore(folder / "long.db"), budget_tokens=4000, token_counter=inv.cheap_count
    )
    held: list[Any] = [
        SystemMessage("You are a careful agent.", id="sys"),
        HumanMessage("Task: check every item.", id="task"),
    ]
    window = max(turns // 10, 1)
    costs: list[float] = []
    started = time.perf_counter()
    for n, new in enumerate(rb.turns(1, turns + 1), start=1):
        held = engine.update("long", held + new).view
        if n % window == 0:
            now = time.perf_counter()
            costs.append((now - started) / window * 1000)
            started = now
    gc.collect()
    archived = engine.store.stats("long")["messages_archived"]
    engine.store.close()
    return (
        f"long session: {turns} turns, {archived} messages archived; ms a turn by tenth: "
        + " ".join(f"{c:.2f}" for c in costs)
        + f" (last/first {costs[-1] / costs[0]:.1f}x)"
    )


# -- the table --------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    head = (
        "campaign",
        "runs",
        "kills",
        "kills survived",
        "writes checked",
        "inputs tried",
        "violations",
        "archived msg/s",
        "seconds",
    )
    body = []
    for r in rows:
        body.append(
            (
                r.campaign,
                str(r.runs),
                str(r.kills) if r.kills else "-",
                str(r.survived) if r.kills else "-",
                str(r.writes) if r.writes else "-",
                str(r.inputs) if r.inputs else "-",
                str(len(r.violations)),
                f"{r.rate:,.0f}" if r.rate else "-",
                f"{r.seconds:.0f}",
            )
        )
    total = (
        "total",
        str(sum(r.runs for r in rows)),
        str(sum(r.kills for r in rows)),
        str(sum(r.survived for r in rows)),
        str(sum(r.writes for r in rows)),
        str(sum(r.inputs for r in rows)),
        str(sum(len(r.violations) for r in rows)),
        "",
        f"{sum(r.seconds for r in rows):.0f}",
    )
    lines = [head, *body, total]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for k, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(line)
            )
        )
        if k == 0 or k == len(lines) - 2:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="total time (default 4)")
    parser.add_argument("--kills", type=int, default=None, help="crash runs that were killed")
    parser.add_argument("--fuzz-examples", type=int, default=None, help="hypothesis examples")
    parser.add_argument("--workers", type=int, default=4, help="threads / processes")
    parser.add_argument("--threads", type=int, default=3, help="conversation threads a worker")
    parser.add_argument("--turns", type=int, default=40, help="turns a conversation thread")
    parser.add_argument("--check", action="store_true", help="check every view (slower)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--long-turns", type=int, default=10_000, help="long-session probe (0: skip)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--only", choices=("crash", "concurrency", "fuzz"), default=None, help="one campaign"
    )
    args = parser.parse_args(argv)
    if not hasattr(os, "fork"):
        parser.error("the soak needs os.fork")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    budget = args.minutes * 60
    folder = Path(tempfile.mkdtemp(prefix="context-distill-soak-"))
    print(f"soak: seed {seed}, {args.minutes:g} min, scratch {folder}", flush=True)
    rows: list[Row] = []
    notes: list[str] = []
    try:
        started = time.monotonic()
        for kind in ("threads", "processes") if args.only in (None, "concurrency") else ():
            rows.append(
                concurrency_campaign(
                    kind, args.workers, args.threads, args.turns, folder, args.check
                )
            )
            print(f"  {rows[-1].campaign}: {rows[-1].seconds:.0f} s", flush=True)
        if args.only in (None, "crash"):
            left = max(budget - (time.monotonic() - started), 30.0)
            share = 1.0 if args.only else 0.55
            rows.append(crash_campaign(left * share, args.kills, folder, rng))
            print(f"  crash: {rows[-1].runs} runs, {rows[-1].seconds:.0f} s", flush=True)
        if args.only in (None, "fuzz"):
            left = max(budget - (time.monotonic() - started), 20.0)
            rows.append(fuzz_campaign(left, args.fuzz_examples, folder))
            print(f"  fuzz: {rows[-1].inputs} inputs, {rows[-1].seconds:.0f} s", flush=True)
        if args.long_turns and args.only is None:
            notes.append(long_session(args.long_turns, folder))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    order = [r for r in rows if r.campaign.startswith("crash")]
    order += [r for r in rows if r.campaign.startswith("concurrency")]
    order += [r for r in rows if r.campaign.startswith("fuzz")]
    print()
    print(table(order))
    for note in notes:
        print(note)
    violations = [v for r in order for v in r.violations]
    if violations:
        print(f"\n{len(violations)} violation(s):")
        for v in violations[:40]:
            print(" -", v.replace("\n", "\n   ")[:1500])
    if args.json:
        args.json.write_text(
            json.dumps(
                [{**r.__dict__, "violations": r.violations, "rate": r.rate} for r in order],
                indent=2,
            )
        )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
