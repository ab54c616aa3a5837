"""How soon a call made during a PostgreSQL outage goes through once the server is back.

    PYTHONPATH=. .venv/bin/python -m bench.pg_outage [--down 5,12,20] [--retry-s 60]

For each outage length D and each way of holding connections, a store archives one
message, the server is stopped (fast shutdown), a timer starts it again after D
seconds, and the store archives a second message meanwhile. Printed: when the server
was back (``pg_ctl start -w`` returned; it may answer a moment before), when the call
returned, and how late it was. Two ways are compared in
one run: the store's own connections (a connection string), and a
``psycopg_pool.ConnectionPool`` handed to the store, which reconnects on its own
schedule in background threads. The server is the tests' restartable one
(``scripts/ensure_postgres.sh ... restart``), never the shared test server.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_kit import (  # the tests' own server kit
    drop_schema,
    new_schema,
    restartable_dsn,
    start_server,
    stop_server,
)

from context_distill.messages import digest, to_json
from context_distill.store import MessageRecord


def record(message_id: str) -> MessageRecord:
    message = HumanMessage(f"words of {message_id}", id=message_id)
    return MessageRecord(message_id, "human", digest(message), 3, str(message.content),
                         to_json(message))  # fmt: skip


def one_outage(dsn: str, way: str, down_s: float, retry_s: float) -> tuple[float, float, str]:
    """(server back at, call returned at, outcome), seconds from the outage's start."""
    from psycopg_pool import ConnectionPool

    from context_distill.postgres import PostgresMemoryStore

    target = new_schema(dsn)
    pool: Any = None
    if way == "psycopg_pool":
        pool = ConnectionPool(dsn, min_size=1, max_size=4, kwargs={"autocommit": True})
        pool.wait()
        store = PostgresMemoryStore(pool, schema=target.schema, retry_s=retry_s)
    else:
        store = target.open(retry_s=retry_s)
    try:
        store.archive("t", [record("before")])
        stop_server()
        back: dict[str, float] = {}
        started = time.monotonic()

        def bring_back() -> None:
            start_server()
            back["at"] = time.monotonic() - started

        timer = threading.Timer(down_s, bring_back)
        timer.start()
        try:
            store.archive("t", [record("during")])
            outcome = "ok"
        except Exception as exc:  # the figure to print, whatever the error
            outcome = type(exc).__name__
        returned = time.monotonic() - started
        timer.join()
        return back["at"], returned, outcome
    finally:
        start_server()
        store.close()
        if pool is not None:
            pool.close()
        drop_schema(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", default="5,12,20", help="outage lengths in seconds")
    parser.add_argument("--retry-s", type=float, default=60.0, help="the store's retry_s")
    args = parser.parse_args()
    dsn = restartable_dsn()
    print(f"retry_s {args.retry_s:g}; server {dsn.rsplit('@', 1)[-1]}")
    print(f"{'connections':<14}{'down s':>8}{'back at s':>11}{'returned s':>12}{'late s':>8}  call")
    for down in (float(d) for d in args.down.split(",")):
        for way in ("own", "psycopg_pool"):
            back, returned, outcome = one_outage(dsn, way, down, args.retry_s)
            print(f"{way:<14}{down:>8g}{back:>11.1f}{returned:>12.1f}{returned - back:>8.1f}  "
                  f"{outcome}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
