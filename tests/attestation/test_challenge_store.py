"""The challenge store on real SQLite files: a challenge is consumed once, whatever the
number of threads, processes or store instances (replicas, restarts) that try."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from challenges import NOW, TIMEOUT, pending, race_in_processes

from attestation._errors import AttestationError, EvidenceError
from attestation._store import ChallengeStore, StoreUnavailable
from attestation._verifier import ToPersist


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def opened(url: str) -> Iterator[Callable[[], ChallengeStore]]:
    """Open stores on ``url`` (each one a replica, or the server after a restart); all
    are closed at the end of the test."""
    stores: list[ChallengeStore] = []

    def open_store() -> ChallengeStore:
        stores.append(ChallengeStore(url))
        return stores[-1]

    yield open_store
    for store in stores:
        store.close()


@pytest.fixture
def store(opened: Callable[[], ChallengeStore]) -> ChallengeStore:
    return opened()


def test_put_then_consume_returns_the_same_challenge(store: ChallengeStore) -> None:
    challenge = pending()
    store.put(challenge)
    got = store.consume("c-1", now=NOW)
    assert got == challenge
    assert got.secret == challenge.secret  # not in __eq__'s repr, but compared all the same
    assert got.expires_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "manufacturer",
    [
        pytest.param("IBM", id="named"),
        pytest.param("id:12345678", id="raw-id"),
        pytest.param("", id="unknown"),
    ],
)
def test_the_tpm_manufacturer_is_kept(store: ChallengeStore, manufacturer: str) -> None:
    store.put(pending(tpm_manufacturer=manufacturer))
    assert store.consume("c-1", now=NOW).tpm_manufacturer == manufacturer


def test_expiry_in_another_zone_round_trips_as_the_same_instant(store: ChallengeStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    challenge = pending(expires_at=(NOW + timedelta(minutes=1)).astimezone(plus_two))
    store.put(challenge)
    assert store.consume("c-1", now=NOW).expires_at == NOW + timedelta(minutes=1)


def test_consuming_twice_is_a_replay(store: ChallengeStore) -> None:
    store.put(pending())
    store.consume("c-1", now=NOW)
    with pytest.raises(EvidenceError, match=r"challenge already used \(replay\)"):
        store.consume("c-1", now=NOW)


def test_another_store_on_the_same_database_cannot_consume_it_again(
    opened: Callable[[], ChallengeStore],
) -> None:
    first = opened()
    first.put(pending())
    first.consume("c-1", now=NOW)
    first.close()  # the server restarts
    for replica in (opened(), opened()):
        with pytest.raises(EvidenceError, match=r"replay"):
            replica.consume("c-1", now=NOW)


def test_a_challenge_put_by_one_replica_is_consumed_by_another(
    opened: Callable[[], ChallengeStore],
) -> None:
    first, second = opened(), opened()
    first.put(pending())
    assert second.consume("c-1", now=NOW).challenge_id == "c-1"
    with pytest.raises(EvidenceError, match=r"replay"):
        first.consume("c-1", now=NOW)


def test_unknown_challenge(store: ChallengeStore) -> None:
    with pytest.raises(EvidenceError, match="unknown challenge"):
        store.consume("never-issued", now=NOW)


@pytest.mark.parametrize(
    ("after", "expired"),
    [
        pytest.param(timedelta(0), False, id="at-expiry"),
        pytest.param(timedelta(microseconds=1), True, id="one-microsecond-late"),
        pytest.param(timedelta(days=1), True, id="a-day-late"),
    ],
)
def test_expiry(store: ChallengeStore, after: timedelta, expired: bool) -> None:
    challenge = pending(expires_at=NOW)
    store.put(challenge)
    if not expired:
        assert store.consume("c-1", now=NOW + after) == challenge
        return
    with pytest.raises(EvidenceError, match="challenge expired"):
        store.consume("c-1", now=NOW + after)
    # Marked used anyway: a second try (even "in time") is a replay, not another expiry.
    with pytest.raises(EvidenceError, match=r"replay"):
        store.consume("c-1", now=NOW - timedelta(hours=1))


def test_naive_times_are_refused(store: ChallengeStore) -> None:
    with pytest.raises(ValueError, match="aware"):
        store.put(pending(expires_at=datetime(2025, 6, 1)))
    store.put(pending())
    with pytest.raises(ValueError, match="aware"):
        store.consume("c-1", now=datetime(2025, 6, 1))
    assert store.consume("c-1", now=NOW).challenge_id == "c-1"  # the refusal used nothing


def test_a_duplicate_challenge_id_is_refused(store: ChallengeStore) -> None:
    store.put(pending())
    with pytest.raises(StoreUnavailable, match="already stored"):
        store.put(pending())


def test_concurrent_threads_consume_a_challenge_once(store: ChallengeStore) -> None:
    ids = [f"c-{n}" for n in range(10)]
    for cid in ids:
        store.put(pending(cid))
    barrier = threading.Barrier(8)
    wins: list[str] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def race() -> None:
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

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert sorted(wins) == sorted(ids)
    assert refusals == ["challenge already used (replay)"] * (7 * len(ids))


def test_concurrent_processes_consume_a_challenge_once(url: str, store: ChallengeStore) -> None:
    ids = [f"c-{n}" for n in range(10)]
    for cid in ids:
        store.put(pending(cid))
    lines = race_in_processes(url, ids, processes=2, threads=4)
    wins = [line.split()[1] for line in lines if line.startswith("OK ")]
    refusals = [line for line in lines if line.startswith("ERR ")]
    assert sorted(wins) == sorted(ids)
    assert len(refusals) == 7 * len(ids)
    assert all(line.endswith("challenge already used (replay)") for line in refusals)


# -- an Attest: read before the pure steps, written after them -------------------------


def test_read_gives_the_challenge_and_the_device_clock_and_writes_nothing(
    store: ChallengeStore,
) -> None:
    challenge = pending()
    store.put(challenge)
    store.record_clock(challenge.ek_hash, 5, 1000)
    first = store.read("c-1")
    assert first.pending == challenge
    assert first.last_clock == (5, 1000)
    assert store.read("c-1") == first  # nothing was used by reading
    assert store.consume("c-1", now=NOW) == challenge


def test_read_without_a_recorded_clock(store: ChallengeStore) -> None:
    store.put(pending())
    assert store.read("c-1").last_clock is None


@pytest.mark.parametrize(
    ("used", "message"),
    [
        pytest.param(False, "unknown challenge", id="unknown"),
        pytest.param(True, r"challenge already used \(replay\)", id="used"),
    ],
)
def test_read_refuses_an_unknown_or_used_challenge(
    store: ChallengeStore, used: bool, message: str
) -> None:
    if used:
        store.put(pending())
        store.consume("c-1", now=NOW)
    with pytest.raises(EvidenceError, match=message):
        store.read("c-1")


def test_write_uses_the_challenge_and_records_the_clock(store: ChallengeStore) -> None:
    challenge = pending()
    store.put(challenge)
    store.write(ToPersist("c-1", challenge.ek_hash, NOW, (5, 1000)))
    with pytest.raises(EvidenceError, match=r"challenge already used \(replay\)"):
        store.read("c-1")
    assert store.last_clock(challenge.ek_hash) == (5, 1000)


def test_a_refused_answer_uses_its_challenge_and_records_no_clock(store: ChallengeStore) -> None:
    challenge = pending()
    store.put(challenge)
    store.write(ToPersist("c-1", challenge.ek_hash, NOW))
    with pytest.raises(EvidenceError, match=r"challenge already used \(replay\)"):
        store.consume("c-1", now=NOW)
    assert store.last_clock(challenge.ek_hash) is None


def test_a_second_write_is_a_replay_and_records_nothing(store: ChallengeStore) -> None:
    challenge = pending()
    store.put(challenge)
    store.write(ToPersist("c-1", challenge.ek_hash, NOW, (5, 1000)))
    with pytest.raises(EvidenceError, match=r"challenge already used \(replay\)"):
        store.write(ToPersist("c-1", challenge.ek_hash, NOW, (5, 2000)))
    assert store.last_clock(challenge.ek_hash) == (5, 1000)


def test_a_clock_going_backwards_at_the_write_is_refused_and_the_challenge_stays_used(
    store: ChallengeStore,
) -> None:
    """Two challenges of one device answered at once: the later quote was written first."""
    first, second = pending("c-1"), pending("c-2")
    store.put(first)
    store.put(second)
    store.write(ToPersist("c-2", second.ek_hash, NOW, (5, 2000)))
    with pytest.raises(EvidenceError, match="went backwards"):
        store.write(ToPersist("c-1", first.ek_hash, NOW, (5, 1000)))
    assert store.last_clock(first.ek_hash) == (5, 2000)
    with pytest.raises(EvidenceError, match=r"challenge already used \(replay\)"):
        store.read("c-1")


def test_concurrent_writes_of_one_answer_use_the_challenge_once(
    opened: Callable[[], ChallengeStore],
) -> None:
    """Attests racing with one challenge, in replicas: every one read it unused, one
    write wins, and only the winner's clock is recorded."""
    stores = [opened() for _ in range(8)]
    challenge = pending()
    stores[0].put(challenge)
    reads = [store.read("c-1") for store in stores]
    assert all(read.pending == challenge for read in reads)
    barrier = threading.Barrier(len(stores))
    wins: list[int] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def race(number: int) -> None:
        barrier.wait()
        try:
            stores[number].write(ToPersist("c-1", challenge.ek_hash, NOW, (5, 1000 + number)))
        except EvidenceError as exc:
            with lock:
                refusals.append(str(exc))
        else:
            with lock:
                wins.append(number)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert len(wins) == 1
    assert refusals == ["challenge already used (replay)"] * (len(stores) - 1)
    assert stores[0].last_clock(challenge.ek_hash) == (5, 1000 + wins[0])


# -- clocks -----------------------------------------------------------------------------


def test_clock_is_none_until_recorded(store: ChallengeStore) -> None:
    assert store.last_clock(b"ak") is None
    store.record_clock(b"ak", 3, 1000)
    assert store.last_clock(b"ak") == (3, 1000)
    assert store.last_clock(b"other-ak") is None


@pytest.mark.parametrize(
    ("reset_count", "clock", "accepted"),
    [
        pytest.param(3, 1000, True, id="same"),
        pytest.param(3, 1001, True, id="clock-forward"),
        pytest.param(4, 0, True, id="reset-forward-clock-lower"),
        pytest.param(3, 999, False, id="clock-backward"),
        pytest.param(2, 5000, False, id="reset-backward-clock-higher"),
    ],
)
def test_clock_never_moves_backwards(
    store: ChallengeStore, reset_count: int, clock: int, accepted: bool
) -> None:
    store.record_clock(b"ak", 3, 1000)
    if accepted:
        store.record_clock(b"ak", reset_count, clock)
        assert store.last_clock(b"ak") == (reset_count, clock)
        return
    with pytest.raises(EvidenceError, match="went backwards"):
        store.record_clock(b"ak", reset_count, clock)
    assert store.last_clock(b"ak") == (3, 1000)


def test_clock_out_of_range_is_refused(store: ChallengeStore) -> None:
    for reset_count, clock in ((-1, 0), (0, 2**63), (2**63, 0)):
        with pytest.raises(EvidenceError, match="out of range"):
            store.record_clock(b"ak", reset_count, clock)
    assert store.last_clock(b"ak") is None


def test_another_store_sees_the_clock(opened: Callable[[], ChallengeStore]) -> None:
    first, second = opened(), opened()
    first.record_clock(b"ak", 1, 500)
    assert second.last_clock(b"ak") == (1, 500)
    with pytest.raises(EvidenceError, match="went backwards"):
        second.record_clock(b"ak", 1, 499)
    second.record_clock(b"ak", 1, 600)
    assert first.last_clock(b"ak") == (1, 600)


# -- pruning ----------------------------------------------------------------------------


def test_prune_removes_only_old_used_or_expired_challenges(url: str, store: ChallengeStore) -> None:
    hour = timedelta(hours=1)
    store.put(pending("expired-long-ago", expires_at=NOW - 2 * hour))
    store.put(pending("expired-recently", expires_at=NOW - hour / 2))
    store.put(pending("used-long-ago", expires_at=NOW + hour))
    store.put(pending("used-recently", expires_at=NOW + hour))
    store.put(pending("pending", expires_at=NOW + hour))
    store.consume("used-long-ago", now=NOW - 2 * hour)
    store.consume("used-recently", now=NOW - hour / 2)

    assert store.prune(NOW) == 2

    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        left = {row[0] for row in conn.execute("SELECT challenge_id FROM attestation_challenge")}
    assert left == {"expired-recently", "used-recently", "pending"}
    assert store.consume("pending", now=NOW).challenge_id == "pending"
    with pytest.raises(EvidenceError, match="unknown challenge"):
        store.consume("used-long-ago", now=NOW)  # pruned: no longer known, still refused


# -- errors -----------------------------------------------------------------------------


def test_database_errors_are_the_packages_own(tmp_path: Path) -> None:
    not_a_database = tmp_path / "junk.db"
    not_a_database.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(StoreUnavailable, match="cannot open the challenge store") as info:
        ChallengeStore(f"sqlite:///{not_a_database}")
    assert isinstance(info.value, AttestationError)
    with pytest.raises(StoreUnavailable, match="not a database URL"):
        ChallengeStore("no url at all")


def test_a_dropped_table_is_a_store_error(url: str, store: ChallengeStore) -> None:
    store.put(pending())
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TABLE attestation_challenge")
    with pytest.raises(StoreUnavailable, match="cannot consume a challenge"):
        store.consume("c-1", now=NOW)
    with pytest.raises(StoreUnavailable, match="cannot store a challenge"):
        store.put(pending("c-2"))
    with pytest.raises(StoreUnavailable, match="cannot prune"):
        store.prune(NOW)
