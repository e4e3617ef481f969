"""Docket's wire contract and clients (decision client, sidecar helpers, device agent).

- ``DecisionClient`` / ``AsyncDecisionClient``: ``docket.v1.Decisions`` over gRPC
  (authorize, batches, placement, bundle reload, health), plaintext, TLS or mTLS.
- ``DocketServerInterceptor``: guards a ``grpc.server`` application with Docket.
- ``DocketASGIMiddleware``: guards an ASGI application with Docket.
- ``sdk.v1``: the ``.proto`` contract and the code generated from it.

Every call raises only ``DocketError`` subclasses (the tree is drawn in ``sdk._errors``);
a deny is a result, not an error. Building a model directly (``AuthorizeRequest(...)``)
raises pydantic's ``ValidationError`` for bad input; the clients turn the same problems
into ``InvalidRequestError``. A client install never imports cedarpy.
"""

from sdk._asgi import DocketASGIMiddleware
from sdk._client import DEFAULT_TARGET, AsyncDecisionClient, DecisionClient, PlacementOptions
from sdk._errors import (
    ConfigurationError,
    DocketError,
    InvalidRequestError,
    OverloadedError,
    PermissionDeniedError,
    ServerError,
    TransportError,
)
from sdk._grpc_interceptor import DocketServerInterceptor, GrpcCall
from sdk._models import (
    AuditReceipt,
    AuthorizeRequest,
    AuthorizeResult,
    DeniedSite,
    Entity,
    EntityRef,
    PlacedSite,
    Placement,
    PlacementRequest,
    ReloadResult,
)
from sdk._tls import TLSConfig

__all__ = [
    "DEFAULT_TARGET",
    "AsyncDecisionClient",
    "AuditReceipt",
    "AuthorizeRequest",
    "AuthorizeResult",
    "ConfigurationError",
    "DecisionClient",
    "DeniedSite",
    "DocketASGIMiddleware",
    "DocketError",
    "DocketServerInterceptor",
    "Entity",
    "EntityRef",
    "GrpcCall",
    "InvalidRequestError",
    "OverloadedError",
    "PermissionDeniedError",
    "PlacedSite",
    "Placement",
    "PlacementOptions",
    "PlacementRequest",
    "ReloadResult",
    "ServerError",
    "TLSConfig",
    "TransportError",
]
