"""The log as a service uses it: durable, ordered receipts under concurrency, automatic
and on-demand checkpoints, key rotation, redaction, back-pressure and writer failures.

Everything runs against a real SQLite file; the write lock is held, and the head table
hidden, from a second ``sqlite3`` connection, the way another process would.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from audit import (
    AuditLog,
    Entry,
    FormatError,
    NoteError,
    Overloaded,
    Receipt,
    Store,
    StoreError,
    TamperDetected,
    verify_store,
)
from audit._errors import KeptCheckpointError
from audit._kept import KEPT_NAME, KeptCheckpoint, accept_log
from audit._keys import KeyRing
from audit._merkle import root_at
from audit._note import (
    Checkpoint,
    SignerKey,
    open_checkpoint,
    parse_checkpoint_unverified,
    parse_note,
    sign_checkpoint,
)
from audit._redaction import open_order
from audit._writer import Ticket
from tests.audit.conftest import REDACTION_KEY, REDACTION_KEYS

OpenLog = Callable[..., AuditLog]
NOW = datetime(2025, 3, 2, tzinfo=UTC)
EntryFactory = Callable[[int], Entry]


def leaf(entry: Entry) -> bytes:
    return hashlib.sha256(b"\x00" + entry.canonical()).digest()


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s")
        time.sleep(0.01)


def database(log: AuditLog) -> Path:
    assert log.store.url.startswith("sqlite:///")
    return Path(log.store.url.removeprefix("sqlite:///"))


@contextmanager
def write_lock(log: AuditLog) -> Iterator[None]:
    """Hold the database's write lock from another connection, as another process
    would: the writer's ``BEGIN IMMEDIATE`` waits until it is released."""
    with closing(sqlite3.connect(database(log), isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


# -- recording --------------------------------------------------------------------------


def test_receipts_are_ordered_and_contiguous_across_concurrent_callers(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    threads, calls = 8, 15
    start = threading.Barrier(threads)
    results: dict[int, list[tuple[list[Entry], list[Receipt]]]] = {}

    def caller(number: int) -> None:
        mine: list[tuple[list[Entry], list[Receipt]]] = []
        start.wait()
        for call in range(calls):
            base = 1000 * number + 10 * call
            batch = [entry_factory(base + k) for k in range(1 + (number + call) % 3)]
            mine.append((batch, log.record(batch)))
        results[number] = mine

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len(results) == threads

    indices = []
    for mine in results.values():
        previous = -1
        for batch, receipts in mine:
            got = [receipt.index for receipt in receipts]
            # One call's entries are consecutive, and a caller's later call comes later.
            assert got == list(range(got[0], got[0] + len(batch)))
            assert got[0] > previous
            previous = got[-1]
            assert [receipt.leaf_hash for receipt in receipts] == [leaf(e) for e in batch]
            indices += got
    assert sorted(indices) == list(range(len(indices)))

    stored = {row.idx: row for row in log.store.entries()}
    for mine in results.values():
        for batch, receipts in mine:
            for entry, receipt in zip(batch, receipts, strict=True):
                assert stored[receipt.index].payload == entry.canonical()
                assert stored[receipt.index].leaf == receipt.leaf_hash
    assert verify_store(log.store, log.verifiers()).log.size == len(indices)


def test_record_returns_once_the_entry_is_durable(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    for number in range(3):
        entry = entry_factory(number)
        (receipt,) = log.record([entry])
        # A different connection pool, and the stdlib driver: both see it committed.
        fresh = Store(f"sqlite:///{database(log)}", create=False)
        try:
            row = fresh.entry(receipt.index)
            assert row is not None
            assert row.payload == entry.canonical()
            assert fresh.head().size == receipt.index + 1
        finally:
            fresh.close()
        with closing(sqlite3.connect(database(log))) as other:
            (payload,) = other.execute(
                "SELECT payload FROM audit_entry WHERE idx = ?", (receipt.index,)
            ).fetchone()
        assert payload == entry.canonical()


def test_an_entry_that_cannot_be_canonicalized_fails_only_its_caller(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    nested: list[Any] = []
    for _ in range(5_000):
        nested = [nested]
    poisoned = {
        "not a number": entry_factory(1).model_copy(update={"detail": {"x": float("nan")}}),
        "too deep": entry_factory(2).model_copy(update={"detail": {"x": nested}}),
    }
    with write_lock(log):
        # The writer takes the first ticket and waits for the lock; the rest queue up
        # behind it and are prepared and committed as one batch once it is released.
        first = log.submit([entry_factory(0)])
        before = log.submit([entry_factory(3), entry_factory(4)])
        bad = {reason: log.submit([entry]) for reason, entry in poisoned.items()}
        after = log.submit([entry_factory(5)])
    assert [r.index for r in first.result(10)] == [0]
    assert [r.index for r in before.result(10)] == [1, 2]
    assert [r.index for r in after.result(10)] == [3]
    for ticket in bad.values():
        with pytest.raises(FormatError):
            ticket.result(10)
    assert log.writable
    assert log.writer.queued == 0
    assert [r.index for r in log.record([entry_factory(6)])] == [4]


@contextmanager
def appending_elsewhere(database: Path) -> Iterator[Path]:
    """Hold the writer lock file of the SQLite log at ``database`` as another process's
    append does; yields its path."""
    lock = Path(f"{database}.writer-lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lock
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def waiting_on(lock: Path) -> bool:
    """Someone is blocked in ``flock`` on ``lock`` (Linux ``/proc/locks``: ``->`` marks a
    waiter, the inode is the last part of the device:inode field)."""
    inode = os.stat(lock).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields:
            where = fields[fields.index("FLOCK") + 4]  # ADVISORY WRITE pid dev:inode
            if int(where.rsplit(":", 1)[1]) == inode:
                return True
    return False


@contextmanager
def its_turn_awaited(log: AuditLog, entry: Entry) -> Iterator[Ticket]:
    """Another process holds the log while the writer takes a ticket for ``entry`` and
    waits for its turn; yields that ticket. The log is let go on leaving."""
    with appending_elsewhere(database(log)) as lock:
        first = log.submit([entry])
        wait_for(lambda: waiting_on(lock))
        yield first


def commits_of(log: AuditLog) -> list[int]:
    """The entries of each commit from now on, in order."""
    commits: list[int] = []
    log.writer.observe_commits(commits.append)
    return commits


def test_entries_queued_while_the_writer_waits_its_turn_join_its_commit(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    """While another process commits, the writer waits for the log with the batch it
    took; what is queued meanwhile goes into the same commit once the log is its, not
    into a commit (an fsync and another turn at the lock) of its own."""
    log = open_log()
    commits = commits_of(log)
    with its_turn_awaited(log, entry_factory(0)) as first:
        later = [log.submit([entry_factory(1)]), log.submit([entry_factory(2), entry_factory(3)])]
    assert [r.index for r in first.result(10)] == [0]
    assert [[r.index for r in ticket.result(10)] for ticket in later] == [[1], [2, 3]]
    assert commits == [4]
    assert first.tree == later[0].tree == later[1].tree == (4, log.store.head().root)
    assert verify_store(log.store, log.verifiers()).log.size == 4


def test_a_late_batch_stops_at_a_redaction_and_within_the_batch_limit(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    """A redaction commits alone (its erase list is checked against one head), and a
    commit holds ``max_batch`` entries at most, late ones included."""
    log = open_log()
    log.record([entry_factory(0)])
    commits = commits_of(log)
    with its_turn_awaited(log, entry_factory(1)) as first:
        erasing = log.writer.submit([entry_factory(2)], erase=[0])
        after = log.submit([entry_factory(3)])
    assert [[r.index for r in t.result(10)] for t in (first, erasing, after)] == [[1], [2], [3]]
    assert commits == [1, 1, 1]
    assert log.store.entry(0).payload is None  # type: ignore[union-attr]

    log.writer.max_batch = 3
    commits.clear()
    with its_turn_awaited(log, entry_factory(4)) as first:
        tickets = [log.submit([entry_factory(5), entry_factory(6)]), log.submit([entry_factory(7)])]
    assert [r.index for r in first.result(10)] == [4]
    assert [[r.index for r in t.result(10)] for t in tickets] == [[5, 6], [7]]
    assert commits == [3, 1]


def test_a_late_batch_stops_at_a_checkpoint_which_is_stored(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    """A commit stores the checkpoints of the batch it took first; one queued later
    waits for the next commit rather than be taken and lost."""
    log = open_log()
    log.record([entry_factory(0)])
    commits = commits_of(log)
    with its_turn_awaited(log, entry_factory(1)) as first:
        signer = threading.Thread(target=log.checkpoint)
        signer.start()
        wait_for(lambda: len(log.writer._jobs) == 1)  # the checkpoint's, queued
        after = log.submit([entry_factory(2)])
    signer.join(10)
    assert [[r.index for r in t.result(10)] for t in (first, after)] == [[1], [2]]
    assert commits == [1, 1]
    assert [c.size for c in log.store.checkpoints()] == [1]


# -- checkpoints ------------------------------------------------------------------------


def test_a_checkpoint_is_signed_every_n_entries(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log(checkpoint_every=5)
    log.record([entry_factory(i) for i in range(4)])
    time.sleep(0.2)
    assert log.store.checkpoints() == []  # 4 < 5, and the interval is an hour
    log.record([entry_factory(4)])
    wait_for(lambda: [c.size for c in log.store.checkpoints()] == [5])
    log.record([entry_factory(i) for i in range(5, 10)])
    wait_for(lambda: [c.size for c in log.store.checkpoints()] == [5, 10])
    for stored in log.store.checkpoints():
        checkpoint, _ = open_checkpoint(stored.note, log.verifiers(), origin=log.origin)
        assert (checkpoint.size, checkpoint.root) == (stored.size, stored.root)
    assert verify_store(log.store, log.verifiers()).log.checkpoints == (5, 10)


def test_two_writers_of_one_log_count_the_entries_since_either_ones_checkpoint(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    """Workers of one server each run a log on the same database: "a checkpoint once
    this many entries were added since the last one" counts from the last one either
    signed, not from its own (each signing its own would double the checkpoints, each a
    signature, a commit and the kept file's two fsyncs)."""
    first, second = open_log(checkpoint_every=10), open_log(checkpoint_every=10)
    first.record([entry_factory(i) for i in range(10)])
    wait_for(lambda: [c.size for c in first.store.checkpoints()] == [10])
    second.record([entry_factory(i) for i in range(10, 15)])
    time.sleep(0.3)
    assert [c.size for c in first.store.checkpoints()] == [10]  # 5 since the last one
    second.record([entry_factory(i) for i in range(15, 20)])
    wait_for(lambda: [c.size for c in first.store.checkpoints()] == [10, 20])
    time.sleep(0.3)
    assert [c.size for c in first.store.checkpoints()] == [10, 20]


def test_a_checkpoint_due_while_another_process_signs_one_is_left_to_it(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    """Two workers that find a checkpoint due at once would both sign one: the one that
    does not get the log's signing turn leaves it to the other (which covers what it
    committed so far) and counts its next ``checkpoint_every`` entries from there."""
    first, second = open_log(checkpoint_every=5), open_log(checkpoint_every=5)
    with first.store.signing_turn() as mine:
        assert mine
        second.record([entry_factory(i) for i in range(5)])
        time.sleep(0.3)
        assert second.store.checkpoints() == []  # due, but the turn is taken
        first.checkpoint()  # what the process with the turn does with it
    second.record([entry_factory(5)])
    time.sleep(0.3)
    assert [c.size for c in second.store.checkpoints()] == [5]  # 1 since: not due
    second.record([entry_factory(i) for i in range(6, 10)])
    wait_for(lambda: [c.size for c in second.store.checkpoints()] == [5, 10])


def test_a_checkpoint_is_stored_in_the_writers_commit_while_it_runs(
    open_log: OpenLog, entry_factory: EntryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint costs no transaction of its own (an fsync and a turn at the lock
    every worker's commits queue on) while the writer runs: it rides in its next
    commit. Once the writer is closed, the last one is stored on its own."""
    log = open_log()
    commits: list[list[int]] = []
    append, add = log.store.append, log.store.add_checkpoint
    monkeypatch.setattr(
        log.store,
        "append",
        lambda pending, **kw: (
            commits.append([c.size for c in kw.get("checkpoints", ())]) or append(pending, **kw)
        ),
    )
    alone: list[int] = []
    monkeypatch.setattr(
        log.store, "add_checkpoint", lambda size, *a: alone.append(size) or add(size, *a)
    )
    log.record([entry_factory(i) for i in range(3)])
    stored = log.checkpoint()
    assert (stored.size, [3] in commits, alone) == (3, True, [])
    checkpoint, _ = open_checkpoint(stored.note, log.verifiers(), origin=log.origin)
    assert (checkpoint.size, checkpoint.root) == (3, log.store.head().root)
    log.record([entry_factory(3)])
    log.close()
    assert alone == [4]
    assert [c.size for c in log.store.checkpoints()] == [3, 4]


def test_a_checkpoint_is_signed_every_interval(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log(checkpoint_interval=0.05)
    log.record([entry_factory(i) for i in range(3)])
    wait_for(lambda: (latest := log.store.latest_checkpoint()) is not None and latest.size == 3)
    log.record([entry_factory(3)])
    wait_for(lambda: (latest := log.store.latest_checkpoint()) is not None and latest.size == 4)


def test_a_checkpoint_is_signed_on_demand(open_log: OpenLog, entry_factory: EntryFactory) -> None:
    log = open_log()
    log.record([entry_factory(i) for i in range(4)])
    stored = log.checkpoint()
    assert (stored.size, stored.root) == (4, log.store.head().root)
    checkpoint, _ = open_checkpoint(stored.note, log.verifiers(), origin=log.origin)
    assert (checkpoint.size, checkpoint.root) == (4, stored.root)
    assert log.checkpoint() == stored  # nothing new: the latest is returned, not re-signed
    assert len(log.store.checkpoints()) == 1


def test_rotated_keys_co_sign_until_the_old_one_is_retired(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    assert log.keys is not None
    log.record([entry_factory(0)])
    (old,) = log.verifiers()
    before = log.checkpoint()

    new = log.keys.rotate().verifier()
    assert log.verifiers() == [new, old]
    log.record([entry_factory(1)])
    overlap = log.checkpoint()
    assert len(parse_note(overlap.note).signatures) == 2
    for key in (old, new):
        checkpoint, _ = open_checkpoint(overlap.note, [key], origin=log.origin)
        assert checkpoint.size == 2

    assert log.keys.retire() == old
    assert log.verifiers() == [new]
    log.record([entry_factory(2)])
    after = log.checkpoint()
    assert len(parse_note(after.note).signatures) == 1
    open_checkpoint(after.note, [new], origin=log.origin)
    with pytest.raises(NoteError):
        open_checkpoint(after.note, [old], origin=log.origin)
    with pytest.raises(NoteError):
        open_checkpoint(before.note, [new], origin=log.origin)
    # The whole history verifies with both keys: each checkpoint with the one it bears.
    assert verify_store(log.store, [old, new]).log.checkpoints == (1, 2, 3)


# -- redaction --------------------------------------------------------------------------


def test_redaction_erases_the_payload_and_the_log_still_verifies(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    receipts = log.record([entry_factory(i) for i in range(6)])
    now = entry_factory(0).time
    receipt = log.redact(
        2, reason="erasure request", requested_by="dpo@example.org", now=now, signer=REDACTION_KEY
    )
    assert receipt.index == 6

    erased = log.store.entry(2)
    assert erased is not None
    assert erased.payload is None
    assert erased.leaf == receipts[2].leaf_hash
    record = log.store.entry(6)
    assert record is not None
    assert record.payload is not None
    document = json.loads(record.payload)
    assert document["kind"] == "redaction"
    assert document["caller"] == "dpo@example.org"
    order = document["detail"].pop("order")
    assert document["detail"] == {
        "index": 2,
        "reason": "erasure request",
        "requested_by": "dpo@example.org",
        "leaf_hash": receipts[2].leaf_hash.hex(),
    }
    verified = open_order(
        order, REDACTION_KEYS, origin=log.origin, index=2, leaf=receipts[2].leaf_hash
    )
    assert (verified.order.reason, verified.order.requested_by) == (
        "erasure request",
        "dpo@example.org",
    )
    log.checkpoint()
    verdict = verify_store(log.store, log.verifiers(), redaction_keys=REDACTION_KEYS)
    assert verdict.log.redacted == (2,)
    assert [index for index, _ in verdict.redactions] == [2]
    assert verdict.log.size == 7
    # Without a trusted redaction key the erasure does not verify.
    with pytest.raises(TamperDetected, match=r"entry 2: redaction: .*no trusted redaction key"):
        verify_store(log.store, log.verifiers())
    with pytest.raises(TamperDetected, match=r"entry 2: redaction: .*no signature by a trusted"):
        verify_store(log.store, log.verifiers(), redaction_keys=log.verifiers())


def test_redaction_orders_are_one_line_and_never_signed_by_a_checkpoint_key(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    log.record([entry_factory(i) for i in range(3)])
    now = entry_factory(0).time
    with pytest.raises(FormatError, match="reason must be one line"):
        log.redact(1, reason="a\nb", requested_by="dpo", now=now, signer=REDACTION_KEY)
    with pytest.raises(FormatError, match="longer than 1024"):
        log.redact(1, reason="x" * 1025, requested_by="dpo", now=now, signer=REDACTION_KEY)
    assert log.keys is not None
    with pytest.raises(FormatError, match="must not be a checkpoint signing key"):
        log.redact(1, reason="r", requested_by="dpo", now=now, signer=log.keys.signers()[0])
    assert log.store.head().size == 3  # nothing was recorded


@pytest.mark.parametrize(
    ("index", "message"),
    [
        pytest.param(2, "already redacted", id="twice"),
        pytest.param(6, "records a redaction", id="a-redaction-entry"),
        pytest.param(99, "no entry 99", id="missing"),
    ],
)
def test_redaction_refuses(
    open_log: OpenLog, entry_factory: EntryFactory, index: int, message: str
) -> None:
    log = open_log()
    log.record([entry_factory(i) for i in range(6)])
    now = entry_factory(0).time
    log.redact(2, reason="erasure request", requested_by="dpo", now=now, signer=REDACTION_KEY)
    with pytest.raises(FormatError, match=message):
        log.redact(index, reason="again", requested_by="dpo", now=now, signer=REDACTION_KEY)
    assert log.store.head().size == 7  # nothing was recorded


# -- back-pressure and failures ---------------------------------------------------------


def test_a_full_queue_pushes_back_and_loses_nothing_it_accepted(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log(max_queue=4)
    accepted: list[tuple[Entry, Ticket]] = []
    with write_lock(log):
        for number in range(4):
            entry = entry_factory(number)
            accepted.append((entry, log.submit([entry])))
        with pytest.raises(Overloaded):
            log.submit([entry_factory(4)])
        with pytest.raises(Overloaded):
            log.record([entry_factory(5)])
        assert log.writer.queued == 4
    for position, (entry, ticket) in enumerate(accepted):
        (receipt,) = ticket.result(10)
        assert (receipt.index, receipt.leaf_hash) == (position, leaf(entry))
    assert log.store.count() == 4  # the refused ones were never written
    assert log.writer.queued == 0
    assert [r.index for r in log.record([entry_factory(6)])] == [4]  # room again


def test_a_failed_commit_is_reported_and_the_writer_recovers(
    open_log: OpenLog, entry_factory: EntryFactory
) -> None:
    log = open_log()
    log.record([entry_factory(0)])
    assert log.writable
    with closing(sqlite3.connect(database(log), isolation_level=None)) as other:
        other.execute("ALTER TABLE audit_head RENAME TO audit_head_elsewhere")
        with pytest.raises(StoreError, match="audit_head"):
            log.record([entry_factory(1)])
        assert not log.writable
        assert "audit_head" in (log.writer.failure or "")
        other.execute("ALTER TABLE audit_head_elsewhere RENAME TO audit_head")
    assert [r.index for r in log.record([entry_factory(2)])] == [1]
    assert log.writable
    assert log.writer.failure is None
    assert verify_store(log.store, [*log.verifiers()]).log.size == 2


def test_an_unexpected_error_from_the_store_fails_the_batch_not_the_writer(
    open_log: OpenLog, entry_factory: EntryFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("driver bug")

    monkeypatch.setattr(log.store, "append", broken)
    with pytest.raises(StoreError, match="driver bug"):
        log.record([entry_factory(0)])
    assert not log.writable
    monkeypatch.undo()
    assert [r.index for r in log.record([entry_factory(1)])] == [0]
    assert log.writable


# -- the checkpoint kept outside the database ----------------------------------------------


def kept_checkpoint(path: Path) -> Checkpoint:
    return parse_checkpoint_unverified(path.read_text())


def test_each_checkpoint_is_kept_outside_the_database(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    kept = tmp_path / KEPT_NAME
    log = open_log(kept=kept)
    assert not kept.exists()  # a new log: nothing kept until its first checkpoint
    log.record([entry_factory(i) for i in range(3)])
    first = log.checkpoint()
    assert kept.read_text() == first.note
    open_checkpoint(kept.read_text(), log.verifiers(), origin=log.origin)
    log.record([entry_factory(3)])
    second = log.checkpoint()
    assert kept.read_text() == second.note
    assert kept_checkpoint(kept).size == 4
    assert sorted(p.name for p in tmp_path.iterdir() if "checkpoint" in p.name) == [
        f".{KEPT_NAME}.lock",
        KEPT_NAME,
    ]  # no temp file left behind


def test_without_a_kept_path_nothing_is_kept(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = open_log()
    log.record([entry_factory(0)])
    log.checkpoint()
    log.check_kept()
    assert not [p for p in tmp_path.iterdir() if "checkpoint" in p.name]


def test_the_kept_checkpoint_is_replaced_only_by_a_larger_extending_one(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    kept = tmp_path / KEPT_NAME
    log = open_log(kept=kept)
    log.record([entry_factory(i) for i in range(4)])
    four = log.checkpoint()
    keeper = KeptCheckpoint(kept)
    keys = log.verifiers()
    signers = log.keys.signers() if log.keys is not None else []
    two = sign_checkpoint(
        Checkpoint(log.origin, 2, root_at(2, log.store.nodes)), signers
    )  # smaller: ignored
    assert not keeper.update(two, log.store, keys, log.origin)
    assert kept.read_text() == four.note
    # A kept checkpoint of 3 with another root: the log does not extend it.
    forged = sign_checkpoint(Checkpoint(log.origin, 3, b"\x01" * 32), signers)
    kept.write_text(forged)
    log.record([entry_factory(4)])
    with pytest.raises(KeptCheckpointError, match="does not extend the one kept"):
        keeper.update(log.checkpoint().note, log.store, keys, log.origin)
    assert kept.read_text() == forged
    # A note no key of this log signed is never kept.
    kept.unlink()
    stranger = sign_checkpoint(
        Checkpoint(log.origin, 5, log.store.head().root), [SignerKey.generate("stranger")]
    )
    with pytest.raises(KeptCheckpointError):
        keeper.update(stranger, log.store, keys, log.origin)
    assert not kept.exists()


def _older_copy_restored(tmp_path: Path, entry_factory: EntryFactory) -> tuple[Path, int]:
    """A log of 2 entries, a copy of it, 3 more entries (kept at 5), then the copy put
    back. Returns the kept path and the kept size."""
    kept = tmp_path / KEPT_NAME
    url = f"sqlite:///{tmp_path}/docket.db"
    log = AuditLog.open(url, keys=tmp_path / "keys", kept=kept).start()
    log.record([entry_factory(0), entry_factory(1)])
    log.close()
    early = tmp_path / "early.db"
    early.write_bytes((tmp_path / "docket.db").read_bytes())
    log = AuditLog.open(url, keys=tmp_path / "keys", kept=kept).start()
    log.check_kept()
    log.record([entry_factory(i) for i in range(2, 5)])
    log.close()
    assert kept_checkpoint(kept).size == 5
    (tmp_path / "docket.db").write_bytes(early.read_bytes())
    return kept, 5


def test_a_log_shorter_than_the_kept_checkpoint_is_refused(
    tmp_path: Path, entry_factory: EntryFactory
) -> None:
    kept, size = _older_copy_restored(tmp_path, entry_factory)
    log = AuditLog.open(f"sqlite:///{tmp_path}/docket.db", keys=tmp_path / "keys", kept=kept)
    try:
        with pytest.raises(KeptCheckpointError) as refused:
            log.check_kept()
    finally:
        log.store.close()
    assert str(refused.value) == (
        f"the database holds 2 entries but the checkpoint kept in {kept} signed {size} "
        "(an older copy restored?); if this is intended run `docket audit accept --reason …`"
    )


def test_a_log_that_does_not_extend_the_kept_checkpoint_is_refused(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    kept = tmp_path / KEPT_NAME
    log = open_log(kept=kept)
    log.record([entry_factory(i) for i in range(3)])
    signers = log.keys.signers() if log.keys is not None else []
    kept.write_text(sign_checkpoint(Checkpoint(log.origin, 2, b"\x02" * 32), signers))
    with pytest.raises(KeptCheckpointError, match="first 2 entries are not the ones"):
        log.check_kept()
    kept.write_text(sign_checkpoint(Checkpoint(log.origin, 3, b"\x02" * 32), signers))
    with pytest.raises(KeptCheckpointError, match="first 3 entries are not the ones"):
        log.check_kept()


def test_a_kept_checkpoint_that_does_not_verify_is_refused(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    kept = tmp_path / KEPT_NAME
    log = open_log(kept=kept)
    log.record([entry_factory(0)])
    log.checkpoint()
    log.check_kept()
    stranger = SignerKey.generate("stranger")
    kept.write_text(sign_checkpoint(Checkpoint(log.origin, 1, log.store.head().root), [stranger]))
    with pytest.raises(KeptCheckpointError, match="does not verify with this log's signing"):
        log.check_kept()
    kept.write_text("not a note")
    with pytest.raises(KeptCheckpointError, match="docket audit accept"):
        log.check_kept()


def test_accepting_a_refused_log_records_it_and_keeps_a_fresh_checkpoint(
    tmp_path: Path, entry_factory: EntryFactory
) -> None:
    kept, size = _older_copy_restored(tmp_path, entry_factory)
    url = f"sqlite:///{tmp_path}/docket.db"
    log = AuditLog(Store(url), KeyRing(tmp_path / "keys"), kept=kept)
    detail = accept_log(log, reason="restored a backup", by="ops", now=NOW)
    assert detail["kept"]["size"] == size
    assert detail["log"]["size"] == 2
    assert detail["reason"] == "restored a backup"
    assert detail["by"] == "ops"
    (aside,) = tmp_path.glob(f"{KEPT_NAME}.rejected-*")
    assert kept_checkpoint(aside).size == size
    assert kept_checkpoint(kept).size == 3  # the log with its accept-log entry

    log = AuditLog(Store(url), KeyRing(tmp_path / "keys"), kept=kept)
    try:
        log.check_kept()
        (row,) = log.store.entries(2, 3)
        assert row.payload is not None
        entry = json.loads(row.payload)
        assert (entry["kind"], entry["action"], entry["caller"]) == ("audit", "accept-log", "ops")
        assert entry["detail"]["kept"] == detail["kept"]
        with pytest.raises(KeptCheckpointError, match="nothing to accept: the log contains it"):
            accept_log(log, reason="again", by="ops", now=NOW)
        assert verify_store(log.store, log.verifiers()).log.size == 3
    finally:
        log.store.close()


def test_the_database_is_readable_by_its_owner_only(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    """It holds every principal, resource and decision: mode 0600, its WAL too."""
    log = open_log()
    log.record([entry_factory(0)])
    files = [p for p in tmp_path.rglob("docket.db*") if not p.name.endswith("-lock")]
    assert any(p.name == "docket.db" for p in files)
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o600, path


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("2", "has schema version 2; this Docket reads version 1; it was written by a newer"),
        ("0", "has schema version 0; this Docket reads version 1; no migration exists"),
        (None, "is not a Docket audit database (no schema_version)"),
    ],
)
def test_a_database_of_another_schema_version_is_refused_at_open(
    open_log: OpenLog, tmp_path: Path, version: str | None, message: str
) -> None:
    open_log().close()
    with closing(sqlite3.connect(tmp_path / "docket.db")) as db, db:
        if version is None:
            db.execute("DELETE FROM audit_meta WHERE key = 'schema_version'")
        else:
            db.execute("UPDATE audit_meta SET value = ? WHERE key = 'schema_version'", (version,))
    for create in (True, False):
        with pytest.raises(StoreError, match=re.escape(message)):
            Store(f"sqlite:///{tmp_path}/docket.db", create=create)


def test_a_database_that_is_not_an_audit_log_is_refused(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "other.db")) as db, db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreError, match="is not a Docket audit database"):
        Store(f"sqlite:///{tmp_path}/other.db", create=False)
