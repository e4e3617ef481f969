"""A stand-in for ``sdk.agent.attest`` in the agent's unit tests: a real Docket CA
(attestation._ca) issues the SVID and the JWT-SVID at the time of a fake clock, and the
credentials are written as ``attest`` writes them; it can refuse or fail on request."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation._ca import CertificateAuthority
from sdk import DocketError
from sdk.agent import AttestResult, MintedJwt
from sdk.agent._credentials import prepare_out, write_atomically
from sdk.agent._identity import Identity

SPIFFE_ID = "spiffe://docket.test/device/ab12"
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    """A clock that moves only when told."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeAttest:
    """``attest(out, audience)`` against a CA of trust domain ``docket.test``: every call is
    recorded (when, where, for which audience); ``failure`` set makes it raise that."""

    clock: Clock
    ttl: timedelta = timedelta(seconds=60)
    failure: DocketError | None = None
    ca: CertificateAuthority = field(init=False)
    calls: list[tuple[datetime, Path, str]] = field(default_factory=list)
    mints: list[tuple[datetime, int, tuple[str, ...]]] = field(default_factory=list)
    """Each ``mint``: when, the SVID's serial, the audiences."""

    def __post_init__(self) -> None:
        self.ca = CertificateAuthority.create("docket.test", self.clock() - timedelta(days=1))

    def ca_certificates(self) -> list[x509.Certificate]:
        """The root and the issuing intermediate: the trust bundle."""
        return x509.load_pem_x509_certificates(self.ca.trust_bundle(self.clock()))

    def __call__(self, out: Path, audience: str) -> AttestResult:
        now = self.clock()
        self.calls.append((now, out, audience))
        if self.failure is not None:
            raise self.failure
        key = ec.generate_private_key(ec.SECP256R1())
        leaf, issuer = self.ca.issue_svid(key.public_key(), SPIFFE_ID, now=now, ttl=self.ttl)
        token = self.ca.issue_jwt(SPIFFE_ID, audience, now=now)
        pem = serialization.Encoding.PEM
        key_pem = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        chain = leaf.public_bytes(pem) + issuer.public_bytes(pem)
        write_atomically(
            prepare_out(out),
            {
                "svid.pem": (chain, 0o644),
                "svid.key": (key_pem, 0o600),
                "bundle.pem": (self.ca.trust_bundle(now), 0o644),
                "jwt": (token.encode(), 0o600),
            },
        )
        return AttestResult(
            spiffe_id=SPIFFE_ID,
            device_class="dev",
            svid_expires_at=leaf.not_valid_after_utc,
            jwt_expires_at=now + timedelta(minutes=5),
            posture={"attested": True},
            audit_index=len(self.calls),
            svid_path=out / "svid.pem",
            key_path=out / "svid.key",
            bundle_path=out / "bundle.pem",
            jwt_path=out / "jwt",
        )

    def mint(self, identity: Identity, audiences: tuple[str, ...]) -> MintedJwt:
        """``sdk.agent.mint_jwt_svid`` as Docket answers it: a JWT-SVID of the SVID's
        SPIFFE ID for ``audiences``, expiring no later than the SVID."""
        now = self.clock()
        self.mints.append((now, identity.serial, audiences))
        if self.failure is not None:
            raise self.failure
        ttl = min(timedelta(minutes=5), identity.expires_at - now)
        token = self.ca.issue_jwt(identity.spiffe_id, audiences, now=now, ttl=ttl)
        return MintedJwt(token, now + ttl)
