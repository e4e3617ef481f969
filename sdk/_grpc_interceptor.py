"""Protect a gRPC application (``grpc.server``) with Docket decisions.

``DocketServerInterceptor`` asks Docket about every incoming call before its handler runs.
A ``grpc.ServerInterceptor`` is shown only the method name and the invocation metadata
(``HandlerCallDetails``), not the peer; so the interceptor wraps the handler and decides
inside it, where the ``ServicerContext`` gives the peer address and its TLS
``auth_context``. The mapper then sees a ``GrpcCall``: method, metadata, peer, the peer's
SPIFFE ID (from its mTLS certificate's URI SAN) and the raw auth context.

Outcomes (the handler runs only on an allow):

- allow: the handler runs as usual;
- deny: the call fails with PERMISSION_DENIED, ``denied by policy (decision <id>)``;
- Docket unreachable or overloaded (``TransportError``, ``OverloadedError``): the call
  fails closed with UNAVAILABLE, so that well-behaved clients retry later;
- no decision for any other reason (the mapper raised, e.g. no peer identity; Docket
  refused the request as invalid): PERMISSION_DENIED, ``no authorization decision``.

The caller never sees Docket's error text; it is logged on the ``sdk.grpc`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

import grpc
from pydantic import BaseModel, ConfigDict

from sdk._client import DecisionClient, EntityLike
from sdk._errors import ConfigurationError, DocketError, OverloadedError, TransportError
from sdk._models import AuthorizeRequest, EntityRef

__all__ = ["DocketServerInterceptor", "GrpcCall", "GrpcRequestMapper"]

_log = logging.getLogger("sdk.grpc")


class GrpcCall(BaseModel):
    """What is known about an incoming gRPC call when it is authorized.

    ``method`` is the full name (``/pkg.Service/Method``); ``peer`` is gRPC's peer string
    (``ipv4:10.0.0.7:51234``); ``spiffe_id`` is the peer's SPIFFE ID when the server uses
    TLS and the client presented a certificate with exactly one SPIFFE URI SAN, else
    ``None``; ``auth_context`` is gRPC's full TLS view of the peer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    peer: str = ""
    spiffe_id: str | None = None
    auth_context: dict[str, tuple[bytes, ...]] = {}

    @property
    def method_name(self) -> str:
        """The method's own name, the last segment of ``method`` (``Method``)."""
        return self.method.rsplit("/", 1)[-1]


GrpcRequestMapper = Callable[[GrpcCall], AuthorizeRequest | Mapping[str, Any]]
"""Turns a call into the Docket request that decides it; raising refuses the call."""


def _auth_context(context: grpc.ServicerContext) -> dict[str, tuple[bytes, ...]]:
    # The stubs say Mapping[str, bytes]; gRPC gives a list of values per property.
    raw: Mapping[str, Any] = context.auth_context()
    return {
        key: (values,) if isinstance(values, bytes) else tuple(values)
        for key, values in raw.items()
    }


def _spiffe_id(auth_context: Mapping[str, tuple[bytes, ...]]) -> str | None:
    values = auth_context.get("peer_spiffe_id", ())
    return values[0].decode() if len(values) == 1 else None


class DocketServerInterceptor(grpc.ServerInterceptor):
    """Authorize every call to a ``grpc.server`` with Docket; fail closed.

    By default the request is: principal ``Workload`` whose id is the peer's SPIFFE ID
    (the server must use mTLS: ``grpc.ssl_server_credentials(...,
    require_client_auth=True)``; a call without one is refused), action the method's own
    name (``Action::"GetRecord"``), resource the ``resource`` given here, empty context.
    Pass ``mapper`` to build the request yourself from a ``GrpcCall``. Methods listed in
    ``unprotected_methods`` (full names, e.g. ``/grpc.health.v1.Health/Check``) skip the
    check: an explicit, named bypass. Raises ``ConfigurationError`` when neither
    ``resource`` nor ``mapper`` is given. Sync servers only (not ``grpc.aio``).
    """

    def __init__(
        self,
        client: DecisionClient,
        *,
        resource: EntityLike | None = None,
        mapper: GrpcRequestMapper | None = None,
        unprotected_methods: Collection[str] = (),
    ) -> None:
        if mapper is None:
            if resource is None:
                raise ConfigurationError("give the resource the calls act on, or a mapper")
            mapper = self._spiffe_workload(EntityRef.model_validate(resource))
        self._client = client
        self._mapper = mapper
        self._unprotected = frozenset(unprotected_methods)

    @staticmethod
    def _spiffe_workload(resource: EntityRef) -> GrpcRequestMapper:
        def request(call: GrpcCall) -> AuthorizeRequest:
            if call.spiffe_id is None:
                raise PermissionError(f"{call.peer} presented no SPIFFE ID over mTLS")
            return AuthorizeRequest(
                principal=EntityRef(type="Workload", id=call.spiffe_id),
                action=EntityRef(type="Action", id=call.method_name),
                resource=resource,
            )

        return request

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the method's handler so that it runs only after Docket allows the call."""
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method in self._unprotected:
            return handler
        return self._guard(handler, handler_call_details)

    def _guard(
        self, handler: grpc.RpcMethodHandler[Any, Any], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any]:
        def guarded(behavior: Callable[[Any, grpc.ServicerContext], Any] | None) -> Any:
            if behavior is None:
                raise TypeError(f"{details.method}: the handler has no behavior for its kind")

            def run(request: Any, context: grpc.ServicerContext) -> Any:
                self._check(details, context)
                return behavior(request, context)

            return run

        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(guarded(handler.stream_stream), **codec)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(guarded(handler.stream_unary), **codec)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(guarded(handler.unary_stream), **codec)
        return grpc.unary_unary_rpc_method_handler(guarded(handler.unary_unary), **codec)

    def _check(self, details: grpc.HandlerCallDetails, context: grpc.ServicerContext) -> None:
        auth_context = _auth_context(context)
        call = GrpcCall(
            method=details.method,
            metadata=tuple((key, value) for key, value in details.invocation_metadata or ()),
            peer=context.peer(),
            spiffe_id=_spiffe_id(auth_context),
            auth_context=auth_context,
        )
        try:
            result = self._client.authorize(self._mapper(call))
        except (TransportError, OverloadedError) as exc:
            _log.warning("no decision for %s from %s: %s", call.method, call.peer, exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, "authorization service unavailable")
        except Exception as exc:  # the mapper is user code: any failure refuses the call
            kind = "docket" if isinstance(exc, DocketError) else "mapper"
            _log.warning("no decision (%s) for %s from %s: %s", kind, call.method, call.peer, exc)
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no authorization decision")
        if not result.allowed:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"denied by policy (decision {result.decision_id})",
            )
