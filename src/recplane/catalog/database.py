"""Opening the catalog: one SQLAlchemy engine per URL, migrated to the latest schema on open.

SQLite (the embedded default) runs in WAL mode with a busy timeout so several processes can share it;
PostgreSQL is the production choice. Migrations are serialised across processes (a PostgreSQL advisory lock,
a file lock beside a SQLite database), so two servers starting at once cannot race each other.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from recplane.errors import BackendUnavailable, InvalidSpec

__all__ = ["Catalog", "current_revision", "downgrade", "head_revision", "migrate"]

MIGRATIONS = Path(__file__).parent / "migrations"
_ADVISORY_LOCK_KEY = 7_241_551_833  # any fixed 64-bit number; names "recplane migrations"


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_catalog_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings recplane relies on (WAL + busy timeout on SQLite)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidSpec(f"Catalog URL {url!r} is not a valid SQLAlchemy URL: {exc}") from exc
    if parsed.drivername.startswith("postgresql") and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            f"The driver for {parsed.drivername} is not installed: pip install 'recplane[postgres]'"
        ) from exc


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """Hold a cross-process lock for the duration of a migration."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
            try:
                yield connection
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_LOCK_KEY})
                connection.commit()
        return
    database = engine.url.database
    lock_path = Path(f"{database}.migrate.lock") if database and database != ":memory:" else None
    with contextlib.ExitStack() as stack:
        if lock_path is not None:
            handle = stack.enter_context(lock_path.open("a"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield stack.enter_context(engine.connect())


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the catalog schema to ``revision`` (default: the newest)."""
    with _migration_lock(engine) as connection:
        command.upgrade(_alembic_config(connection), revision)
        connection.commit()


def downgrade(engine: Engine, revision: str) -> None:
    """Downgrade the catalog schema to ``revision`` ("base" removes every table)."""
    with _migration_lock(engine) as connection:
        command.downgrade(_alembic_config(connection), revision)
        connection.commit()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None before the first migration)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this version of recplane."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


class Catalog:
    """A migrated catalog database and a session factory for it."""

    def __init__(self, url: str, *, auto_migrate: bool = True) -> None:
        self.url = url
        self.engine = create_catalog_engine(url)
        try:
            if auto_migrate and current_revision(self.engine) != head_revision():
                migrate(self.engine)
        except OperationalError as exc:
            raise BackendUnavailable(f"Cannot open the catalog at {self.safe_url}: {exc.orig}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def ping(self) -> None:
        """Raise BackendUnavailable unless the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except OperationalError as exc:
            raise BackendUnavailable(f"The catalog at {self.safe_url} does not answer: {exc.orig}") from exc

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()
