"""Placement: which sites may run a workload or hold a dataset, best first."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from engine._models import PolicyError
from engine._sites import Jurisdiction, Site

Classification = Literal["public", "internal", "confidential", "restricted"]


class Workload(BaseModel):
    """What is to be placed, with the attributes placement policies look at.

    Policies see ``principal`` = ``Workload::"<id>"`` (or ``Data::"<id>"`` for a
    dataset), ``action`` = ``Action::"place"``, ``resource`` = the ``Site``, and the
    context record ``{classification, residency?, regulated, accelerator?, kind}``
    plus anything in ``context``.
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
