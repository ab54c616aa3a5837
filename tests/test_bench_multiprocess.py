"""bench/multiprocess.py in its quick form: agent processes on one PostgreSQL and one
SQLite file, some threads shared by two processes; nothing lost, doubled or failed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pg_kit import server_dsn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not installed

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_quick_run_loses_and_doubles_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import multiprocess

    results = multiprocess.main(["--quick", "--pg", server_dsn()])
    assert [(r.backend, r.procs) for r in results] == [
        ("postgres", 1),
        ("postgres", 2),
        ("sqlite", 1),
        ("sqlite", 2),
    ]
    for r in results:
        assert r.turns > 0 and r.messages > 0, r
        assert r.errors == [], r.errors[:3]
        assert (r.lost, r.doubled, r.fact_problems) == (0, 0, []), r
    assert results[1].shared == 1  # two processes served one thread between them
    out = capsys.readouterr().out
    assert "turns/s" in out and "p99 ms" in out
