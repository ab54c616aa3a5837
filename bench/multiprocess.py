"""Many agent processes, one memory: PostgreSQL against one SQLite file.

    PYTHONPATH=. .venv/bin/python -m bench.multiprocess [--seconds 45] [--procs 1,2,4,8]
        [--backends postgres,sqlite] [--pg DSN] [--quick]

For each backend and each N, N agent processes (forked, each with its own store and
``ContextDistiller``) run long tool-calling threads turn after turn for ``--seconds``:
every turn appends a user message, one to three rounds of (parallel) tool calls with
their results, some of them large JSON, and an answer, then calls
``engine.update(thread_id, history)``, the call an agent makes before each model call.
Each process has threads of its own, and processes 2k and 2k+1 also share one thread
(a load balancer sending one conversation to two servers: both hold the same history
and each sends it as far as it has got).

Printed per run: turns per second (all processes), p50/p99 latency of one turn's
``update``, the CPU the agent processes got (100% is one core: with the server's and
everything else's, what the cores allowed), errors that reached the caller, and what
the archive holds afterwards: messages lost (sent but not archived), messages doubled
(rows beyond one per id, or archive numbers with gaps), and facts doubled or
half-committed (a message distilled twice, a distillation whose facts or originals are
not all there), read back through the reliability tests' checker. PostgreSQL comes from ``--pg``,
``$CONTEXT_DISTILL_TEST_PG`` or ``scripts/ensure_postgres.sh``; each run gets a schema
of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "src"))

import invariants as inv  # noqa: E402  (the reliability tests' own workload and checker)
from pg_kit import PgTarget, drop_schema, new_schema  # noqa: E402

from context_distill import ContextDistiller  # noqa: E402

OWN_THREADS = 2  # threads each process serves alone
BUDGET = 3000  # tokens (o200k): a distillation every few turns


@dataclass
class Result:
    backend: str
    procs: int
    threads: int = 0
    shared: int = 0
    seconds: float = 0.0
    turns: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lost: int = 0
    doubled: int = 0
    facts: int = 0
    fact_problems: list[str] = field(default_factory=list)
    messages: int = 0
    cpu_s: float = 0.0  # CPU time of the agent processes during the run


def plan(procs: int) -> list[list[str]]:
    """The thread ids each process serves: its own, and one shared with its neighbour."""
    out = [[f"p{p}-own{t}" for t in range(OWN_THREADS)] for p in range(procs)]
    for pair in range(procs // 2):
        for p in (2 * pair, 2 * pair + 1):
            out[p].append(f"shared{pair}")
    return out


def _tag(thread_id: str) -> str:
    return thread_id.replace("-", "")


def worker(
    target: Any, threads: list[str], seconds: float, start: Any, results: Any, index: int
) -> None:
    """One agent process: its own store and engine, turns until the time is up."""
    out: dict[str, Any] = {"turns": 0, "latencies": [], "errors": [], "sent": {}, "cpu_s": 0.0}
    try:
        store = inv.open_archive(target)
        engine = ContextDistiller(store, budget_tokens=BUDGET)
        rngs = {tid: random.Random(tid) for tid in threads}
        histories = {tid: inv.session_start(_tag(tid)) for tid in threads}
        turn = 0
        start.wait()
        cpu = time.process_time()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            turn += 1
            for tid in threads:
                history = histories[tid]
                history.extend(inv.make_turn(rngs[tid], _tag(tid), turn))
                began = time.perf_counter()
                try:
                    engine.update(tid, history)
                except Exception as exc:  # counted, never raised: errors are a result
                    out["errors"].append(f"{tid} turn {turn}: {exc!r}")
                out["latencies"].append(time.perf_counter() - began)
                out["turns"] += 1
        out["cpu_s"] = time.process_time() - cpu
        out["sent"] = {tid: [m.id for m in histories[tid]] for tid in threads}
        store.close()
    except Exception:
        out["errors"].append(f"process {index}: {traceback.format_exc()}")
    results.put((index, out))


def run(backend: str, target: Any, procs: int, seconds: float) -> Result:
    result = Result(backend, procs)
    inv.open_archive(target).close()  # the schema exists before the processes race
    threads = plan(procs)
    result.threads = len({tid for mine in threads for tid in mine})
    result.shared = procs // 2
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    results = ctx.Queue()
    workers = [
        ctx.Process(target=worker, args=(target, threads[p], seconds, start, results, p))
        for p in range(procs)
    ]
    for process in workers:
        process.start()
    time.sleep(1.0)  # every process has opened its store
    began = time.monotonic()
    start.set()
    outs = [results.get() for _ in workers]
    result.seconds = time.monotonic() - began
    for process in workers:
        process.join()
    sent: dict[str, list[str]] = {}
    for _, out in sorted(outs, key=lambda item: item[0]):
        result.turns += out["turns"]
        result.cpu_s += out["cpu_s"]
        result.latencies.extend(out["latencies"])
        result.errors.extend(out["errors"])
        for tid, ids in out["sent"].items():
            if len(ids) > len(sent.get(tid, [])):
                sent[tid] = ids
    verify(result, target, sent)
    return result


def verify(result: Result, target: Any, sent: dict[str, list[str]]) -> None:
    """What the archive holds against what the processes sent."""
    conn = inv.raw_connect(target)
    try:
        for tid, ids in sent.items():
            rows = conn.execute(
                "SELECT message_id, seq FROM messages WHERE thread_id = ?", (tid,)
            ).fetchall()
            archived = {row[0] for row in rows}
            seqs = sorted(row[1] for row in rows)
            result.messages += len(rows)
            result.lost += len(set(ids) - archived)
            result.doubled += len(rows) - len(archived)  # rows beyond one per id
            result.doubled += sum(1 for n, seq in enumerate(seqs, 1) if seq != n)  # gaps
        result.facts = conn.execute("SELECT COUNT(*) FROM facts").fetchone()[0]
    finally:
        conn.close()
    result.fact_problems = inv.check_db(target)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def pg_dsn(given: str | None) -> str:
    dsn = given or os.environ.get("CONTEXT_DISTILL_TEST_PG")
    if dsn:
        return dsn
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure_postgres.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def server_settings(dsn: str) -> str:
    import psycopg

    with psycopg.connect(dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        fsync = conn.execute("SHOW fsync").fetchone()
        commit = conn.execute("SHOW synchronous_commit").fetchone()
    return (
        f"PostgreSQL {version[0] if version else '?'} on this machine "
        f"(fsync={fsync[0] if fsync else '?'}, synchronous_commit={commit[0] if commit else '?'})"
    )


def table(results: list[Result]) -> str:
    header = (
        f"{'backend':<10} {'procs':>5} {'threads':>9} {'turns':>7} {'turns/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'agent CPU':>9} {'errors':>6} {'msgs':>7} {'lost':>4} "
        f"{'doubled':>7} {'facts':>6} {'fact problems':>13}"
    )
    lines = [header]
    for r in results:
        lines.append(
            f"{r.backend:<10} {r.procs:>5} {f'{r.threads} ({r.shared})':>9} {r.turns:>7} "
            f"{r.turns / max(r.seconds, 1e-9):>8.1f} {percentile(r.latencies, 0.5) * 1000:>7.1f} "
            f"{percentile(r.latencies, 0.99) * 1000:>7.1f} "
            f"{f'{100 * r.cpu_s / max(r.seconds, 1e-9):.0f}%':>9} {len(r.errors):>6} "
            f"{r.messages:>7} {r.lost:>4} {r.doubled:>7} {r.facts:>6} {len(r.fact_problems):>13}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="per run (default 45)")
    parser.add_argument("--procs", default="1,2,4,8")
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--pg", default=None, help="PostgreSQL DSN (default: the test server)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 and 2 processes, 3 s")
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    counts = [1, 2] if args.quick else [int(n) for n in args.procs.split(",")]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    dsn = pg_dsn(args.pg) if "postgres" in backends else ""
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} cores, load average {load[0]:.2f} before; {seconds:g} s a run; "
        f"{OWN_THREADS} threads a process plus one shared by each pair; budget {BUDGET} tokens"
    )
    if dsn:
        print(server_settings(dsn))
    print("SQLite: one file in WAL mode on this machine's disk", flush=True)
    results: list[Result] = []
    for backend in backends:
        for procs in counts:
            scratch = Path(tempfile.mkdtemp(prefix="cd-multiprocess-"))
            target: Any = scratch / "memory.db"
            if backend == "postgres":
                target = new_schema(dsn)
            try:
                results.append(run(backend, target, procs, seconds))
            finally:
                if isinstance(target, PgTarget):
                    drop_schema(target)
                shutil.rmtree(scratch, ignore_errors=True)
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(f"load average {os.getloadavg()[0]:.2f} after")
    print(table(results))
    for r in results:
        for problem in (r.errors + r.fact_problems)[:5]:
            print(f"{r.backend} x{r.procs}: {problem}")
    return results


if __name__ == "__main__":
    main()
