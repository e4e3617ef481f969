"""Attacks on placement and the residency report (issue 13, finding 6), each against a
real ``docket serve`` (a subprocess) and the ``docket`` command line.

The attack: a workload that declares a residency but is not restricted or regulated was
placed anywhere (``fin-batch``, confidential, residency ``eu``, ranked a UK site first
and a US site second), data with a residency was readable from outside it unless it was
restricted, and unknown jurisdictions (``mars``) were accepted silently — while
``docket audit report`` called such placements and reads residency violations. Now a
declared residency always binds, the report applies the same rule (one row per
violating decision, naming its site), and an unknown jurisdiction is an input error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e.docket_process import DOCKET, ROOT, Docket, start_docket
from google.protobuf import json_format
from google.protobuf.struct_pb2 import Struct

from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

FIN_BATCH = {"id": "fin-batch", "classification": "confidential", "residency": ["eu"]}
KNOWN = "apac, eu, uk, us"  # the default site catalog's jurisdictions

# The placement policy as it was before issue 13: residency bound only restricted or
# regulated workloads. A server on it writes the violations the report must find.
OLD_PLACEMENT = """
@id("placement-baseline")
permit (principal, action == Docket::Action::"place", resource is Docket::Site);

@id("placement-residency")
forbid (principal, action == Docket::Action::"place", resource is Docket::Site)
when {
  context.classification in Docket::Classification::"restricted" ||
  (context has regulated && context.regulated)
}
unless { context has residency && context.residency.contains(resource.jurisdiction) };

@id("placement-unattested-edge-low-classification-only")
forbid (principal, action == Docket::Action::"place", resource is Docket::Site)
when {
  resource.tier == "edge" && !resource.attested &&
  context.classification in Docket::Classification::"confidential"
};
"""
# ... and its access guard, which bound only restricted data to its residency.
OLD_GUARD = """
@id("restricted-requires-resident-jurisdiction")
forbid (principal, action, resource is Docket::Data)
when { resource.classification in Docket::Classification::"restricted" }
unless { context has jurisdiction && resource.residency.contains(context.jurisdiction) };
"""


# Internal data that declares a residency: readable without a device, so that a read
# from outside it needs nothing but a jurisdiction.
WIKI = {
    "uid": {"type": "Docket::Data", "id": "team-wiki-eu"},
    "attrs": {
        "classification": {"__entity": {"type": "Docket::Classification", "id": "internal"}},
        "residency": ["eu"],
        "owner": {"__entity": {"type": "Docket::User", "id": "carol"}},
        "regulated": False,
        "department": "research",
        "namespace": "research",
    },
    "parents": [],
}


def bundle_with_wiki(root: Path) -> Path:
    """A copy of the default bundle (``policies/``) with :data:`WIKI` added."""
    bundle = root / "policies-with-wiki"
    shutil.copytree(ROOT / "policies", bundle)
    entities = json.loads((bundle / "entities.json").read_text())
    (bundle / "entities.json").write_text(json.dumps([*entities, WIKI]))
    return bundle


@pytest.fixture(scope="module")
def docket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docket]:
    root = tmp_path_factory.mktemp("placement")
    running = start_docket(root / "serve", bundle=bundle_with_wiki(root))
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log.read_text()


def docket_place(workload: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``docket place --json`` on the default bundle, the workload on stdin."""
    return subprocess.run(
        [DOCKET, "place", "--bundle", str(ROOT / "policies"), "--json"],
        input=json.dumps({"workload": workload}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def grpc_place(docket: Docket, **fields: Any) -> pb.PlacementResponse:
    with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
        response: pb.PlacementResponse = pb_grpc.DecisionsStub(channel).Place(
            pb.PlacementRequest(**fields), timeout=30
        )
    return response


def grpc_read(docket: Docket, principal: str, data: str, jurisdiction: str) -> pb.AuthorizeResponse:
    context = Struct()
    context.update({"jurisdiction": jurisdiction})
    request = pb.AuthorizeRequest(
        principal=pb.EntityRef(type="User", id=principal),
        action=pb.EntityRef(type="Action", id="read"),
        resource=pb.EntityRef(type="Data", id=data),
        context=context,
    )
    with grpc.insecure_channel(f"127.0.0.1:{docket.grpc_port}") as channel:
        response: pb.AuthorizeResponse = pb_grpc.DecisionsStub(channel).Authorize(
            request, timeout=30
        )
    return response


def audit_report(docket: Docket) -> dict[str, Any]:
    """``docket audit report --format json`` on the server's log, as an auditor runs it."""
    done = subprocess.run(
        [DOCKET, "audit", "report", "--data-dir", str(docket.data_dir), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["verification"]["intact"] is True
    return report


def findings_of(report: dict[str, Any], decision_id: str) -> list[dict[str, Any]]:
    return [f for f in report["residency"]["findings"] if f["decision_id"] == decision_id]


# -- a declared residency binds, whatever the classification ---------------------------


def test_attack_confidential_residency_ignored_by_docket_place() -> None:
    done = docket_place(FIN_BATCH)
    assert done.returncode == 0, done.stderr
    placement = json.loads(done.stdout)
    allowed = [(s["site"], s["jurisdiction"]) for s in placement["allowed"]]
    assert allowed, placement
    assert {jurisdiction for _, jurisdiction in allowed} == {"eu"}, allowed
    denied = {d["site"]: d["reasons"] for d in placement["denied"]}
    assert "placement-residency" in denied["uk-south-1-edge-lon"]
    assert "placement-residency" in denied["us-east-1-edge-nyc"]


@pytest.mark.parametrize("classification", ["public", "internal", "confidential", "restricted"])
def test_attack_residency_ignored_by_grpc_place(docket: Docket, classification: str) -> None:
    response = grpc_place(
        docket, workload_id="fin-batch", classification=classification, residency=["eu"]
    )
    jurisdictions = {site.jurisdiction for site in response.allowed}
    assert jurisdictions == {"eu"}, [(s.site, s.jurisdiction) for s in response.allowed]
    # ... and the report, run on the log those placements were written to, agrees.
    assert findings_of(audit_report(docket), response.decision_id) == []


def test_attack_catalog_residency_ignored_for_a_dataset(docket: Docket) -> None:
    # Confidential APAC invoices, placed without restating their residency.
    response = grpc_place(
        docket,
        workload_id="invoices-apac",
        kind=pb.WORKLOAD_KIND_DATASET,
        classification="confidential",
    )
    assert {site.jurisdiction for site in response.allowed} == {"apac"}
    denied = {d.site: list(d.reasons) for d in response.denied}
    assert "placement-data-catalog-residency" in denied["eu-west-1-cloud"]


def test_attack_read_from_outside_residency(docket: Docket) -> None:
    # Restricted data is no longer the limit: any data with a residency is read only
    # from inside it, internal data too.
    inside = grpc_read(docket, "carol", "team-wiki-eu", "eu")
    outside = grpc_read(docket, "carol", "team-wiki-eu", "us")
    assert inside.decision == pb.DECISION_ALLOW, inside
    assert outside.decision == pb.DECISION_DENY
    assert "restricted-requires-resident-jurisdiction" in outside.reasons
    assert findings_of(audit_report(docket), outside.decision_id) == []


def test_report_on_a_log_of_the_new_policy_finds_no_violation(docket: Docket) -> None:
    for workload in (
        FIN_BATCH,
        {"id": "ledger", "classification": "internal", "residency": ["uk", "us"]},
        {"id": "site", "classification": "public", "residency": ["apac"]},
        {"id": "anywhere", "classification": "confidential"},
    ):
        fields = {"workload_id": workload["id"], "classification": workload["classification"]}
        grpc_place(docket, **fields, residency=workload.get("residency", []))
    report = audit_report(docket)
    assert report["totals"]["placement"] >= 4
    assert report["residency"] == {"violations": 0, "findings": []}


# -- the report finds what the old policy allowed: one row per decision -----------------


def old_bundle(root: Path) -> Path:
    """:func:`bundle_with_wiki` with the placement policy and the residency guard of
    before issue 13."""
    bundle = bundle_with_wiki(root)
    (bundle / "placement.cedar").write_text(OLD_PLACEMENT)
    guards = (bundle / "guards.cedar").read_text()
    guard = re.compile(r'@id\("restricted-requires-resident-jurisdiction"\).*?\};\n', re.DOTALL)
    assert guard.search(guards), "the residency guard moved: update this test"
    (bundle / "guards.cedar").write_text(guard.sub("", guards) + OLD_GUARD)
    return bundle


def test_report_names_each_violating_decision_once_with_its_site(tmp_path: Path) -> None:
    docket = start_docket(tmp_path / "old", bundle=old_bundle(tmp_path))
    try:
        violating = grpc_place(
            docket, workload_id="fin-batch", classification="confidential", residency=["eu"]
        )
        internal = grpc_place(
            docket, workload_id="ledger", classification="internal", residency=["uk"]
        )
        compliant = grpc_place(
            docket, workload_id="ehr", classification="restricted", residency=["eu"]
        )
        unconstrained = grpc_place(docket, workload_id="batch", classification="confidential")
        read = grpc_read(docket, "carol", "team-wiki-eu", "us")
        report = audit_report(docket)
    finally:
        assert docket.stop() == 0, docket.log.read_text()

    def outside(response: pb.PlacementResponse, residency: set[str]) -> list[str]:
        return [s.site for s in response.allowed if s.jurisdiction not in residency]

    # The old policy let both through, outside their residency, in ranked order.
    assert outside(violating, {"eu"})[:2] == ["uk-south-1-edge-lon", "us-east-1-edge-nyc"]
    assert outside(internal, {"uk"})
    assert read.decision == pb.DECISION_ALLOW
    rows = report["residency"]["findings"]
    assert report["residency"]["violations"] == len(rows) == 3, rows
    by_id = {row["decision_id"]: row for row in rows}
    assert set(by_id) == {violating.decision_id, internal.decision_id, read.decision_id}
    assert compliant.decision_id not in by_id
    assert unconstrained.decision_id not in by_id
    for response, residency in ((violating, {"eu"}), (internal, {"uk"})):
        row = by_id[response.decision_id]
        sites = outside(response, residency)
        assert (row["kind"], row["site"], row["sites"]) == ("placement", sites[0], sites)
        assert (
            row["jurisdiction"]
            == response.allowed[[s.site for s in response.allowed].index(sites[0])].jurisdiction
        )
    row = by_id[read.decision_id]
    assert (row["kind"], row["site"], row["jurisdiction"]) == ("decision", None, "us")
    assert (row["classification"], row["residency"]) == ("internal", ["eu"])


# -- unknown jurisdictions are an input error ------------------------------------------


@pytest.mark.parametrize(
    ("field", "workload"),
    [
        pytest.param("residency", {**FIN_BATCH, "residency": ["eu", "mars"]}, id="residency"),
        pytest.param("users_in", {**FIN_BATCH, "users_in": "mars"}, id="users_in"),
    ],
)
def test_attack_unknown_jurisdiction_by_docket_place(field: str, workload: dict[str, Any]) -> None:
    done = docket_place(workload)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("docket: <stdin>:1: "), lines[0]
    assert f'{field}: "mars" is not a jurisdiction of the site catalog ({KNOWN})' in lines[0]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"residency": ["mars"]}, id="residency"),
        pytest.param({"residency": ["eu"], "users_in": "mars"}, id="users_in"),
    ],
)
def test_attack_unknown_jurisdiction_by_grpc_place(docket: Docket, fields: dict[str, Any]) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        grpc_place(docket, workload_id="fin-batch", classification="confidential", **fields)
    error = raised.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert f'"mars" is not a jurisdiction of the site catalog ({KNOWN})' in error.details()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param("residency", ["eu", "uk", "us"], id="residency"),
        pytest.param(
            "classification",
            {"__entity": {"type": "Classification", "id": "public"}},
            id="classification",
        ),
    ],
)
def test_attack_context_overrides_the_declared_residency(
    docket: Docket, key: str, value: Any
) -> None:
    # The placement context may not restate (and so widen or lower) what the workload
    # declares and the audit entry records.
    context = Struct()
    context.update({key: value})
    with pytest.raises(grpc.RpcError) as raised:
        grpc_place(
            docket,
            workload_id="fin-batch",
            classification="confidential",
            residency=["eu"],
            context=context,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"context.{key}" in raised.value.details(), raised.value.details()
    done = docket_place({**FIN_BATCH, "context": json_format.MessageToDict(context)})
    assert done.returncode == 2, done.stderr
    assert f"context.{key} may not be set" in done.stderr
