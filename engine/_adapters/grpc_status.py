"""The one place engine errors become gRPC statuses, and what every servicer shares:
:func:`answer` runs an RPC (metrics, status mapping, no traceback to the caller),
:func:`answer_async` the same for a coroutine on the server's event loop, and
:func:`caller_identity` reads the mTLS peer's SPIFFE ID."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar, cast

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
_CODES: dict[grpc.StatusCode, tuple[type[Exception], ...]] = {
    # Too much asked at once, or the audit writer's queue is full: push back, never
    # answer without the entry.
    grpc.StatusCode.RESOURCE_EXHAUSTED: (LimitExceeded, Overloaded),
    # The audit log (and the challenge store in its database) cannot be written: fail
    # closed, no answer without the entry.
    grpc.StatusCode.UNAVAILABLE: (StoreError, StoreUnavailable),
    grpc.StatusCode.INVALID_ARGUMENT: (RequestError, ProofError, ParseError, CAError),
    grpc.StatusCode.PERMISSION_DENIED: (NotAuthorized, EvidenceError),
    grpc.StatusCode.UNAUTHENTICATED: (TokenError,),
    # A bundle that does not load; anything else the verifier refuses (reference values
    # it cannot use).
    grpc.StatusCode.FAILED_PRECONDITION: (BundleError, AttestationError),
}
_STATUS = {kind: code for code, kinds in _CODES.items() for kind in kinds}


class Measured(Protocol):
    """A service whose calls are counted in ``metrics``."""

    @property
    def metrics(self) -> Metrics: ...


def status_for(exc: Exception) -> grpc.StatusCode:
    """The gRPC status an engine error is reported with: that of the most specific class
    of ``exc`` that :data:`_CODES` names (INTERNAL for anything else)."""
    for kind in type(exc).__mro__:
        code = _STATUS.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


Context = grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any]
"""A call's context, on a thread (sync handlers) or on the event loop (grpc.aio)."""


def caller_identity(context: Context) -> str | None:
    """The SPIFFE ID of an mTLS peer (its one ``spiffe://`` URI SAN), else None."""
    return caller_of(context.auth_context())


def caller_of(auth: Mapping[str, Any]) -> str | None:
    """:func:`caller_identity` from a call's ``auth_context()``, read once by a caller
    that needs more of it."""
    # grpc gives each property as a list of bytes (its type stubs say bytes).
    values = cast("list[bytes] | None", auth.get(_SPIFFE_ID))
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
            code, message = _failed(api, exc)
            context.abort(code, message)
            raise AssertionError("unreachable: context.abort raises") from exc  # pragma: no cover
        finally:
            metrics.answered(api, code.name)


async def answer_async(
    service: Measured,
    api: str,
    context: grpc.aio.ServicerContext[Any, Any],
    produce: Callable[[], Awaitable[T]],
) -> T:
    """:func:`answer` for an RPC served on the event loop (grpc.aio)."""
    metrics = service.metrics
    code = grpc.StatusCode.OK
    with metrics.track(api):
        try:
            return await produce()
        except asyncio.CancelledError:
            # The caller went away (or its deadline passed) while the call waited: no
            # answer is sent; entries already queued are committed all the same.
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code, message = _failed(api, exc)
            await context.abort(code, message)
            raise AssertionError("unreachable: context.abort raises") from exc  # pragma: no cover
        finally:
            metrics.answered(api, code.name)


def _failed(api: str, exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and message a failed RPC is answered with (and its log line)."""
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("rpc.failed", api=api, exc_info=exc)
        return code, "internal error; the server log has the details"
    if code is grpc.StatusCode.UNAVAILABLE:
        # The database's own words name hosts and paths: for the log only.
        log.error("rpc.audit_unavailable", api=api, error=str(exc))
        return code, AUDIT_UNAVAILABLE
    return code, str(exc)
