"""The decision clients: ``DecisionClient`` (blocking) and ``AsyncDecisionClient`` (asyncio).

Both share everything but the waiting: settings, request building and validation
(``_convert``), the retry policy gRPC applies to their channel (``_retry``) and error
mapping (``_errors``). Each holds one channel for its lifetime; the asyncio client opens
it on first use, so it may be constructed outside the event loop that uses it (e.g. at
import time of an ASGI app).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypedDict, TypeVar, Unpack

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2

from sdk import _convert
from sdk._closing import Closing
from sdk._errors import ConfigurationError, DocketError, ServerError, TransportError, error_from_rpc
from sdk._models import (
    AuthorizeRequest,
    AuthorizeResult,
    Entity,
    EntityRef,
    Placement,
    PlacementRequest,
    ReloadResult,
)
from sdk._retry import RetryPolicy
from sdk._tls import TLSConfig
from sdk.v1 import decisions_pb2 as pb
from sdk.v1.decisions_pb2_grpc import DecisionsStub

if TYPE_CHECKING:
    from sdk.v1.decisions_pb2_grpc import DecisionsAsyncStub

__all__ = ["DEFAULT_TARGET", "AsyncDecisionClient", "DecisionClient", "HealthStatus"]

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where ``docket serve`` listens for gRPC by default."""

DECISIONS_SERVICE = "docket.v1.Decisions"
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_HEALTH_RPC = "Health.Check"

HealthStatus = Literal["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"]
"""The grpc.health.v1 serving status of a service, by name."""

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")

EntityLike = EntityRef | Mapping[str, Any]
"""An entity uid as a model or a ``{"type": ..., "id": ...}`` dict."""


class RequestParts(TypedDict, total=False):
    """The optional parts of an authorization request, as keyword arguments."""

    context: Mapping[str, Any]
    entities: Iterable[Entity | Mapping[str, Any]]
    device_token: str


class PlacementOptions(TypedDict, total=False):
    """The placement request's fields besides ``workload_id``, as keyword arguments.

    ``kind`` is ``"workload"`` or ``"dataset"``; ``classification`` one of ``public``,
    ``internal`` (the default), ``confidential``, ``restricted``; ``residency`` the
    jurisdictions the data may live in; ``sites`` the candidates (default: the catalog).
    """

    kind: Literal["workload", "dataset"]
    classification: Literal["public", "internal", "confidential", "restricted"]
    residency: Iterable[str]
    regulated: bool
    accelerator: str
    latency_budget_ms: float
    users_in: str
    context: Mapping[str, Any]
    sites: Iterable[str]


def _health_status(response: health_pb2.HealthCheckResponse) -> HealthStatus:
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if name not in ("SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"):
        return "UNKNOWN"
    return name  # type: ignore[return-value]  # narrowed by the membership test


def _health_check(channel: Any) -> Any:
    return channel.unary_unary(
        _HEALTH_CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


class _ClientBase:
    """Settings and the request/response work both clients share."""

    MAX_BATCH = _convert.MAX_BATCH
    """The most requests ``authorize_batch`` sends in one call."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = 1.0,
        retries: int = 3,
        tls: TLSConfig | None = None,
        initial_backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout}")
        self.target = target
        self.timeout = timeout
        self._retry = RetryPolicy(
            retries=retries, initial_backoff=initial_backoff, max_backoff=max_backoff
        )
        self._credentials = tls.channel_credentials() if tls is not None else None
        tls_options = tls.channel_options() if tls is not None else []
        self._options = [*tls_options, *self._retry.channel_options()]
        self._closed = False
        self._connect()

    def _connect(self) -> None:
        raise NotImplementedError

    def _dial(self, api: Any) -> Any:
        # `api` is `grpc` or `grpc.aio`: both name their channel factories alike.
        if self._credentials is None:
            return api.insecure_channel(self.target, options=self._options)
        return api.secure_channel(self.target, self._credentials, options=self._options)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"the Docket client for {self.target} is closed")

    def _error(self, rpc: str, exc: grpc.RpcError) -> DocketError:
        """``exc`` as the SDK's error, naming the call and the attempts gRPC made."""
        method = _HEALTH_CHECK[1:] if rpc == _HEALTH_RPC else f"{DECISIONS_SERVICE}/{rpc}"
        attempts = self._retry.attempts(method, exc)
        return error_from_rpc(exc, call=f"{rpc} on {self.target}", attempts=attempts)

    @staticmethod
    def _authorize_message(
        principal: AuthorizeRequest | EntityLike,
        action: EntityLike | str | None,
        resource: EntityLike | None,
        parts: RequestParts,
    ) -> pb.AuthorizeRequest:
        request = _convert.authorize_request(principal, action, resource, **parts)
        return _convert.authorize_request_to_proto(request)

    @staticmethod
    def _placement_message(
        workload: str | PlacementRequest | Mapping[str, Any], options: PlacementOptions
    ) -> pb.PlacementRequest:
        if isinstance(workload, str):
            workload = {"workload_id": workload, **options}
        return _convert.placement_request_to_proto(_convert.placement_request(workload))

    @staticmethod
    def _health_unknown(exc: ServerError) -> HealthStatus:
        if exc.status == grpc.StatusCode.NOT_FOUND.name:
            return "SERVICE_UNKNOWN"
        raise exc


class DecisionClient(_ClientBase, Closing):
    """A blocking client for ``docket.v1.Decisions`` over one channel.

    ``target`` is ``HOST:PORT``; ``timeout`` is each call's deadline in seconds, retries
    included. gRPC retries UNAVAILABLE and RESOURCE_EXHAUSTED up to ``retries`` times (at
    most 4) for every method but ``reload_bundle``, with jittered exponential backoff
    between ``initial_backoff`` and ``max_backoff`` seconds (see ``sdk._retry``). With
    ``tls`` the channel uses TLS (mTLS when it carries a client certificate), otherwise
    plaintext. Every method raises only ``DocketError`` subclasses. Use it as a context
    manager, or call ``close()``. Raises ``ConfigurationError`` for unusable settings.
    """

    _channel: grpc.Channel
    _stub: DecisionsStub
    _check: grpc.UnaryUnaryMultiCallable[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ]

    def _connect(self) -> None:
        self._channel = self._dial(grpc)
        self._stub = DecisionsStub(self._channel)
        self._check = _health_check(self._channel)

    def _invoke(self, rpc: str, method: Callable[..., _Response], request: _Request) -> _Response:
        self._check_open()
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(rpc, exc) from exc

    def authorize(
        self,
        principal: AuthorizeRequest | EntityLike,
        action: EntityLike | str | None = None,
        resource: EntityLike | None = None,
        **parts: Unpack[RequestParts],
    ) -> AuthorizeResult:
        """Ask whether ``principal`` may do ``action`` on ``resource``.

        Pass the parts (``action`` may be a bare id such as ``"read"``; ``context``,
        ``entities`` and ``device_token`` as keywords), or one request dict/
        ``AuthorizeRequest`` alone. ``device_token`` is the device's JWT-SVID from
        ``docket attest``: Docket puts its attested posture in ``context["device"]``. A
        deny is a result, not an error. Raises ``InvalidRequestError`` (refused before sending, or
        by the server), ``TransportError``, ``OverloadedError`` or another ``DocketError``.
        """
        message = self._authorize_message(principal, action, resource, parts)
        return _convert.authorize_result_from_proto(
            self._invoke("Authorize", self._stub.Authorize, message)
        )

    def authorize_batch(
        self, requests: Iterable[AuthorizeRequest | Mapping[str, Any]]
    ) -> list[AuthorizeResult]:
        """Decide up to ``MAX_BATCH`` requests in one call; results in request order.

        Raises ``InvalidRequestError`` before sending for a larger batch or a bad request
        (its index is named), and otherwise as ``authorize``.
        """
        message = _convert.batch_to_proto(requests)
        if not message.requests:
            return []
        response = self._invoke("BatchAuthorize", self._stub.BatchAuthorize, message)
        return _convert.batch_results_from_proto(response, len(message.requests))

    def authorize_resources(
        self,
        principal: EntityLike,
        action: EntityLike | str,
        resources: Iterable[EntityLike],
        **parts: Unpack[RequestParts],
    ) -> list[AuthorizeResult]:
        """Ask whether ``principal`` may do ``action`` on each of ``resources`` (one
        context, entities and device token for all): one BatchAuthorize call per
        ``MAX_BATCH`` resources, each decision audited. Results in resource order.
        Raises as ``authorize_batch``; a call that fails after earlier ones succeeded
        raises, and those earlier decisions stand (they are in the audit log).
        """
        results: list[AuthorizeResult] = []
        for message in _convert.resource_batches(principal, action, resources, **parts):
            response = self._invoke("BatchAuthorize", self._stub.BatchAuthorize, message)
            results += _convert.batch_results_from_proto(response, len(message.requests))
        return results

    def place(
        self,
        workload: str | PlacementRequest | Mapping[str, Any],
        **options: Unpack[PlacementOptions],
    ) -> Placement:
        """Rank the sites a workload or dataset may be placed on, best first.

        ``workload`` is the workload id with the other fields as keywords (see
        ``PlacementOptions``), or a whole ``PlacementRequest``/dict. Raises as
        ``authorize``.
        """
        message = self._placement_message(workload, options)
        return _convert.placement_from_proto(self._invoke("Place", self._stub.Place, message))

    def reload_bundle(self) -> ReloadResult:
        """Make Docket load its bundle again from disk.

        Raises ``PermissionDeniedError`` when policy refuses the caller's identity
        (administration needs mTLS as an admin), else as ``authorize``.
        """
        message = pb.ReloadBundleRequest()
        response = self._invoke("ReloadBundle", self._stub.ReloadBundle, message)
        return _convert.reload_result_from_proto(response)

    def health(self, service: str = DECISIONS_SERVICE) -> HealthStatus:
        """The grpc.health.v1 status of ``service`` (``""`` for the whole server).

        Returns ``"SERVICE_UNKNOWN"`` for a service the server does not report. Raises
        ``TransportError`` when Docket cannot be reached.
        """
        message = health_pb2.HealthCheckRequest(service=service)
        try:
            return _health_status(self._invoke(_HEALTH_RPC, self._check, message))
        except ServerError as exc:
            return self._health_unknown(exc)

    def close(self) -> None:
        """Close the channel; later calls raise ``TransportError``. Idempotent."""
        self._closed = True
        self._channel.close()


class AsyncDecisionClient(_ClientBase):
    """The asyncio twin of ``DecisionClient`` (``grpc.aio``): same settings, same methods,
    awaited. The channel opens on the first call, in the running event loop; use
    ``async with`` or ``await close()``."""

    _channel: grpc.aio.Channel | None = None
    _stub: DecisionsAsyncStub
    _check: grpc.aio.UnaryUnaryMultiCallable[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ]

    def _connect(self) -> None:
        """Nothing yet: a grpc.aio channel belongs to the event loop it is made in."""

    def _open(self) -> DecisionsAsyncStub:
        if self._channel is None:
            self._channel = self._dial(grpc.aio)
            self._stub = DecisionsStub(self._channel)
            self._check = _health_check(self._channel)
        return self._stub

    async def _invoke(
        self, rpc: str, method: Callable[..., Awaitable[_Response]], request: _Request
    ) -> _Response:
        self._check_open()
        try:
            return await method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(rpc, exc) from exc

    async def authorize(
        self,
        principal: AuthorizeRequest | EntityLike,
        action: EntityLike | str | None = None,
        resource: EntityLike | None = None,
        **parts: Unpack[RequestParts],
    ) -> AuthorizeResult:
        """``DecisionClient.authorize``, awaited."""
        message = self._authorize_message(principal, action, resource, parts)
        response = await self._invoke("Authorize", self._open().Authorize, message)
        return _convert.authorize_result_from_proto(response)

    async def authorize_batch(
        self, requests: Iterable[AuthorizeRequest | Mapping[str, Any]]
    ) -> list[AuthorizeResult]:
        """``DecisionClient.authorize_batch``, awaited."""
        message = _convert.batch_to_proto(requests)
        if not message.requests:
            return []
        response = await self._invoke("BatchAuthorize", self._open().BatchAuthorize, message)
        return _convert.batch_results_from_proto(response, len(message.requests))

    async def authorize_resources(
        self,
        principal: EntityLike,
        action: EntityLike | str,
        resources: Iterable[EntityLike],
        **parts: Unpack[RequestParts],
    ) -> list[AuthorizeResult]:
        """``DecisionClient.authorize_resources``, awaited."""
        results: list[AuthorizeResult] = []
        for message in _convert.resource_batches(principal, action, resources, **parts):
            response = await self._invoke("BatchAuthorize", self._open().BatchAuthorize, message)
            results += _convert.batch_results_from_proto(response, len(message.requests))
        return results

    async def place(
        self,
        workload: str | PlacementRequest | Mapping[str, Any],
        **options: Unpack[PlacementOptions],
    ) -> Placement:
        """``DecisionClient.place``, awaited."""
        message = self._placement_message(workload, options)
        response = await self._invoke("Place", self._open().Place, message)
        return _convert.placement_from_proto(response)

    async def reload_bundle(self) -> ReloadResult:
        """``DecisionClient.reload_bundle``, awaited."""
        message = pb.ReloadBundleRequest()
        response = await self._invoke("ReloadBundle", self._open().ReloadBundle, message)
        return _convert.reload_result_from_proto(response)

    async def health(self, service: str = DECISIONS_SERVICE) -> HealthStatus:
        """``DecisionClient.health``, awaited."""
        self._open()
        message = health_pb2.HealthCheckRequest(service=service)
        try:
            return _health_status(await self._invoke(_HEALTH_RPC, self._check, message))
        except ServerError as exc:
            return self._health_unknown(exc)

    async def close(self) -> None:
        """Close the channel (if it was opened); later calls raise ``TransportError``."""
        self._closed = True
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
