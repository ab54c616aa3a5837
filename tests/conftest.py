"""Fixtures shared by the suites that run against every store backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_kit import PgTarget, drop_schema, new_schema, server_dsn

BACKENDS = ["sqlite", "postgres"]

# Makes a new, empty archive on the test's backend: an SQLite path or a PgTarget.
NewArchive = Callable[[str], Any]


@pytest.fixture
def pg_target() -> Iterator[PgTarget]:
    """A fresh schema on the test server, dropped afterwards."""
    target = new_schema(server_dsn())
    yield target
    drop_schema(target)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        server_dsn()  # skip (or fail under CI) here when there is no server
    return str(request.param)


@pytest.fixture
def new_archive(backend: str, tmp_path: Path) -> Iterator[NewArchive]:
    """A maker of fresh archives on the backend (files, or schemas dropped afterwards)."""
    made: list[PgTarget] = []

    def make(name: str) -> Any:
        if backend == "sqlite":
            return tmp_path / f"{name}.db"
        target = new_schema(server_dsn())
        made.append(target)
        return target

    yield make
    for target in made:
        drop_schema(target)


@pytest.fixture
def target(new_archive: NewArchive) -> Any:
    """An empty archive on each backend: an SQLite file's path, or a PostgreSQL schema."""
    return new_archive("archive")
