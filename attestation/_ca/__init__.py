"""Docket's certificate authority, by reason to change:

    spiffe_id.py    SPIFFE IDs and trust domains
    lifetimes.py    how long credentials live; the aware ``now`` the CA is given
    jwk.py          JSON Web Keys and thumbprints of the CA's keys
    jwt_svid.py     JWT-SVIDs: issuing and verifying
    revocations.py  the signed revocation list
    authority.py    the CA: root and issuing keys, rotation, files, X.509-SVIDs

Imports point down this list (``authority`` uses the rest). Every name the package
offers is importable from here; ``attestation`` exports the public ones.
"""

from attestation._ca.authority import (
    POSTURE_EXTENSION,
    CertificateAuthority,
    ServerCredential,
    issued_at,
)
from attestation._ca.jwk import jwk_thumbprint
from attestation._ca.jwt_svid import JWT_POSTURE_CLAIM
from attestation._ca.lifetimes import MAX_JWT_TTL, MAX_SVID_TTL
from attestation._ca.revocations import (
    REVOCATIONS_FILE,
    Revocation,
    RevocationKind,
    RevocationList,
    describe,
    load_revocations,
)
from attestation._ca.spiffe_id import parse_spiffe_id
from attestation._errors import CAError, TokenError

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
