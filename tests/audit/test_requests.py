"""Recorded requests (:mod:`audit._requests`): sealed beside their entries in the same
commit, bound to their index and log, erased by redaction, dropped by retention, and
outside every hash."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from audit import (
    AuditLog,
    Entry,
    FormatError,
    KeyFormatError,
    Recorded,
    RequestKeys,
    read_recorded,
    verify_store,
)
from audit._relay import decode_batch, encode_batch
from audit._requests import MAX_RECORDED_BYTES
from audit._store import Pending
from tests.audit.conftest import REDACTION_KEY, REDACTION_KEYS, T0

OpenLog = Callable[..., AuditLog]
EntryFactory = Callable[[int], Entry]


def request(index: int) -> dict[str, object]:
    return {
        "kind": "decision",
        "request": {
            "principal": {"type": "User", "id": f"user-{index}"},
            "action": {"type": "Action", "id": "read"},
            "resource": {"type": "Dataset", "id": "ds"},
            "context": {"device": {"compliant": True, "n": index}},
            "entities": [],
        },
    }


def recorded_log(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path, count: int = 4
) -> AuditLog:
    log = open_log(request_keys=RequestKeys.in_dir(tmp_path))
    log.record([Recorded(entry_factory(i), request(i)) for i in range(count)])
    return log


def rows(path: Path) -> list[tuple[int, str, bytes]]:
    with closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT idx, key_id, sealed FROM audit_request ORDER BY idx").fetchall()


def test_requests_are_recorded_beside_their_entries_and_read_back(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = recorded_log(open_log, entry_factory, tmp_path)
    got = list(read_recorded(log.store, RequestKeys.in_dir(tmp_path)))
    assert [(r.index, r.request, r.error) for r in got] == [(i, request(i), None) for i in range(4)]
    assert got[1].time == "2025-03-01T12:00:01.000000Z"
    assert (tmp_path / "request-keys").stat().st_mode & 0o777 == 0o600
    # Nothing in a row is readable without the key.
    assert all(b"user-" not in sealed for _, _, sealed in rows(tmp_path / "docket.db"))


def test_recording_changes_no_hash_and_the_log_verifies(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = open_log(request_keys=RequestKeys.in_dir(tmp_path))
    entries = [entry_factory(i) for i in range(4)]
    receipts = log.record([Recorded(e, request(i)) for i, e in enumerate(entries)])
    # Each leaf is the entry's own hash: the request is not in it.
    assert [r.leaf_hash for r in receipts] == [
        hashlib.sha256(b"\x00" + e.canonical()).digest() for e in entries
    ]
    log.checkpoint()
    assert verify_store(log.store, log.verifiers()).log.size == 4


def test_redaction_erases_the_recorded_request_in_its_transaction(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = recorded_log(open_log, entry_factory, tmp_path)
    log.redact(2, reason="erasure", requested_by="dpo", now=T0, signer=REDACTION_KEY)
    assert [row[0] for row in rows(tmp_path / "docket.db")] == [0, 1, 3]
    log.checkpoint()
    assert verify_store(log.store, log.verifiers(), redaction_keys=REDACTION_KEYS).log.size == 5


def test_retention_drops_old_requests_and_keeps_the_log(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = open_log(request_keys=RequestKeys.in_dir(tmp_path), request_retention_days=1)
    log.record([Recorded(entry_factory(i), request(i)) for i in range(3)])
    now = entry_factory(1).time + timedelta(days=1)  # entry 0 is older than a day then
    assert log.drop_expired_requests(now) == 1
    assert [row[0] for row in rows(tmp_path / "docket.db")] == [1, 2]
    assert log.store.count() == 3


def test_a_row_moved_to_another_entry_does_not_open(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = recorded_log(open_log, entry_factory, tmp_path)
    with closing(sqlite3.connect(tmp_path / "docket.db")) as db:
        db.execute("DELETE FROM audit_request WHERE idx = 3")
        db.execute("UPDATE audit_request SET idx = 3 WHERE idx = 0")
        db.commit()
    got = {r.index: r for r in read_recorded(log.store, RequestKeys.in_dir(tmp_path))}
    assert got[3].request is None
    assert got[3].error is not None
    assert "row moved from another entry" in got[3].error
    assert got[1].request == request(1)


def test_a_tampered_ciphertext_does_not_open(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = recorded_log(open_log, entry_factory, tmp_path)
    (_, _, sealed) = rows(tmp_path / "docket.db")[1]
    flipped = sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]
    with closing(sqlite3.connect(tmp_path / "docket.db")) as db:
        db.execute("UPDATE audit_request SET sealed = ? WHERE idx = 1", (flipped,))
        db.commit()
    got = list(read_recorded(log.store, RequestKeys.in_dir(tmp_path)))
    assert [r.index for r in got if r.error] == [1]


def test_a_wrong_key_does_not_open_and_an_unknown_key_id_is_named(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = recorded_log(open_log, entry_factory, tmp_path)
    other = RequestKeys(tmp_path / "other-keys")
    (errors,) = {r.error for r in read_recorded(log.store, other)}
    assert errors is not None
    assert errors.startswith("no request key ")
    # The right id over another key's bytes: the file is refused as malformed.
    text = (tmp_path / "request-keys").read_text()
    other.rotate()
    forged = text.split()[0] + " " + (tmp_path / "other-keys").read_text().split()[1] + "\n"
    (tmp_path / "forged").write_text(forged)
    (tmp_path / "forged").chmod(0o600)
    with pytest.raises(KeyFormatError, match="key id does not match"):
        list(read_recorded(log.store, RequestKeys(tmp_path / "forged")))


def test_a_rotated_key_still_opens_old_rows(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    keys = RequestKeys.in_dir(tmp_path)
    log = open_log(request_keys=keys)
    log.record([Recorded(entry_factory(0), request(0))])
    keys.rotate()
    log.record([Recorded(entry_factory(1), request(1))])
    stored = rows(tmp_path / "docket.db")
    assert stored[0][1] != stored[1][1]
    got = list(read_recorded(log.store, RequestKeys.in_dir(tmp_path)))
    assert [r.request for r in got] == [request(0), request(1)]


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    keys = RequestKeys.in_dir(tmp_path)
    keys.current()
    (tmp_path / "request-keys").chmod(0o644)
    with pytest.raises(KeyFormatError, match="readable by others"):
        RequestKeys.in_dir(tmp_path).current()


def test_a_request_over_the_cap_is_recorded_as_omitted_and_its_entry_kept(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    """The serving limits count characters, JSON escapes a control character in six
    bytes: a request they admit can be over the cap, and its decision must still be
    recorded (and answered). Its row says it was left out, and why, and reads back as
    an error (replay reports it, never counts it as unchanged)."""
    log = open_log(request_keys=RequestKeys.in_dir(tmp_path))
    huge = {"kind": "decision", "api": "grpc", "request": {"context": {"blob": "\x01" * 200_000}}}
    receipts = log.record(
        [Recorded(entry_factory(0), huge), Recorded(entry_factory(1), request(1))]
    )
    assert [r.index for r in receipts] == [0, 1]
    size = len(json.dumps(huge, separators=(",", ":"), ensure_ascii=False).encode())
    got = list(read_recorded(log.store, RequestKeys.in_dir(tmp_path)))
    assert (got[0].request, got[0].error) == (
        None,
        f"the request was not recorded: {size} bytes of JSON, over the limit of "
        f"{MAX_RECORDED_BYTES}",
    )
    assert got[1].request == request(1)
    # What the row holds: the kind and API, and why the rest is not there.
    (_, _, sealed) = rows(tmp_path / "docket.db")[0]
    assert len(sealed) < 200


def test_a_request_json_cannot_hold_fails_its_caller(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = open_log(request_keys=RequestKeys.in_dir(tmp_path))
    with pytest.raises(FormatError, match="cannot record the request"):
        log.record([Recorded(entry_factory(0), {"context": {"when": object()}})])
    assert log.store.count() == 0


def test_without_request_keys_nothing_is_recorded(
    open_log: OpenLog, entry_factory: EntryFactory, tmp_path: Path
) -> None:
    log = open_log()
    assert not log.records_requests
    log.record([Recorded(entry_factory(0), request(0))])
    assert rows(tmp_path / "docket.db") == []
    assert not (tmp_path / "request-keys").exists()


def test_a_relayed_batch_carries_its_requests() -> None:
    batch = [Pending("decision", "t", b"{}", b'{"a":1}'), Pending("bundle", "t", b"{}")]
    assert decode_batch(encode_batch(batch, [7])) == (batch, [7])
