"""The challenge store on a real PostgreSQL: a challenge is consumed once across store
instances (replicas), threads and processes. Each test has a new, empty database
(``postgres_db``); consumer processes are killed by PID if a test fails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from attestation._errors import EvidenceError
from attestation._store import ChallengeStore
from attestation._verifier import PendingChallenge

pytestmark = pytest.mark.e2e

NOW = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
TIMEOUT = 60
ROOT = Path(__file__).resolve().parents[2]

# `python -c CONSUMER URL THREADS ID…`: prints "ready", waits for a line on stdin, then
# THREADS threads each try every ID; prints "OK <id>" or "ERR <id> <message>" per try.
CONSUMER = textwrap.dedent(
    """
    import sys, threading
    from datetime import datetime
    from attestation._store import ChallengeStore
    from attestation._errors import EvidenceError
    url, threads, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    store = ChallengeStore(url)
    now = datetime.fromisoformat("2025-06-01T12:00:00+00:00")
    lock, lines, barrier = threading.Lock(), [], threading.Barrier(threads)
    print("ready", flush=True)
    sys.stdin.readline()
    def run():
        barrier.wait()
        for cid in ids:
            try:
                store.consume(cid, now=now)
                line = f"OK {cid}"
            except EvidenceError as exc:
                line = f"ERR {cid} {exc}"
            with lock:
                lines.append(line)
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    store.close()
    print("\\n".join(lines), flush=True)
    """
)


def pending(challenge_id: str = "c-1") -> PendingChallenge:
    return PendingChallenge(
        challenge_id=challenge_id,
        secret=b"secret-" + challenge_id.encode(),
        nonce=os.urandom(32),
        ak_public=b"\x00\x16ak-public-" + challenge_id.encode(),
        ek_hash=bytes(range(32)),
        expires_at=NOW + timedelta(minutes=5),
    )


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
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONSUMER, postgres_db, "4", *ids],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(2)
    ]
    lines: list[str] = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err
            lines += out.splitlines()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wins = [line.split()[1] for line in lines if line.startswith("OK ")]
    refusals = [line for line in lines if line.startswith("ERR ")]
    assert sorted(wins) == sorted(ids)
    assert len(refusals) == 7 * len(ids)
    assert all(line.endswith("challenge already used (replay)") for line in refusals)
