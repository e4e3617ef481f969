"""The store's writes besides appends (a signed checkpoint, a meta value, dropped
requests) queue with the appends on the writer lock file that processes sharing the
SQLite file take, never on SQLite's busy handler (which sleeps up to 100 ms a nap while
another process's append holds the write lock, and holds every commit behind it)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audit import Store
from audit._store import Pending
from tests.audit.test_log import appending_elsewhere as appending_at
from tests.audit.test_log import wait_for, waiting_on


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(f"sqlite:///{tmp_path / 'audit.db'}")
    yield opened
    opened.close()


def appending_elsewhere(store: Store) -> AbstractContextManager[Path]:
    """Hold the writer lock file as another process's append does; yields its path."""
    assert store.url.startswith("sqlite:///")
    return appending_at(Path(store.url.removeprefix("sqlite:///")))


WRITES: list[tuple[str, Callable[[Store], object]]] = [
    ("a signed checkpoint", lambda s: s.add_checkpoint(0, b"\x00" * 32, "note")),
    ("a meta value", lambda s: s.set_meta("verifier_keys", "key")),
    ("dropped requests", lambda s: s.drop_requests(datetime(2025, 1, 1, tzinfo=UTC))),
]


@pytest.mark.parametrize("write", [w for _, w in WRITES], ids=[name for name, _ in WRITES])
def test_a_write_queues_with_the_appends_not_on_sqlites_busy_handler(
    store: Store, write: Callable[[Store], object]
) -> None:
    with appending_elsewhere(store) as lock:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (write(store), done.set()))
        thread.start()
        wait_for(lambda: waiting_on(lock))
        # While it waits in the queue it holds no SQLite lock: the append ahead of it
        # (here, another connection) takes the write lock without waiting.
        with closing(sqlite3.connect(lock.with_suffix(""), timeout=0)) as other:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        assert not done.is_set()
    thread.join(timeout=30)
    assert done.is_set()


def wal_frames(database: Path) -> int:
    """Frames in the WAL now (what a checkpoint would have to copy, plus what it has)."""
    with closing(sqlite3.connect(database, isolation_level=None)) as conn:
        _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


def write_frames(conn: sqlite3.Connection, rows: int) -> None:
    """Commit ``rows`` pages' worth of data, as another process's appends would."""
    conn.execute("CREATE TABLE IF NOT EXISTS other (data BLOB)")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO other VALUES (?)", [(os.urandom(4000),)] * rows)
    conn.execute("COMMIT")


def test_the_wal_restarts_although_appends_never_stop(store: Store) -> None:
    """A PASSIVE checkpoint copies only what was committed when it began; with appends
    always running (two workers' writers) it never catches up, the WAL is never started
    again from its beginning, and it grows for as long as the load lasts (measured:
    28 MB to 67 MB in 30 s). Past a bound the maintenance finishes the job in the
    appends' queue, where no append runs."""
    with appending_elsewhere(store) as lock:
        database = lock.with_suffix("")
        with closing(sqlite3.connect(database, isolation_level=None)) as other:
            write_frames(other, 200)
            thread = threading.Thread(target=lambda: store.checkpoint_wal(restart_past=100))
            thread.start()
            # The lock-free pass is done: the maintenance returned or queues for the rest.
            wait_for(lambda: not thread.is_alive() or waiting_on(lock))
            write_frames(other, 200)  # an append that ran meanwhile
    thread.join(timeout=30)
    assert not thread.is_alive()
    with closing(sqlite3.connect(database, isolation_level=None)) as other:
        write_frames(other, 1)  # the next append starts the WAL again
    assert wal_frames(database) < 50


def test_a_small_wal_is_left_to_the_lock_free_pass(store: Store) -> None:
    with appending_elsewhere(store) as lock:
        database = lock.with_suffix("")
        with closing(sqlite3.connect(database, isolation_level=None)) as other:
            write_frames(other, 20)
        # Under the bound it never queues behind an append (this one never ends here).
        store.checkpoint_wal(restart_past=100)
    assert wal_frames(database) >= 20


def test_a_second_checkpoint_of_one_size_is_ignored(store: Store) -> None:
    """Two processes sharing the log may sign the same size; the first row stays."""
    store.add_checkpoint(0, b"\x01" * 32, "first")
    store.add_checkpoint(0, b"\x02" * 32, "second")
    stored = store.checkpoint_at(0)
    assert stored is not None
    assert (stored.root, stored.note) == (b"\x01" * 32, "first")
    assert len(store.checkpoints()) == 1


def pending(number: int) -> Pending:
    return Pending("decision", "2025-03-02T00:00:00Z", f'{{"n":{number}}}'.encode())


def taken_elsewhere(lock: Path) -> bool:
    """Whether another descriptor holds ``lock`` (a non-blocking ``flock`` fails)."""
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def test_what_more_gives_is_appended_in_the_same_transaction_while_the_log_is_held(
    store: Store,
) -> None:
    """``more`` runs once the log is this process's: no other appender can take the
    lock file then, and its entries follow ``pending`` in the one transaction."""
    lock = Path(f"{store.url.removeprefix('sqlite:///')}.writer-lock")
    held: list[bool] = []

    def more() -> list[Pending]:
        held.append(taken_elsewhere(lock))
        return [pending(1), pending(2)]

    store.append([pending(0)])
    appended = store.append([pending(3)], more=more)
    assert held == [True]
    assert [r.index for r in appended.receipts] == [1, 2, 3]
    assert [r.leaf_hash for r in appended.receipts] == [
        hashlib.sha256(b"\x00" + pending(n).payload).digest() for n in (3, 1, 2)
    ]
    assert (appended.size, store.head().size, store.head().root) == (4, 4, appended.root)
    assert [row.payload for row in store.entries()] == [pending(n).payload for n in (0, 3, 1, 2)]


def test_the_identity_check_after_a_commit_runs_with_the_lock_free(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each append stats the file it committed into (a deleted or replaced file takes a
    commit and loses it), once the writer lock file is let go: a system call in the
    lock is one more wait for the GIL while every other process's commit waits."""
    lock = Path(f"{store.url.removeprefix('sqlite:///')}.writer-lock")
    database = Path(store.url.removeprefix("sqlite:///"))
    held: list[bool] = []
    real_stat = os.stat

    def stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if Path(str(path)) == database:
            held.append(taken_elsewhere(lock))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    store.append([pending(0)])
    monkeypatch.setattr("audit._store.os.stat", stat)
    store.append([pending(1)])
    assert held == [False]
