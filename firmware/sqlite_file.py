"""What the journal and the OCPP outbox share: one SQLite connection, opened by the subclass, with
read and write helpers that turn SQLite errors into the store's own error naming the file."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Self


class SqliteFile:
    """Subclasses open ``_conn`` and define ``_guard`` (SQLite errors -> their own error naming the file)
    and ``_closed_error``."""

    _conn: sqlite3.Connection | None

    def _guard(self, action: str) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def _closed_error(self) -> Exception:
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection (idempotent); every later call raises the store's error."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with self._guard("cannot close"):
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise self._closed_error()
        return self._conn

    @contextlib.contextmanager
    def _read(self, action: str) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        with self._guard(action):
            yield conn

    @contextlib.contextmanager
    def _write(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and so synced to storage) before the caller returns. BEGIN
        IMMEDIATE takes the write lock first, so a check and the write that depends on it cannot be
        interleaved with another writer's (the journal and the outbox share one file)."""
        conn = self._connection()
        with self._guard(action):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
