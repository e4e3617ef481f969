"""The site catalog (``sites.toml``): where workloads and data may be placed."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
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
