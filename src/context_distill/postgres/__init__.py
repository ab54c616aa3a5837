"""PostgreSQL behind the ``MemoryStore`` protocol: many agent servers, one memory.

``pip install 'context-distill[postgres]'`` (psycopg 3 with its pool)::

    from context_distill.postgres import PostgresMemoryStore
    store = PostgresMemoryStore("postgresql://user:pw@db-host/agents")
    # or the connection (or pool) a LangGraph PostgresSaver already holds:
    store = PostgresMemoryStore(checkpointer.conn)
"""

from __future__ import annotations

from ..errors import MissingExtraError

try:
    import psycopg  # noqa: F401
    import psycopg_pool  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingExtraError(
        "the PostgreSQL store needs psycopg 3 and its pool: pip install 'context-distill[postgres]'"
    ) from exc

from ._schema import SCHEMA_VERSION
from .store import PostgresMemoryStore

__all__ = ["SCHEMA_VERSION", "PostgresMemoryStore"]
