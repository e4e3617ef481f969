"""The one error → gRPC status table: the most specific error class decides."""

from __future__ import annotations

import grpc
import pytest

import attestation as att
from audit import LogIdentityError, Overloaded, ProofError, StoreError
from engine._adapters.grpc_status import status_for
from engine._errors import BundleError, LimitExceeded, NotAuthorized, RequestError

Code = grpc.StatusCode
CASES = [
    ("a request over a limit", LimitExceeded("x"), Code.RESOURCE_EXHAUSTED),
    ("the audit queue full (a StoreError)", Overloaded("x"), Code.RESOURCE_EXHAUSTED),
    ("the audit log unwritable", StoreError("x"), Code.UNAVAILABLE),
    ("the audit log lost", LogIdentityError("x"), Code.UNAVAILABLE),
    ("the challenge store down", att.StoreUnavailable("x"), Code.UNAVAILABLE),
    ("a malformed request", RequestError("x"), Code.INVALID_ARGUMENT),
    ("a proof asked of what is not there", ProofError("x"), Code.INVALID_ARGUMENT),
    ("malformed evidence", att.ParseError("x"), Code.INVALID_ARGUMENT),
    ("a CSR the CA refuses", att.CAError("x"), Code.INVALID_ARGUMENT),
    ("not permitted by policy", NotAuthorized("x"), Code.PERMISSION_DENIED),
    ("evidence that does not verify", att.EvidenceError("x"), Code.PERMISSION_DENIED),
    ("a device token that does not verify", att.TokenError("x"), Code.UNAUTHENTICATED),
    ("a bundle that does not load", BundleError("x"), Code.FAILED_PRECONDITION),
    ("anything else attestation refuses", att.AttestationError("x"), Code.FAILED_PRECONDITION),
    ("a bug", ValueError("x"), Code.INTERNAL),
]


@pytest.mark.parametrize(("error", "code"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_status_for(error: Exception, code: grpc.StatusCode) -> None:
    assert status_for(error) is code
