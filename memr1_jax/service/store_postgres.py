"""The memory store in PostgreSQL: several servers on one database share one memory.

The logic and guarantees are ``store.SQLStore``'s; this module gives it connections (a
``psycopg_pool`` pool), transactions whose writers take turns through a transaction-level
advisory lock (so ``seq`` rises in commit order, as SQLite's ``BEGIN IMMEDIATE`` gives), and
errors that name the database by its URL without the password. Embeddings are ``bytea`` rows
searched by each server's exact in-process index, refreshed when the store's version moves
(pgvector is not used: it is not installed with PostgreSQL, and the index is the service's own).

Needs ``pip install "memr1-jax[postgres]"`` (psycopg 3 and psycopg_pool).
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from typing import Iterator, Sequence

from memr1_jax.service.store import SQLStore, StoreError

log = logging.getLogger(__name__)

_WRITE_LOCK = 0x6D656D72   # "memr": the advisory lock key every writer of a memr1 database takes
POOL_SIZE = 8


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class _Tx:
    """A transaction's cursor with ``?`` placeholders (the SQL ``SQLStore`` writes) as psycopg's ``%s``."""

    def __init__(self, cur):
        self._cur = cur

    def execute(self, sql: str, args: Sequence = ()):
        self._cur.execute(sql.replace("?", "%s"), tuple(args))
        return self._cur

    def executemany(self, sql: str, rows):
        self._cur.executemany(sql.replace("?", "%s"), [tuple(r) for r in rows])
        return self._cur


class PostgresStore(SQLStore):
    BLOB, INT = "BYTEA", "BIGINT"

    def __init__(self, url: str, dim: int, encoder: str = "", pool_size: int = POOL_SIZE):
        try:
            import psycopg
            import psycopg_pool
        except ImportError as e:
            raise StoreError(f"{redacted(url)}: the PostgreSQL store needs psycopg 3 and psycopg_pool: "
                             f'pip install "memr1-jax[postgres]" ({e})') from None
        self.url, self.location = url, redacted(url)
        self._errors = (psycopg.Error,)
        try:   # one direct connection first: a wrong password or a stopped server is one clear error, at once
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.Error as e:
            raise StoreError(f"{self.location}: cannot connect ({' '.join(str(e).split())})") from None
        self._pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=pool_size, open=True,
                                                 kwargs={"connect_timeout": 5}, name="memr1-store")
        try:
            super().__init__(dim, encoder)
        except BaseException:
            self._pool.close()
            raise
        log.info("memory store: PostgreSQL at %s (exact in-process search, refreshed from the change counter)",
                 self.location)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[_Tx]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            yield _Tx(cur)

    def _read(self, sql: str, args: Sequence = ()) -> list[tuple]:
        with self._pool.connection() as conn, conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), tuple(args))
            return cur.fetchall()

    def close(self) -> None:
        self._pool.close()
