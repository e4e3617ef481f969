"""``docket.v1`` messages ⇄ engine values.

Every check of an incoming message lives here and raises :class:`~engine.RequestError`
whose message starts with the offending field (``requests[3].principal.type: …``), so
the transport can hand it to the caller as it is.

Facts Docket verifies itself are reserved: ``context.caller`` (the mTLS identity) and
the attested fields of ``context.device`` (:data:`ATTESTED_DEVICE_FIELDS`, set from a
Docket X.509- or JWT-SVID by :mod:`engine._service.posture`) are refused when a caller sends
them. Offline use (``docket decide``, the library) does not pass through here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from google.protobuf import struct_pb2
from pydantic import ValidationError

from audit import Receipt
from engine._core.models import Decision, EntityUID, PolicyError, Request
from engine._core.placement import Placement, Workload
from engine._errors import RequestError
from engine._service.constants import (
    ATTESTED_BY_DOCKET,
    ATTESTED_DEVICE_FIELDS,
    CALLER,
    DEVICE,
)
from sdk.v1 import audit_pb2 as audit_pb
from sdk.v1 import decisions_pb2 as pb

_EXACT = 2**53  # Struct numbers are doubles: whole numbers beyond this are not exact
_KINDS = {
    pb.WORKLOAD_KIND_UNSPECIFIED: "workload",
    pb.WORKLOAD_KIND_WORKLOAD: "workload",
    pb.WORKLOAD_KIND_DATASET: "dataset",
}


def struct_to_dict(struct: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """A Struct as Cedar JSON: whole numbers become ints; floats and nulls are refused.
    Raises :class:`~engine.RequestError` naming the field at fault."""
    try:
        return _struct(struct)
    except _Refused:
        _name_refused(struct.fields.items(), field, ".{}")


def value_to_python(value: struct_pb2.Value, field: str) -> Any:
    """One Struct value as Cedar JSON. Raises :class:`~engine.RequestError` naming ``field``."""
    try:
        return _value(value)
    except _Refused:
        _refuse(value, field)


class _Refused(Exception):
    """A value Cedar cannot take (found by the fast walk, which builds no field names;
    :func:`_refuse` then finds it again and names it)."""


def _struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    fields = struct.fields
    return {key: _value(fields[key]) for key in fields}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _EXACT:
            return int(number)
    elif kind == "struct_value":
        return _struct(value.struct_value)
    elif kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    raise _Refused


def _name_refused(items: Iterable[tuple[Any, struct_pb2.Value]], field: str, step: str) -> NoReturn:
    """Raise the RequestError of the first refused value of ``items`` (key or index,
    value), its name ``field`` + ``step`` formatted with the key."""
    for key, value in items:
        try:
            _value(value)
        except _Refused:
            _refuse(value, field + step.format(key))
    raise RequestError(f"{field}: a value must be set")  # not reached: one was refused


def _refuse(value: struct_pb2.Value, field: str) -> NoReturn:
    """Raise why Cedar cannot take ``value`` (which the fast walk refused), naming the
    innermost field at fault."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        if not value.number_value.is_integer():
            raise RequestError(f"{field}: Cedar has no fractional numbers; send a whole number")
        raise RequestError(f"{field}: whole numbers must lie within ±2^53 to be exact")
    if kind == "struct_value":
        _name_refused(value.struct_value.fields.items(), field, ".{}")
    if kind == "list_value":
        _name_refused(enumerate(value.list_value.values), field, "[{}]")
    if kind == "null_value":
        raise RequestError(f"{field}: null is not a Cedar value; leave the attribute out")
    raise RequestError(f"{field}: a value must be set")


def dict_to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    """A JSON-shaped dict as a Struct."""
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def check_device(device: struct_pb2.Value, field: str) -> None:
    """Refuse attested fields in a caller's ``context.device``: only Docket sets them,
    from a credential it verified. Raises :class:`~engine.RequestError` naming the
    field."""
    if device.WhichOneof("kind") != "struct_value":
        raise RequestError(f"{field}: must be an object of device inventory facts")
    for name in ATTESTED_DEVICE_FIELDS:
        if name in device.struct_value.fields:
            raise RequestError(f"{field}.{name}: {ATTESTED_BY_DOCKET}")


def _context(
    struct: struct_pb2.Struct,
    field: str,
    caller: str | None,
    seen: dict[bytes, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The request context, with ``caller`` set from the connection, never by the client,
    and no attested ``device`` field (see :func:`check_device`). With ``seen`` (one batch's
    contexts by their bytes; one call, so one caller), a context sent again is read once:
    the requests then share it, the same object, which nothing changes in place (a
    request's context is replaced, never edited), so that what is made of it later (its
    posture, its canonical JSON) can be made once per batch too."""
    key = None
    if seen is not None:
        key = struct.SerializeToString(deterministic=True)
        known = seen.get(key)
        if known is not None:
            return known
    if CALLER in struct.fields:
        raise RequestError(f"{field}.{CALLER}: set by the server from the caller's mTLS identity")
    if DEVICE in struct.fields:
        check_device(struct.fields[DEVICE], f"{field}.{DEVICE}")
    context = struct_to_dict(struct, field)
    if caller is not None:
        context[CALLER] = caller
    if key is not None and seen is not None:
        seen[key] = context
    return context


def _uid(
    message: pb.AuthorizeRequest,
    name: str,
    field: str,
    made: dict[tuple[str, str], EntityUID] | None = None,
) -> EntityUID:
    """The uid ``message.<name>``; with ``made`` (one batch's uids by type and id), one
    object for each uid the batch names again (a uid is frozen)."""
    if not message.HasField(name):  # type: ignore[arg-type]
        raise RequestError(f"{field}.{name}: required")
    ref: pb.EntityRef = getattr(message, name)
    kind, id_ = ref.type, ref.id
    if not kind:
        raise RequestError(f"{field}.{name}.type: must not be empty")
    if made is None:
        return EntityUID.model_construct(type=kind, id=id_)
    uid = made.get((kind, id_))
    if uid is None:
        uid = made[kind, id_] = EntityUID.model_construct(type=kind, id=id_)
    return uid


def _entity(entity: pb.Entity, field: str) -> dict[str, Any]:
    if not entity.HasField("uid") or not entity.uid.type:
        raise RequestError(f"{field}.uid.type: must not be empty")
    parents = []
    for i, parent in enumerate(entity.parents):
        if not parent.type:
            raise RequestError(f"{field}.parents[{i}].type: must not be empty")
        parents.append({"type": parent.type, "id": parent.id})
    return {
        "uid": {"type": entity.uid.type, "id": entity.uid.id},
        "attrs": struct_to_dict(entity.attrs, f"{field}.attrs"),
        "parents": parents,
    }


def request_from_proto(
    message: pb.AuthorizeRequest,
    *,
    field: str = "",
    caller: str | None = None,
    seen: dict[bytes, dict[str, Any]] | None = None,
    made: dict[tuple[str, str], EntityUID] | None = None,
) -> Request:
    """An engine :class:`Request`; ``caller`` (an mTLS SPIFFE ID) goes into ``context.caller``
    (``seen``: see :func:`_context`; ``made``: see :func:`_uid`).

    Raises :class:`~engine.RequestError` naming the field at fault.
    """
    prefix = f"{field}." if field else ""
    context = _context(message.context, f"{prefix}context", caller, seen)
    return Request.model_construct(
        principal=_uid(message, "principal", field or "request", made),
        action=_uid(message, "action", field or "request", made),
        resource=_uid(message, "resource", field or "request", made),
        context=context,
        entities=tuple(
            _entity(entity, f"{prefix}entities[{i}]") for i, entity in enumerate(message.entities)
        ),
    )


def batch_from_proto(
    message: pb.BatchAuthorizeRequest, *, caller: str | None = None
) -> list[Request]:
    """The requests of a batch, in order (a context repeated in the batch, as when one
    principal asks about many resources, is read once, and so is each uid). The size
    limit is checked by the caller."""
    seen: dict[bytes, dict[str, Any]] = {}
    made: dict[tuple[str, str], EntityUID] = {}
    return [
        request_from_proto(request, field=f"requests[{i}]", caller=caller, seen=seen, made=made)
        for i, request in enumerate(message.requests)
    ]


def receipt_to_proto(receipt: Receipt) -> audit_pb.AuditReceipt:
    """The wire form of an audit receipt."""
    return audit_pb.AuditReceipt(index=receipt.index, leaf_hash=receipt.leaf_hash)


def decision_to_proto(
    decision: Decision,
    decision_id: str,
    receipt: Receipt,
    into: pb.AuthorizeResponse | None = None,
) -> pb.AuthorizeResponse:
    """The wire form of a decision and the receipt of its audit entry; written into
    ``into`` (a batch's ``results.add()``: no copy into the batch) when given. Field by
    field, in place: half the cost of building it from keywords and sub-messages."""
    message = pb.AuthorizeResponse() if into is None else into
    message.decision = pb.DECISION_ALLOW if decision.decision == "allow" else pb.DECISION_DENY
    message.decision_id = decision_id
    message.reasons.extend(decision.reasons)
    if decision.errors:
        message.errors.extend(_errors(decision.errors))
    message.bundle_version = decision.bundle_version or ""
    message.receipt.index = receipt.index
    message.receipt.leaf_hash = receipt.leaf_hash
    return message


def _errors(errors: Iterable[PolicyError]) -> list[pb.PolicyError]:
    return [pb.PolicyError(policy_id=e.policy or "", message=e.message) for e in errors]


def workload_from_proto(
    message: pb.PlacementRequest, *, caller: str | None = None
) -> tuple[Workload, list[str] | None]:
    """The workload to place and the candidate sites (None: the whole catalog).

    Raises :class:`~engine.RequestError` naming the field at fault.
    """
    if message.kind not in _KINDS:
        raise RequestError(f"kind: unknown workload kind {message.kind}")
    context = _context(message.context, "context", caller)
    fields: dict[str, Any] = {
        "id": message.workload_id,
        "kind": _KINDS[message.kind],
        "classification": message.classification or "internal",
        "residency": tuple(message.residency),
        "regulated": message.regulated,
        "context": context,
    }
    for name in ("accelerator", "latency_budget_ms", "users_in"):
        if message.HasField(name):
            fields[name] = getattr(message, name)
    try:
        workload = Workload.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or "request"
        location = "workload_id" if location == "id" else location
        raise RequestError(f"{location}: {first['msg']}") from exc
    return workload, list(message.sites) or None


def placement_to_proto(
    placement: Placement, decision_id: str, receipt: Receipt
) -> pb.PlacementResponse:
    """The wire form of a placement and the receipt of its audit entry."""
    return pb.PlacementResponse(
        workload_id=placement.workload,
        decision_id=decision_id,
        allowed=[
            pb.PlacedSite(
                site=p.site,
                region=p.region,
                jurisdiction=p.jurisdiction,
                tier=p.tier,
                latency_ms=p.latency_ms,
                cost_per_hour=p.cost_per_hour,
                within_latency_budget=p.within_latency_budget,
                reasons=p.reasons,
            )
            for p in placement.allowed
        ],
        denied=[
            pb.DeniedSite(site=d.site, reasons=d.reasons, errors=_errors(d.errors))
            for d in placement.denied
        ],
        bundle_version=placement.bundle_version or "",
        receipt=receipt_to_proto(receipt),
    )
