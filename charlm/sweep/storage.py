"""Where a sweep's study lives: opening the database, one lock for the whole study, and patience.

Every process of a sweep (each machine's scheduler and each trial) opens the storage here, with the
same heartbeat: a trial process records one every ``heartbeat`` seconds, and a trial whose beat is
older than ``GRACE_BEATS`` beats is failed by whichever scheduler sees it first and queued to run again
(Optuna's heartbeat and its retry callback). ``StudyLock`` makes the steps that must not
interleave across machines (creating the tables and the study, failing stale trials, counting and
asking for a trial) one at a time: a PostgreSQL advisory lock, a lock file beside a SQLite database.
``Patience`` retries a read or write while the database is away, saying so in one line.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from charlm.errors import CharlmError

T = TypeVar("T")
GRACE_BEATS = 3  # a trial is stale after this many heartbeats missed
PATIENCE = 600.0  # seconds a sweep waits for its database before it gives up
DRIVERS = {"psycopg": "psycopg (pip install 'charlm[postgres]')",
           "psycopg2": "psycopg2 (pip install psycopg2-binary), or psycopg: pip install 'charlm[postgres]'"}


def optuna_module() -> Any:
    """Optuna, quiet: its info lines and its warnings about experimental features (the heartbeat) are not
    the user's business."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # charlm beats for its trials itself (TrialRecorder), which is what Study.optimize would do
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def with_driver(url: str) -> str:
    """The URL with a PostgreSQL driver that is installed: plain ``postgresql://`` means psycopg2 to
    SQLAlchemy, so where only psycopg (3) is there, that one. A missing driver is one line naming it."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith(("postgresql", "postgres")):
        return url
    base, _, driver = scheme.partition("+")
    if base == "postgres":
        base = "postgresql"
    if not driver:
        driver = "psycopg2" if _installed("psycopg2") or not _installed("psycopg") else "psycopg"
    if not _installed(driver):
        raise CharlmError(f"sweep storage {redact(url)} needs a PostgreSQL driver for Python, and {driver} is not"
                          f" installed: install {DRIVERS.get(driver, driver)}")
    return f"{base}+{driver}://{rest}"


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def redact(url: str) -> str:
    """The URL with its password hidden, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def open_storage(url: str, heartbeat: int) -> Any:
    """Optuna's RDB storage at ``url``, its connections checked before use (they die with a restarted
    server), with the heartbeat and the re-queueing of stale trials."""
    optuna = optuna_module()
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat,
        grace_period=GRACE_BEATS * heartbeat,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None))


def describe_failure(exc: BaseException, url: str) -> str:
    """One line on why the database could not be used: unreachable, refused, missing, or what it said."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    where = redact(url)
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return f"the database at {where} refused the user's password: check the user and password in --storage"
    if "does not exist" in lowered and "database" in lowered:
        return f"{_quote(text)} at {where}: create it (createdb NAME) or name another in --storage"
    if "connection refused" in lowered or "could not connect" in lowered or "timeout" in lowered \
            or "no such host" in lowered or "name or service not known" in lowered:
        return f"cannot reach the database server of {where} ({_quote(text)}): is it running, on that host and port?"
    return f"{where}: {_quote(text) or type(exc).__name__}"


def _quote(text: str) -> str:
    """The database's own words, without SQLAlchemy's appendix (its background link)."""
    return text.split("(Background on this error")[0].strip()[:240]


def transient(exc: BaseException) -> bool:
    """A failure that waiting can cure: the connection, not the request."""
    import optuna
    import sqlalchemy.exc as errors

    if isinstance(exc, (errors.OperationalError, errors.InterfaceError, optuna.exceptions.StorageInternalError)):
        return True
    return isinstance(exc, errors.DBAPIError) and bool(exc.connection_invalidated)


class Patience:
    """Runs database work again while the database is away, one line when it goes and one when it is
    back; after ``limit`` seconds away, a CharlmError. ``since_trouble`` says how long it has gone well."""

    def __init__(self, url: str, echo: Callable[[str], None], limit: float = PATIENCE):
        self.url, self.echo, self.limit = url, echo, limit
        self.last_trouble = -float("inf")

    def since_trouble(self) -> float:
        return time.monotonic() - self.last_trouble

    def __call__(self, what: str, work: Callable[[], T]) -> T:
        started, delay = None, 0.5
        while True:
            try:
                result = work()
            except Exception as exc:
                if not transient(exc):
                    raise
                now = time.monotonic()
                self.last_trouble = now
                if started is None:
                    started = now
                    self.echo(f"sweep storage unreachable while {what} ({describe_failure(exc, self.url)});"
                              f" retrying for up to {self.limit:.0f} s")
                if now - started > self.limit:
                    raise CharlmError(f"gave up on the sweep storage after {self.limit:.0f} s:"
                                      f" {describe_failure(exc, self.url)}") from None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if started is not None:
                self.echo(f"sweep storage back after {time.monotonic() - started:.0f} s")
            return result


class StudyLock(AbstractContextManager):
    """One process of the whole sweep at a time, on any machine: a PostgreSQL advisory lock (held by a
    connection of its own, so it ends with the process), a lock file beside a SQLite database; other
    databases (MySQL) get no lock."""

    def __init__(self, url: str, name: str):
        self.url, self.key = url, zlib.crc32(f"charlm sweep {name}".encode())
        self.engine: Any = None
        self.connection: Any = None
        self.fd: int | None = None
        self.sqlite = _sqlite_file(url)

    def __enter__(self) -> "StudyLock":
        if self.sqlite is not None:
            try:
                import fcntl
            except ImportError:  # Windows: no shared SQLite study gets a lock there (one scheduler needs none)
                return self
            self.fd = os.open(f"{self.sqlite}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        elif self.url.startswith("postgresql"):
            import sqlalchemy

            if self.engine is None:
                self.engine = sqlalchemy.create_engine(self.url, pool_pre_ping=True, poolclass=sqlalchemy.pool.NullPool)
            self.connection = self.engine.connect()
            self.connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
        if self.connection is not None:
            try:  # closing the connection ends the session, and with it the lock, whatever state it is in
                self.connection.close()
            except Exception:
                pass
            self.connection = None


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix):] in ("", ":memory:"):
        return None
    return Path(url[len(prefix):])
