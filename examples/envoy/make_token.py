"""Make a signing key, its JWKS and a JWT for the Envoy example (examples/envoy/envoy.yaml).

Envoy's jwt_authn filter verifies the token against ``jwks.json`` and hands its payload to
Docket, which reads ``sub`` (the principal), ``mfa``/``amr`` and the inventory facts of
``device`` (``disk_encrypted``, ``managed``…; never ``attested``, which only a Docket
JWT-SVID from ``docket attest`` sets).
The key is made once per ``--out`` directory and reused, so every token printed verifies
against the JWKS that Envoy loaded when it started.

    .venv/bin/python examples/envoy/make_token.py --sub alice --mfa --healthy-device

prints a token (RS256) on stdout. Uses only ``cryptography``: a JWT is three base64url
parts, and signing one needs no other library. For trying the example only: a real
deployment takes tokens from its identity provider (or from ``docket attest``).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://idp.docket.example"
AUDIENCE = "docket-envoy-example"
KEY_ID = "docket-example-1"
DEFAULT_OUT = Path(__file__).resolve().parent / "secrets"
# What an MDM knows about the device, relayed by the identity provider. Whether the device
# is attested only Docket's own credential says (the x-docket-device-token header): Docket
# ignores "attested" and the other attested fields in an IdP's claims.
HEALTHY_DEVICE = {
    "disk_encrypted": True,
    "patch_age_days": 3,
    "trust_tier": "high",
    "managed": True,
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def signing_key(out: Path) -> rsa.RSAPrivateKey:
    """The key in ``out/signing-key.pem``, made (with ``out/jwks.json``) when missing."""
    key_path = out / "signing-key.pem"
    if key_path.exists():
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise SystemExit(f"make_token: {key_path} is not an RSA key; delete it to make one")
        return loaded
    out.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    numbers = key.public_key().public_numbers()
    jwks = {
        "keys": [
            {
                "kty": "RSA",
                "alg": "RS256",
                "use": "sig",
                "kid": KEY_ID,
                "n": _b64_int(numbers.n),
                "e": _b64_int(numbers.e),
            }
        ]
    }
    (out / "jwks.json").write_text(json.dumps(jwks, indent=2) + "\n")
    return key


def make_token(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    """A compact RS256 JWS of ``claims``."""
    header = {"alg": "RS256", "typ": "JWT", "kid": KEY_ID}
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="key and JWKS directory")
    parser.add_argument("--sub", default="alice", help="the user (an id in entities.json)")
    parser.add_argument("--mfa", action="store_true", help="claim MFA on this sign-in")
    parser.add_argument(
        "--healthy-device",
        action="store_true",
        help="claim an encrypted, managed, recently patched device (MDM facts; not attested)",
    )
    parser.add_argument("--claims", default="{}", help="more claims, a JSON object")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    args = parser.parse_args(argv)
    try:
        extra = json.loads(args.claims)
    except json.JSONDecodeError as exc:
        parser.error(f"--claims: not JSON: {exc}")
    if not isinstance(extra, dict):
        parser.error("--claims: must be a JSON object")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": args.sub,
        "iat": now,
        "exp": now + args.ttl,
    }
    if args.mfa:
        claims["mfa"] = True
    if args.healthy_device:
        claims["device"] = HEALTHY_DEVICE
    claims.update(extra)
    print(make_token(signing_key(args.out), claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
