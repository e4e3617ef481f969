"""Device attestation as a service, without a transport: Challenge and Attest, and
JwtChallenge and MintJwtSvid (a JWT-SVID for any audiences, for a device holding a live
X.509-SVID).

This is the edge around the pure verifier (:mod:`attestation._verifier`): it reads the
clock once per call, keeps pending challenges and TPM clocks in the challenge store,
appraises against the reference values of the bundle in force, has the CA issue the
credentials, and writes every issuance, refusal and failed attestation to the audit log
before answering. An Attest is one pass: read the store, verify (pure), write the store,
issue, audit. :func:`load_trust_roots` reads the EK roots (skipping, with a log line,
any file that cannot be used); ``quote_hashes`` is the quote hash policy (SHA-1 refused
unless configured).

Audit entries (``decision`` is ``allow`` for issued, ``deny`` for refused):

- ``attestation``: one per Challenge refused and per Attest, with the device's SPIFFE ID
  as ``subject`` when known, and ``detail`` {stage, reason | posture, challenge_id, and
  ``event_log`` {sha256, bytes} when the device sent a boot event log}; the posture holds
  the boot facts of an appraised log (``boot_chain``, ``dbx_revision``, ``crtm_version``);
  a device revoked with ``docket ca revoke --device`` is refused at both stages;
- ``certificate``: one per credential issued (the X.509-SVID and the JWT-SVID), with
  ``detail`` {credential, serial | audience, not_after, device_class}; a JWT-SVID minted
  by MintJwtSvid has ``audience`` the list of its audiences, and ``svid_serial`` and
  ``challenge_id`` of the proof;
- ``attestation`` with ``stage`` ``jwt``: a JwtChallenge or MintJwtSvid refused.

A JWT-SVID for other audiences than the one of an Attest is minted without the TPM:
:meth:`AttestationService.jwt_challenge` gives a holder of a live, unrevoked Docket
X.509-SVID a single-use nonce (kept in the challenge store, as an attestation's; its id
starts ``jwt-`` and it has no AK), and :meth:`AttestationService.mint_jwt` takes a
signature with the SVID's key over it and the audiences
(:func:`sdk.agent.jwt_svid_proof`). The SVID is checked again then (this CA's, valid,
not revoked: a revocation since the challenge counts), the token carries the SVID's
SPIFFE ID and posture and expires no later than it (the posture is as fresh as the
SVID's, as for every other use of it).

Refusal reasons, challenge ids and audiences are capped in the entry
(:func:`engine._service.audit_entries.capped`). Old challenges are pruned when the service starts
and, a bounded batch at a time, whenever a new one is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation import (
    DEFAULT_QUOTE_HASHES,
    QUOTE_HASHES,
    AttestationError,
    CertificateAuthority,
    Challenge,
    ChallengeStore,
    EvidenceError,
    ParseError,
    PendingChallenge,
    Posture,
    ReferenceValues,
    RevocationList,
    StoreUnavailable,
    TokenError,
    ToPersist,
    TrustRoots,
    UnverifiedEnrollment,
    begin_enrollment,
    check_ek_root,
    check_quote_hashes,
    describe,
    issued_at,
    load_pem_certificates,
    verify_answer,
)
from audit import AuditLog, Entry, Receipt
from engine._errors import TrustConfigError
from engine._service.audit_entries import capped
from sdk.agent import jwt_svid_proof

log = structlog.get_logger("docket.attestation")

DEFAULT_AUDIENCE = "docket"
CHALLENGE_TTL = timedelta(seconds=60)
JWT_CHALLENGE_PREFIX = "jwt-"
"""What the id of a JwtChallenge starts with (an attestation's is hex)."""
MAX_AUDIENCES = 16
"""The most audiences one minted JWT-SVID may have..."""
MAX_AUDIENCE_BYTES = 256
"""...and the longest each may be (UTF-8)."""


def check_audiences(audiences: Iterable[str]) -> tuple[str, ...]:
    """The audiences of a JWT-SVID to mint, as asked. Raises ParseError for none, more
    than :data:`MAX_AUDIENCES`, an empty or over-long one, or one given twice."""
    found = tuple(audiences)
    if not found:
        raise ParseError("audience: at least one is needed")
    if len(found) > MAX_AUDIENCES:
        raise ParseError(f"audience: {len(found)} given, more than the {MAX_AUDIENCES} accepted")
    for i, audience in enumerate(found):
        if not audience:
            raise ParseError(f"audience[{i}]: empty")
        if len(audience.encode()) > MAX_AUDIENCE_BYTES:
            raise ParseError(f"audience[{i}]: longer than {MAX_AUDIENCE_BYTES} bytes")
    if len(set(found)) != len(found):
        raise ParseError("audience: an audience is given twice")
    return found


def load_trust_roots(roots_dir: Path, allowlist: Path) -> TrustRoots:
    """EK CA certificates from ``roots_dir/*.pem`` and EK hashes (hex, one per line, ``#``
    comments) from ``allowlist``; either may be missing (then it trusts nothing).

    Vendor certificates that are not strict DER load too (see :mod:`attestation._der`).
    A root file that cannot be used — unreadable, not PEM, not a CA, a self-signature that
    does not verify — is logged (``attestation.ek_root_skipped``, naming the file and the
    reason) and skipped: one bad file never stops the service. The counts are logged
    (``attestation.ek_roots_loaded``). Raises :class:`TrustConfigError` naming the
    allow-list when it cannot be read or a line is not a SHA-256.
    """
    roots: list[x509.Certificate] = []
    skipped = 0
    if roots_dir.is_dir():
        for path in sorted(roots_dir.glob("*.pem")):
            try:
                loaded = load_pem_certificates(path.read_bytes(), path.name)
                for certificate in loaded:
                    check_ek_root(certificate)
            except OSError as exc:
                reason = f"cannot read: {exc.strerror or exc}"
            except AttestationError as exc:
                reason = str(exc)
            else:
                roots.extend(c.certificate for c in loaded)
                continue
            skipped += 1
            log.warning(
                "attestation.ek_root_skipped", file=str(path), reason=reason.splitlines()[0]
            )
    log.info(
        "attestation.ek_roots_loaded", directory=str(roots_dir), loaded=len(roots), skipped=skipped
    )
    hashes: set[bytes] = set()
    if allowlist.is_file():
        try:
            lines = allowlist.read_text().splitlines()
        except OSError as exc:
            raise TrustConfigError(f"EK allow-list {allowlist}: {exc.strerror}") from exc
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip().lower()
            if not text:
                continue
            try:
                value = bytes.fromhex(text)
            except ValueError:
                value = b""
            if len(value) != 32:
                raise TrustConfigError(
                    f"EK allow-list {allowlist}:{number}: want 64 hex digits (SHA-256)"
                )
            hashes.add(value)
    return TrustRoots(tuple(roots), frozenset(hashes))


def quote_hash_algorithms(names: Iterable[str]) -> frozenset[int]:
    """The TPM_ALG ids of hash names (``sha1``, ``sha256``, ``sha384``, ``sha512``), what
    :class:`AttestationService` takes as ``quote_hashes``. Raises TrustConfigError for an
    unknown name or none at all (a policy accepting nothing would refuse every device)."""
    algorithms: set[int] = set()
    for name in names:
        if name not in QUOTE_HASHES:
            raise TrustConfigError(f"quote hash {name!r} is not one of " + ", ".join(QUOTE_HASHES))
        algorithms.add(QUOTE_HASHES[name])
    if not algorithms:
        raise TrustConfigError("quote hashes: none given; no quote could be accepted")
    return frozenset(algorithms)


def device_spiffe_id(trust_domain: str, ek_hash: bytes) -> str:
    """``spiffe://<trust-domain>/device/<hex SHA-256 of the EK>``."""
    return f"spiffe://{trust_domain}/device/{ek_hash.hex()}"


@dataclass(frozen=True, slots=True)
class Challenged:
    """A challenge for the device and the PCRs its quote must cover (bank → indices)."""

    challenge: Challenge
    pcrs: Mapping[int, frozenset[int]]


@dataclass(frozen=True, slots=True)
class Evidence:
    """A device's answer to a challenge, as received (nothing in it is trusted)."""

    challenge_id: str
    activated_secret: bytes
    quote: bytes
    signature: bytes
    pcr_values: Mapping[tuple[int, int], bytes]
    csr: bytes
    audience: str = DEFAULT_AUDIENCE
    event_log: bytes = b""
    """The TCG boot event log the device sent (empty: none)."""


@dataclass(frozen=True, slots=True)
class JwtProof:
    """A request for a JWT-SVID, as received: the challenge answered, the audiences, the
    device's X.509-SVID (DER leaf) and its key's signature over
    :func:`sdk.agent.jwt_svid_proof` of them (nothing in it is trusted)."""

    challenge_id: str
    audiences: tuple[str, ...]
    svid: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class MintedJwt:
    """A JWT-SVID minted for a device's X.509-SVID, and the audit receipt of its issue."""

    spiffe_id: str
    jwt: str
    expires_at: datetime
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class _LiveSvid:
    """A Docket X.509-SVID of a device, verified: valid now, not revoked, with posture."""

    leaf: x509.Certificate
    spiffe_id: str
    ek_hash: bytes
    posture: Posture


@dataclass(frozen=True, slots=True)
class Issued:
    """The credentials issued to an attested device, and the audit receipt of its
    attestation."""

    spiffe_id: str
    posture: Posture
    leaf: x509.Certificate
    intermediate: x509.Certificate
    bundle_pem: bytes
    jwt: str
    jwt_expires_at: datetime
    receipt: Receipt


class AttestationService:
    """Challenge and Attest for every transport (see the module docstring).

    ``reference`` gives the reference values of the bundle in force at each call, so a
    bundle reload takes effect for the next attestation. ``quote_hashes`` are the TPM_ALG
    ids a quote may be signed with and its PCR banks may use (:func:`quote_hash_algorithms`;
    SHA-1 is not accepted by default).
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        roots: TrustRoots,
        store: ChallengeStore,
        audit: AuditLog,
        reference: Callable[[], ReferenceValues],
        *,
        clock: Callable[[], datetime],
        svid_ttl: timedelta = timedelta(hours=1),
        quote_hashes: frozenset[int] = DEFAULT_QUOTE_HASHES,
        revocations: RevocationList | None = None,
    ) -> None:
        self.ca = ca
        self.revocations = revocations or RevocationList.empty(ca.trust_domain)
        """The revocation list in force: a revoked device is refused at Challenge and
        at Attest (replaced whole by a reload)."""
        self.roots = roots
        self.store = store
        self.audit = audit
        self._reference = reference
        self.clock = clock
        self.svid_ttl = svid_ttl
        self.quote_hashes = quote_hashes
        # Challenges left from before a restart; later ones are pruned as new ones are
        # stored (ChallengeStore.put). A store that cannot prune now fails its calls
        # with its own reason later: not a reason not to start.
        try:
            pruned = store.prune(clock())
        except StoreUnavailable as exc:
            log.warning("attestation.challenges_unpruned", reason=str(exc))
        else:
            log.info("attestation.challenges_pruned", pruned=pruned)

    def challenge(self, enrollment: UnverifiedEnrollment, *, caller: str | None) -> Challenged:
        """Check the EK and AK and make a challenge. A refusal is recorded, then raised
        (:class:`~attestation.EvidenceError`, :class:`~attestation.ParseError`)."""
        now = self.clock()
        try:
            reference = self._reference()
            if not reference.classes:
                raise EvidenceError(
                    "no reference values are configured (the bundle has no reference/): "
                    "no device can be appraised"
                )
            required = reference.required_pcrs()
            # A class whose golden values are in a refused bank could never match: say so
            # before the device does the work.
            check_quote_hashes(required, self.quote_hashes)
            challenge, pending = begin_enrollment(
                enrollment, self.roots, now=now, ttl=CHALLENGE_TTL
            )
            self._not_revoked(pending.ek_hash)
        except AttestationError as exc:
            self.refused("challenge", exc, caller=caller, subject=None, now=now)
            raise
        self.store.put(pending, now=now)
        return Challenged(challenge, required)

    def attest(self, evidence: Evidence, *, caller: str | None) -> Issued:
        """Verify the evidence, appraise it and issue an X.509-SVID and a JWT-SVID.

        One pass: the challenge store is read (the pending challenge, the device's last
        TPM clock), the pure verifier judges the answer with those values and ``now``,
        the store is written (the challenge used, whatever the verdict, so the answer
        cannot be retried; the new TPM clock), then the credentials are issued and the
        audit entries recorded. Of Attests racing with one challenge, the store's write
        lets one through. A failure is recorded, then raised
        (:class:`~attestation.AttestationError`).
        """
        now = self.clock()
        subject: str | None = None
        try:
            stored = self.store.read(evidence.challenge_id)
            pending = stored.pending
            subject = device_spiffe_id(self.ca.trust_domain, pending.ek_hash)
            try:
                # Again here: the device may have been revoked since its challenge.
                self._not_revoked(pending.ek_hash)
                attested = verify_answer(
                    pending,
                    activated_secret=evidence.activated_secret,
                    quote=evidence.quote,
                    signature=evidence.signature,
                    pcr_values=evidence.pcr_values,
                    reference=self._reference(),
                    last_clock=stored.last_clock,
                    now=now,
                    accepted_hashes=self.quote_hashes,
                    event_log=evidence.event_log,
                )
            except AttestationError:
                self.store.write(ToPersist.refused(pending, now))
                raise
            self.store.write(attested.persist)
            posture = attested.posture
            claims = posture.claims()
            leaf, intermediate = self.ca.issue_svid(
                _load_csr(evidence.csr), subject, now=now, ttl=self.svid_ttl, posture=claims
            )
            token = self.ca.issue_jwt(subject, evidence.audience, now=now, claims=claims)
        except AttestationError as exc:
            self.refused("attest", exc, caller=caller, subject=subject, now=now)
            raise
        jwt_expires = _expiry(token)
        entries = _issued_entries(
            subject,
            posture,
            leaf,
            evidence,
            jwt_expires,
            caller=caller,
            now=now,
        )
        receipt, *_ = self.audit.record(entries)
        log.info(
            "attestation.issued",
            spiffe_id=subject,
            device_class=posture.device_class,
            svid_expires=leaf.not_valid_after_utc.isoformat(),
        )
        return Issued(
            subject,
            posture,
            leaf,
            intermediate,
            self.ca.trust_bundle(now),
            token,
            jwt_expires,
            receipt,
        )

    def jwt_challenge(self, svid: bytes, *, caller: str | None) -> PendingChallenge:
        """A single-use nonce for :meth:`mint_jwt`, for the device of ``svid`` (a DER
        X.509-SVID this CA issued, valid now and not revoked). A refusal is recorded, then
        raised (:class:`~attestation.EvidenceError`, :class:`~attestation.ParseError`)."""
        now = self.clock()
        try:
            live = self._live_svid(svid, now)
        except AttestationError as exc:
            self.refused("jwt", exc, caller=caller, subject=None, now=now)
            raise
        pending = PendingChallenge(
            challenge_id=JWT_CHALLENGE_PREFIX + secrets.token_hex(16),
            secret=b"",
            nonce=secrets.token_bytes(32),
            ak_public=b"",
            ek_hash=live.ek_hash,
            expires_at=now + CHALLENGE_TTL,
        )
        self.store.put(pending, now=now)
        return pending

    def mint_jwt(self, proof: JwtProof, *, caller: str | None) -> MintedJwt:
        """A JWT-SVID for ``proof.audiences``, for the device whose X.509-SVID's key signed
        the challenge and the audiences (see the module docstring).

        The challenge is consumed first (whatever the verdict: a proof cannot be tried
        twice), then the SVID is checked (this CA's, valid now, not revoked), then that
        the challenge was the same device's and that the signature verifies with the
        SVID's key. The token's ``sub`` is the SVID's SPIFFE ID, its posture the SVID's,
        it expires at the latest with the SVID. The issue is recorded (a ``certificate``
        entry) before it is returned; a refusal is recorded, then raised
        (:class:`~attestation.EvidenceError`, :class:`~attestation.ParseError`).
        """
        now = self.clock()
        subject: str | None = None
        try:
            if not proof.challenge_id.startswith(JWT_CHALLENGE_PREFIX):
                raise EvidenceError("challenge_id: not a JwtChallenge's")
            pending = self.store.consume(proof.challenge_id, now=now)
            live = self._live_svid(proof.svid, now)
            subject = live.spiffe_id
            if pending.ek_hash != live.ek_hash:
                raise EvidenceError("the challenge was given to another device's SVID")
            key = live.leaf.public_key()
            signed = jwt_svid_proof(proof.challenge_id, pending.nonce, proof.audiences)
            try:
                if not isinstance(key, ec.EllipticCurvePublicKey):
                    raise InvalidSignature
                key.verify(proof.signature, signed, ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                raise EvidenceError(
                    "the proof's signature does not verify with the SVID's key: the caller "
                    "does not hold it"
                ) from None
            claims = live.posture.claims()
            token = self.ca.issue_jwt(
                subject,
                proof.audiences,
                now=now,
                ttl=live.leaf.not_valid_after_utc - now,
                claims=claims,
            )
        except AttestationError as exc:
            self.refused("jwt", exc, caller=caller, subject=subject, now=now)
            raise
        expires = _expiry(token)
        serial = f"{live.leaf.serial_number:x}"
        receipt, *_ = self.audit.record(
            [
                Entry(
                    kind="certificate",
                    time=now,
                    caller=caller,
                    subject=subject,
                    region=live.posture.region,
                    action="issue",
                    decision="allow",
                    resource="jwt-svid",
                    detail={
                        "credential": "jwt-svid",
                        "audience": [capped(audience) for audience in proof.audiences],
                        "not_after": expires.isoformat(),
                        "device_class": live.posture.device_class,
                        "svid_serial": serial,
                        "challenge_id": capped(proof.challenge_id),
                    },
                )
            ]
        )
        log.info(
            "attestation.jwt_minted",
            spiffe_id=subject,
            audiences=len(proof.audiences),
            svid_serial=serial,
            expires=expires.isoformat(),
        )
        return MintedJwt(subject, token, expires, receipt)

    def _live_svid(self, der: bytes, now: datetime) -> _LiveSvid:
        """The device X.509-SVID ``der`` once verified at ``now``: this CA's, valid, with
        posture, of a device, not revoked. Raises :class:`~attestation.ParseError` or
        :class:`~attestation.EvidenceError`."""
        try:
            leaf = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise ParseError(f"svid: not a DER certificate ({exc})") from exc
        try:
            spiffe_id, claims = self.ca.verify_svid(leaf, now)
        except TokenError as exc:
            raise EvidenceError(f"svid: {exc}") from exc
        prefix = f"spiffe://{self.ca.trust_domain}/device/"
        if claims is None or not spiffe_id.startswith(prefix):
            raise EvidenceError("svid: not a device's SVID (no device SPIFFE ID or posture)")
        revocation = self.revocations.refuses(spiffe_id, leaf.serial_number, issued_at(leaf))
        if revocation is not None:
            raise EvidenceError(f"{describe(revocation)}; its SVID is refused")
        try:
            ek_hash = bytes.fromhex(spiffe_id.removeprefix(prefix))
            posture = Posture.from_claims(claims)
        except (ValueError, ParseError) as exc:
            raise EvidenceError(f"svid: malformed device SVID ({exc})") from exc
        return _LiveSvid(leaf, spiffe_id, ek_hash, posture)

    def _not_revoked(self, ek_hash: bytes) -> None:
        """Raises :class:`~attestation.EvidenceError` when the device is revoked."""
        revocation = self.revocations.device(ek_hash)
        if revocation is not None:
            raise EvidenceError(f"{describe(revocation)}; it cannot attest")

    def refused(
        self,
        stage: str,
        exc: AttestationError,
        *,
        caller: str | None,
        subject: str | None,
        now: datetime | None = None,
    ) -> None:
        """Record (durably) and log that a ``stage`` was refused for ``exc``."""
        now = now or self.clock()
        # The reason may echo what an unauthenticated caller sent: bounded, here and in
        # the server log.
        reason = capped(str(exc))
        log.warning("attestation.refused", stage=stage, subject=subject, reason=reason)
        self.audit.record(
            [
                Entry(
                    kind="attestation",
                    time=now,
                    caller=caller,
                    subject=subject,
                    action=stage,
                    decision="deny",
                    detail={"stage": stage, "reason": reason},
                )
            ]
        )


def _expiry(token: str) -> datetime:
    """When a JWT-SVID the CA just signed expires (what the CA capped its lifetime to)."""
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    return datetime.fromtimestamp(int(exp), UTC)


def _load_csr(der: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise ParseError(f"csr: not a DER PKCS#10 request ({exc})") from exc


def _issued_entries(
    subject: str,
    posture: Posture,
    leaf: x509.Certificate,
    evidence: Evidence,
    jwt_expires: datetime,
    *,
    caller: str | None,
    now: datetime,
) -> Sequence[Entry]:
    claims: dict[str, Any] = posture.claims()
    common: dict[str, Any] = {
        "time": now,
        "caller": caller,
        "subject": subject,
        "region": posture.region,
        "decision": "allow",
    }
    detail: dict[str, Any] = {
        "stage": "attest",
        "challenge_id": capped(evidence.challenge_id),
        "posture": claims,
    }
    if evidence.event_log:
        detail["event_log"] = {
            "sha256": hashlib.sha256(evidence.event_log).hexdigest(),
            "bytes": len(evidence.event_log),
        }
    return [
        Entry(kind="attestation", action="attest", detail=detail, **common),
        Entry(
            kind="certificate",
            action="issue",
            resource=f"x509-svid:{leaf.serial_number:x}",
            detail={
                "credential": "x509-svid",
                "serial": f"{leaf.serial_number:x}",
                "not_after": leaf.not_valid_after_utc.isoformat(),
                "device_class": posture.device_class,
            },
            **common,
        ),
        Entry(
            kind="certificate",
            action="issue",
            resource="jwt-svid",
            detail={
                "credential": "jwt-svid",
                "audience": capped(evidence.audience),
                "not_after": jwt_expires.isoformat(),
                "device_class": posture.device_class,
            },
            **common,
        ),
    ]
