"""The revocation list pulled from a URL (engine/_service/revocation_source.py): a newer
list verified and installed, an unchanged one confirmed without a download, and a
rollback, a forgery, a forked version or a too-large body refused with the list in force
kept."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bundle_servers import StaticServer

from attestation import REVOCATIONS_FILE, CertificateAuthority, RevocationList, load_revocations
from engine._errors import SourceError
from engine._service.bundle_source import Freshness
from engine._service.revocation_source import MAX_BYTES, RevocationPuller, confirmed_at

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
EK = "ab" * 32
PATH = "/.well-known/docket-revocations.json"


@pytest.fixture
def issuer(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "issuer", "docket.test", NOW)


@pytest.fixture
def replica(tmp_path: Path, issuer: CertificateAuthority) -> Path:
    """The replica's CA directory: the same CA, copied."""
    shutil.copytree(tmp_path / "issuer", tmp_path / "replica" / "ca")
    return tmp_path / "replica" / "ca"


@pytest.fixture
def static() -> Iterator[StaticServer]:
    server = StaticServer()
    yield server
    server.stop()


def revoked(ca: CertificateAuthority, count: int) -> bytes:
    """A signed list of version ``count``: ``count`` devices revoked."""
    revocations = RevocationList.empty(ca.trust_domain)
    for number in range(count):
        revocations = revocations.revoke("device", f"{number:064x}", "lost", NOW)
    return ca.sign_revocations(revocations)


def puller(replica: Path, static: StaticServer) -> RevocationPuller:
    return RevocationPuller(
        static.url(PATH), replica, replica.parent / "state.json", interval=1, timeout=5,
        clock=lambda: NOW,
    )  # fmt: skip


def held(replica: Path) -> int:
    return load_revocations(replica, CertificateAuthority.load(replica))[0].version


def test_a_newer_list_is_installed_and_an_unchanged_one_costs_no_download(
    issuer: CertificateAuthority, replica: Path, static: StaticServer
) -> None:
    static.put(PATH, revoked(issuer, 2))
    pulling = puller(replica, static)
    assert pulling.pull().result == "installed"
    assert held(replica) == 2
    sent = static.body_bytes
    assert pulling.pull().result == "unchanged"
    assert static.body_bytes == sent  # a 304
    assert confirmed_at(replica.parent / "state.json") == NOW


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        pytest.param("older", "older than version 2 in force", id="rollback"),
        pytest.param("forged", "does not verify with this CA", id="another CA"),
        pytest.param("forked", "other contents than the list in force", id="same version"),
    ],
)
def test_a_bad_list_is_refused_and_the_one_in_force_stays(
    issuer: CertificateAuthority,
    replica: Path,
    static: StaticServer,
    tmp_path: Path,
    served: str,
    reason: str,
) -> None:
    static.put(PATH, revoked(issuer, 2))
    pulling = puller(replica, static)
    pulling.pull()
    in_force = (replica / REVOCATIONS_FILE).read_bytes()
    if served == "older":
        document = revoked(issuer, 1)
    elif served == "forged":
        other = CertificateAuthority.init(tmp_path / "other", "docket.test", NOW)
        document = revoked(other, 3)
    else:
        fork = RevocationList.empty(issuer.trust_domain).revoke("device", EK, "x", NOW)
        fork = fork.revoke("device", "cd" * 32, "y", NOW + timedelta(seconds=1))
        document = issuer.sign_revocations(fork)
    static.put(PATH, document)
    outcome = pulling.pull()
    assert outcome.result == "refused"
    assert reason in outcome.reason
    assert (replica / REVOCATIONS_FILE).read_bytes() == in_force


def test_a_too_large_or_missing_list_is_a_source_error(
    issuer: CertificateAuthority, replica: Path, static: StaticServer
) -> None:
    static.put(PATH, b"x" * (MAX_BYTES + 1))
    with pytest.raises(SourceError):
        puller(replica, static).pull()
    static.files.clear()
    with pytest.raises(SourceError):
        puller(replica, static).pull()
    assert held(replica) == 0


def test_a_stale_list_stops_fresh_policy_permits_naming_the_list() -> None:
    freshness = Freshness(10, what="the revocation list", setting="max_revocation_staleness")
    freshness.confirmed_at = NOW
    assert not freshness.stale(NOW + timedelta(seconds=9))
    assert freshness.stale(NOW + timedelta(seconds=11))
    assert Freshness(10, what="the revocation list").stale(NOW)  # never confirmed
