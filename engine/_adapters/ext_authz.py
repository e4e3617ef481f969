"""Envoy's external authorization (``envoy.service.auth.v3.Authorization/Check``).

A CheckRequest becomes a Docket request:

- principal: the downstream's SPIFFE ID from Envoy's mTLS (``source.principal``;
  resolved to the catalog workload that has it), else the ``sub`` claim of a JWT that
  Envoy's jwt_authn filter verified (``metadata_context``), as ``User``; else
  ``User::"anonymous"``;
- action: the route's ``action`` context extension, else by HTTP method (GET and HEAD
  read, DELETE delete, anything else write);
- resource: the route's ``resource_type`` (default ``Data``) and ``resource_id``
  context extensions;
- context: ``http`` {method, path (query split off), host}, ``source_ip``, ``mfa`` from
  the JWT claims, the inventory facts of its ``device`` claim (``disk_encrypted``,
  ``patch_age_days``, ``trust_tier``, ``managed``: an IdP's ``device`` claim never
  attests a device), and any ``context.<name>`` context extension (for example
  ``context.jurisdiction: eu``). A Docket JWT-SVID (the ``x-docket-device-token``
  header, or the request's ``Bearer`` token) or the downstream's Docket X.509-SVID sets
  the attested fields of ``device`` (:mod:`engine._service.posture`).

**Trusted enforcement points.** The subject of a Check and the facts about it —
``source.principal``, ``source.certificate``, jwt_authn metadata and ``context.*``
context extensions — are believed only from a caller authenticated over mTLS whose
SPIFFE ID is in the ``trusted_peps`` setting (Envoy, an API gateway). A Check from
anyone else that carries one is refused (a 400 naming the field, and a refusal in the
audit log); one without them is decided as ``User::"anonymous"``. Each decision's audit
entry says which enforcement point named the subject, and how
(``detail.provenance``).

Allowed: OK, with ``x-docket-decision-id`` added to the upstream request. Denied:
PERMISSION_DENIED and a 403 with a JSON body. Input that cannot be mapped or may not
come from this caller: a 400 (and the refusal is in the audit log). The audit log busy:
a 429; unavailable: a 503 — no request is let through without its audit entry. Every
answer carries ``decision_id`` in ``dynamic_metadata``.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Collection, Iterable
from typing import Any, Literal

import grpc
import structlog
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from audit import Overloaded, StoreError
from engine._adapters.grpc_status import AUDIT_UNAVAILABLE, answer_async, caller_identity
from engine._adapters.wire import dict_to_struct, value_to_python
from engine._core.models import EntityUID, Request
from engine._errors import RequestError
from engine._service import tracing
from engine._service.constants import CALLER, DEVICE, INVENTORY_DEVICE_FIELDS
from engine._service.decisions import DecisionService, decision_id
from engine._service.posture import PostureReader, attach, provenance

log = structlog.get_logger("docket.ext_authz")

DECISION_HEADER = "x-docket-decision-id"
JWT_FILTER = "envoy.filters.http.jwt_authn"
ANONYMOUS = EntityUID(type="User", id="anonymous")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_ACTIONS = {"GET": "read", "HEAD": "read", "DELETE": "delete"}
_CONTEXT_PREFIX = "context."
_CLAIMS = ("sub", "amr", "mfa", "device")
Subject = Literal["source.principal", "jwt", "anonymous"]
CHECK = tracing.Call.grpc(authz.DESCRIPTOR.services_by_name["Authorization"].full_name, "Check")


def untrusted_field(attributes: Any) -> str | None:
    """The first field of a Check's ``attributes`` that only a trusted enforcement point
    may set, or None."""
    if attributes.source.principal:
        return "source.principal"
    if attributes.source.certificate:
        return "source.certificate"
    if JWT_FILTER in attributes.metadata_context.filter_metadata:
        return f"metadata_context.{JWT_FILTER}"
    for key in sorted(attributes.context_extensions):
        if key.startswith(_CONTEXT_PREFIX):
            return f"context_extensions.{key}"
    return None


def subject_of(attributes: Any, claims: dict[str, Any]) -> tuple[EntityUID, Subject]:
    """The principal of a Check and where it came from (see the module docstring)."""
    if attributes.source.principal:
        uid = EntityUID.model_construct(type="Workload", id=attributes.source.principal)
        return uid, "source.principal"
    if isinstance(claims.get("sub"), str) and claims["sub"]:
        return EntityUID.model_construct(type="User", id=claims["sub"]), "jwt"
    return ANONYMOUS, "anonymous"


def check_to_request(
    check: authz.CheckRequest, caller: str | None = None, *, trusted_pep: bool = False
) -> Request:
    """The Docket request for an Envoy CheckRequest (see the module docstring).
    ``trusted_pep``: ``caller`` is an enforcement point listed in ``trusted_peps``.

    Raises :class:`~engine.RequestError` naming what could not be mapped, or the first
    field only a trusted enforcement point may set when ``caller`` is not one.
    """
    attributes = check.attributes
    if not trusted_pep:
        field = untrusted_field(attributes)
        if field is not None:
            who = caller or "an unauthenticated caller"
            raise RequestError(
                f"{field}: only a trusted enforcement point may set it, and {who} is not "
                "a trusted enforcement point (the trusted_peps setting lists them)"
            )
    http = attributes.request.http
    routes = dict(attributes.context_extensions)
    claims = _jwt_claims(attributes.metadata_context)
    principal, _subject = subject_of(attributes, claims)
    if not http.method:
        raise RequestError("attributes.request.http.method: missing")
    resource_id = routes.get("resource_id")
    if not resource_id:
        raise RequestError(
            "context_extensions.resource_id: the route names no resource; "
            "set resource_id (and resource_type) in the route's ext_authz context_extensions"
        )
    path, _, _query = (http.path or "/").partition("?")
    context: dict[str, Any] = {"http": {"method": http.method, "path": path}}
    if http.host:
        context["http"]["host"] = http.host
    address = attributes.source.address.socket_address.address
    if address:
        context["source_ip"] = address
    amr = claims.get("amr")
    if claims.get("mfa") is True or (isinstance(amr, list) and "mfa" in amr):
        context["mfa"] = True
    device = claims.get("device")
    if isinstance(device, dict):
        # An IdP relays what an MDM knows; whether the device is attested only a Docket
        # credential says (engine._service.posture).
        inventory = {name: device[name] for name in INVENTORY_DEVICE_FIELDS if name in device}
        if inventory:
            context[DEVICE] = inventory
    for key, value in routes.items():
        if key.startswith(_CONTEXT_PREFIX):
            name = key.removeprefix(_CONTEXT_PREFIX)
            if name == CALLER:
                raise RequestError(f"context_extensions.{key}: set by Docket, not by routes")
            context[name] = value
    if caller is not None:
        context[CALLER] = caller
    return Request.model_construct(
        principal=principal,
        action=EntityUID.model_construct(
            type="Action", id=routes.get("action") or _ACTIONS.get(http.method, "write")
        ),
        resource=EntityUID.model_construct(
            type=routes.get("resource_type") or "Data", id=resource_id
        ),
        context=context,
        entities=(),
    )


def _jwt_claims(metadata: Any) -> dict[str, Any]:
    """The claims Docket reads from the payload jwt_authn put in the metadata (under its
    ``payload_in_metadata`` key): ``sub``, ``amr``, ``mfa`` and ``device``.

    ``header_in_metadata`` puts the JOSE header in the same namespace; a header always
    has ``alg`` (RFC 7515 §4.1.1) and is skipped. Keys are taken in sorted order, as the
    order Envoy sends them in varies from request to request.
    """
    filter_metadata = metadata.filter_metadata
    if JWT_FILTER not in filter_metadata:
        return {}
    fields = filter_metadata[JWT_FILTER].fields
    for key in sorted(fields):
        value = fields[key]
        if value.WhichOneof("kind") == "struct_value" and "alg" not in value.struct_value.fields:
            payload = value.struct_value.fields
            return {
                name: value_to_python(payload[name], f"jwt.{name}")
                for name in _CLAIMS
                if name in payload
            }
    return {}


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _denied(
    code: int, http_status: int, body: dict[str, Any], decision: str
) -> authz.CheckResponse:
    return authz.CheckResponse(
        status=status_pb2.Status(code=code),
        denied_response=authz.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status),
            headers=[
                _header("content-type", "application/json"),
                _header(DECISION_HEADER, decision),
            ],
            body=json.dumps(body, separators=(",", ":")),
        ),
        dynamic_metadata=dict_to_struct({"decision_id": decision, "decision": "deny"}),
    )


def loggable_headers(headers: Any) -> dict[str, str]:
    """Request headers, lower-cased, with credentials left out."""
    return {
        key.lower(): value for key, value in headers.items() if key.lower() not in _SECRET_HEADERS
    }


class AuthorizationServicer:
    """Envoy ext_authz v3 ``Check`` on a :class:`DecisionService`."""

    def __init__(
        self,
        service: DecisionService,
        posture: PostureReader | None = None,
        trusted_peps: Collection[str] = (),
    ) -> None:
        self._service = service
        self._posture = posture
        self.trusted_peps = frozenset(trusted_peps)

    async def Check(
        self, request: authz.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> authz.CheckResponse:
        """A coroutine on the server's event loop (see :mod:`engine._adapters.decisions_rpc`).
        Its trace's parent: the ``traceparent`` Envoy sends, else that of the request
        checked."""

        def headers() -> Iterable[tuple[str, str | bytes]]:
            # Envoy's own context (its metadata) last: it wins.
            return itertools.chain(
                request.attributes.request.http.headers.items(),
                context.invocation_metadata() or (),
            )

        with tracing.server_span(CHECK, headers, context.code):
            return await answer_async(
                self._service, "ext_authz", context, lambda: self._check(request, context)
            )

    async def _check(
        self, request: authz.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        caller = caller_identity(context)
        # Only an mTLS identity can be trusted: caller_identity is None without one.
        pep = caller if caller is not None and caller in self.trusted_peps else None
        try:
            docket_request = check_to_request(request, caller, trusted_pep=pep is not None)
            proven = None
            if self._posture is not None:
                proven = self._posture.for_check(
                    request.attributes, self._service.clock(), trusted_pep=pep is not None
                )
            docket_request = attach(docket_request, proven)
            claims = _jwt_claims(request.attributes.metadata_context)
            found = provenance(
                docket_request,
                proven,
                caller=caller,
                pep=pep,
                subject=subject_of(request.attributes, claims)[1],
            )
            (decided,) = await self._service.authorize_async(
                [docket_request], api="ext_authz", provenance=[found]
            )
        except RequestError as exc:
            # Unmappable input is denied, and the denial is recorded like any decision.
            refused = await self._service.refuse_async(
                str(exc),
                api="ext_authz",
                caller=caller,
                detail={"provenance": {"caller": caller, "pep": pep}},
            )
            log.info("ext_authz.bad_request", decision_id=refused.decision_id, error=str(exc))
            return _denied(
                code_pb2.INVALID_ARGUMENT,
                http_status_pb2.BadRequest,
                {
                    "decision": "deny",
                    "decision_id": refused.decision_id,
                    "reasons": [],
                    "error": str(exc),
                },
                refused.decision_id,
            )
        except (Overloaded, StoreError) as exc:
            # No decision is answered without its audit entry: deny, and tell the client
            # whether to come back (429, the log is busy) or not soon (503).
            busy = isinstance(exc, Overloaded)
            unrecorded = decision_id(self._service.clock())
            log.warning("ext_authz.unaudited", decision_id=unrecorded, error=str(exc))
            self._service.metrics.decided("ext_authz", "deny")
            return _denied(
                code_pb2.RESOURCE_EXHAUSTED if busy else code_pb2.UNAVAILABLE,
                http_status_pb2.TooManyRequests if busy else http_status_pb2.ServiceUnavailable,
                {
                    "decision": "deny",
                    "decision_id": unrecorded,
                    "reasons": [],
                    "error": str(exc) if busy else AUDIT_UNAVAILABLE,
                },
                unrecorded,
            )
        decision = decided.decision
        if log.is_enabled_for(logging.DEBUG):  # the header map is built only when logged
            log.debug(
                "ext_authz.check",
                decision_id=decided.decision_id,
                decision=decision.decision,
                headers=loggable_headers(request.attributes.request.http.headers),
            )
        if decision.allowed:
            return authz.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=authz.OkHttpResponse(
                    headers=[_header(DECISION_HEADER, decided.decision_id)]
                ),
                dynamic_metadata=dict_to_struct(
                    {"decision_id": decided.decision_id, "decision": "allow"}
                ),
            )
        # Policy errors are not for the HTTP client: they are in the decision log.
        body = {"decision": "deny", "decision_id": decided.decision_id, "reasons": decision.reasons}
        return _denied(
            code_pb2.PERMISSION_DENIED, http_status_pb2.Forbidden, body, decided.decision_id
        )
