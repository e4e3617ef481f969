"""Replay for ``docket policy diff``: recorded requests replayed per second, and the
storage each recorded request costs.

The same traffic (``SIZE`` reads of the default bundle's data by 9 users, with a device
posture whose patch age and attestation vary, so most requests are distinct) is decided
once and its entries written twice, in commits of 100 as a busy server's
group commit makes them: to a log without ``record_requests`` and to one with it.
Storage per recorded request is the difference of the two SQLite files (after a WAL
checkpoint) over ``SIZE``. Replay is :func:`engine._service.replay.replay` of every
recorded request against the same bundle (what ``docket policy diff`` runs, the
decision memo on, as there), timed end to end: read, decrypt, check against the entry,
decide.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from audit import AuditLog, Entry, RequestKeys, Store
from benchmarks._common import table
from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._core.models import EntityUID, Request
from engine._service.audit_entries import decision_entry, recorded_decision
from engine._service.replay import replay

SIZE, QUICK_SIZE = 20_000, 2_000
ROOT = Path(__file__).resolve().parents[1]
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan"]


def _traffic(bundle: PolicyBundle, size: int) -> list[tuple[Entry, Request]]:
    import json

    data = [
        e["uid"]["id"]
        for e in json.loads((ROOT / "policies" / "entities.json").read_text())
        if e["uid"]["type"] == "Docket::Data"
    ]
    engine = Engine(bundle)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    made = []
    for i in range(size):
        request = Request(
            principal=EntityUID(type="User", id=USERS[i % len(USERS)]),
            action=EntityUID(type="Action", id="read"),
            resource=EntityUID(type="Data", id=data[(i // len(USERS)) % len(data)]),
            context={
                "mfa": i % 3 != 0,
                "jurisdiction": "eu",
                "device": {
                    "attested": i % 4 == 0,
                    "secure_boot": i % 4 == 0,
                    "disk_encrypted": True,
                    "patch_age_days": i % 97,
                    "managed": True,
                },
            },
        )
        now = start + timedelta(milliseconds=i)
        decision = engine.decide(request, now=now)
        entry = decision_entry(
            request, decision, decision_id=f"id-{i}", api="grpc", bundle=bundle, now=now,
            detail={"provenance": {"caller": "spiffe://docket.local/sa/bench"}},
        )  # fmt: skip
        made.append((entry, request))
    return made


def _write(directory: Path, traffic: list[tuple[Entry, Request]], recording: bool) -> int:
    url = f"sqlite:///{directory / 'docket.db'}"
    keys = RequestKeys.in_dir(directory) if recording else None
    log = AuditLog.open(url, keys=directory / "audit-keys", request_keys=keys).start()
    try:
        for first in range(0, len(traffic), 100):
            chunk = traffic[first : first + 100]
            log.record(
                [
                    recorded_decision(entry, request, api="grpc", detail=entry.detail)
                    if recording
                    else entry
                    for entry, request in chunk
                ]
            )
    finally:
        log.close()
    with closing(sqlite3.connect(directory / "docket.db")) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return (directory / "docket.db").stat().st_size


def run(*, quick: bool = False) -> dict[str, Any]:
    """Write the traffic with and without recording, replay it; print a table."""
    size = QUICK_SIZE if quick else SIZE
    bundle = PolicyBundle.load(ROOT / "policies")
    traffic = _traffic(bundle, size)
    work = Path(tempfile.mkdtemp(prefix="replay-"))
    try:
        (work / "plain").mkdir()
        (work / "recorded").mkdir()
        plain = _write(work / "plain", traffic, recording=False)
        recorded = _write(work / "recorded", traffic, recording=True)
        store = Store(f"sqlite:///{work / 'recorded' / 'docket.db'}", create=False)
        try:
            started = time.perf_counter()
            replayed = list(replay(store, RequestKeys.in_dir(work / "recorded"), Engine(bundle)))
            replay_s = time.perf_counter() - started
        finally:
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    problems = [r for r in replayed if r.problem is not None]
    flips = [r for r in replayed if r.flipped]
    if len(replayed) != size or problems or flips:
        raise AssertionError(
            f"{len(replayed)} replayed, {len(problems)} problems, {len(flips)} flips"
        )
    figures = {
        "recorded_requests": size,
        "db_bytes_without_recording": plain,
        "db_bytes_with_recording": recorded,
        "bytes_per_recorded_request": round((recorded - plain) / size),
        "log_bytes_per_entry": round(plain / size),
        "replay_s": round(replay_s, 2),
        "replay_requests_per_s": round(size / replay_s),
    }
    print(table(["figure", "value"], list(figures.items())))
    return figures
