"""The one place engine errors become gRPC statuses, and what every servicer shares:
:func:`answer` runs an RPC (metrics, status mapping, no traceback to the caller) and
:func:`caller_identity` reads the mTLS peer's SPIFFE ID."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, Protocol, TypeVar, cast

import grpc
import structlog

from attestation import (
    AttestationError,
    CAError,
    EvidenceError,
    ParseError,
    StoreUnavailable,
    TokenError,
)
from audit import Overloaded, ProofError, StoreError
from engine._errors import BundleError, LimitExceeded, NotAuthorized, RequestError
from engine._service.metrics import Metrics

log = structlog.get_logger("docket.grpc")
T = TypeVar("T")

_SPIFFE_ID = "peer_spiffe_id"
AUDIT_UNAVAILABLE = "the audit log cannot record decisions now; the server log has the details"
_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (LimitExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # The audit writer's queue is full: push back, never answer without the entry.
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # The audit log cannot be written: fail closed, no answer without the entry.
    (StoreError, grpc.StatusCode.UNAVAILABLE),
    (RequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (ProofError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotAuthorized, grpc.StatusCode.PERMISSION_DENIED),
    (BundleError, grpc.StatusCode.FAILED_PRECONDITION),
    # Attestation: the challenge store is in the audit database.
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ParseError, grpc.StatusCode.INVALID_ARGUMENT),
    (CAError, grpc.StatusCode.INVALID_ARGUMENT),
    (EvidenceError, grpc.StatusCode.PERMISSION_DENIED),
    (TokenError, grpc.StatusCode.UNAUTHENTICATED),
    # Anything else the verifier refuses: reference values it cannot use.
    (AttestationError, grpc.StatusCode.FAILED_PRECONDITION),
)


class Measured(Protocol):
    """A service whose calls are counted in ``metrics``."""

    @property
    def metrics(self) -> Metrics: ...


def status_for(exc: Exception) -> grpc.StatusCode:
    """The gRPC status an engine error is reported with (INTERNAL for anything else)."""
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def caller_identity(context: grpc.ServicerContext) -> str | None:
    """The SPIFFE ID of an mTLS peer (its one ``spiffe://`` URI SAN), else None."""
    # grpc gives each property as a list of bytes (its type stubs say bytes).
    values = cast("list[bytes] | None", context.auth_context().get(_SPIFFE_ID))
    return values[0].decode() if values else None


def answer(
    service: Measured, api: str, context: grpc.ServicerContext, produce: Callable[[], T]
) -> T:
    """Run one RPC: track it in the metrics and turn engine errors into gRPC statuses.

    Unexpected errors are logged with their traceback and answered INTERNAL, so
    nothing a caller sends can take the server down.
    """
    metrics = service.metrics
    code = grpc.StatusCode.OK
    with metrics.track(api):
        try:
            return produce()
        except Exception as exc:
            code = status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("rpc.failed", api=api)
                message = "internal error; the server log has the details"
            elif code is grpc.StatusCode.UNAVAILABLE:
                # The database's own words name hosts and paths: for the log only.
                log.error("rpc.audit_unavailable", api=api, error=str(exc))
                message = AUDIT_UNAVAILABLE
            else:
                message = str(exc)
            _abort(context, code, message)
        finally:
            metrics.answered(api, code.name)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
