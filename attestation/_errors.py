"""Exceptions raised by the attestation package.

    AttestationError
    ├── ParseError             TPM bytes are malformed (a structure, a length, a tag)
    ├── EvidenceError          evidence parses but does not verify (signature, nonce,
    │                          PCR digest, key attributes, certificate chain)
    └── CredentialError        a credential cannot be made (unsupported key, algorithm)

Callers never see cryptography's exceptions: they are translated here.
"""

from __future__ import annotations


class AttestationError(Exception):
    """Base class of every error the attestation package raises."""


class ParseError(AttestationError):
    """TPM structure bytes are malformed: truncated, trailing bytes, an unknown tag."""


class EvidenceError(AttestationError):
    """Evidence is well-formed but does not verify."""


class CredentialError(AttestationError):
    """A credential (TPM2_MakeCredential blob, certificate) cannot be made."""
