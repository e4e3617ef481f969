"""The site catalog (``sites.toml``): where workloads and data may be placed.

The catalog also defines which jurisdictions Docket knows (:func:`jurisdictions`): a
residency or a ``users_in`` naming any other is an input error, not an empty answer.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, ValidationError

Jurisdiction = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,31}$")]


class Site(BaseModel):
    """One place to run workloads or hold data: an edge site, a cloud region, on-prem."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    region: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    jurisdiction: Jurisdiction
    tier: Literal["edge", "cloud", "onprem"]
    attested: StrictBool = False
    accelerators: tuple[str, ...] = ()
    cost_per_hour: float = Field(ge=0)
    latency_ms: dict[Jurisdiction, float] = Field(min_length=1)
    """Typical round-trip time from users in each jurisdiction."""

    def latency_from(self, jurisdiction: str | None) -> float:
        """Latency for users in ``jurisdiction``; the best case when it is unknown."""
        if jurisdiction is not None and jurisdiction in self.latency_ms:
            return self.latency_ms[jurisdiction]
        if jurisdiction is not None:
            return max(self.latency_ms.values())
        return min(self.latency_ms.values())

    def cedar_attrs(self) -> dict[str, Any]:
        """The attributes policies see on the ``Site`` entity."""
        return {
            "region": self.region,
            "jurisdiction": self.jurisdiction,
            "tier": self.tier,
            "attested": self.attested,
            "accelerators": list(self.accelerators),
        }


def jurisdictions(sites: Iterable[Site]) -> frozenset[str]:
    """The jurisdictions of a site catalog: each site's ``jurisdiction``.

    These are the known jurisdictions: a residency names where data may be, and only a
    jurisdiction that holds a site can be checked (the admission webhook's
    ``docket.io/residency`` label is held to the same set). ``latency_ms`` keys say
    where users are measured from and add none.
    """
    return frozenset(site.jurisdiction for site in sites)


def unknown_jurisdiction(field: str, values: Iterable[str], known: frozenset[str]) -> str | None:
    """One line naming the first of ``values`` not in ``known`` and what is known, or None."""
    for value in values:
        if value not in known:
            names = ", ".join(sorted(known)) or "none: the bundle has no site catalog"
            return (
                f"{field}: {json.dumps(value)} is not a jurisdiction of the site catalog ({names})"
            )
    return None


def parse_sites(name: str, text: str) -> tuple[tuple[Site, ...], list[str]]:
    """Parse a ``sites.toml``; return the sites and every ``file:line: message`` problem."""
    try:
        data: Mapping[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or 1
        return (), [f"{name}:{line}: {getattr(exc, 'msg', str(exc))}"]
    header_lines = [
        number
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip().startswith("[[site]]")
    ]
    unknown = sorted(set(data) - {"site"})
    problems = [f"{name}:1: unknown table {key!r} (expected [[site]] entries)" for key in unknown]
    raw_sites = data.get("site", [])
    if not isinstance(raw_sites, list):
        return (), [*problems, f"{name}:1: 'site' must be an array of tables ([[site]])"]
    sites: list[Site] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_sites):
        line = header_lines[position] if position < len(header_lines) else 1
        try:
            site = Site.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(part) for part in err["loc"]) or "site"
                problems.append(f"{name}:{line}: {where}: {err['msg']}")
            continue
        if site.name in seen:
            problems.append(f"{name}:{line}: duplicate site name {site.name!r}")
            continue
        seen.add(site.name)
        sites.append(site)
    return tuple(sites), problems
