"""What callers hand the client and what it hands back, as strict pydantic values.

Requests are written in Cedar's request shape, so a plain dict works wherever a model
does::

    {"principal": {"type": "User", "id": "alice"},
     "action": {"type": "Action", "id": "read"},      # or just "read"
     "resource": {"type": "Data", "id": "patient-records-eu"},
     "context": {"mfa": True, "device": {"patch_age_days": 3}},
     "entities": [{"uid": {"type": "User", "id": "zoe"}, "attrs": {}, "parents": []}]}

Context and entity attribute values are Cedar values in JSON form: bools, whole numbers,
strings, lists (sets), dicts (records) and entity references (``{"__entity": {...}}`` or
an ``EntityRef``). They travel as ``google.protobuf.Struct``, whose numbers are doubles,
so a float, a null, or an int beyond ±2**53 is refused here, before anything is sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Set
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

from sdk._errors import CedarValueError

__all__ = [
    "MAX_EXACT_INT",
    "AuthorizeRequest",
    "AuthorizeResult",
    "DeniedSite",
    "Entity",
    "EntityRef",
    "PlacedSite",
    "Placement",
    "PlacementRequest",
    "ReloadResult",
    "cedar_record",
    "cedar_value",
]

MAX_EXACT_INT = 2**53
"""The largest magnitude a double (and so a ``google.protobuf.Struct`` number) holds exactly."""


class _Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def cedar_value(value: Any, path: str = "") -> Any:
    """Return ``value`` as plain JSON that maps exactly onto a Cedar value.

    Entity references (``EntityRef``) become ``{"__entity": {...}}``; tuples and sets
    become lists. Raises ``CedarValueError`` for a float (Cedar has no floating point),
    an int beyond ±2**53 (Struct carries numbers as doubles), a null, a non-string key or
    any other type.
    """
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_EXACT_INT:
            raise CedarValueError(
                path,
                f"{value} is beyond ±2**53, the largest whole number google.protobuf.Struct "
                "carries exactly; send it as a string or keep it out of the context",
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CedarValueError(
                path, f"{value!r} is not a finite number; Cedar has whole numbers only"
            )
        raise CedarValueError(
            path, f"{value!r} is a float and Cedar has no floating point: send a whole number (int)"
        )
    if value is None:
        raise CedarValueError(path, "null has no Cedar equivalent: leave the attribute out")
    if isinstance(value, EntityRef):
        return {"__entity": {"type": value.type, "id": value.id}}
    if isinstance(value, Mapping):
        record: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CedarValueError(path, f"record keys must be strings, got {key!r}")
            record[key] = cedar_value(item, _join(path, key))
        return record
    if isinstance(value, list | tuple | Set):
        return [cedar_value(item, _join(path, i)) for i, item in enumerate(value)]
    raise CedarValueError(
        path,
        f"{type(value).__name__} is not a Cedar value "
        "(use bool, int, str, list, dict or an entity reference)",
    )


def cedar_record(value: Any) -> dict[str, Any]:
    """``cedar_value`` for a whole context or attribute map; raises ``CedarValueError``."""
    record = cedar_value(value)
    if not isinstance(record, dict):
        raise CedarValueError("", "must be a JSON object (a Cedar record)")
    return record


CedarRecord = Annotated[dict[str, Any], AfterValidator(cedar_record)]
"""A context or attribute map whose values are checked by ``cedar_value``."""


class EntityRef(_Value):
    """A Cedar entity uid such as ``User::"alice"``: ``{"type": "User", "id": "alice"}``.

    The type may leave out the bundle's namespace. ``{"__entity": {...}}`` is accepted too.
    """

    type: StrictStr = Field(min_length=1)
    id: StrictStr

    @model_validator(mode="before")
    @classmethod
    def _unwrap_entity_escape(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and set(data) == {"__entity"}:
            return data["__entity"]
        return data

    def __str__(self) -> str:
        return f"{self.type}::{json.dumps(self.id)}"


class Entity(_Value):
    """An entity in Cedar's JSON entity format, supplied for one request only."""

    uid: EntityRef
    attrs: CedarRecord = Field(default_factory=dict)
    parents: tuple[EntityRef, ...] = ()


class AuthorizeRequest(_Value):
    """One access question: may ``principal`` do ``action`` on ``resource``?

    ``action`` may be given as a bare id (``"read"`` means ``Action::"read"``).
    ``device_token`` is the JWT-SVID Docket issued to the device the request comes from
    (``docket attest`` writes it to ``<out>/jwt``): Docket verifies it and sets the
    attested claims of ``context["device"]`` from it.
    """

    principal: EntityRef
    action: EntityRef
    resource: EntityRef
    context: CedarRecord = Field(default_factory=dict)
    entities: tuple[Entity, ...] = ()
    device_token: StrictStr | None = Field(default=None, min_length=1, repr=False)

    @field_validator("action", mode="before")
    @classmethod
    def _bare_action_id(cls, value: Any) -> Any:
        return {"type": "Action", "id": value} if isinstance(value, str) else value


Classification = Literal["public", "internal", "confidential", "restricted"]


class PlacementRequest(_Value):
    """Where may a workload run or a dataset be stored? See ``DecisionClient.place``."""

    workload_id: StrictStr = Field(min_length=1)
    kind: Literal["workload", "dataset"] = "workload"
    classification: Classification = "internal"
    residency: tuple[StrictStr, ...] = ()
    regulated: StrictBool = False
    accelerator: StrictStr | None = None
    latency_budget_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    users_in: StrictStr | None = None
    context: CedarRecord = Field(default_factory=dict)
    sites: tuple[StrictStr, ...] = ()


class AuditReceipt(_Value):
    """Where a decision is in Docket's audit log: the entry's index and its RFC 6962
    leaf hash (hex). Docket answered only after the entry was durable; an auditor proves
    it with ``docket audit prove INDEX``."""

    index: int
    leaf_hash: str


class AuthorizeResult(_Value):
    """Docket's answer to one ``AuthorizeRequest``.

    ``reasons`` are the determining policy ids (satisfied forbids of a deny, satisfied
    permits of an allow); ``errors`` are ``(policy_id, message)`` pairs for policies whose
    evaluation failed, with an empty policy id when the engine itself could not evaluate.
    ``decision_id`` names the decision; ``receipt`` says where its audit entry is (None
    only from a server that sent none).
    """

    decision: Literal["allow", "deny"]
    decision_id: str
    reasons: tuple[str, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()
    bundle_version: str = ""
    receipt: AuditReceipt | None = None

    @property
    def allowed(self) -> bool:
        """True only for an allow; every other outcome denies."""
        return self.decision == "allow"


class PlacedSite(_Value):
    """A site the workload may be placed on, with the figures it was ranked by."""

    site: str
    region: str
    jurisdiction: str
    tier: str
    latency_ms: float
    cost_per_hour: float
    within_latency_budget: bool
    reasons: tuple[str, ...] = ()


class DeniedSite(_Value):
    """A site the workload may not be placed on, and the policies that said so."""

    site: str
    reasons: tuple[str, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()


class Placement(_Value):
    """Docket's answer to a placement request: allowed sites best first, and the denied."""

    workload_id: str
    decision_id: str
    allowed: tuple[PlacedSite, ...] = ()
    denied: tuple[DeniedSite, ...] = ()
    bundle_version: str = ""
    receipt: AuditReceipt | None = None


class ReloadResult(_Value):
    """The outcome of ReloadBundle; ``changed`` is false when the files held the version
    already in force."""

    bundle_version: str
    changed: bool
    previous_version: str
