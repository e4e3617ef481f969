"""Docket's certificate authority: its keys and files, X.509-SVIDs, server certificates.

Two tiers, both ECDSA P-256:

- a self-signed **root** (CA, pathlen 1, keyCertSign+cRLSign, 10 years), the trust anchor;
- an **issuing intermediate** (CA, pathlen 0, 1 year) that signs every leaf certificate and,
  with ES256, every JWT-SVID (JWT header ``kid`` = RFC 7638 thumbprint of its key).

``rotate`` makes a new intermediate and *retires* the old one at that moment: a credential
it signs after its retirement (notBefore / ``iat`` later) is refused, its private key is
dropped, and it stays trusted for what it signed before only until that has expired: in
the JWKS for ``MAX_JWT_TTL``, in the trust bundle for ``MAX_SVID_TTL`` (verification
applies these windows at ``now``; ``prune`` then removes it from the directory).

Revocation lists (``revocations.py``) and JWT-SVIDs (``jwt_svid.py``) are signed with its
keys; SPIFFE IDs are parsed by ``spiffe_id.py``, lifetimes capped by ``lifetimes.py``.

The ``CertificateAuthority`` value is immutable and does no I/O or clock reads: ``create``,
``rotate`` and ``prune`` return new values, ``now`` is always passed in. ``init``, ``load``
and ``save`` are the file edge. On disk (default ``<data-dir>/ca/``, mode 0700)::

    ca.json                     trust domain; each retired intermediate's serial,
                                retired_at and retire_after (retired_at + MAX_SVID_TTL)
    root.pem / root.key         keys are PKCS#8 PEM, mode 0600
    issuing.pem / issuing.key
    retired-<serial>.pem        a retired intermediate's certificate (no key)
    revocations.json            the signed revocation list (absent: none revoked)

Errors: :class:`~attestation.CAError` and :class:`~attestation.TokenError`
(the tree is in :mod:`attestation._errors`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from attestation._ca.jwk import jwk, jwk_thumbprint
from attestation._ca.jwt_svid import encode_jwt_svid, jwt_audiences, verify_jwt_svid
from attestation._ca.lifetimes import MAX_JWT_TTL, MAX_SVID_TTL, check_now
from attestation._ca.revocations import (
    REVOCATIONS_FILE,
    RevocationList,
    sign_revocations,
    verify_revocations,
)
from attestation._ca.spiffe_id import check_trust_domain, parse_spiffe_id
from attestation._errors import CAError, TokenError

__all__ = [
    "BACKDATE",
    "POSTURE_EXTENSION",
    "CertificateAuthority",
    "ServerCredential",
    "issued_at",
]

DEFAULT_SERVER_TTL = timedelta(days=90)
ROOT_VALIDITY = timedelta(days=3652)
ISSUING_VALIDITY = timedelta(days=365)
BACKDATE = timedelta(minutes=1)
POSTURE_EXTENSION = x509.ObjectIdentifier("2.25.254625115688257366186368460684256347430")
"""The X.509-SVID extension (non-critical) carrying the attested posture: a DER UTF8String
of the claims' canonical JSON, written and read strictly by `cryptography.hazmat.asn1`
(``encode_der``/``decode_der`` of a ``str``; added in cryptography 47, the floor this
package pins, and marked unstable there, hence the ``<51`` ceiling). The OID is a UUID OID
(ITU-T X.667, arc 2.25), so it needs no registration and cannot collide."""

_STATE_FILE = "ca.json"
_DNS_LABEL = re.compile(r"\*|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


# --- certificates ---------------------------------------------------------------------------


def _serial() -> int:
    """A random positive serial number of 128 bits (RFC 5280 §4.1.2.2 allows up to 20 octets)."""
    return secrets.randbits(128) | 1


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ski(key: CertificatePublicKeyTypes) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key)


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(*, digital_signature: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _make_root(
    trust_domain: str, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, "Docket root CA"),
        ]
    )
    ski = _ski(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ROOT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_issuing(
    trust_domain: str,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            # The time keeps successive intermediates' subjects apart in a bundle.
            x509.NameAttribute(NameOID.COMMON_NAME, f"Docket issuing CA {now:%Y%m%dT%H%M%SZ}"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + ISSUING_VALIDITY, root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # digitalSignature: this key also signs JWT-SVIDs.
        .add_extension(_key_usage(digital_signature=True, ca=True), critical=True)
        .add_extension(_ski(key.public_key()), critical=False)
        .add_extension(_aki(root), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return cert, key


def _check_subject_key(key: object) -> CertificatePublicKeyTypes:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1)):
            raise CAError(f"unsupported EC curve {key.curve.name}; use P-256 or P-384")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CAError(f"RSA key of {key.key_size} bits is too small; use at least 2048")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise CAError(f"unsupported subject key type {type(key).__name__}")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class _Issuer:
    certificate: x509.Certificate
    # None once retired: a retired key signs nothing more, so its private half is dropped.
    key: ec.EllipticCurvePrivateKey | None
    retired_at: datetime | None = None  # set on retired intermediates only

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = self.certificate.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)  # _make_issuing makes P-256 keys
        return key

    @property
    def retire_after(self) -> datetime | None:
        """When the last X.509-SVID this retired key signed has expired: it leaves the
        trust bundle (and the CA directory) then."""
        return None if self.retired_at is None else self.retired_at + MAX_SVID_TTL

    def trusted_for_svids(self, now: datetime) -> bool:
        return self.retired_at is None or now < self.retired_at + MAX_SVID_TTL

    def trusted_for_jwts(self, now: datetime) -> bool:
        return self.retired_at is None or now < self.retired_at + MAX_JWT_TTL


@dataclass(frozen=True)
class ServerCredential:
    """A TLS server certificate, its private key and the chain up to (not including) the root."""

    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]

    def chain_pem(self) -> bytes:
        """Leaf then intermediate, PEM, as a TLS server presents them."""
        return b"".join(_pem(cert) for cert in self.chain)

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass(frozen=True)
class CertificateAuthority:
    """A root, the current issuing intermediate and any retired intermediates still trusted.

    Immutable: ``rotate`` and ``prune`` return a new authority; ``save`` writes one.
    """

    trust_domain: str
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey = dataclasses.field(repr=False)
    issuing: _Issuer = dataclasses.field(repr=False)
    retired: tuple[_Issuer, ...] = dataclasses.field(default=(), repr=False)

    # --- construction and files ------------------------------------------------------------

    @classmethod
    def create(cls, trust_domain: str, now: datetime) -> CertificateAuthority:
        """A new root and issuing intermediate in memory. Raises ``CAError``."""
        trust_domain = check_trust_domain(trust_domain)
        now = check_now(now)
        root, root_key = _make_root(trust_domain, now)
        issuing, issuing_key = _make_issuing(trust_domain, root, root_key, now)
        return cls(trust_domain, root, root_key, _Issuer(issuing, issuing_key))

    @classmethod
    def init(cls, directory: Path, trust_domain: str, now: datetime) -> CertificateAuthority:
        """Create a CA and write it to ``directory`` (made with mode 0700).

        Raises ``CAError`` if a CA is already there (it is never overwritten).
        """
        ca = cls.create(trust_domain, now)
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if any(directory.iterdir()):
                raise CAError(
                    f"a CA already exists at {directory}; remove the directory to start over"
                ) from None
        except OSError as exc:
            raise CAError(f"cannot create {directory}: {exc.strerror}") from exc
        ca.save(directory, exclusive=True)
        return ca

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """Read a CA written by ``init`` or ``save``. Raises ``CAError``."""
        if not (directory / _STATE_FILE).is_file():
            raise CAError(f"no CA at {directory}; create one with `docket ca init`")
        try:
            state = json.loads((directory / _STATE_FILE).read_text(encoding="utf-8"))
            trust_domain = check_trust_domain(state["trust_domain"])
            root, root_key = _read_pair(directory, "root")
            issuing = _Issuer(*_read_pair(directory, "issuing"))
            retired = tuple(
                _Issuer(
                    _read_certificate(directory, f"retired-{item['serial']}"),
                    None,
                    retired_at=_retired_at(item),
                )
                for item in state.get("retired", [])
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CAError(f"the CA at {directory} cannot be read: {exc}") from exc
        return cls(trust_domain, root, root_key, issuing, retired)

    def save(self, directory: Path, *, exclusive: bool = False) -> None:
        """Write the CA to ``directory``: keys mode 0600, each file replaced atomically.

        With ``exclusive``, refuse (``CAError``) to replace any existing file.
        """
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        pairs = {"root": (self.root, self.root_key), "issuing": _pair(self.issuing)}
        retired = {f"retired-{i.certificate.serial_number:x}": i for i in self.retired}
        # retired_at is when the key stopped signing (credentials it signed later are
        # forged); retire_after, when it leaves the bundle. Before issue 14 only the
        # latter was written, and nothing refused what the retired key signed after.
        state: dict[str, Any] = {
            "trust_domain": self.trust_domain,
            "retired": [
                {
                    "serial": f"{issuer.certificate.serial_number:x}",
                    "retired_at": issuer.retired_at.isoformat(),
                    "retire_after": (issuer.retired_at + MAX_SVID_TTL).isoformat(),
                }
                for issuer in self.retired
                if issuer.retired_at is not None
            ],
        }
        try:
            for stem, (cert, key) in pairs.items():
                key_pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                _write(directory / f"{stem}.key", key_pem, 0o600, exclusive)
                _write(directory / f"{stem}.pem", _pem(cert), 0o644, exclusive)
            for stem, issuer in retired.items():
                _write(directory / f"{stem}.pem", _pem(issuer.certificate), 0o644, exclusive)
            # The state file last: a CA directory without one is not a CA yet.
            state_bytes = (json.dumps(state, indent=2) + "\n").encode()
            _write(directory / _STATE_FILE, state_bytes, 0o600, exclusive)
            for stale in directory.glob("retired-*"):
                # A retired key's private half (and a pruned key's certificate) goes.
                if stale.suffix == ".key" or stale.name.rsplit(".", 1)[0] not in retired:
                    stale.unlink()
        except FileExistsError as exc:
            raise CAError(f"a CA already exists at {directory}") from exc
        except OSError as exc:
            raise CAError(f"cannot write the CA to {directory}: {exc.strerror}") from exc

    # --- trust material ----------------------------------------------------------------------

    @property
    def _signing_key(self) -> ec.EllipticCurvePrivateKey:
        if self.issuing.key is None:  # only a retired issuer lacks its key
            raise CAError("the issuing intermediate's private key is missing")
        return self.issuing.key

    @property
    def issuing_certificate(self) -> x509.Certificate:
        """The intermediate that signs new credentials."""
        return self.issuing.certificate

    def trust_bundle(self, now: datetime | None = None) -> bytes:
        """PEM: the root, the current intermediate, then the retired ones still trusted
        for X.509-SVIDs at ``now`` (all that are kept, without ``now``)."""
        certs = [self.root, *(i.certificate for i in self._issuers(now, jwt=False))]
        return b"".join(_pem(cert) for cert in certs)

    def jwks(self, now: datetime | None = None) -> dict[str, list[dict[str, str]]]:
        """The JWT-SVID verification keys as a JWK Set: the current intermediate's, then
        the retired ones' until their last JWT-SVID has expired (``MAX_JWT_TTL`` after
        the rotation) at ``now`` (all that are kept, without ``now``)."""
        return {"keys": [jwk(issuer.public_key) for issuer in self._issuers(now, jwt=True)]}

    def _issuers(self, now: datetime | None = None, *, jwt: bool = False) -> tuple[_Issuer, ...]:
        """The current issuer, then the retired ones still trusted at ``now``."""
        if now is None:
            return (self.issuing, *self.retired)
        now = check_now(now)
        kept = (
            i for i in self.retired if (i.trusted_for_jwts if jwt else i.trusted_for_svids)(now)
        )
        return (self.issuing, *kept)

    # --- revocation ---------------------------------------------------------------------------

    def sign_revocations(self, revocations: RevocationList) -> bytes:
        """``revocations`` as a signed document (a flattened JWS, ES256), signed by the
        **root** key (:func:`~attestation._ca.revocations.sign_revocations`).

        The root, not the issuing key: revocation must hold when an issuing key is what
        was compromised, the root is the anchor relying parties already hold (``docket
        ca bundle``) and it does not rotate, and its key usage includes cRLSign, the
        usage X.509 gives to signing revocation information. Raises ``CAError``.
        """
        return sign_revocations(revocations, self.trust_domain, self.root, self.root_key)

    def verify_revocations(self, document: bytes) -> RevocationList:
        """The revocation list in a document :meth:`sign_revocations` made, after checking
        its ES256 signature by this CA's root and its trust domain. Raises ``CAError``."""
        return verify_revocations(document, self.trust_domain, self._root_public_key)

    @property
    def _root_public_key(self) -> ec.EllipticCurvePublicKey:
        return self.root_key.public_key()

    def save_revocations(self, directory: Path, revocations: RevocationList) -> bytes:
        """Sign ``revocations`` and write them to ``directory`` atomically; the document.
        Raises ``CAError``."""
        document = self.sign_revocations(revocations)
        try:
            _write(directory / REVOCATIONS_FILE, document, 0o644, exclusive=False)
        except OSError as exc:
            raise CAError(
                f"cannot write the revocation list to {directory}: {exc.strerror}"
            ) from exc
        return document

    # --- rotation ------------------------------------------------------------------------------

    def rotate(self, now: datetime) -> CertificateAuthority:
        """A new issuing intermediate. The current one is retired at ``now``: a credential
        it signs later is refused, and it stays trusted for what it signed before only
        until that has expired (``MAX_JWT_TTL`` for JWT-SVIDs, ``MAX_SVID_TTL`` for
        X.509-SVIDs). Its private key is dropped."""
        now = check_now(now)
        cert, key = _make_issuing(self.trust_domain, self.root, self.root_key, now)
        retired = _Issuer(self.issuing.certificate, None, retired_at=now)
        return dataclasses.replace(
            self, issuing=_Issuer(cert, key), retired=(retired, *self.retired)
        )

    def prune(self, now: datetime) -> CertificateAuthority:
        """Drop retired intermediates whose overlap window has ended by ``now``."""
        now = check_now(now)
        kept = tuple(issuer for issuer in self.retired if issuer.trusted_for_svids(now))
        return dataclasses.replace(self, retired=kept)

    # --- X.509 ---------------------------------------------------------------------------------

    def _check_in_domain(self, spiffe_id: str) -> None:
        trust_domain, _ = parse_spiffe_id(spiffe_id)
        if trust_domain != self.trust_domain:
            raise CAError(
                f"SPIFFE ID {spiffe_id!r} is not in this CA's trust domain {self.trust_domain!r}"
            )

    def _not_after(self, now: datetime, ttl: timedelta, cap: timedelta | None) -> datetime:
        if ttl <= timedelta(0):
            raise CAError("a credential's lifetime must be positive")
        if cap is not None:
            ttl = min(ttl, cap)
        return min(now + ttl, self.issuing.certificate.not_valid_after_utc)

    def _leaf(
        self,
        subject: x509.Name,
        key: CertificatePublicKeyTypes,
        san: x509.SubjectAlternativeName,
        eku: Sequence[x509.ObjectIdentifier],
        not_before: datetime,
        not_after: datetime,
        extra: Sequence[x509.UnrecognizedExtension] = (),
    ) -> tuple[x509.Certificate, x509.Certificate]:
        issuer = self.issuing.certificate
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject)
            .public_key(key)
            .serial_number(_serial())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
            .add_extension(san, critical=False)
            .add_extension(_ski(key), critical=False)
            .add_extension(_aki(issuer), critical=False)
        )
        for extension in extra:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(self._signing_key, hashes.SHA256()), issuer

    def issue_svid(
        self,
        csr_or_public_key: x509.CertificateSigningRequest | CertificatePublicKeyTypes,
        spiffe_id: str,
        *,
        now: datetime,
        ttl: timedelta = timedelta(hours=1),
        server: bool = False,
        posture: Mapping[str, Any] | None = None,
    ) -> tuple[x509.Certificate, x509.Certificate]:
        """An X.509-SVID for ``spiffe_id``: ``(leaf, intermediate)``.

        The leaf has exactly one URI SAN (the SPIFFE ID), clientAuth (and serverAuth when
        ``server``), and lives ``min(ttl, MAX_SVID_TTL)``, never past the intermediate. A CSR
        contributes only its key, and only if its signature verifies. ``posture`` (the
        verified claims) goes into the ``POSTURE_EXTENSION``. Raises ``CAError``.
        """
        now = check_now(now)
        self._check_in_domain(spiffe_id)
        if isinstance(csr_or_public_key, x509.CertificateSigningRequest):
            if not csr_or_public_key.is_signature_valid:
                raise CAError("the CSR's signature does not verify")
            key = _check_subject_key(csr_or_public_key.public_key())
        else:
            key = _check_subject_key(csr_or_public_key)
        eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            eku.append(ExtendedKeyUsageOID.SERVER_AUTH)
        return self._leaf(
            x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain)]),
            key,
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            eku,
            now - BACKDATE,
            self._not_after(now, ttl, MAX_SVID_TTL),
            () if posture is None else (_posture_extension(posture),),
        )

    def issue_server_cert(
        self,
        names: Sequence[str],
        *,
        now: datetime,
        ttl: timedelta = DEFAULT_SERVER_TTL,
    ) -> ServerCredential:
        """A serverAuth certificate and a new P-256 key for the admission webhook.

        Each of ``names`` that parses as an IP address becomes an IP SAN, the rest DNS SANs.
        Lives ``ttl``, never past the intermediate. Raises ``CAError``.
        """
        now = check_now(now)
        if not names:
            raise CAError("a server certificate needs at least one DNS name or IP address")
        sans: list[x509.GeneralName] = []
        dns: list[str] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
                continue
            except ValueError:
                pass
            _check_dns_name(name)
            sans.append(x509.DNSName(name))
            dns.append(name)
        key = _new_key()
        common_name = dns[0] if dns else names[0]
        leaf, issuer = self._leaf(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
            key.public_key(),
            x509.SubjectAlternativeName(sans),
            [ExtendedKeyUsageOID.SERVER_AUTH],
            now - BACKDATE,
            self._not_after(now, ttl, None),
        )
        return ServerCredential(key, (leaf, issuer))

    # --- JWT-SVIDs (jwt_svid.py) ---------------------------------------------------------------

    def issue_jwt(
        self,
        spiffe_id: str,
        audience: str | Sequence[str],
        *,
        now: datetime,
        ttl: timedelta = MAX_JWT_TTL,
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A JWT-SVID (ES256) for ``spiffe_id``, living ``min(ttl, MAX_JWT_TTL)``, with a
        fresh ``jti`` (a UUIDv4) that audit entries cite, signed by the issuing key.

        ``claims`` (the verified posture) go under the one claim ``JWT_POSTURE_CLAIM``.
        Raises ``CAError``.
        """
        now = check_now(now)
        self._check_in_domain(spiffe_id)
        audiences = jwt_audiences(audience)
        expires = self._not_after(now, ttl, MAX_JWT_TTL)
        return encode_jwt_svid(
            spiffe_id, audiences, now=now, expires=expires, claims=claims, key=self._signing_key
        )

    def verify_jwt(self, token: str, audience: str, now: datetime) -> dict[str, Any]:
        """The claims of a JWT-SVID this CA signed, for ``audience``, valid at ``now``:
        signed by the current intermediate, or by a retired one within ``MAX_JWT_TTL`` of
        its retirement and before it (:func:`~attestation._ca.jwt_svid.verify_jwt_svid`
        says what else is checked). Raises ``TokenError``.
        """
        now = check_now(now)
        keys = {
            jwk_thumbprint(i.public_key): (i.public_key, i.retired_at)
            for i in self._issuers(now, jwt=True)
        }
        return verify_jwt_svid(token, audience, now, keys, self.trust_domain)

    def names_key_of(self, token: str) -> bool:
        """True when a JWT's header names (``kid``) a current or retired key of this CA,
        so that it is this CA's to verify; nothing is verified."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return False
        return any(kid == jwk_thumbprint(i.public_key) for i in self._issuers())

    def verify_svid(
        self, leaf: x509.Certificate, now: datetime
    ) -> tuple[str, dict[str, Any] | None]:
        """The SPIFFE ID and posture claims (None without) of an X.509-SVID this CA issued.

        The leaf must be signed by the current intermediate, or by a retired one before its
        retirement, live at most ``MAX_SVID_TTL`` and be valid at ``now``. Raises
        ``TokenError``.
        """
        now = check_now(now)
        # Successive intermediates' subjects differ by time; still, try each by signature.
        candidates = [i for i in self._issuers(now) if i.certificate.subject == leaf.issuer]
        if not candidates:
            raise TokenError("the certificate was not issued by this CA")
        signer = next((i for i in candidates if _signed_by(leaf, i.certificate)), None)
        if signer is None:
            raise TokenError("the certificate's signature is not this CA's")
        if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
            raise TokenError("the certificate is not valid now")
        if leaf.not_valid_after_utc - leaf.not_valid_before_utc > MAX_SVID_TTL + BACKDATE:
            raise TokenError(
                "the certificate's lifetime exceeds the "
                f"{MAX_SVID_TTL.total_seconds() / 3600:g}-hour cap"
            )
        # issue_svid backdates notBefore by BACKDATE: this is when it was issued.
        if signer.retired_at is not None and issued_at(leaf) > signer.retired_at:
            raise TokenError(
                f"the certificate was signed by an issuing key retired at "
                f"{signer.retired_at:%Y-%m-%dT%H:%M:%SZ}, after its retirement"
            )
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            (spiffe_id,) = san.value.get_values_for_type(x509.UniformResourceIdentifier)
            trust_domain, _ = parse_spiffe_id(spiffe_id)
        except (x509.ExtensionNotFound, ValueError, CAError) as exc:
            raise TokenError("the certificate has no single SPIFFE ID") from exc
        if trust_domain != self.trust_domain:
            raise TokenError("the certificate's SPIFFE ID is not in this CA's trust domain")
        try:
            extension = leaf.extensions.get_extension_for_oid(POSTURE_EXTENSION)
        except x509.ExtensionNotFound:
            return spiffe_id, None
        value = extension.value
        if not isinstance(value, x509.UnrecognizedExtension):
            raise TokenError("the certificate's posture extension is malformed")
        return spiffe_id, _read_posture(value.value)


def _signed_by(leaf: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _posture_extension(claims: Mapping[str, Any]) -> x509.UnrecognizedExtension:
    text = json.dumps(dict(claims), sort_keys=True, separators=(",", ":"))
    return x509.UnrecognizedExtension(POSTURE_EXTENSION, asn1.encode_der(text))


def _read_posture(der: bytes) -> dict[str, Any]:
    """The claims in a posture extension's DER UTF8String. Raises ``TokenError``."""
    try:
        text = asn1.decode_der(str, der)
    except ValueError as exc:  # another tag, a non-DER length, trailing bytes, bad UTF-8
        raise TokenError("the certificate's posture extension is not a DER UTF8String") from exc
    try:
        claims = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TokenError("the certificate's posture extension is not JSON") from exc
    if not isinstance(claims, dict):
        raise TokenError("the certificate's posture extension is not a JSON object")
    return claims


def _check_dns_name(name: str) -> None:
    labels = name.rstrip(".").split(".")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(part) for part in labels):
        raise CAError(f"not a DNS name: {name!r}")
    if "*" in labels[1:]:
        raise CAError(f"a wildcard is allowed only as the first label: {name!r}")


def issued_at(leaf: x509.Certificate) -> datetime:
    """When a certificate this CA made was issued (its notBefore is backdated)."""
    return leaf.not_valid_before_utc + BACKDATE


def _pair(issuer: _Issuer) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if issuer.key is None:
        raise CAError("the issuing intermediate's private key is missing")
    return issuer.certificate, issuer.key


def _retired_at(item: Mapping[str, Any]) -> datetime:
    """When a retired key of ``ca.json`` was retired. Files written before issue 14 hold
    only ``retire_after``, which was always the retirement plus ``MAX_SVID_TTL``."""
    if "retired_at" in item:
        return datetime.fromisoformat(item["retired_at"]).astimezone(UTC)
    return datetime.fromisoformat(item["retire_after"]).astimezone(UTC) - MAX_SVID_TTL


def _read_certificate(directory: Path, stem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / f"{stem}.pem").read_bytes())


def _read_pair(directory: Path, stem: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((directory / f"{stem}.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / f"{stem}.key").read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{stem}.key is not a P-256 key")
    if key.public_key() != cert.public_key():
        raise ValueError(f"{stem}.key does not match {stem}.pem")
    return cert, key


def _write(path: Path, data: bytes, mode: int, exclusive: bool) -> None:
    """Write ``data`` to ``path`` with ``mode`` set from the start, atomically (or exclusively)."""
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)
