"""A small, valid bundle shared by the engine tests, and a helper to write bundles out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

SCHEMA = """\
namespace Docket {
  entity Classification in [Classification];
  entity Group in [Group];
  entity User in [Group] {
    department: String,
    email?: String,
  };
  entity Workload in [Group] {
    namespace: String,
  };
  entity Data {
    owner: User,
    department: String,
  };
  entity Site {
    region: String,
    jurisdiction: String,
    tier: String,
    attested: Bool,
    accelerators: Set<String>,
  };

  type RequestContext = {
    mfa?: Bool,
    owner?: User,
  };

  type PlacementContext = {
    classification: Classification,
    residency?: Set<String>,
    regulated?: Bool,
    accelerator?: String,
    kind?: String,
  };

  action read, write appliesTo {
    principal: [User, Workload],
    resource: [Data],
    context: RequestContext,
  };

  action place appliesTo {
    principal: [Workload, Data],
    resource: [Site],
    context: PlacementContext,
  };
}
"""

ACCESS = """\
// Access to data.
@id("read-own")
permit (principal, action == Docket::Action::"read", resource is Docket::Data)
when { resource.owner == principal };

@id("engineering-reads")
permit (principal in Docket::Group::"engineering", action == Docket::Action::"read", resource);

@id("delegated-read")
permit (principal, action == Docket::Action::"read", resource)
when { context has owner && context.owner == resource.owner };

@id("same-department-writes")
permit (principal, action == Docket::Action::"write", resource)
when { resource.owner.department == resource.department };

@id("no-write-without-mfa")
forbid (principal, action == Docket::Action::"write", resource)
unless { context has mfa && context.mfa };
"""

PLACEMENT = """\
// Placement.
@id("place-anywhere")
permit (principal, action == Docket::Action::"place", resource is Docket::Site);

@id("restricted-needs-attested")
forbid (principal, action == Docket::Action::"place", resource)
when { context.classification in Docket::Classification::"restricted" && !resource.attested };

@id("no-data-at-edge")
forbid (principal is Docket::Data, action == Docket::Action::"place", resource)
when { resource.tier == "edge" };
"""

ENTITIES = """\
[
  {"uid": {"type": "Classification", "id": "public"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Classification", "id": "internal"}, "attrs": {},
   "parents": [{"type": "Classification", "id": "public"}]},
  {"uid": {"type": "Classification", "id": "restricted"}, "attrs": {},
   "parents": [{"type": "Classification", "id": "internal"}]},
  {"uid": {"type": "Group", "id": "engineering"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Group", "id": "sre"}, "attrs": {},
   "parents": [{"type": "Group", "id": "engineering"}]},
  {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "finance"}, "parents": []},
  {"uid": {"type": "User", "id": "dave"}, "attrs": {"department": "ops"},
   "parents": [{"type": "Group", "id": "sre"}]},
  {"uid": {"type": "User", "id": "bob"}, "attrs": {"department": "finance"}, "parents": []},
  {"uid": {"type": "Data", "id": "ledger"},
   "attrs": {"owner": {"__entity": {"type": "User", "id": "alice"}}, "department": "finance"},
   "parents": []},
  {"uid": {"type": "Data", "id": "orphan"},
   "attrs": {"owner": {"__entity": {"type": "User", "id": "nobody"}}, "department": "finance"},
   "parents": []}
]
"""

SITES = """\
[[site]]
name = "edge-paris"
region = "eu-west"
jurisdiction = "eu"
tier = "edge"
attested = true
cost_per_hour = 0.5
latency_ms = { eu = 5, us = 90 }

[[site]]
name = "cloud-frankfurt"
region = "eu-central"
jurisdiction = "eu"
tier = "cloud"
cost_per_hour = 0.2
latency_ms = { eu = 20, us = 100 }

[[site]]
name = "onprem-virginia"
region = "us-east"
jurisdiction = "us"
tier = "onprem"
attested = true
cost_per_hour = 0.1
latency_ms = { eu = 95, us = 10 }
"""


def bundle_files(changes: Mapping[str, str | bytes | None] | None = None) -> dict[str, bytes]:
    """The sample bundle's files, with files replaced, added or (``None``) removed."""
    files: dict[str, str | bytes | None] = {
        "schema.cedarschema": SCHEMA,
        "10-access.cedar": ACCESS,
        "20-placement.cedar": PLACEMENT,
        "entities.json": ENTITIES,
        "sites.toml": SITES,
        **(changes or {}),
    }
    return {
        name: value.encode() if isinstance(value, str) else value
        for name, value in files.items()
        if value is not None
    }


def write_bundle(root: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` under ``root`` and return it."""
    for name, data in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root
