"""The credentials on disk: a fresh device key and its CSR, and the files ``attest``
writes (``svid.pem``, ``svid.key``, ``bundle.pem``, ``jwt``), each replaced atomically,
the secret ones 0600, in a directory created 0700."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sdk._errors import ConfigurationError
from sdk.v1 import attestation_pb2 as pb

__all__ = [
    "BUNDLE_FILE",
    "DEVICE_CN",
    "JWT_FILE",
    "KEY_FILE",
    "SVID_FILE",
    "credential_files",
    "device_key_and_csr",
    "prepare_out",
    "write_atomically",
]

SVID_FILE: Final = "svid.pem"
KEY_FILE: Final = "svid.key"
BUNDLE_FILE: Final = "bundle.pem"
JWT_FILE: Final = "jwt"
DEVICE_CN: Final = "docket device"


def device_key_and_csr() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh ECDSA P-256 device key and its DER PKCS#10 request (the server sets the
    SPIFFE ID, so the subject is only a label)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE_CN)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.DER)


def prepare_out(out: Path) -> Path:
    """Create ``out`` (mode 0700) when missing. Raises ``ConfigurationError``."""
    try:
        if not out.is_dir():
            out.mkdir(mode=0o700, parents=True)
            out.chmod(0o700)  # mkdir's mode is masked by the umask
    except OSError as exc:
        raise ConfigurationError(f"cannot create the output directory {out}: {exc}") from exc
    return out


def write_atomically(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Write ``{name: (content, mode)}`` into ``directory`` so that each file is either
    the old or the new one: every file is first written and fsynced under a temporary
    name in the same directory, then all are renamed over the old ones together.

    Raises ``ConfigurationError`` when a file cannot be written (the old set stays).
    """
    staged: list[tuple[str, Path]] = []
    try:
        for name, (content, mode) in files.items():
            # mkstemp creates the file 0600, so a key is never readable by others.
            fd, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            staged.append((name, Path(temp_name)))
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fchmod(handle.fileno(), mode)
                os.fsync(handle.fileno())
        for name, temp in staged:
            os.replace(temp, directory / name)
        staged.clear()
        _fsync_directory(directory)
    except OSError as exc:
        raise ConfigurationError(f"cannot write the credentials into {directory}: {exc}") from exc
    finally:
        for _, temp in staged:
            temp.unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def credential_files(
    response: pb.AttestResponse, key: ec.EllipticCurvePrivateKey
) -> dict[str, tuple[bytes, int]]:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return {
        SVID_FILE: (response.svid_pem.encode(), 0o644),
        KEY_FILE: (key_pem, 0o600),
        BUNDLE_FILE: (response.bundle_pem.encode(), 0o644),
        # a JWT-SVID is a bearer token: as secret as the key while it lives
        JWT_FILE: (response.jwt.encode(), 0o600),
    }
