"""The challenge store on a real PostgreSQL: a challenge is consumed once across store
instances (replicas), threads and processes. Each test has a new, empty database
(``postgres_db``); consumer processes are killed by PID if a test fails."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from challenges import NOW, TIMEOUT, pending, race_in_processes

from attestation._errors import EvidenceError
from attestation._store import ChallengeStore

pytestmark = pytest.mark.e2e


@pytest.fixture
def stores(postgres_db: str) -> Iterator[tuple[ChallengeStore, ChallengeStore]]:
    """Two replicas sharing one database."""
    first, second = ChallengeStore(postgres_db), ChallengeStore(postgres_db)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


def test_round_trip(stores: tuple[ChallengeStore, ChallengeStore]) -> None:
    store, _ = stores
    challenge = pending()
    store.put(challenge)
    assert store.consume("c-1", now=NOW) == challenge
    with pytest.raises(EvidenceError, match="unknown challenge"):
        store.consume("c-2", now=NOW)


def test_replay_across_two_stores(stores: tuple[ChallengeStore, ChallengeStore]) -> None:
    first, second = stores
    first.put(pending())
    assert second.consume("c-1", now=NOW).challenge_id == "c-1"
    for store in (first, second):
        with pytest.raises(EvidenceError, match=r"challenge already used \(replay\)"):
            store.consume("c-1", now=NOW)


def test_expired_is_used_all_the_same(stores: tuple[ChallengeStore, ChallengeStore]) -> None:
    first, second = stores
    first.put(pending())
    with pytest.raises(EvidenceError, match="challenge expired"):
        first.consume("c-1", now=NOW + timedelta(hours=1))
    with pytest.raises(EvidenceError, match=r"replay"):
        second.consume("c-1", now=NOW)


def test_clock_across_two_stores(stores: tuple[ChallengeStore, ChallengeStore]) -> None:
    first, second = stores
    assert first.last_clock(b"ak") is None
    first.record_clock(b"ak", 2, 700)
    assert second.last_clock(b"ak") == (2, 700)
    with pytest.raises(EvidenceError, match="went backwards"):
        second.record_clock(b"ak", 1, 9000)
    second.record_clock(b"ak", 3, 0)
    assert first.last_clock(b"ak") == (3, 0)


def test_concurrent_threads_consume_once(stores: tuple[ChallengeStore, ChallengeStore]) -> None:
    first, second = stores
    ids = [f"c-{n}" for n in range(10)]
    for cid in ids:
        first.put(pending(cid))
    barrier = threading.Barrier(8)
    wins: list[str] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def race(store: ChallengeStore) -> None:
        barrier.wait()
        for cid in ids:
            try:
                store.consume(cid, now=NOW)
            except EvidenceError as exc:
                with lock:
                    refusals.append(str(exc))
            else:
                with lock:
                    wins.append(cid)

    threads = [threading.Thread(target=race, args=((first, second)[n % 2],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert sorted(wins) == sorted(ids)
    assert refusals == ["challenge already used (replay)"] * (7 * len(ids))


def test_concurrent_processes_consume_once(
    postgres_db: str, stores: tuple[ChallengeStore, ChallengeStore]
) -> None:
    ids = [f"c-{n}" for n in range(10)]
    for cid in ids:
        stores[0].put(pending(cid))
    lines = race_in_processes(postgres_db, ids, processes=2, threads=4)
    wins = [line.split()[1] for line in lines if line.startswith("OK ")]
    refusals = [line for line in lines if line.startswith("ERR ")]
    assert sorted(wins) == sorted(ids)
    assert len(refusals) == 7 * len(ids)
    assert all(line.endswith("challenge already used (replay)") for line in refusals)
