"""Ed25519 signatures over a bundle's version.

A bundle's version is the sha256 of its files (``bundle.sig`` excluded), so signing
the version signs every file. ``bundle.sig`` holds one line:
``ed25519 <key id> <base64 signature>``, where the key id is the first 8 bytes of
sha256 over the raw public key, in hex, so that a reader can tell which key signed.

The signature says who made a bundle, not that it is the newest: ``bundle.toml``'s
``[bundle] name`` and ``revision`` are inside the version, so they are signed too, and a
replica refuses a revision lower than one it accepted (:mod:`engine._service.bundle_revisions`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from engine._errors import SignatureError

SIGNATURE_FILE = "bundle.sig"
_CONTEXT = b"docket policy bundle v1\n"


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short hex id of a public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM). Raises :class:`SignatureError`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SignatureError(f"{path}: cannot read key: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM). Raises :class:`SignatureError`."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise SignatureError(f"{path}: cannot read key: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key")
    return key


def sign_version(version: str, private_key: Ed25519PrivateKey) -> str:
    """The ``bundle.sig`` line for ``version``."""
    signature = private_key.sign(_CONTEXT + version.encode())
    kid = key_id(private_key.public_key())
    return f"ed25519 {kid} {base64.b64encode(signature).decode()}\n"


def verify_version(version: str, signature_file: bytes | None, public_key: Ed25519PublicKey) -> str:
    """Check ``bundle.sig`` against ``version``; return the signing key id or raise."""
    if signature_file is None:
        raise SignatureError(f"{SIGNATURE_FILE}: missing, and a bundle public key is configured")
    try:
        algorithm, kid, encoded = signature_file.decode("ascii").split()
        signature = base64.b64decode(encoded, validate=True)
    except (UnicodeDecodeError, ValueError, binascii.Error) as exc:
        raise SignatureError(
            f"{SIGNATURE_FILE}:1: expected 'ed25519 <key id> <base64 signature>'"
        ) from exc
    if algorithm != "ed25519":
        raise SignatureError(f"{SIGNATURE_FILE}:1: unsupported algorithm {algorithm!r}")
    expected = key_id(public_key)
    if kid != expected:
        raise SignatureError(
            f"{SIGNATURE_FILE}:1: signed by key {kid}, but the configured key is {expected}"
        )
    try:
        public_key.verify(signature, _CONTEXT + version.encode())
    except InvalidSignature as exc:
        raise SignatureError(
            f"{SIGNATURE_FILE}:1: signature does not match the bundle's files"
        ) from exc
    return kid
