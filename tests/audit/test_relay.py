"""One writer per log: workers' logs commit through the owner's writer
(:mod:`audit._relay`), and their batches share its commits."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from audit import (
    AuditLog,
    Entry,
    FormatError,
    LogServer,
    Overloaded,
    Relay,
    RelayAddress,
    StoreError,
    verify_store,
)
from audit._relay import decode_answer, decode_batch, encode_appended, encode_batch, encode_error
from audit._store import Pending, Receipt
from tests.audit.conftest import QUIET, REDACTION_KEY, T0
from tests.audit.test_log import write_lock

EntryFactory = Callable[[int], Entry]


class Owner:
    """An owner's log and its server, and workers' logs relayed to it."""

    def __init__(self, tmp_path: Path, **options: Any) -> None:
        self.url = f"sqlite:///{tmp_path}/docket.db"
        self.keys = tmp_path / "keys"
        self.log = AuditLog.open(self.url, keys=self.keys, **{**QUIET, **options}).start()
        self.commits: list[int] = []
        self.log.writer.observe_commits(self.commits.append)
        self.server = LogServer(self.log).start()
        self.workers: list[AuditLog] = []

    def worker(self, address: RelayAddress | None = None) -> AuditLog:
        relay = Relay(address or self.server.address)
        log = AuditLog.open(self.url, keys=self.keys, relay=relay, **QUIET).start()
        self.workers.append(log)
        return log

    def close(self) -> None:
        for log in self.workers:
            log.close()
        self.server.close()
        self.log.close()


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Owner]:
    made = Owner(tmp_path)
    yield made
    made.close()


def test_a_batch_survives_the_wire() -> None:
    pending = [Pending("decision", "2025-03-01T12:00:00Z", b'{"n":1}'), Pending("bundle", "", b"")]
    assert decode_batch(encode_batch(pending, [3, 7])) == (pending, [3, 7])
    receipts = [Receipt(4, b"\x01" * 32), Receipt(5, b"\x02" * 32)]
    appended = decode_answer(encode_appended(receipts, 6, b"\x03" * 32))
    assert (appended.receipts, appended.size, appended.root) == (receipts, 6, b"\x03" * 32)


@pytest.mark.parametrize(
    "error", [Overloaded("busy"), FormatError("bad entry"), StoreError("disk full")]
)
def test_an_owners_error_arrives_as_its_class(error: StoreError) -> None:
    with pytest.raises(type(error), match=str(error)) as raised:
        decode_answer(encode_error(error))
    assert type(raised.value) is type(error)


@pytest.mark.parametrize("damage", [lambda b: b[:-1], lambda b: b + b"x", lambda b: b"\xff" * 3])
def test_a_damaged_batch_is_refused(damage: Callable[[bytes], bytes]) -> None:
    batch = encode_batch([Pending("decision", "t", b"{}")], [])
    with pytest.raises(FormatError):
        decode_batch(damage(batch))


def test_workers_batches_share_the_owners_commits(
    owner: Owner, entry_factory: EntryFactory
) -> None:
    workers = [owner.worker() for _ in range(3)]
    entries = [entry_factory(number) for number in range(30)]
    answers: dict[int, list[Receipt]] = {}

    def record(log: AuditLog, part: int) -> None:
        answers[part] = log.record(entries[part * 10 : part * 10 + 10])

    with write_lock(owner.log):
        threads = [
            threading.Thread(target=record, args=(log, part)) for part, log in enumerate(workers)
        ]
        for thread in threads:
            thread.start()
        # Every batch waits in the owner's queue while the database is locked.
        while owner.log.writer.queued < 30:
            threading.Event().wait(0.01)
    for thread in threads:
        thread.join()
    assert sum(owner.commits) == 30
    # The batch the owner took first waits for the lock; the other two workers' batches
    # queue behind it and are committed together: one transaction, one fsync.
    assert len(owner.commits) <= 2
    stored = {row.idx: row.payload for row in owner.log.store.entries()}
    for part, receipts in answers.items():
        batch = entries[part * 10 : part * 10 + 10]
        assert [stored[r.index] for r in receipts] == [e.canonical() for e in batch]
    assert verify_store(owner.log.store, owner.log.verifiers()).log.size == 30


def test_a_relayed_redaction_erases_through_the_owner(
    owner: Owner, entry_factory: EntryFactory
) -> None:
    worker = owner.worker()
    (receipt,) = worker.record([entry_factory(1)])
    worker.redact(
        receipt.index, reason="erasure request", requested_by="dpo", now=T0, signer=REDACTION_KEY
    )
    stored = owner.log.store.entry(receipt.index)
    assert stored is not None
    assert stored.payload is None
    verdict = verify_store(
        owner.log.store, owner.log.verifiers(), redaction_keys=[REDACTION_KEY.verifier()]
    )
    assert verdict.log.size == 2


def test_the_owners_back_pressure_reaches_the_worker(
    tmp_path: Path, entry_factory: EntryFactory
) -> None:
    owner = Owner(tmp_path, max_queue=5)
    try:
        worker, other = owner.worker(), owner.worker()
        with write_lock(owner.log):
            # One batch waits for the lock; the owner's queue is then full.
            waiting = threading.Thread(
                target=other.record, args=([entry_factory(n) for n in range(5)],)
            )
            waiting.start()
            while owner.log.writer.queued < 5:
                threading.Event().wait(0.01)
            with pytest.raises(Overloaded, match="audit log busy"):
                worker.record([entry_factory(9)])
        waiting.join()
        assert worker.writer.writable  # back-pressure is not a failure of the log
    finally:
        owner.close()


def test_a_worker_without_the_key_is_refused(owner: Owner, entry_factory: EntryFactory) -> None:
    impostor = owner.worker(RelayAddress(owner.server.address.path, b"\x00" * 32))
    with pytest.raises(StoreError, match="cannot reach the audit log's writer"):
        impostor.record([entry_factory(1)])
    assert owner.log.store.head().size == 0


def test_a_worker_fails_closed_when_the_owner_is_gone(
    owner: Owner, entry_factory: EntryFactory
) -> None:
    worker = owner.worker()
    worker.record([entry_factory(1)])
    owner.server.close()
    with pytest.raises(StoreError, match="cannot reach the audit log's writer"):
        worker.record([entry_factory(2)])
    assert not worker.writer.writable
    assert not worker.writer.probe()  # still unreachable: still failed
    assert owner.log.store.head().size == 1
