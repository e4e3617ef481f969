"""When the agent renews, and what it serves meanwhile: ``renewal_time`` and
``retry_delay`` (tables), then ``Renewer`` on a fake clock against a real Docket CA
(fake_attestation.py): it renews at half the SVID's lifetime, replaces the files, keeps
serving the SVID through failed renewals and withdraws it at expiry (refused: the device
is refused), recovers after a transient failure, and stops on unusable settings.
``JwtSvids`` mints a token per audience set with the served SVID (no attestation), and
keeps a bounded number of them until half their life."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from fake_attestation import START, Clock, FakeAttest

from sdk import ConfigurationError, PermissionDeniedError, TransportError
from sdk.agent._identity import Identity
from sdk.agent._renewal import (
    MAX_JWT_SETS,
    IdentityState,
    JwtSvids,
    Renewer,
    renewal_time,
    retry_delay,
)

S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("lifetime", "jitter", "after"),
    [
        pytest.param(60 * S, 0.0, 30 * S, id="half-the-lifetime"),
        pytest.param(60 * S, 1.0, 24 * S, id="up-to-a-tenth-earlier"),
        pytest.param(3600 * S, 0.5, 1620 * S, id="an-hour"),
        pytest.param(-5 * S, 0.0, 0 * S, id="already-expired-now"),
    ],
)
def test_renewal_time(lifetime: timedelta, jitter: float, after: timedelta) -> None:
    assert renewal_time(START, START + lifetime, jitter) == START + after


@pytest.mark.parametrize(
    ("failures", "jitter", "delay"),
    [
        pytest.param(1, 1.0, 1 * S, id="first"),
        pytest.param(2, 1.0, 2 * S, id="doubles"),
        pytest.param(6, 1.0, 32 * S, id="sixth"),
        pytest.param(7, 1.0, 60 * S, id="capped"),
        pytest.param(500, 1.0, 60 * S, id="stays-capped"),
        pytest.param(3, 0.0, 2 * S, id="jitter-halves"),
    ],
)
def test_retry_delay(failures: int, jitter: float, delay: timedelta) -> None:
    assert retry_delay(failures, jitter) == delay


class Harness:
    """A ``Renewer`` on a fake clock: waiting advances the clock; ``stop_when`` ends the
    run when it holds after an attestation or a wait."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.docket = FakeAttest(self.clock)
        self.state = IdentityState()
        tpm = threading.Lock()
        self.jwts = JwtSvids(self.docket.mint, self.clock)
        self.out = tmp_path / "creds"
        self.stop_when: Callable[[], bool] = lambda: False
        self.served: list[tuple[datetime, int | None, bool]] = []
        self.renewer = Renewer(
            self._attest,
            self.out,
            "docket",
            self.state,
            self.jwts,
            tpm=tpm,
            log=None,
            clock=self.clock,
            rand=lambda: 0.0,
            wait=self._wait,
        )

    def _record(self) -> None:
        now = self.state.now()
        entry = (
            self.clock(),
            None if now.identity is None else now.identity.serial,
            now.refused,
        )
        if not self.served or self.served[-1][1:] != entry[1:]:
            self.served.append(entry)
        if self.stop_when():
            self.renewer.stop()

    def _attest(self, out: Path, audience: str):  # type: ignore[no-untyped-def]
        try:
            return self.docket(out, audience)
        finally:
            self.clock.advance(0)  # attesting takes no time on this clock

    def _wait(self, stop: threading.Event, seconds: float) -> bool:
        self._record()
        if stop.is_set():
            return True
        self.clock.advance(seconds)
        self._record()
        return stop.is_set()

    def attest_times(self) -> list[float]:
        return [(when - START).total_seconds() for when, _, _ in self.docket.calls]


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_renews_at_half_the_lifetime_and_replaces_the_files(harness: Harness) -> None:
    harness.stop_when = lambda: len(harness.docket.calls) == 3
    harness.renewer.run()
    assert harness.attest_times() == [0, 30, 60]  # 60 s SVIDs, renewed at 30 s
    serials = [serial for _, serial, _ in harness.served]
    assert None not in serials
    assert len(set(serials)) == 3
    assert harness.state.now().generation == 3
    assert harness.renewer.renewals == 3
    served = harness.state.now().identity
    assert served is not None
    on_disk = x509.load_pem_x509_certificates((harness.out / "svid.pem").read_bytes())[0]
    assert on_disk.serial_number == served.serial
    assert sorted(p.name for p in harness.out.iterdir()) == [
        "bundle.pem",
        "jwt",
        "svid.key",
        "svid.pem",
    ]


def test_a_refused_renewal_keeps_the_svid_until_it_expires_then_withdraws_it(
    harness: Harness,
) -> None:
    def refuse_after_first() -> bool:
        if len(harness.docket.calls) == 1:
            harness.docket.failure = PermissionDeniedError(
                "attestation refused: device revoked", status="PERMISSION_DENIED"
            )
        return harness.state.now().identity is None

    harness.stop_when = refuse_after_first
    harness.renewer.run()
    # issued at 0, renewal at 30 refused, retried after 0.5, 1, 2, 4, 8 s (backoff
    # halved by this jitter); the next try would be at 61.5: the 60 s SVID was served
    # until it expired at 60, then withdrawn
    assert harness.attest_times() == [0, 30, 30.5, 31.5, 33.5, 37.5, 45.5]
    (issued, serial, _), (withdrawn, nothing, refused) = harness.served
    assert (issued, withdrawn) == (START, START + 60 * S)
    assert serial is not None
    assert nothing is None
    assert refused
    served = harness.state.now()
    assert "expired" in served.reason
    assert "device revoked" in served.reason
    assert served.last is not None
    assert served.last.serial == serial  # its bundles stay served


def test_a_transient_failure_is_retried_and_the_next_renewal_is_on_schedule(
    harness: Harness,
) -> None:
    def fail_once() -> bool:
        calls = len(harness.docket.calls)
        harness.docket.failure = TransportError("Docket unreachable") if calls == 1 else None
        return calls == 4

    harness.stop_when = fail_once
    harness.renewer.run()
    # the retry at 30.5 succeeds; its SVID (to 90: X.509 keeps whole seconds) is
    # renewed at half its life
    assert harness.attest_times() == [0, 30, 30.5, 60.25]
    assert [refused for _, _, refused in harness.served] == [False, False, False]
    assert harness.state.now().identity is not None


def test_unusable_settings_end_the_run(harness: Harness) -> None:
    harness.docket.failure = ConfigurationError("cannot create the output directory")
    with pytest.raises(ConfigurationError):
        harness.renewer.run()
    assert harness.attest_times() == [0]


def _identity(harness: Harness) -> Identity:
    identity = harness.state.now().identity
    assert identity is not None
    return identity


def test_jwt_svids_are_minted_per_audience_set_without_an_attestation(harness: Harness) -> None:
    harness.renewer.attest_once()
    identity = _identity(harness)
    first = harness.jwts.fetch(identity, ["billing", "ledger"])
    assert harness.jwts.fetch(identity, ["ledger", "billing", "ledger"]) == first  # one set
    assert harness.docket.mints == [(START, identity.serial, ("billing", "ledger"))]
    assert len(harness.docket.calls) == 1  # the renewer's attestation only
    other = harness.jwts.fetch(identity, ["billing"])
    assert other != first
    assert len(harness.docket.mints) == 2
    harness.clock.advance(31)  # past half of its life: the SVID's 60 s cap it
    assert harness.jwts.fetch(identity, ["billing", "ledger"]) != first
    assert len(harness.docket.mints) == 3


def test_the_attested_audience_s_token_is_reused(harness: Harness) -> None:
    harness.renewer.attest_once()
    harness.jwts.fetch(_identity(harness), ["docket"])
    assert harness.docket.mints == []


def test_a_renewed_svid_gets_tokens_of_its_own(harness: Harness) -> None:
    harness.renewer.attest_once()
    first = harness.jwts.fetch(_identity(harness), ["billing"])
    harness.renewer.attest_once()
    assert harness.jwts.fetch(_identity(harness), ["billing"]) != first  # its posture now


def test_the_tokens_held_are_bounded(harness: Harness) -> None:
    harness.renewer.attest_once()
    identity = _identity(harness)
    for i in range(MAX_JWT_SETS + 1):
        harness.jwts.fetch(identity, [f"aud-{i}"])
    harness.jwts.fetch(identity, [f"aud-{MAX_JWT_SETS}"])  # the newest: held
    assert len(harness.docket.mints) == MAX_JWT_SETS + 1
    harness.jwts.fetch(identity, ["aud-0"])  # the oldest: dropped, minted again
    assert len(harness.docket.mints) == MAX_JWT_SETS + 2


def test_a_refusal_forgets_the_jwt_svids_held(harness: Harness) -> None:
    harness.renewer.attest_once()
    identity = _identity(harness)
    harness.jwts.fetch(identity, ["billing"])
    harness.docket.failure = PermissionDeniedError("attestation refused: revoked")
    harness.stop_when = lambda: True
    harness.renewer.run()
    with pytest.raises(PermissionDeniedError):
        harness.jwts.fetch(identity, ["billing"])
