"""The SDK's exceptions, and the one place gRPC status codes become them.

Every public call raises only these; a ``grpc.RpcError`` never reaches a caller (it is
chained as ``__cause__``)::

    DocketError
    ├── ConfigurationError      the client's own settings are unusable (unreadable TLS file)
    ├── TransportError          UNAVAILABLE (after the retries), DEADLINE_EXCEEDED,
    │                           CANCELLED, or the client is closed
    ├── InvalidRequestError     INVALID_ARGUMENT / OUT_OF_RANGE from the server (its message
    │                           names the field), or refused before sending: a float or an
    │                           out-of-range int in a context, a batch over 1,000 requests
    ├── OverloadedError         RESOURCE_EXHAUSTED after the retries: Docket pushes back,
    │                           try again later
    ├── PermissionDeniedError   PERMISSION_DENIED / UNAUTHENTICATED, e.g. ReloadBundle
    │                           refused for the caller's identity, an attestation refused
    ├── ServerError             any other status (INTERNAL, UNIMPLEMENTED, ...) or a
    │                           response the client cannot read
    └── TpmError                the device agent's TPM (tpm2-tools, tpm2-pytss) failed or
                                is missing

Pydantic validators raise :class:`CedarValueError` (a ``ValueError``, as pydantic wants)
for a value Cedar cannot carry; the client turns it into an ``InvalidRequestError``.

A *deny* is not an error: ``authorize`` returns an ``AuthorizeResult`` whose ``allowed``
is false.
"""

from __future__ import annotations

from typing import Any

import grpc

__all__ = [
    "CedarValueError",
    "ConfigurationError",
    "DocketError",
    "InvalidRequestError",
    "OverloadedError",
    "PermissionDeniedError",
    "ServerError",
    "TpmError",
    "TransportError",
    "error_from_rpc",
    "status_of",
]


class DocketError(Exception):
    """Base of every exception the Docket SDK raises.

    ``status`` is the gRPC status name (``"UNAVAILABLE"``, ...) when the error came from
    a call, else ``None``.
    """

    def __init__(self, message: str, *, status: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ConfigurationError(DocketError):
    """The client's settings cannot be used, e.g. a TLS file that cannot be read."""


class TransportError(DocketError):
    """Docket could not be reached in time: unavailable after the retries, deadline
    exceeded, cancelled, or the client was closed."""


class InvalidRequestError(DocketError):
    """The request is malformed: refused by the server (INVALID_ARGUMENT, whose message
    names the field) or by the client before sending."""


class OverloadedError(DocketError):
    """Docket is overloaded or a limit was hit (RESOURCE_EXHAUSTED); back off and retry."""


class PermissionDeniedError(DocketError):
    """The caller may not make this call (PERMISSION_DENIED or UNAUTHENTICATED), e.g. a
    ReloadBundle refused by policy for the caller's mTLS identity."""


class ServerError(DocketError):
    """Docket failed in a way the client cannot fix (INTERNAL, UNIMPLEMENTED, ...) or sent
    a response the client cannot read."""


class TpmError(DocketError):
    """The device agent's TPM failed: a tpm2-tools command exited non-zero (the message
    names the tool and carries its stderr), timed out, or is not installed."""


_BY_STATUS: dict[grpc.StatusCode, type[DocketError]] = {
    grpc.StatusCode.UNAVAILABLE: TransportError,
    grpc.StatusCode.DEADLINE_EXCEEDED: TransportError,
    grpc.StatusCode.CANCELLED: TransportError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequestError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: OverloadedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDeniedError,
}


def status_of(exc: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call (sync or asyncio); UNKNOWN when it has none."""
    code: Any = getattr(exc, "code", None)
    status = code() if callable(code) else None
    return status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _details_of(exc: grpc.RpcError) -> str:
    details: Any = getattr(exc, "details", None)
    text = details() if callable(details) else None
    return text if isinstance(text, str) and text else "(no details)"


def error_from_rpc(exc: grpc.RpcError, *, call: str, attempts: int = 1) -> DocketError:
    """Translate a failed gRPC call into the SDK exception for its status.

    ``call`` names what was attempted (``"Authorize on 127.0.0.1:50051"``); the server's
    message is kept verbatim, since for INVALID_ARGUMENT it names the offending field.
    """
    status = status_of(exc)
    kind = _BY_STATUS.get(status, ServerError)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return kind(f"{call} failed{tries}: {status.name}: {_details_of(exc)}", status=status.name)


class CedarValueError(ValueError):
    """A context or attribute value that Cedar (or the wire) cannot carry.

    ``path`` locates it below the field being validated (``device.patch_age_days``,
    ``tags[2]``), ``reason`` says what is wrong and what to send instead.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
