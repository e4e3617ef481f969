"""What the agent holds and serves: the device's X.509-SVID (chain, key, trust bundle) as
read back from the files ``attest`` wrote, the JWT-SVID keys derived from the bundle, and
the checks ``ValidateJWTSVID`` makes. Pure but for ``load_identity``, which reads files."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sdk._errors import InvalidRequestError, ServerError
from sdk.agent._credentials import BUNDLE_FILE, KEY_FILE, SVID_FILE

__all__ = ["MAX_JWT_LIFETIME", "Identity", "load_identity", "validate_jwt_svid"]

MAX_JWT_LIFETIME: Final = 300
"""Seconds a JWT-SVID may live (Docket's cap, ``attestation/_ca/lifetimes.py``): a token
claiming longer was not minted by Docket's CA."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The JWK of a P-256 key, its ``kid`` the RFC 7638 thumbprint (as Docket's CA names
    the key that signs JWT-SVIDs), ``use`` as the SPIFFE bundle format has it."""
    numbers = key.public_numbers()
    x = _b64url(numbers.x.to_bytes(32, "big"))
    y = _b64url(numbers.y.to_bytes(32, "big"))
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True
    )
    kid = _b64url(hashlib.sha256(canonical.encode()).digest())
    return {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "jwt-svid"}


def _der(certs: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.DER) for c in certs)


@dataclass(frozen=True)
class Identity:
    """One X.509-SVID of the device with its key and trust bundle.

    ``received_at`` is when the agent got it (its clock): the certificate's notBefore is
    backdated for clock skew, so its lifetime is counted from here.
    """

    spiffe_id: str
    chain: tuple[x509.Certificate, ...]
    key_der: bytes
    bundle: tuple[x509.Certificate, ...]
    received_at: datetime

    @property
    def expires_at(self) -> datetime:
        return self.chain[0].not_valid_after_utc

    @property
    def serial(self) -> int:
        return self.chain[0].serial_number

    @property
    def trust_domain(self) -> str:
        """``spiffe://docket.local``: the key SPIFFE's bundle maps use."""
        return "spiffe://" + self.spiffe_id.removeprefix("spiffe://").partition("/")[0]

    def chain_der(self) -> bytes:
        """The chain as the Workload API sends it: DER certificates, the leaf first."""
        return _der(self.chain)

    def bundle_der(self) -> bytes:
        return _der(self.bundle)

    def jwt_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        """The keys that sign this trust domain's JWT-SVIDs, by ``kid``: Docket's CA signs
        them with its issuing intermediates' keys, the CA certificates of the bundle that
        are not self-signed (and the one that issued this SVID)."""
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for cert in (*self.chain[1:], *self.bundle):
            key = cert.public_key()
            if cert.issuer == cert.subject or not isinstance(key, ec.EllipticCurvePublicKey):
                continue
            if isinstance(key.curve, ec.SECP256R1):
                keys[_jwk(key)["kid"]] = key
        return keys

    def jwks(self) -> bytes:
        """The JWT bundle: a JWK Set (JSON) of ``jwt_keys``."""
        keys = [_jwk(key) for key in self.jwt_keys().values()]
        return json.dumps({"keys": keys}, sort_keys=True).encode()


def load_identity(out: Path, received_at: datetime) -> Identity:
    """The SVID ``attest`` wrote into ``out`` (svid.pem, svid.key, bundle.pem). Raises
    ``ServerError`` when they cannot be read or do not hold a SPIFFE SVID."""
    try:
        chain = tuple(x509.load_pem_x509_certificates((out / SVID_FILE).read_bytes()))
        bundle = tuple(x509.load_pem_x509_certificates((out / BUNDLE_FILE).read_bytes()))
        key = serialization.load_pem_private_key((out / KEY_FILE).read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ServerError(f"cannot read the credentials attest wrote into {out}: {exc}") from exc
    try:
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
        (spiffe_id,) = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except (x509.ExtensionNotFound, ValueError) as exc:
        raise ServerError("the SVID does not carry exactly one SPIFFE ID") from exc
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Identity(spiffe_id, chain, key_der, bundle, received_at)


def validate_jwt_svid(
    token: str, audience: str, identity: Identity, now: datetime
) -> tuple[str, dict[str, Any]]:
    """The SPIFFE ID and claims of a JWT-SVID of ``identity``'s trust domain, for
    ``audience``, valid at ``now``: ES256, signed by a key of ``identity.jwt_keys()``
    (``kid``), ``sub`` a SPIFFE ID of the trust domain, ``aud`` holding ``audience``,
    ``exp`` ahead, ``nbf`` (if any) behind, living at most Docket's 5 minutes. Raises
    ``InvalidRequestError`` saying what is wrong."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidRequestError(f"malformed JWT-SVID: {exc}") from exc
    if header.get("alg") != "ES256":
        raise InvalidRequestError(f"JWT-SVID algorithm {header.get('alg')!r} is not ES256")
    key = identity.jwt_keys().get(str(header.get("kid", "")))
    if key is None:
        raise InvalidRequestError(
            f"JWT-SVID key id {header.get('kid')!r} is not in the bundle of {identity.trust_domain}"
        )
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            audience=audience,
            # time is checked below against ``now``
            options={"require": ["sub", "aud", "exp"], "verify_exp": False, "verify_nbf": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidRequestError(f"JWT-SVID does not verify: {exc}") from exc
    moment = now.timestamp()
    exp = claims["exp"]
    if not isinstance(exp, int) or isinstance(exp, bool) or moment >= exp:
        raise InvalidRequestError("JWT-SVID has expired")
    if isinstance(claims.get("nbf"), int) and moment < claims["nbf"]:
        raise InvalidRequestError("JWT-SVID is not valid yet (nbf)")
    if exp - moment > MAX_JWT_LIFETIME:
        raise InvalidRequestError("JWT-SVID lives longer than Docket's 5-minute cap")
    subject = str(claims["sub"])
    if not subject.startswith(identity.trust_domain + "/"):
        raise InvalidRequestError(
            f"JWT-SVID subject {subject!r} is not in the trust domain {identity.trust_domain}"
        )
    return subject, claims
