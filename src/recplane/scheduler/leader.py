"""Leader election for the scheduler loop: one process schedules per catalog, the others stand by.

On PostgreSQL the leader holds a session advisory lock on a connection of its own (the lock goes when the
connection does, so a crashed leader frees it at once); on SQLite it holds an exclusive ``flock`` on a file
beside the database (released by the kernel when the process dies).
"""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from recplane.catalog import Catalog

__all__ = ["LeaderLock"]

_ADVISORY_KEY = 7_241_551_834  # any fixed 64-bit number; names "recplane scheduler leader"


class LeaderLock:
    """A non-blocking, process-wide lock naming the scheduler leader of one catalog."""

    def __init__(self, catalog: Catalog, *, role: str = "scheduler", key: int = _ADVISORY_KEY) -> None:
        self.catalog = catalog
        self.role, self.key = role, key  # another loop (pipelines) leads under its own role and key
        self._connection: Connection | None = None
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this lock is held (checked against the database on PostgreSQL)."""
        if self._file is not None:
            return True
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
            return True
        except DBAPIError:  # the connection died, and the lock with it
            self._drop_connection()
            return False

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True when this process leads."""
        if self.held:
            return True
        if self.catalog.engine.dialect.name == "postgresql":
            return self._acquire_advisory()
        return self._acquire_file()

    def _acquire_advisory(self) -> bool:
        connection = self.catalog.engine.connect()
        got = bool(connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
        connection.commit()
        if got:
            self._connection = connection
        else:
            connection.close()
        return got

    def _acquire_file(self) -> bool:
        database = self.catalog.engine.url.database
        path = Path(f"{database}.{self.role}.lock") if database and database != ":memory:" else None
        if path is None:
            return True  # an in-memory catalog lives in this process only: nobody else can schedule it
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        """Give the lock up (a no-op when not held)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._connection.commit()
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.close()
            self._connection = None
