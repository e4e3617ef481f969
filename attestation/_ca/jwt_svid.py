"""JWT-SVIDs: ES256 tokens signed by the CA's issuing key (header ``kid`` the RFC 7638
thumbprint of that key), carrying the attested posture under :data:`JWT_POSTURE_CLAIM`.

:func:`encode_jwt_svid` makes one, :func:`verify_jwt_svid` checks one against the CA's
keys; ``CertificateAuthority.issue_jwt`` and ``verify_jwt`` call them with its keys.
Errors: :class:`~attestation.CAError` (issuing), :class:`~attestation.TokenError`
(verifying).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from attestation._ca.jwk import jwk_thumbprint
from attestation._ca.lifetimes import MAX_JWT_TTL
from attestation._ca.spiffe_id import parse_spiffe_id
from attestation._errors import CAError, TokenError

__all__ = [
    "CLOCK_SKEW",
    "JWT_POSTURE_CLAIM",
    "encode_jwt_svid",
    "jwt_audiences",
    "verify_jwt_svid",
]

JWT_POSTURE_CLAIM = "https://docket.dev/posture"
CLOCK_SKEW = timedelta(seconds=30)
"""How far in the future a JWT-SVID's ``iat`` may lie (another replica's clock)."""


def jwt_audiences(audience: str | Sequence[str]) -> list[str]:
    """One audience or several, as a list. Raises ``CAError`` for none or an empty one."""
    audiences = [audience] if isinstance(audience, str) else list(audience)
    if not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise CAError("a JWT-SVID needs at least one non-empty audience")
    return audiences


def encode_jwt_svid(
    spiffe_id: str,
    audiences: Sequence[str],
    *,
    now: datetime,
    expires: datetime,
    claims: Mapping[str, Any] | None,
    key: ec.EllipticCurvePrivateKey,
) -> str:
    """A JWT-SVID for ``spiffe_id`` issued at ``now``, expiring at ``expires``, with a fresh
    ``jti`` (a UUIDv4), ``claims`` under :data:`JWT_POSTURE_CLAIM`, signed ES256 by
    ``key``. Raises ``CAError`` when the claims cannot be encoded."""
    payload: dict[str, Any] = {
        "sub": spiffe_id,
        "aud": audiences[0] if len(audiences) == 1 else list(audiences),
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
        # Names this token in the audit entries of the decisions it took part in.
        "jti": str(uuid.uuid4()),
    }
    if claims is not None:
        payload[JWT_POSTURE_CLAIM] = dict(claims)
    try:
        return jwt.encode(
            payload,
            key,
            algorithm="ES256",
            headers={"kid": jwk_thumbprint(key.public_key()), "typ": "JWT"},
        )
    except (TypeError, ValueError) as exc:
        raise CAError(f"cannot encode the JWT-SVID claims: {exc}") from exc


def verify_jwt_svid(
    token: str,
    audience: str,
    now: datetime,
    keys: Mapping[str, tuple[ec.EllipticCurvePublicKey, datetime | None]],
    trust_domain: str,
) -> dict[str, Any]:
    """The claims of a JWT-SVID signed by one of ``keys`` (``kid`` → the public key and,
    for a retired key, when it was retired), for ``audience``, valid at ``now`` (aware).

    Only ES256 with a ``kid`` of ``keys`` is accepted, and a retired key's token only
    when issued (``iat``) before its retirement. ``sub``, ``aud``, ``exp`` and ``iat``
    are required; at ``now`` the token must be unexpired (``exp``), valid already
    (``nbf``, if present) and not issued in the future (``iat``), and it may not live
    longer than ``MAX_JWT_TTL`` (``exp - iat``, and ``exp - now``): a stolen key could
    otherwise mint a token that outlives every revocation. ``sub`` must be a SPIFFE ID
    of ``trust_domain``. Raises ``TokenError``.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError(f"malformed JWT: {exc}") from exc
    if header.get("alg") != "ES256":
        raise TokenError(f"JWT algorithm {header.get('alg')!r} is not accepted; want ES256")
    found = keys.get(header.get("kid", ""))
    if found is None:
        raise TokenError(f"JWT key id {header.get('kid')!r} is not one of this CA's keys")
    public_key, retired_at = found
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=["ES256"],
            audience=audience,
            # Time is checked below against the caller's ``now``, not the clock.
            options={
                "require": ["sub", "aud", "exp", "iat"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise TokenError(f"JWT does not verify: {exc}") from exc
    exp, iat = _numeric_date(claims, "exp"), _numeric_date(claims, "iat")
    moment = now.timestamp()
    if moment >= exp:
        raise TokenError("JWT has expired")
    if "nbf" in claims and moment < _numeric_date(claims, "nbf"):
        raise TokenError("JWT is not yet valid (nbf)")
    if iat > moment + CLOCK_SKEW.total_seconds():
        raise TokenError("JWT was issued in the future (iat)")
    if retired_at is not None and iat > retired_at.timestamp():
        raise TokenError(
            "JWT was signed by an issuing key retired at "
            f"{retired_at:%Y-%m-%dT%H:%M:%SZ}, after its retirement"
        )
    cap = MAX_JWT_TTL.total_seconds()
    if exp - iat > cap or exp - moment > cap:
        raise TokenError(
            f"JWT lifetime exceeds the {MAX_JWT_TTL.total_seconds() / 60:g}-minute cap"
        )
    try:
        subject_domain, _ = parse_spiffe_id(str(claims["sub"]))
    except CAError as exc:
        raise TokenError(f"JWT subject is not a SPIFFE ID: {exc}") from exc
    if subject_domain != trust_domain:
        raise TokenError("JWT subject is not in this CA's trust domain")
    return claims


def _numeric_date(claims: Mapping[str, Any], name: str) -> int:
    """A NumericDate claim (RFC 7519 §2) as whole seconds. Raises ``TokenError``."""
    value = claims[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TokenError(f"JWT {name} is not an integer")
    return value
