"""How Docket opens a SQLite database file (raw layer).

The audit store and attestation's challenge store keep their tables in the same file, so
they open it the same way, here: WAL (readers never wait for the writer), ``synchronous
= FULL`` (a commit is on disk when it returns), a 30 s busy timeout, and transactions that
start with the ``BEGIN`` given here rather than pysqlite's lazy ``BEGIN DEFERRED``: with
``BEGIN IMMEDIATE`` a writer holds the write lock from its first read, so two writers
never both read a row that only one of them may then change.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

__all__ = ["sqlite_engine"]


def sqlite_engine(url: sa.URL, *, immediate: bool = True, autocheckpoint: bool = True) -> sa.Engine:
    """An engine for the SQLite file at ``url``, shareable between threads.

    ``immediate=False`` begins transactions with a plain ``BEGIN`` (a reader, which takes
    no write lock). ``autocheckpoint=False`` leaves WAL checkpoints to the caller, off
    the hot path, instead of inside whichever commit crosses SQLite's threshold.
    """
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        if not autocheckpoint:
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
