"""OpenID AuthZEN Authorization API 1.0 requests as engine requests.

The mapping onto Cedar (docs/authzen.md has it with examples):

* ``subject.type`` and ``resource.type`` name the entity type, qualified with the
  bundle's namespace when it has one (``"user"`` → ``Todo::user``); ``id`` is the
  entity id; ``action.name`` the id of an ``Action``; ``context`` the Cedar context.
* ``properties`` of a subject or resource that is not in the bundle's entity store
  become the attributes of an entity made for this request alone, checked against the
  entity type's attributes in the schema first (``resource.properties.ownerID: expected
  a string``). An entity that *is* in the store keeps its stored attributes: a property
  may repeat one with the same value, any other is refused, since a caller must not
  change what the store says (``subject.properties.roles: … is in the entity store``).
* ``action.properties`` go into the context as ``context.action`` (Cedar actions have
  no attributes a request can set).
* The facts Docket verifies itself are refused as in every other API
  (:mod:`engine._adapters.wire`): ``context.caller`` and the attested fields of
  ``context.device``.

Every problem is a :class:`~engine.RequestError` whose message starts with the field at
fault, as the HTTP binding's 400 body. Unknown members are ignored, as the
specification's forward compatibility rule says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine._core.bundle import (
    ENTITIES_FILE,
    PolicyBundle,
    qualify_entities,
    qualify_refs,
    qualify_type,
)
from engine._core.context_check import context_problem
from engine._core.models import EntityUID, Request
from engine._core.schema_json import Type, action_targets, entity_types, schema_json
from engine._errors import LimitExceeded, RequestError
from engine._service.constants import (
    ATTESTED_BY_DOCKET,
    ATTESTED_DEVICE_FIELDS,
    CALLER,
    DEVICE,
    MAX_BATCH,
)

Semantic = Literal["execute_all", "deny_on_first_deny", "permit_on_first_permit"]
SEMANTICS: tuple[Semantic, ...] = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
ACTION_PROPERTIES = "action"
"""The context attribute that ``action.properties`` become."""
_PARTS = ("subject", "action", "resource", "context")


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the mapping reads of a bundle: the stored entities' attributes, and each
    entity type's attributes (None when the schema could not be read into its JSON form:
    Cedar then judges the properties alone)."""

    namespace: str | None
    stored: Mapping[tuple[str, str], Mapping[str, Any]]
    types: Mapping[str, Type] | None
    by_type: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The stored entities' ids by qualified type, sorted (a search's candidates)."""
    actions: Mapping[str, tuple[frozenset[str], frozenset[str]]] | None = None
    """Each action's principal and resource types, by action id (None: unknown)."""

    @classmethod
    def of(cls, bundle: PolicyBundle) -> Catalog:
        """The catalog of ``bundle`` (its entities file parsed once more)."""
        text = bundle.files.get(ENTITIES_FILE)
        loaded = qualify_entities(json.loads(text), bundle.namespace) if text else []
        stored = {
            (entity["uid"]["type"], entity["uid"]["id"]): entity.get("attrs", {})
            for entity in loaded
        }
        by_type: dict[str, list[str]] = {}
        for type_name, entity_id in stored:
            by_type.setdefault(type_name, []).append(entity_id)
        described = schema_json(bundle.schema)
        return cls(
            bundle.namespace,
            stored,
            None if described is None else entity_types(described),
            {type_name: tuple(sorted(ids)) for type_name, ids in by_type.items()},
            None
            if described is None
            else {uid[1]: targets for uid, targets in action_targets(described).items()},
        )

    def ids_of(self, type_name: str) -> tuple[str, ...]:
        """The ids of the stored entities of the qualified ``type_name``, sorted."""
        return self.by_type.get(type_name, ())

    def actions_for(self, principal: str | None, resource: str | None) -> list[str] | None:
        """The actions that apply to these (qualified) principal and resource types,
        sorted; None when the schema's actions are unknown."""
        if self.actions is None:
            return None
        return sorted(
            name
            for name, (principals, resources) in self.actions.items()
            if principal in principals and resource in resources
        )

    def entity(
        self, type_name: str, entity_id: str, properties: Mapping[str, Any], field: str
    ) -> dict[str, Any] | None:
        """The per-request entity that ``properties`` (at ``field``) make, or None for a
        stored entity whose attributes they only repeat. Raises :class:`~engine.RequestError`."""
        qualified = qualify_type(type_name, self.namespace)
        # Entity references name their types as the store does (``Docket::Group``).
        properties = qualify_refs(dict(properties), self.namespace)
        stored = self.stored.get((qualified, entity_id))
        if stored is not None:
            for name in sorted(properties):
                if stored.get(name, _MISSING) != properties[name]:
                    raise RequestError(
                        f"{field}.{name}: {qualified}::{json.dumps(entity_id)} is in the entity "
                        "store; a request cannot add to or change its attributes"
                    )
            return None
        if self.types is not None:
            record = self.types.get(qualified)
            if record is None:
                raise RequestError(
                    f"{field.removesuffix('.properties')}.type: no entity type {qualified} "
                    "with attributes in the schema"
                )
            problem = context_problem(record, properties, "", field, owner=qualified)
            if problem is not None:
                raise RequestError(problem)
        return {
            "uid": {"type": type_name, "id": entity_id},
            "attrs": properties,
            "parents": [],
        }


_MISSING: Any = object()


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{field}: must be an object")
    return value


def _string(part: Mapping[str, Any], name: str, field: str) -> str:
    if name not in part:
        raise RequestError(f"{field}.{name}: required")
    value = part[name]
    if not isinstance(value, str):
        raise RequestError(f"{field}.{name}: must be a string")
    return value


def _properties(part: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    if "properties" not in part:
        return None
    return _object(part["properties"], f"{field}.properties")


def _required(item: Mapping[str, Any], name: str, field: str) -> dict[str, Any]:
    if name not in item:
        raise RequestError(f"{field}{name}: required")
    return _object(item[name], f"{field}{name}")


def _context(item: Mapping[str, Any], field: str) -> dict[str, Any]:
    """The context, refusing what only Docket sets (see :mod:`engine._adapters.wire`)."""
    context = _object(item.get("context", {}), f"{field}context")
    if CALLER in context:
        raise RequestError(
            f"{field}context.{CALLER}: set by the server from the caller's mTLS identity"
        )
    device = context.get(DEVICE)
    if DEVICE in context:
        device = _object(device, f"{field}context.{DEVICE}")
        for name in ATTESTED_DEVICE_FIELDS:
            if name in device:
                raise RequestError(f"{field}context.{DEVICE}.{name}: {ATTESTED_BY_DOCKET}")
    return dict(context)


def to_request(item: Mapping[str, Any], catalog: Catalog, field: str = "") -> Request:
    """The engine request of one evaluation (``field``: its prefix in messages,
    ``"evaluations[2]."``). Raises :class:`~engine.RequestError` naming the field."""
    subject = _required(item, "subject", field)
    action = _required(item, "action", field)
    resource = _required(item, "resource", field)
    context = _context(item, field)
    action_properties = _properties(action, f"{field}action")
    if action_properties is not None:
        if ACTION_PROPERTIES in context:
            raise RequestError(
                f"{field}context.{ACTION_PROPERTIES}: holds action.properties; "
                "send them in one place"
            )
        context[ACTION_PROPERTIES] = action_properties
    uids: list[EntityUID] = []
    entities: dict[tuple[str, str], dict[str, Any]] = {}
    for name, part in (("subject", subject), ("resource", resource)):
        where = f"{field}{name}"
        uid = EntityUID.model_construct(
            type=_string(part, "type", where), id=_string(part, "id", where)
        )
        if not uid.type:
            raise RequestError(f"{where}.type: must not be empty")
        uids.append(uid)
        properties = _properties(part, where)
        if properties is None:
            continue
        made = catalog.entity(uid.type, uid.id, properties, f"{where}.properties")
        if made is None:
            continue
        if entities.setdefault((uid.type, uid.id), made) != made:
            raise RequestError(
                f"{where}.properties: the subject is this entity too, with other properties"
            )
    return Request.model_construct(
        principal=uids[0],
        action=EntityUID.model_construct(
            type="Action", id=_string(action, "name", f"{field}action")
        ),
        resource=uids[1],
        context=context,
        entities=tuple(entities.values()),
    )


def evaluations(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, Semantic]:
    """The items of an Access Evaluations request, each with the top-level ``subject``,
    ``action``, ``resource`` and ``context`` as defaults (an item's own key replaces
    the default whole), and the evaluation semantic; None for the items when there is
    no ``evaluations`` array or it is empty (the request is then one evaluation).
    Raises :class:`~engine.RequestError`, :class:`~engine.LimitExceeded` past
    :data:`~engine._service.constants.MAX_BATCH` evaluations."""
    options = _object(body.get("options", {}), "options")
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        raise RequestError(f"options.evaluations_semantic: must be one of {', '.join(SEMANTICS)}")
    items = body.get("evaluations", [])
    if not isinstance(items, list):
        raise RequestError("evaluations: must be an array")
    if not items:
        return None, semantic
    if len(items) > MAX_BATCH:
        raise LimitExceeded(
            f"evaluations: {len(items)} evaluations in one request; the limit is {MAX_BATCH}"
        )
    defaults = {name: body[name] for name in _PARTS if name in body}
    return [
        {**defaults, **_object(item, f"evaluations[{i}]")} for i, item in enumerate(items)
    ], semantic
