"""Placement: which sites may run a workload or hold a dataset, best first.

A residency declared on a workload binds wherever it is placed, whatever its
classification (``placement-residency`` in the default bundle; the compliance report
holds the audit log to the same rule). So that what policy sees is what the audit entry
records, the fields policies look at are declared once, as the workload's own fields:
``context`` may add facts but not restate them. Residency values are checked against
the bundle's site catalog by :meth:`engine.Engine.place`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator
from pydantic_core import PydanticCustomError

from engine._core.models import PolicyError
from engine._core.sites import Jurisdiction, Site

Classification = Literal["public", "internal", "confidential", "restricted"]

DECLARED = ("classification", "residency", "regulated", "accelerator", "kind")
"""Context keys a workload declares in its own fields; ``context`` may not set them."""


class Workload(BaseModel):
    """What is to be placed, with the attributes placement policies look at.

    Policies see ``principal`` = ``Workload::"<id>"`` (or ``Data::"<id>"`` for a
    dataset), ``action`` = ``Action::"place"``, ``resource`` = the ``Site``, and the
    context record ``{classification, residency?, regulated, accelerator?, kind}``
    plus anything else in ``context`` (which may not restate those: a validation error).
    An empty ``residency`` is no constraint and is left out of the Cedar context.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: StrictStr = Field(min_length=1)
    kind: Literal["workload", "dataset"] = "workload"
    classification: Classification = "internal"
    residency: tuple[Jurisdiction, ...] = ()
    """Jurisdictions the data may live in; empty means no residency constraint."""
    regulated: StrictBool = False
    accelerator: StrictStr | None = None
    latency_budget_ms: float | None = Field(default=None, gt=0)
    users_in: Jurisdiction | None = None
    """Where the users are; latency figures are taken from there."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Further facts for policies; never one of :data:`DECLARED`."""

    @field_validator("context")
    @classmethod
    def _no_declared_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        # A context key would override the declared field in the Cedar context while the
        # audit entry records the field: a residency widened, a classification lowered.
        for key in DECLARED:
            if key in value:
                raise PydanticCustomError(
                    "declared_field",
                    "context.{key} may not be set: {key} is the workload's own field",
                    {"key": key},
                )
        return value

    def cedar_context(self) -> dict[str, Any]:
        """The Cedar context record for the ``place`` action."""
        context: dict[str, Any] = {
            "classification": {"__entity": {"type": "Classification", "id": self.classification}},
            "regulated": self.regulated,
            "kind": self.kind,
        }
        if self.residency:
            context["residency"] = list(self.residency)
        if self.accelerator is not None:
            context["accelerator"] = self.accelerator
        context.update(self.context)
        return context


class PlacedSite(BaseModel):
    """A site the workload may be placed on, with the figures it was ranked by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    region: str
    jurisdiction: str
    tier: str
    latency_ms: float
    cost_per_hour: float
    within_latency_budget: bool
    reasons: tuple[str, ...]


class DeniedSite(BaseModel):
    """A site the workload may not be placed on, and the policies that said so."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    reasons: tuple[str, ...]
    errors: tuple[PolicyError, ...] = ()


class Placement(BaseModel):
    """The answer to a placement request: allowed sites ranked best first, denied ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str
    allowed: tuple[PlacedSite, ...]
    denied: tuple[DeniedSite, ...]
    bundle_version: str | None
    evaluated_at: datetime


def rank(workload: Workload, allowed: list[tuple[Site, tuple[str, ...]]]) -> list[PlacedSite]:
    """Sites within the latency budget first, then by cost, then latency, then name."""
    placed = []
    for site, reasons in allowed:
        latency = site.latency_from(workload.users_in)
        budget = workload.latency_budget_ms
        placed.append(
            PlacedSite(
                site=site.name,
                region=site.region,
                jurisdiction=site.jurisdiction,
                tier=site.tier,
                latency_ms=latency,
                cost_per_hour=site.cost_per_hour,
                within_latency_budget=budget is None or latency <= budget,
                reasons=reasons,
            )
        )
    placed.sort(key=lambda p: (not p.within_latency_budget, p.cost_per_hour, p.latency_ms, p.site))
    return placed
