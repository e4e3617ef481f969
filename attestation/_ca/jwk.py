"""JSON Web Keys of the CA's P-256 keys: the JWKS entry and the RFC 7638 thumbprint that
names a key (a JWT-SVID's and the revocation list's ``kid``)."""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import ec

from attestation._errors import CAError

__all__ = ["b64url", "jwk", "jwk_thumbprint"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _ec_coordinates(key: ec.EllipticCurvePublicKey) -> tuple[str, str]:
    numbers = key.public_numbers()
    return b64url(numbers.x.to_bytes(32, "big")), b64url(numbers.y.to_bytes(32, "big"))


def jwk_thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint of a P-256 public key, base64url without padding."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise CAError(f"JWK thumbprints are made for P-256 keys only, not {key.curve.name}")
    x, y = _ec_coordinates(key)
    canonical = json.dumps(
        {"crv": "P-256", "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True
    )
    return b64url(hashlib.sha256(canonical.encode()).digest())


def jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    x, y = _ec_coordinates(key)
    kid = jwk_thumbprint(key)
    return {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}
