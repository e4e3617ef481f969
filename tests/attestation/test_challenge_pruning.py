"""Issue 14, finding 10: attestation challenges were never pruned. Each ``put`` given
``now`` now deletes a bounded batch of challenges used or expired more than
PRUNE_AFTER before it (the e2e test against ``docket serve`` is in
tests/e2e/test_attacks_audit_rpc.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from challenges import NOW, pending

from attestation._store import PRUNE_AFTER, PRUNE_BATCH, ChallengeStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "docket.db"


@pytest.fixture
def store(db: Path) -> Iterator[ChallengeStore]:
    opened = ChallengeStore(f"sqlite:///{db}")
    try:
        yield opened
    finally:
        opened.close()


def _ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT challenge_id FROM attestation_challenge")}


def test_put_prunes_a_bounded_batch_of_old_challenges(store: ChallengeStore, db: Path) -> None:
    long_ago = NOW - PRUNE_AFTER - timedelta(minutes=1)
    for i in range(PRUNE_BATCH + 10):
        store.put(pending(f"old-{i}", expires_at=long_ago))
    store.put(pending("recent", expires_at=NOW - PRUNE_AFTER / 2))
    store.put(pending("used-long-ago", expires_at=NOW + timedelta(minutes=5)))
    store.consume("used-long-ago", now=long_ago)

    store.put(pending("new-1"), now=NOW)
    left = _ids(db)
    # One put deletes at most PRUNE_BATCH: bounded work, whatever piled up.
    assert len([i for i in left if i.startswith("old-")]) + ("used-long-ago" in left) == 11
    assert {"recent", "new-1"} <= left

    store.put(pending("new-2"), now=NOW)
    assert _ids(db) == {"recent", "new-1", "new-2"}
