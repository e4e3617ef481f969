"""The writer knows its database is still the log (issue 14, finding 4): a SQLite file
deleted, replaced or truncated underneath it, or a head smaller than (or at equal size
different from) the one this process knew, stops it for good: every later append is
refused, no probe clears it, and nothing more is signed. Ordinary failures still clear
(see test_log.py), and other processes appending to the same log are no rollback."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from audit import AuditLog, Entry, LogIdentityError, StoreError, verify_store

OpenLog = Callable[..., AuditLog]
EntryFactory = Callable[[int], Entry]


def database(log: AuditLog) -> Path:
    return Path(log.store.url.removeprefix("sqlite:///"))


def assert_lost_for_good(log: AuditLog, entry: Entry, what: str) -> None:
    """The next append fails naming ``what``; then the writer stays unwritable."""
    with pytest.raises(LogIdentityError, match=f"audit database .* was {what}"):
        log.record([entry])
    assert not log.writable
    assert not log.writer.probe()  # a probe does not clear it…
    assert not log.writable
    assert what.split(" ")[0] in (log.writer.failure or "")
    with pytest.raises(LogIdentityError):  # …nor is anything appended or signed after it
        log.record([entry])
    with pytest.raises(LogIdentityError):
        log.checkpoint()


def test_a_deleted_database_stops_the_writer_for_good(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    log.record([entry_factory(0)])
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database(log)}{suffix}").unlink(missing_ok=True)
    assert_lost_for_good(log, entry_factory(1), "deleted")


def test_a_deletion_is_noticed_by_the_probe_without_traffic(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    log.record([entry_factory(0)])
    database(log).unlink()
    assert not log.writer.probe()
    assert "was deleted while serving" in (log.writer.fatal or "")
    with pytest.raises(LogIdentityError):
        log.record([entry_factory(1)])


def test_a_replaced_database_stops_the_writer_for_good(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = open_log()
    log.record([entry_factory(0)])
    copy = tmp_path / "copy.db"
    with closing(sqlite3.connect(database(log))) as source, closing(sqlite3.connect(copy)) as to:
        source.backup(to)  # the same entries: only the file differs
    os.replace(copy, database(log))
    assert_lost_for_good(log, entry_factory(1), r"replaced \(inode changed\)")


def test_a_truncated_database_stops_the_writer_for_good(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    log.record([entry_factory(0)])
    log.store.checkpoint_wal()  # the entries into the main file, which grows
    log.record([entry_factory(1)])
    assert database(log).stat().st_size > 0
    os.truncate(database(log), 0)
    assert_lost_for_good(log, entry_factory(2), r"truncated \(from \d+ to 0 bytes\)")


def _fully_checkpointed(log: AuditLog) -> int:
    """The database's own size once the WAL is folded in: page_count times page_size."""
    log.store.checkpoint_wal(restart_past=0)
    with closing(sqlite3.connect(database(log))) as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
    assert database(log).stat().st_size == pages * page_size
    return int(pages * page_size)


def test_sqlite_cutting_the_file_to_the_databases_size_is_no_truncation(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    # A complete WAL checkpoint (another worker's too) cuts the file to exactly the
    # database's size, after it was seen larger: under load a server once stopped for
    # good on this ("truncated from 27394048 to 27176960 bytes"), its log intact.
    log = open_log()
    log.record([entry_factory(i) for i in range(20)])
    size = _fully_checkpointed(log)
    os.truncate(database(log), size + 53 * 4096)  # the file seen larger (probe or append)
    assert log.writer.probe()
    os.truncate(database(log), size)  # and cut back to the database's own size
    assert log.writer.probe()
    log.record([entry_factory(20)])
    assert log.writable
    assert verify_store(log.store, log.verifiers()).log.size == 21


def test_the_size_the_header_on_disk_records_is_no_truncation_either(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    # Under load (benchmarks --only serving, x100, two workers) a complete checkpoint cut
    # the file to the size its header on disk records while later commits, still in the
    # WAL, had already moved page_count on: "truncated (from 1133510656 to 1133502464
    # bytes)", the log intact.
    log = open_log()
    log.record([entry_factory(i) for i in range(20)])
    size = _fully_checkpointed(log)
    log.record([entry_factory(i) for i in range(20, 200)])  # in the WAL: page_count grows
    with closing(sqlite3.connect(database(log))) as db:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
    assert pages * 4096 > size
    os.truncate(database(log), size + 2 * 4096)  # the file seen larger…
    assert log.writer.probe()
    os.truncate(database(log), size)  # …then cut to its header's size
    assert log.writer.probe()
    log.record([entry_factory(200)])
    assert verify_store(log.store, log.verifiers()).log.size == 201


@pytest.mark.parametrize("cut", ["a page short", "mid-page"])
def test_a_cut_below_the_databases_size_stops_the_writer_for_good(
    open_log: OpenLog, entry_factory: EntryFactory, cut: str
) -> None:
    log = open_log()
    log.record([entry_factory(i) for i in range(20)])
    size = _fully_checkpointed(log)
    log.record([entry_factory(20)])  # the file is known at its size
    os.truncate(database(log), size - 4096 if cut == "a page short" else size - 100)
    assert_lost_for_good(log, entry_factory(21), r"truncated \(from \d+ to \d+ bytes\)")


def test_a_rolled_back_head_stops_the_writer_for_good(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    # The same file, a smaller head: what a PostgreSQL restore looks like to a writer.
    log = open_log()
    log.record([entry_factory(i) for i in range(5)])
    with closing(sqlite3.connect(database(log), isolation_level=None)) as other:
        other.execute("UPDATE audit_head SET size = 2")
    assert_lost_for_good(log, entry_factory(5), "rolled back from 5 to 2 entries")


def test_another_head_of_the_same_size_stops_the_writer_for_good(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    log.record([entry_factory(i) for i in range(3)])
    with closing(sqlite3.connect(database(log), isolation_level=None)) as other:
        other.execute("UPDATE audit_head SET chain = zeroblob(32)")
    assert_lost_for_good(log, entry_factory(3), r"replaced \(a different log of 3 entries\)")


def test_a_head_read_counts_too(open_log: OpenLog, entry_factory: EntryFactory) -> None:
    # This process never appended; it read a head of 4 (another process wrote them).
    log = open_log()
    other = AuditLog.open(log.store.url, keys=None).start()
    try:
        other.record([entry_factory(i) for i in range(4)])
    finally:
        other.close()
    assert log.store.head().size == 4
    with closing(sqlite3.connect(database(log), isolation_level=None)) as tamper:
        tamper.execute("UPDATE audit_head SET size = 1")
    with pytest.raises(LogIdentityError, match="rolled back from 4 to 1 entries"):
        log.record([entry_factory(4)])


def test_other_processes_appending_are_no_rollback(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    log.record([entry_factory(0)])
    other = AuditLog.open(log.store.url, keys=None).start()
    try:
        other.record([entry_factory(1), entry_factory(2)])
    finally:
        other.close()
    assert [r.index for r in log.record([entry_factory(3)])] == [3]
    assert log.writable
    assert verify_store(log.store, log.verifiers()).log.size == 4


def test_an_ordinary_failure_is_not_fatal(open_log: OpenLog, entry_factory: EntryFactory) -> None:
    log = open_log()
    log.record([entry_factory(0)])
    with closing(sqlite3.connect(database(log), isolation_level=None)) as other:
        other.execute("ALTER TABLE audit_head RENAME TO audit_head_elsewhere")
        with pytest.raises(StoreError) as raised:
            log.record([entry_factory(1)])
        assert not isinstance(raised.value, LogIdentityError)
        assert log.writer.fatal is None
        other.execute("ALTER TABLE audit_head_elsewhere RENAME TO audit_head")
    assert log.writer.probe()
