"""How Docket opens a SQLite file: the audit store and the challenge store share one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit.sqlite import sqlite_engine


def pragma(engine: sa.Engine, name: str) -> object:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


@pytest.fixture
def url(tmp_path: Path) -> sa.URL:
    return sa.make_url(f"sqlite:///{tmp_path / 'docket.db'}")


def test_the_file_is_durable_and_waits_for_other_writers(url: sa.URL) -> None:
    engine = sqlite_engine(url)
    assert pragma(engine, "journal_mode") == "wal"
    assert pragma(engine, "synchronous") == 2  # FULL: a commit is on disk when it returns
    assert pragma(engine, "busy_timeout") == 30000
    assert pragma(engine, "wal_autocheckpoint") == 1000  # SQLite's own default


def test_checkpoints_can_be_left_to_the_caller(url: sa.URL) -> None:
    assert pragma(sqlite_engine(url, autocheckpoint=False), "wal_autocheckpoint") == 0


def other_writer(url: sa.URL) -> sqlite3.Connection:
    """A connection that gives up at once when the file's write lock is taken."""
    return sqlite3.connect(str(url.database), timeout=0, isolation_level=None)


def test_a_transaction_holds_the_write_lock_from_its_start(url: sa.URL) -> None:
    """Two consumers of one unused row must not both read it before either writes."""
    engine = sqlite_engine(url)
    other = other_writer(url)
    with engine.begin(), pytest.raises(sqlite3.OperationalError, match="database is locked"):
        other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("ROLLBACK")


def test_a_reader_takes_no_write_lock(url: sa.URL) -> None:
    engine = sqlite_engine(url, immediate=False)
    other = other_writer(url)
    with engine.begin():
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
