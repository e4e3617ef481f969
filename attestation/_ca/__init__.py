"""Docket's certificate authority (see :mod:`attestation._ca.authority`).

Every name of the CA, importable from here as before it became a package.
"""

from attestation._ca.authority import (
    JWT_POSTURE_CLAIM,
    MAX_JWT_TTL,
    MAX_SVID_TTL,
    POSTURE_EXTENSION,
    REVOCATIONS_FILE,
    CAError,
    CertificateAuthority,
    Revocation,
    RevocationKind,
    RevocationList,
    ServerCredential,
    TokenError,
    describe,
    issued_at,
    jwk_thumbprint,
    load_revocations,
    parse_spiffe_id,
)

__all__ = [
    "JWT_POSTURE_CLAIM",
    "MAX_JWT_TTL",
    "MAX_SVID_TTL",
    "POSTURE_EXTENSION",
    "REVOCATIONS_FILE",
    "CAError",
    "CertificateAuthority",
    "Revocation",
    "RevocationKind",
    "RevocationList",
    "ServerCredential",
    "TokenError",
    "describe",
    "issued_at",
    "jwk_thumbprint",
    "load_revocations",
    "parse_spiffe_id",
]
