"""Crash safety: a writer SIGKILLed at any moment never corrupts or loses acknowledged data.

The writer is a forked child process. It is killed either at an exact statement
(every statement of the migration that creates an archive, and a spread of
statements through archive and distillation transactions) or at a random moment.
Afterwards the archive must open, pass ``PRAGMA integrity_check`` (SQLite), hold
every write whose call returned (the child acknowledges each through a side file
fsynced after the call), show no half-done distillation, and let a fresh process
continue every thread with the invariants intact. Each campaign runs on an SQLite
file and on PostgreSQL (``new_archive``); a PostgreSQL server restarted mid-run is
in test_postgres.py.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from conftest import NewArchive
from invariants import check_after_crash, check_db, crash_writer, open_archive

from context_distill import SQLiteMemoryStore
from context_distill.store import SCHEMA_VERSION

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

THREADS = 2
TURNS = 12


def fork_writer(
    db: Any, ack: Path, seed: int, phase: str, crash_at: int, *, kill_after_s: float | None = None
) -> int:
    """Run ``crash_writer`` in a forked child; return how it ended (-9: killed)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        errors = os.open(f"{ack}.stderr", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(errors, 2)
        # Warnings (a retried call, a refused connection) land in the file shown on failure.
        logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
        try:
            crash_writer(db, str(ack), seed, THREADS, TURNS, phase, crash_at)
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    done, status = 0, 0
    if kill_after_s is not None:
        deadline = time.monotonic() + kill_after_s
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.002)
        else:
            os.kill(pid, signal.SIGKILL)
    if not done:
        _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    code = os.WEXITSTATUS(status)
    if code:
        errors = Path(f"{ack}.stderr")
        raise AssertionError(
            f"writer failed with exit code {code}:\n"
            + (errors.read_text()[-3000:] if errors.exists() else "(no output)")
        )
    return code


def statements_in(new_archive: NewArchive, tmp_path: Path, phase: str, seed: int) -> int:
    """How many statements a phase runs, from an uninterrupted run."""
    db = new_archive(f"count-{phase}")
    if phase == "work":
        open_archive(db).close()
    return crash_writer(db, str(tmp_path / f"count-{phase}.ack"), seed, THREADS, TURNS, phase, 0)


def test_kill_at_every_statement_of_the_migration(new_archive: NewArchive, tmp_path: Path) -> None:
    total = statements_in(new_archive, tmp_path, "migrate", 1)
    assert total > 5
    for n in range(1, total + 1):
        db = new_archive(f"m{n}")
        code = fork_writer(db, tmp_path / f"m{n}.ack", 1, "migrate", n)
        assert code == -signal.SIGKILL, f"writer ended with {code} instead of being killed"
        problems = check_db(db)
        assert not problems, f"killed at migration statement {n}/{total}: {problems}"
        with open_archive(db) as store:  # opens, finishes the migration
            assert store.schema_version == store_schema_version(store)
            assert not isinstance(store, SQLiteMemoryStore) or store.integrity_ok()
        assert not check_db(db)


def store_schema_version(store: Any) -> int:
    """The schema version this library writes for the store's backend."""
    if isinstance(store, SQLiteMemoryStore):
        return SCHEMA_VERSION
    from context_distill.postgres import SCHEMA_VERSION as PG_SCHEMA_VERSION

    return PG_SCHEMA_VERSION


def test_kill_at_statements_inside_archive_and_distillation(
    new_archive: NewArchive, tmp_path: Path
) -> None:
    seed = 2
    total = statements_in(new_archive, tmp_path, "work", seed)
    assert total > 100
    rng = random.Random(20240611)
    points = sorted(rng.sample(range(1, total + 1), 12))
    checked = 0
    for n in points:
        db = new_archive(f"w{n}")
        ack = tmp_path / f"w{n}.ack"
        code = fork_writer(db, ack, seed, "work", n)
        assert code == -signal.SIGKILL, f"writer ended with {code} instead of being killed"
        report = check_after_crash(db, ack, seed, THREADS)
        assert not report.problems, f"killed at statement {n}/{total}: {report.problems[:10]}"
        checked += report.writes_checked
    assert checked > 0


def writer_seconds(new_archive: NewArchive, tmp_path: Path, seed: int) -> float:
    """How long an uninterrupted writer runs here (kill times are drawn within it)."""
    started = time.monotonic()
    fork_writer(new_archive("timing"), tmp_path / "timing.ack", seed, "none", 0)
    return time.monotonic() - started


def test_kill_at_random_moments(new_archive: NewArchive, tmp_path: Path) -> None:
    rng = random.Random(7)
    span = writer_seconds(new_archive, tmp_path, 100)
    killed = 0
    checked = 0
    for run in range(6):
        seed = 100 + run
        db = new_archive(f"r{run}")
        ack = tmp_path / f"r{run}.ack"
        code = fork_writer(db, ack, seed, "none", 0, kill_after_s=rng.uniform(0.05, 0.9) * span)
        assert code in (0, -signal.SIGKILL), f"writer failed with exit code {code}"
        killed += code == -signal.SIGKILL
        report = check_after_crash(db, ack, seed, THREADS)
        assert not report.problems, f"run {run}: {report.problems[:10]}"
        checked += report.writes_checked
    assert killed >= 3, "too few runs were killed mid-way to mean anything"
    assert checked > 0


def test_repeated_crashes_on_one_archive(new_archive: NewArchive, tmp_path: Path) -> None:
    """Several writers killed one after another on the same archive, each resuming."""
    db = new_archive("same")
    rng = random.Random(11)
    span = writer_seconds(new_archive, tmp_path, 300)
    for run in range(4):
        ack = tmp_path / f"same{run}.ack"
        seed = 300 + run
        code = fork_writer(db, ack, seed, "none", 0, kill_after_s=rng.uniform(0.05, 0.9) * span)
        assert code in (0, -signal.SIGKILL)
        report = check_after_crash(db, ack, seed, THREADS, resume_turns=1)
        assert not report.problems, f"run {run}: {report.problems[:10]}"


def _old_v1_archive(path: Path) -> None:
    """An archive as the first release wrote it: schema 1, no threads.memory_cap."""
    from context_distill.store import MessageRecord

    with SQLiteMemoryStore(path) as store:
        store.archive("old", [MessageRecord("m1", "human", "d", 3, "hello old archive", "{}")])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ALTER TABLE threads DROP COLUMN memory_cap")
    conn.execute("PRAGMA user_version = 1")
    conn.close()


def test_kill_at_every_statement_of_an_upgrade(tmp_path: Path) -> None:
    template = tmp_path / "v1.db"
    _old_v1_archive(template)
    probe = tmp_path / "probe.db"
    shutil.copy(template, probe)
    total = crash_writer(str(probe), str(tmp_path / "probe.ack"), 1, THREADS, TURNS, "migrate", 0)
    assert total >= 3
    for n in range(1, total + 1):
        db = tmp_path / f"u{n}.db"
        shutil.copy(template, db)
        code = fork_writer(db, tmp_path / f"u{n}.ack", 1, "migrate", n)
        assert code == -signal.SIGKILL, f"writer ended with {code} instead of being killed"
        assert not check_db(db), f"killed at upgrade statement {n}/{total}"
        with SQLiteMemoryStore(db) as store:
            assert store.schema_version == SCHEMA_VERSION
            assert store.search("hello", thread_id="old")[0].message_id == "m1"
            assert store.load_thread("old").memory_cap is None
        assert not check_db(db)
