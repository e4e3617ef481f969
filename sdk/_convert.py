"""Models and plain dicts ⇄ ``docket.v1`` protobuf messages: the only module that does it.

Both clients, the gRPC interceptor and the ASGI middleware go through these functions, and
so may a server or a test fake that needs the reverse direction. Every failure is an
``InvalidRequestError`` (for what a caller handed in) or a ``ServerError`` (for a response
the client cannot read).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from google.protobuf import struct_pb2
from pydantic import BaseModel, ValidationError

from sdk._errors import CedarValueError, InvalidRequestError, ServerError
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
    cedar_record,
)
from sdk.v1 import audit_pb2 as audit_pb
from sdk.v1 import decisions_pb2 as pb

__all__ = [
    "MAX_BATCH",
    "authorize_request",
    "authorize_request_from_proto",
    "authorize_request_to_proto",
    "authorize_result_from_proto",
    "authorize_result_to_proto",
    "batch_results_from_proto",
    "batch_to_proto",
    "dict_from_struct",
    "invalid_request",
    "placement_from_proto",
    "placement_request",
    "placement_request_from_proto",
    "placement_request_to_proto",
    "reload_result_from_proto",
    "resource_batches",
    "struct_from_dict",
]

MAX_BATCH = 1000
"""The most requests one BatchAuthorize call may carry (the proto's contract)."""

_Model = TypeVar("_Model", bound=BaseModel)

_KINDS: dict[str, pb.WorkloadKind.ValueType] = {
    "workload": pb.WORKLOAD_KIND_WORKLOAD,
    "dataset": pb.WORKLOAD_KIND_DATASET,
}


# -- validation ---------------------------------------------------------------------------


def _location(loc: tuple[int | str, ...], error: Any) -> str:
    where = ""
    for part in loc:
        where = f"{where}[{part}]" if isinstance(part, int) else f"{where}.{part}".lstrip(".")
    if isinstance(error, CedarValueError) and error.path:
        sep = "" if error.path.startswith("[") or not where else "."
        where = f"{where}{sep}{error.path}"
    return where or "request"


def invalid_request(exc: ValidationError) -> InvalidRequestError:
    """One ``InvalidRequestError`` listing every problem as ``field.path: message``."""
    problems = []
    for error in exc.errors(include_url=False):
        cause = error.get("ctx", {}).get("error")
        message = cause.reason if isinstance(cause, CedarValueError) else error["msg"]
        problems.append(f"{_location(error['loc'], cause)}: {message}")
    return InvalidRequestError("invalid request: " + "; ".join(problems))


def _validate(model: type[_Model], data: Any) -> _Model:
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc) from exc


def authorize_request(
    principal: EntityRef | Mapping[str, Any] | AuthorizeRequest,
    action: EntityRef | Mapping[str, Any] | str | None = None,
    resource: EntityRef | Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    entities: Iterable[Entity | Mapping[str, Any]] | None = None,
    device_token: str | None = None,
) -> AuthorizeRequest:
    """Build a validated request from its parts, or from one request dict/model given
    alone as ``principal``. Raises ``InvalidRequestError`` naming each bad field."""
    if action is None and resource is None and context is None and entities is None:
        if device_token is None:
            return _validate(AuthorizeRequest, principal)
        whole = _validate(AuthorizeRequest, principal)
        return _validate(AuthorizeRequest, {**whole.model_dump(), "device_token": device_token})
    return _validate(
        AuthorizeRequest,
        {
            "principal": principal,
            "action": action,
            "resource": resource,
            "context": {} if context is None else context,
            "entities": () if entities is None else tuple(entities),
            "device_token": device_token,
        },
    )


def placement_request(data: PlacementRequest | Mapping[str, Any]) -> PlacementRequest:
    """A validated placement request; raises ``InvalidRequestError``."""
    return _validate(PlacementRequest, data)


# -- Struct -------------------------------------------------------------------------------


def struct_from_dict(record: Mapping[str, Any]) -> struct_pb2.Struct:
    """A Struct holding ``record``, after the checks of ``cedar_value`` (whole numbers
    within ±2**53, no floats or nulls). Raises ``InvalidRequestError``."""
    try:
        checked = cedar_record(record)
    except CedarValueError as exc:
        raise InvalidRequestError(f"invalid request: {exc}") from exc
    struct = struct_pb2.Struct()
    struct.update(checked)
    return struct


def _from_value(value: struct_pb2.Value, path: str) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return {k: _from_value(v, f"{path}.{k}") for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_from_value(v, f"{path}[{i}]") for i, v in enumerate(value.list_value.values)]
    if kind == "number_value":
        number = value.number_value
        if not (math.isfinite(number) and number.is_integer()):
            raise InvalidRequestError(f"{path}: {number!r} is not a whole number")
        return int(number)
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    raise InvalidRequestError(f"{path}: null has no Cedar equivalent")


def dict_from_struct(struct: struct_pb2.Struct, path: str = "context") -> dict[str, Any]:
    """The plain dict a Struct holds, numbers as ints. Raises ``InvalidRequestError`` for a
    number that is not whole or a null, since neither is a Cedar value."""
    return {k: _from_value(v, f"{path}.{k}") for k, v in struct.fields.items()}


# -- Authorize ----------------------------------------------------------------------------


def _ref_to_proto(ref: EntityRef) -> pb.EntityRef:
    return pb.EntityRef(type=ref.type, id=ref.id)


def _ref_from_proto(ref: pb.EntityRef) -> dict[str, str]:
    return {"type": ref.type, "id": ref.id}


def authorize_request_to_proto(request: AuthorizeRequest) -> pb.AuthorizeRequest:
    """The wire form of a validated request."""
    return pb.AuthorizeRequest(
        principal=_ref_to_proto(request.principal),
        action=_ref_to_proto(request.action),
        resource=_ref_to_proto(request.resource),
        context=struct_from_dict(request.context),
        entities=[
            pb.Entity(
                uid=_ref_to_proto(entity.uid),
                attrs=struct_from_dict(entity.attrs),
                parents=[_ref_to_proto(parent) for parent in entity.parents],
            )
            for entity in request.entities
        ],
        device_token=request.device_token or "",
    )


def authorize_request_from_proto(message: pb.AuthorizeRequest) -> AuthorizeRequest:
    """A validated request from its wire form (for servers and fakes).

    Raises ``InvalidRequestError`` naming the field that is missing or not a Cedar value.
    """
    return _validate(
        AuthorizeRequest,
        {
            "principal": _ref_from_proto(message.principal),
            "action": _ref_from_proto(message.action),
            "resource": _ref_from_proto(message.resource),
            "context": dict_from_struct(message.context),
            "entities": [
                {
                    "uid": _ref_from_proto(entity.uid),
                    "attrs": dict_from_struct(entity.attrs, f"entities[{i}].attrs"),
                    "parents": [_ref_from_proto(parent) for parent in entity.parents],
                }
                for i, entity in enumerate(message.entities)
            ],
            "device_token": message.device_token or None,
        },
    )


_DECISIONS: dict[int, Literal["allow", "deny"]] = {
    pb.DECISION_ALLOW: "allow",
    pb.DECISION_DENY: "deny",
}


def _errors_from_proto(errors: Iterable[pb.PolicyError]) -> tuple[tuple[str, str], ...]:
    return tuple((error.policy_id, error.message) for error in errors)


def receipt_from_proto(message: Any) -> AuditReceipt | None:
    """The receipt of a response, or None when the server sent none."""
    if not message.HasField("receipt"):
        return None
    return AuditReceipt(index=message.receipt.index, leaf_hash=message.receipt.leaf_hash.hex())


def receipt_to_proto(receipt: AuditReceipt | None) -> audit_pb.AuditReceipt | None:
    """The wire form of a receipt (for servers and fakes)."""
    if receipt is None:
        return None
    return audit_pb.AuditReceipt(index=receipt.index, leaf_hash=bytes.fromhex(receipt.leaf_hash))


def authorize_result_from_proto(message: pb.AuthorizeResponse) -> AuthorizeResult:
    """The client's view of one response. Raises ``ServerError`` when the response carries
    no decision (DECISION_UNSPECIFIED), rather than guessing one."""
    decision = _DECISIONS.get(message.decision)
    if decision is None:
        raise ServerError(f"Docket sent no decision (decision enum {message.decision})")
    return AuthorizeResult(
        decision=decision,
        decision_id=message.decision_id,
        reasons=tuple(message.reasons),
        errors=_errors_from_proto(message.errors),
        bundle_version=message.bundle_version,
        receipt=receipt_from_proto(message),
    )


def authorize_result_to_proto(result: AuthorizeResult) -> pb.AuthorizeResponse:
    """The wire form of a result (for servers and fakes)."""
    return pb.AuthorizeResponse(
        decision=pb.DECISION_ALLOW if result.allowed else pb.DECISION_DENY,
        decision_id=result.decision_id,
        reasons=result.reasons,
        errors=[pb.PolicyError(policy_id=p, message=m) for p, m in result.errors],
        bundle_version=result.bundle_version,
        receipt=receipt_to_proto(result.receipt),
    )


def batch_to_proto(requests: Iterable[Any]) -> pb.BatchAuthorizeRequest:
    """A BatchAuthorize message from request dicts/models.

    Raises ``InvalidRequestError`` for more than ``MAX_BATCH`` requests (before sending
    anything) or for a bad request, whose position is named.
    """
    items = list(requests)
    if len(items) > MAX_BATCH:
        raise InvalidRequestError(
            f"a batch holds at most {MAX_BATCH} requests, got {len(items)}: split it"
        )
    messages = []
    for i, item in enumerate(items):
        try:
            messages.append(authorize_request_to_proto(authorize_request(item)))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"requests[{i}]: {exc.message}") from exc
    return pb.BatchAuthorizeRequest(requests=messages)


def resource_batches(
    principal: EntityRef | Mapping[str, Any],
    action: EntityRef | Mapping[str, Any] | str,
    resources: Iterable[EntityRef | Mapping[str, Any]],
    context: Mapping[str, Any] | None = None,
    entities: Iterable[Entity | Mapping[str, Any]] | None = None,
    device_token: str | None = None,
) -> list[pb.BatchAuthorizeRequest]:
    """One request per resource, all else shared, in BatchAuthorize messages of at most
    ``MAX_BATCH`` requests each (none for no resources). The shared parts are checked
    once. Raises ``InvalidRequestError`` naming the bad field (``resources[i]`` for a
    resource) before anything is sent."""
    first = authorize_request(
        principal, action, {"type": "_", "id": "_"}, context, entities, device_token
    )
    shared = authorize_request_to_proto(first)
    messages: list[pb.AuthorizeRequest] = []
    for i, resource in enumerate(resources):
        try:
            ref = _validate(EntityRef, resource)
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"resources[{i}]: {exc.message}") from exc
        message = pb.AuthorizeRequest()
        message.CopyFrom(shared)
        message.resource.type, message.resource.id = ref.type, ref.id
        messages.append(message)
    return [
        pb.BatchAuthorizeRequest(requests=messages[start : start + MAX_BATCH])
        for start in range(0, len(messages), MAX_BATCH)
    ]


def batch_results_from_proto(
    message: pb.BatchAuthorizeResponse, expected: int
) -> list[AuthorizeResult]:
    """The results of a batch, in request order. Raises ``ServerError`` when the server
    answered a different number of requests than were sent."""
    if len(message.results) != expected:
        raise ServerError(f"Docket answered {len(message.results)} of {expected} requests")
    return [authorize_result_from_proto(result) for result in message.results]


# -- Place and ReloadBundle ---------------------------------------------------------------


def placement_request_to_proto(request: PlacementRequest) -> pb.PlacementRequest:
    """The wire form of a validated placement request."""
    return pb.PlacementRequest(
        workload_id=request.workload_id,
        kind=_KINDS[request.kind],
        classification=request.classification,
        residency=request.residency,
        regulated=request.regulated,
        accelerator=request.accelerator,
        latency_budget_ms=request.latency_budget_ms,
        users_in=request.users_in,
        context=struct_from_dict(request.context),
        sites=request.sites,
    )


def placement_request_from_proto(message: pb.PlacementRequest) -> PlacementRequest:
    """A validated placement request from its wire form (for servers and fakes)."""
    kinds = {number: name for name, number in _KINDS.items()}
    return _validate(
        PlacementRequest,
        {
            "workload_id": message.workload_id,
            "kind": kinds.get(message.kind, "workload"),
            "classification": message.classification or "internal",
            "residency": tuple(message.residency),
            "regulated": message.regulated,
            "accelerator": message.accelerator if message.HasField("accelerator") else None,
            "latency_budget_ms": (
                message.latency_budget_ms if message.HasField("latency_budget_ms") else None
            ),
            "users_in": message.users_in if message.HasField("users_in") else None,
            "context": dict_from_struct(message.context),
            "sites": tuple(message.sites),
        },
    )


def placement_from_proto(message: pb.PlacementResponse) -> Placement:
    """The client's view of a placement response."""
    return Placement(
        workload_id=message.workload_id,
        decision_id=message.decision_id,
        allowed=tuple(
            PlacedSite(
                site=site.site,
                region=site.region,
                jurisdiction=site.jurisdiction,
                tier=site.tier,
                latency_ms=site.latency_ms,
                cost_per_hour=site.cost_per_hour,
                within_latency_budget=site.within_latency_budget,
                reasons=tuple(site.reasons),
            )
            for site in message.allowed
        ),
        denied=tuple(
            DeniedSite(
                site=site.site,
                reasons=tuple(site.reasons),
                errors=_errors_from_proto(site.errors),
            )
            for site in message.denied
        ),
        bundle_version=message.bundle_version,
        receipt=receipt_from_proto(message),
    )


def reload_result_from_proto(message: pb.ReloadBundleResponse) -> ReloadResult:
    """The client's view of a ReloadBundle response."""
    return ReloadResult(
        bundle_version=message.bundle_version,
        changed=message.changed,
        previous_version=message.previous_version,
    )
