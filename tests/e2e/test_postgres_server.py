"""The throwaway PostgreSQL of tests/e2e/postgres.py, used as Docket uses it: through
SQLAlchemy with psycopg 3."""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from e2e.postgres import Binaries, PostgresServer, start_postgres
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, inspect, select

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def _engine(url: str) -> Iterator[sqlalchemy.Engine]:
    """An engine that is disposed of afterwards: no connection outlives the test."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def notes_table(metadata: MetaData, name: str = "notes") -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("body", String, nullable=False),
    )


def test_round_trip_through_sqlalchemy(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://docket@127.0.0.1:")
    assert postgres_url.endswith("/docket")
    metadata = MetaData()
    # A name of this test's own: the `docket` database is shared by the session.
    notes = notes_table(metadata, "round_trip_notes")
    with _engine(postgres_url) as engine:
        metadata.create_all(engine)
        try:
            with engine.begin() as connection:
                connection.execute(
                    notes.insert(), [{"id": 1, "body": "hello"}, {"id": 2, "body": "é"}]
                )
            with engine.connect() as connection:
                rows = connection.execute(select(notes.c.id, notes.c.body).order_by(notes.c.id))
                assert rows.all() == [(1, "hello"), (2, "é")]
                assert connection.exec_driver_sql("SHOW fsync").scalar() == "on"
                assert connection.exec_driver_sql("SHOW server_encoding").scalar() == "UTF8"
        finally:
            metadata.drop_all(engine)


def test_each_test_database_is_new_and_its_own(
    postgres_db: str, postgres_server: PostgresServer
) -> None:
    other = postgres_server.create_database()
    assert other != postgres_db
    with _engine(postgres_db) as engine:
        assert inspect(engine).get_table_names() == []
        metadata = MetaData()
        notes = notes_table(metadata)
        metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(notes.insert(), {"id": 1, "body": "only here"})
        assert inspect(engine).get_table_names() == ["notes"]
    with _engine(other) as engine:
        assert inspect(engine).get_table_names() == []


def test_runs_as_postgres_when_root(postgres_server: PostgresServer) -> None:
    """PostgreSQL refuses to run as root; as root the server runs as the postgres user."""
    expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert os.stat(f"/proc/{postgres_server.pid}").st_uid == expected


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (that init has yet to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_stop_leaves_nothing_behind(postgres_binaries: Binaries) -> None:
    server = start_postgres(postgres_binaries)
    assert running(server.pid)
    server.stop()
    assert not running(server.pid)
    assert not server.root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host="127.0.0.1", port=server.port, user="docket", connect_timeout=2)
