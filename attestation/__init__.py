"""TPM 2.0 attestation: evidence → verified posture → short-lived credentials.

What the rest of Docket uses, and all it may import from here:

- **the verifier** (pure): :func:`begin_enrollment` checks an EK certificate against
  :class:`TrustRoots` and makes the credential challenge; :func:`verify_answer` checks
  the activated credential, the quote and the PCRs (:func:`finish_attestation`) and
  appraises them against :class:`ReferenceValues` (:func:`appraise_any`): it returns
  :class:`Attested`, the :class:`Posture` and what to persist (:class:`ToPersist`);
  :func:`check_ek_root` and :func:`check_quote_hashes` check a root and the quote hash
  policy up front;
- **reference values**: :func:`parse_reference`, :func:`appraise_any`;
- **the CA**: :class:`CertificateAuthority` (X.509- and JWT-SVIDs),
  :class:`RevocationList`, :func:`load_revocations`, :func:`describe`,
  :func:`issued_at`;
- **the challenge store**: :class:`ChallengeStore` (single-use challenges, in the
  audit database): ``read`` before :func:`verify_answer`, ``write`` after;
- **TPM algorithm names** for the quote hash policy, and :func:`load_pem_certificates`
  for EK root files real vendors ship;
- **errors**: :class:`AttestationError` and its tree (:mod:`attestation._errors`).

The package never imports ``engine``.

Names are imported on first use (PEP 562): importing a submodule (``attestation.cli``,
``docket --version``) does not load everything the package can do.
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:
    from attestation._ca.authority import CertificateAuthority, issued_at
    from attestation._ca.jwt_svid import JWT_POSTURE_CLAIM
    from attestation._ca.revocations import (
        REVOCATIONS_FILE,
        RevocationList,
        describe,
        load_revocations,
    )
    from attestation._der import load_pem_certificates
    from attestation._errors import (
        AttestationError,
        CAError,
        CredentialError,
        EvidenceError,
        ParseError,
        ReferenceError,
        StoreUnavailable,
        TokenError,
    )
    from attestation._posture import Posture
    from attestation._reference import ReferenceValues, parse_reference
    from attestation._store import ChallengeStore
    from attestation._tpm import ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512, hash_name
    from attestation._verifier import (
        DEFAULT_QUOTE_HASHES,
        QUOTE_HASHES,
        Attested,
        Challenge,
        ToPersist,
        TrustRoots,
        UnverifiedEnrollment,
        appraise_any,
        begin_enrollment,
        check_ek_root,
        check_quote_hashes,
        finish_attestation,
        verify_answer,
    )

_WHERE = {
    "ALG_SHA1": "attestation._tpm",
    "ALG_SHA256": "attestation._tpm",
    "ALG_SHA384": "attestation._tpm",
    "ALG_SHA512": "attestation._tpm",
    "AttestationError": "attestation._errors",
    "Attested": "attestation._verifier",
    "CAError": "attestation._errors",
    "CertificateAuthority": "attestation._ca.authority",
    "Challenge": "attestation._verifier",
    "ChallengeStore": "attestation._store",
    "CredentialError": "attestation._errors",
    "DEFAULT_QUOTE_HASHES": "attestation._verifier",
    "EvidenceError": "attestation._errors",
    "JWT_POSTURE_CLAIM": "attestation._ca.jwt_svid",
    "ParseError": "attestation._errors",
    "Posture": "attestation._posture",
    "QUOTE_HASHES": "attestation._verifier",
    "REVOCATIONS_FILE": "attestation._ca.revocations",
    "ReferenceError": "attestation._errors",
    "ReferenceValues": "attestation._reference",
    "RevocationList": "attestation._ca.revocations",
    "StoreUnavailable": "attestation._errors",
    "TokenError": "attestation._errors",
    "ToPersist": "attestation._verifier",
    "TrustRoots": "attestation._verifier",
    "UnverifiedEnrollment": "attestation._verifier",
    "appraise_any": "attestation._verifier",
    "begin_enrollment": "attestation._verifier",
    "check_ek_root": "attestation._verifier",
    "check_quote_hashes": "attestation._verifier",
    "describe": "attestation._ca.revocations",
    "finish_attestation": "attestation._verifier",
    "hash_name": "attestation._tpm",
    "issued_at": "attestation._ca.authority",
    "load_pem_certificates": "attestation._der",
    "load_revocations": "attestation._ca.revocations",
    "parse_reference": "attestation._reference",
    "verify_answer": "attestation._verifier",
}
"""Each exported name and the module that defines it."""


def __getattr__(name: str) -> typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "ALG_SHA1",
    "ALG_SHA256",
    "ALG_SHA384",
    "ALG_SHA512",
    "DEFAULT_QUOTE_HASHES",
    "JWT_POSTURE_CLAIM",
    "QUOTE_HASHES",
    "REVOCATIONS_FILE",
    "AttestationError",
    "Attested",
    "CAError",
    "CertificateAuthority",
    "Challenge",
    "ChallengeStore",
    "CredentialError",
    "EvidenceError",
    "ParseError",
    "Posture",
    "ReferenceError",
    "ReferenceValues",
    "RevocationList",
    "StoreUnavailable",
    "ToPersist",
    "TokenError",
    "TrustRoots",
    "UnverifiedEnrollment",
    "appraise_any",
    "begin_enrollment",
    "check_ek_root",
    "check_quote_hashes",
    "describe",
    "finish_attestation",
    "hash_name",
    "issued_at",
    "load_pem_certificates",
    "load_revocations",
    "parse_reference",
    "verify_answer",
]
