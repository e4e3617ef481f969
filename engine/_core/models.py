"""The engine's values: requests in, decisions out (pydantic, strict at the boundary)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator


class EntityUID(BaseModel):
    """A Cedar entity uid. ``type`` may omit the bundle's namespace (``User``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: StrictStr = Field(min_length=1)
    id: StrictStr


class Request(BaseModel):
    """May ``principal`` do ``action`` on ``resource``, given ``context``?

    The shape is Cedar's request shape. ``entities`` are extra entities for this
    request only, in Cedar's JSON entity format; per-request facts such as device
    posture, claims and HTTP attributes belong in ``context``, which costs nothing
    to add, whereas extra entities make a copy of the bundle's entity store. Both are
    bounded (count, fan-out, chain depth, size, nesting: :mod:`engine._core.limits`).

    A principal may be named by its SPIFFE ID (``Workload::"spiffe://…/sa/billing-api"``):
    when a stored entity *of the type named* has that ``spiffe_id`` attribute, the request
    is about it. The type is never changed: ``User::"spiffe://…/sa/billing-api"`` stays a
    ``User`` (not in the store, so user rules apply to it), whatever workload has that ID.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    principal: EntityUID
    action: EntityUID
    resource: EntityUID
    context: dict[str, Any] = Field(default_factory=dict)
    entities: tuple[dict[str, Any], ...] = ()


class PolicyError(BaseModel):
    """A policy whose evaluation raised an error (it then neither permits nor forbids).

    ``policy`` is None when the engine itself could not evaluate (no bundle loaded).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str | None
    message: str


class Decision(BaseModel):
    """The answer to a :class:`Request`.

    ``reasons`` are the determining policies: the satisfied ``forbid`` policies of a
    deny, the satisfied ``permit`` policies of an allow, none for a default deny.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["allow", "deny"]
    reasons: tuple[str, ...] = ()
    errors: tuple[PolicyError, ...] = ()
    bundle_version: str | None = None
    policies_evaluated: int = 0
    evaluated_at: datetime

    @field_validator("evaluated_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("evaluated_at must be timezone-aware (UTC)")
        return value

    @property
    def allowed(self) -> bool:
        """True only for an explicit allow."""
        return self.decision == "allow"
