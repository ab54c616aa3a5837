"""The SQLite archive's schema, its migrations, and its full-text query builder."""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlite_utils

SCHEMA_VERSION = 5


def _v1(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE threads (
            thread_id TEXT PRIMARY KEY,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            next_seq INTEGER NOT NULL DEFAULT 1,
            anchor TEXT,
            memory_cap INTEGER
        )"""
    )
    db.execute(
        """CREATE TABLE distillations (
            id INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(thread_id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            distiller TEXT NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT,
            groups INTEGER NOT NULL,
            messages INTEGER NOT NULL,
            facts INTEGER NOT NULL,
            tokens_before INTEGER NOT NULL,
            tokens_after INTEGER NOT NULL,
            source_tokens INTEGER NOT NULL,
            fact_tokens INTEGER NOT NULL,
            duration_s REAL NOT NULL,
            details TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(thread_id) ON DELETE CASCADE,
            message_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            digest TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            text TEXT NOT NULL,
            data TEXT NOT NULL,
            state TEXT NOT NULL,
            distillation_id INTEGER REFERENCES distillations(id) ON DELETE SET NULL,
            archived_at REAL NOT NULL,
            UNIQUE (thread_id, message_id),
            UNIQUE (thread_id, seq)
        )"""
    )
    db.execute(
        """CREATE TABLE facts (
            id INTEGER PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(thread_id) ON DELETE CASCADE,
            distillation_id INTEGER NOT NULL REFERENCES distillations(id) ON DELETE CASCADE,
            text TEXT NOT NULL,
            source_ids TEXT NOT NULL,
            refs TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX facts_thread ON facts (thread_id, id)")
    db.execute("CREATE INDEX distillations_thread ON distillations (thread_id, id)")
    db.table("messages").enable_fts(["text"], create_triggers=True, tokenize="porter unicode61")
    db.table("facts").enable_fts(["text"], create_triggers=True, tokenize="porter unicode61")


def _v2(db: sqlite_utils.Database) -> None:
    """``threads.memory_cap``: archives made before it was part of the first schema lack it."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(threads)").fetchall()}
    if "memory_cap" not in columns:
        db.execute("ALTER TABLE threads ADD COLUMN memory_cap INTEGER")


def _v3(db: sqlite_utils.Database) -> None:
    """Re-index text only when text changes: a message's state changes on every
    distillation, and re-indexing a large tool output for it cost milliseconds."""
    for table in ("messages", "facts"):
        db.execute(f'DROP TRIGGER IF EXISTS "{table}_au"')
        db.execute(
            f'CREATE TRIGGER "{table}_au" AFTER UPDATE OF "text" ON "{table}" BEGIN\n'
            f'  INSERT INTO "{table}_fts" ("{table}_fts", rowid, "text") '
            "VALUES('delete', old.rowid, old.\"text\");\n"
            f'  INSERT INTO "{table}_fts" (rowid, "text") VALUES (new.rowid, new."text");\n'
            "END"
        )


def _v4(db: sqlite_utils.Database) -> None:
    """``facts.retired_at``: the distillation after which the memory block stopped
    holding a fact, so that a restart rebuilds the same memory."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(facts)").fetchall()}
    if "retired_at" not in columns:
        db.execute("ALTER TABLE facts ADD COLUMN retired_at INTEGER")


def _v5(db: sqlite_utils.Database) -> None:
    """``threads.memory_pages``: what the memory block shows, so that a restart keeps
    the same block (and its pages below which the next facts go)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(threads)").fetchall()}
    if "memory_pages" not in columns:
        db.execute("ALTER TABLE threads ADD COLUMN memory_pages TEXT")


MIGRATIONS: tuple[tuple[int, Callable[[sqlite_utils.Database], None]], ...] = (
    (1, _v1),
    (2, _v2),
    (3, _v3),
    (4, _v4),
    (5, _v5),
)


_MAX_TERMS = 64  # words of a query beyond these are ignored (bounds the cost of a query)
_PHRASE = re.compile(r'"([^"]*)"|([^\s"]+)')


def fts_query(text: str) -> str:
    """A full-text query that matches the words of ``text`` and never fails to parse.

    Each word becomes a quoted string (a ``"quoted phrase"`` stays a phrase), so FTS5
    operators and punctuation are plain text; NUL (which ends an FTS5 string) and
    other control characters separate words, and lone surrogates are replaced.
    Repeated words count once and only the first ``_MAX_TERMS`` distinct ones are used.
    """
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = "".join(" " if ch < " " or ch == "\x7f" else ch for ch in text)
    terms: dict[str, None] = {}  # a repeated word adds nothing to an AND query
    for phrase, word in _PHRASE.findall(text):
        term = phrase if phrase else word
        if term.strip():
            terms['"' + term.replace('"', '""') + '"'] = None
            if len(terms) >= _MAX_TERMS:
                break
    return " ".join(terms)
