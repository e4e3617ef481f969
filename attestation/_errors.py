"""Exceptions raised by the attestation package.

    AttestationError
    ├── ParseError             TPM bytes are malformed (a structure, a length, a tag),
    │                          or posture claims are (Posture.from_claims)
    ├── EvidenceError          evidence parses but does not verify (signature, nonce,
    │                          PCR digest, key attributes, certificate chain, no
    │                          matching reference class)
    ├── EventLogError          a TCG boot event log is malformed (offset and reason), does
    │                          not replay to the quoted PCRs (the first PCR that differs),
    │                          or an event's data is not what its type says
    ├── CredentialError        a credential cannot be made (unsupported key, algorithm)
    │   └── CAError            the CA cannot do what was asked: a malformed or foreign
    │                          SPIFFE ID, a CSR whose signature does not verify, an
    │                          unsupported key, a CA directory that already exists, is
    │                          missing or is corrupt, a malformed revocation, a
    │                          revocation list that does not verify
    ├── TokenError             a JWT-SVID or X.509-SVID does not verify (signature, kid,
    │                          alg, aud, exp, nbf, iat in the future, lifetime over the
    │                          cap, signed by a retired key after its retirement)
    ├── StoreUnavailable       the challenge store's database cannot be opened, read or
    │                          written (nothing was consumed: retry)
    └── ReferenceError         reference values (``reference/*.toml``) are malformed;
                               ``problems`` holds every ``file:line: field: message``

Callers never see cryptography's exceptions: they are translated here.
"""

from __future__ import annotations

from collections.abc import Sequence


class AttestationError(Exception):
    """Base class of every error the attestation package raises."""


class ParseError(AttestationError):
    """TPM structure bytes are malformed: truncated, trailing bytes, an unknown tag; or
    posture claims (from a JWT or a certificate extension) are not exactly a posture's."""


class EvidenceError(AttestationError):
    """Evidence is well-formed but does not verify."""


class EventLogError(AttestationError):
    """A TCG PC Client boot event log is malformed (the message gives the offset and what
    is wrong), does not replay to the quoted PCRs (naming the first PCR that differs), or
    an event's data does not decode as its type says."""


class CredentialError(AttestationError):
    """A credential (TPM2_MakeCredential blob, certificate) cannot be made."""


class CAError(CredentialError):
    """The CA cannot do what was asked (bad SPIFFE ID, bad CSR, CA directory state)."""


class TokenError(AttestationError):
    """A JWT-SVID does not verify: malformed, bad signature, unknown kid, wrong alg, aud,
    expired, not yet valid, issued in the future or living longer than MAX_JWT_TTL."""


class StoreUnavailable(AttestationError):
    """The challenge store's database cannot be opened, read or written (or a challenge
    id is stored twice). Retry later or fix the database URL; nothing was consumed."""


class ReferenceError(AttestationError):
    """Reference values are malformed. ``problems`` lists every ``file:line: message``
    found (the field is named in the message); the exception's message joins them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems) or ("invalid reference values",)
        super().__init__("; ".join(self.problems))
