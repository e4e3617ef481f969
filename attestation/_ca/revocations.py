"""Revocation: the signed list of revoked devices, SPIFFE IDs and certificate serials.

``docket ca revoke`` keeps a :class:`RevocationList` (devices by EK hash, SPIFFE IDs,
certificate serials), signed by the CA's **root** key as an ES256 JWS (flattened JSON
serialisation), with a version that only grows; :func:`sign_revocations` and
:func:`verify_revocations` make and check it (the CA's methods of those names call
them with its root), :func:`load_revocations` reads it from the CA directory
(:data:`REVOCATIONS_FILE`). Errors: :class:`~attestation.CAError`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal, Protocol

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from attestation._ca.jwk import b64url, jwk_thumbprint
from attestation._ca.lifetimes import check_now
from attestation._ca.spiffe_id import parse_spiffe_id
from attestation._errors import CAError

__all__ = [
    "REVOCATIONS_FILE",
    "REVOCATIONS_TYPE",
    "Revocation",
    "RevocationKind",
    "RevocationList",
    "RevocationSigner",
    "describe",
    "load_revocations",
    "sign_revocations",
    "verify_revocations",
]

REVOCATIONS_FILE = "revocations.json"
"""The signed revocation list, in the CA directory (see :class:`RevocationList`)."""
REVOCATIONS_TYPE = "docket-revocations+jws"
_MAX_REVOCATIONS_BYTES = 16 * 1024 * 1024

RevocationKind = Literal["device", "spiffe_id", "serial"]
_HEX_SERIAL = re.compile(r"[0-9a-f]{1,40}")
_EK_HASH = re.compile(r"[0-9a-f]{64}")


class Revocation(BaseModel):
    """One revoked device (hex SHA-256 of its EK), SPIFFE ID or certificate serial (hex,
    as audit entries write it), why, and since when."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: RevocationKind
    value: StrictStr = Field(min_length=1, max_length=2048)
    reason: StrictStr = Field(min_length=1, max_length=1024)
    revoked_at: StrictInt = Field(ge=0)
    """Seconds since the epoch (UTC)."""


class RevocationList(BaseModel):
    """The revocations of one trust domain, as signed and published.

    ``version`` grows by one with each revocation, so a replica or relying party that has
    seen version N refuses an older list put back (a rollback un-revokes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    trust_domain: StrictStr
    version: StrictInt = Field(ge=0)
    issued_at: StrictInt = Field(ge=0)
    revoked: tuple[Revocation, ...] = ()

    @classmethod
    def empty(cls, trust_domain: str) -> RevocationList:
        """No revocations (version 0): what holds before the first ``revoke``."""
        return cls(trust_domain=trust_domain, version=0, issued_at=0)

    def revoke(
        self, kind: RevocationKind, value: str, reason: str, now: datetime
    ) -> RevocationList:
        """This list and one more revocation, as the next version. ``value`` is
        normalised (lowercase hex); a SPIFFE ID must be in the trust domain. Raises
        ``CAError`` for a malformed value or one already revoked."""
        now = check_now(now)
        value = value.strip()
        if kind == "device":
            value = value.lower()
            if not _EK_HASH.fullmatch(value):
                raise CAError(f"a device is named by its EK hash, 64 hex digits: {value!r}")
        elif kind == "serial":
            value = value.lower().removeprefix("0x").lstrip("0") or "0"
            if not _HEX_SERIAL.fullmatch(value):
                raise CAError(f"a certificate serial is hex, at most 40 digits: {value!r}")
        else:
            trust_domain, _ = parse_spiffe_id(value)
            if trust_domain != self.trust_domain:
                raise CAError(f"{value!r} is not in the trust domain {self.trust_domain!r}")
        reason = reason.strip()
        if not reason or len(reason) > 1024:
            raise CAError("a revocation needs a reason of 1-1024 characters")
        if any(r.kind == kind and r.value == value for r in self.revoked):
            raise CAError(f"{kind} {value} is already revoked")
        moment = int(now.timestamp())
        entry = Revocation(kind=kind, value=value, reason=reason, revoked_at=moment)
        return self.model_copy(
            update={
                "version": self.version + 1,
                "issued_at": max(moment, self.issued_at),
                "revoked": (*self.revoked, entry),
            }
        )

    @cached_property
    def by_name(self) -> dict[tuple[str, str], Revocation]:
        """Each revocation by (kind, value): checked on every request, so a lookup, not
        a scan of a list that only grows."""
        return {(r.kind, r.value): r for r in self.revoked}

    def device(self, ek_hash: bytes) -> Revocation | None:
        """The revocation of the device with this EK hash, if it is revoked."""
        return self.by_name.get(("device", ek_hash.hex()))

    def refuses(self, spiffe_id: str, serial: int | None, issued: datetime) -> Revocation | None:
        """The revocation that refuses a credential for ``spiffe_id`` (with this serial,
        if a certificate) issued at ``issued``, else None.

        A revoked device's credentials are all refused (it cannot attest again); a
        revoked SPIFFE ID's, those issued up to the revocation (a later one is new); a
        revoked serial, that certificate.
        """
        if not self.revoked:
            return None
        by_name = self.by_name
        prefix = f"spiffe://{self.trust_domain}/device/"
        if spiffe_id.startswith(prefix):
            found = by_name.get(("device", spiffe_id.removeprefix(prefix)))
            if found is not None:
                return found
        found = by_name.get(("spiffe_id", spiffe_id))
        if found is not None and issued.timestamp() <= found.revoked_at:
            return found
        return None if serial is None else by_name.get(("serial", f"{serial:x}"))


def describe(revocation: Revocation) -> str:
    """``device <hash> revoked at <time>: <reason>``, for refusals and logs."""
    kind = revocation.kind.replace("_", " ")
    when = datetime.fromtimestamp(revocation.revoked_at, UTC)
    return f"{kind} {revocation.value} revoked at {when:%Y-%m-%dT%H:%M:%SZ}: {revocation.reason}"


def load_revocations(directory: Path, ca: RevocationSigner) -> tuple[RevocationList, bytes]:
    """The revocation list in ``directory`` (the CA's) and its signed document, after
    checking the signature with ``ca``'s root; an empty list signed now-less (version 0)
    when there is no file. Raises ``CAError``."""
    path = directory / REVOCATIONS_FILE
    try:
        with path.open("rb") as handle:
            document = handle.read(_MAX_REVOCATIONS_BYTES + 1)
    except FileNotFoundError:
        empty = RevocationList.empty(ca.trust_domain)
        return empty, ca.sign_revocations(empty)
    except OSError as exc:
        raise CAError(f"cannot read {path}: {exc.strerror}") from exc
    if len(document) > _MAX_REVOCATIONS_BYTES:
        raise CAError(f"{path} is larger than {_MAX_REVOCATIONS_BYTES} bytes")
    return ca.verify_revocations(document), document


class RevocationSigner(Protocol):
    """What :func:`load_revocations` needs of a CA: its trust domain, and signing and
    checking a list with its root."""

    @property
    def trust_domain(self) -> str: ...

    def sign_revocations(self, revocations: RevocationList) -> bytes: ...

    def verify_revocations(self, document: bytes) -> RevocationList: ...


def sign_revocations(
    revocations: RevocationList,
    trust_domain: str,
    root: x509.Certificate,
    root_key: ec.EllipticCurvePrivateKey,
) -> bytes:
    """``revocations`` as a signed document: a JWS (RFC 7515) in the flattened JSON
    serialisation, ES256 by ``root_key`` (``kid`` its RFC 7638 thumbprint, ``x5t#S256``
    the ``root`` certificate's SHA-256), payload the list's JSON. Raises ``CAError``."""
    if revocations.trust_domain != trust_domain:
        raise CAError("the revocation list is for another trust domain")
    payload = revocations.model_dump_json().encode()
    header = {
        "typ": REVOCATIONS_TYPE,
        "kid": jwk_thumbprint(root_key.public_key()),
        "x5t#S256": b64url(root.fingerprint(hashes.SHA256())),
    }
    compact = jwt.api_jws.encode(payload, root_key, algorithm="ES256", headers=header)
    protected, body, signature = compact.split(".")
    document = {"protected": protected, "payload": body, "signature": signature}
    return (json.dumps(document, indent=2) + "\n").encode()


def verify_revocations(
    document: bytes, trust_domain: str, root_key: ec.EllipticCurvePublicKey
) -> RevocationList:
    """The revocation list in a document :func:`sign_revocations` made, after checking its
    ES256 signature by ``root_key`` and its trust domain. Raises ``CAError``."""
    try:
        parsed = json.loads(document)
        if not isinstance(parsed, dict) or set(parsed) != {"protected", "payload", "signature"}:
            raise ValueError("want a flattened JWS: protected, payload, signature")
        compact = ".".join(str(parsed[part]) for part in ("protected", "payload", "signature"))
        header = jwt.get_unverified_header(compact)
        if header.get("typ") != REVOCATIONS_TYPE:
            raise ValueError(f"typ is {header.get('typ')!r}, want {REVOCATIONS_TYPE!r}")
        payload = jwt.api_jws.decode(compact, root_key, algorithms=["ES256"])
        revocations = RevocationList.model_validate_json(payload)
    except (ValueError, jwt.PyJWTError, ValidationError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CAError(f"the revocation list does not verify: {message}") from exc
    if revocations.trust_domain != trust_domain:
        raise CAError("the revocation list is for another trust domain")
    return revocations
