"""Placement and residency on the default bundle (issue 13, finding 6): a declared
residency binds whatever the classification, ``place`` never ranks a site that the
compliance report would call a violation, and unknown jurisdictions are input errors."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from audit._report import ReportStatus, build_report
from engine import Engine, PolicyBundle, RequestError
from engine._core.bundle import read_bundle_files
from engine._core.placement import DECLARED, Workload
from engine._core.sites import jurisdictions
from engine._service.audit_entries import placement_entry
from sdk.v1 import decisions_pb2 as pb
from sdk.v1 import decisions_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
KNOWN = ("apac", "eu", "uk", "us")
CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")


@pytest.fixture(scope="module")
def bundle() -> PolicyBundle:
    return PolicyBundle.load(ROOT / "policies")


@pytest.fixture(scope="module")
def engine(bundle: PolicyBundle) -> Engine:
    return Engine(bundle)


def test_the_known_jurisdictions_are_the_catalogs(bundle: PolicyBundle) -> None:
    assert sorted(jurisdictions(bundle.sites)) == list(KNOWN)


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        pytest.param(
            Workload(id="fin-batch", classification="confidential", residency=("mars",)),
            f'residency: "mars" is not a jurisdiction of the site catalog ({", ".join(KNOWN)})',
            id="residency",
        ),
        pytest.param(
            Workload(id="fin-batch", residency=("eu", "uk", "latam")),
            'residency: "latam" is not a jurisdiction',
            id="residency-second-value",
        ),
        pytest.param(
            Workload(id="fin-batch", residency=("eu",), users_in="mars"),
            f'users_in: "mars" is not a jurisdiction of the site catalog ({", ".join(KNOWN)})',
            id="users_in",
        ),
    ],
)
def test_unknown_jurisdictions_are_refused(
    engine: Engine, workload: Workload, message: str
) -> None:
    with pytest.raises(RequestError) as raised:
        engine.place(workload, now=NOW)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_without_a_site_catalog_every_residency_is_unknown() -> None:
    files = {k: v for k, v in read_bundle_files(ROOT / "policies").items() if k != "sites.toml"}
    engine = Engine(PolicyBundle.from_files(files))
    with pytest.raises(RequestError, match="the bundle has no site catalog"):
        engine.place(Workload(id="w", residency=("eu",)), now=NOW)
    assert engine.place(Workload(id="w"), now=NOW).allowed == ()


@pytest.mark.parametrize("key", DECLARED)
def test_context_may_not_restate_a_declared_field(key: str) -> None:
    with pytest.raises(ValidationError, match=rf"context\.{key} may not be set"):
        Workload.model_validate({"id": "w", "context": {key: "anything"}})


def test_an_empty_residency_is_no_constraint(engine: Engine, bundle: PolicyBundle) -> None:
    placement = engine.place(Workload(id="w", classification="internal"), now=NOW)
    assert {site.jurisdiction for site in placement.allowed} == set(KNOWN)
    assert "residency" not in Workload(id="w").cedar_context()


def test_fin_batch_is_placed_in_the_eu_only(engine: Engine) -> None:
    workload = Workload(id="fin-batch", classification="confidential", residency=("eu",))
    placement = engine.place(workload, now=NOW)
    assert [s.site for s in placement.allowed] == [
        "eu-central-1-onprem-fra",
        "eu-central-1-cloud",
        "eu-west-1-cloud",
    ]
    denied = {d.site: d.reasons for d in placement.denied}
    assert denied["uk-south-1-edge-lon"] == ("placement-residency",)
    assert denied["us-east-1-edge-nyc"] == ("placement-residency",)


def _workloads() -> list[Any]:
    residencies = [
        combo for size in range(len(KNOWN) + 1) for combo in itertools.combinations(KNOWN, size)
    ]
    cases = []
    for classification, residency, regulated in itertools.product(
        CLASSIFICATIONS, residencies, (False, True)
    ):
        cases.append(
            Workload(
                id="w", classification=classification, residency=residency, regulated=regulated
            )
        )
    # Catalogued datasets: their own residency binds even when the request omits it.
    for data in ("quarterly-forecast", "invoices-apac", "patient-records-eu", "public-website"):
        for classification in CLASSIFICATIONS:
            cases.append(Workload(id=data, kind="dataset", classification=classification))
    return cases


def test_place_never_ranks_a_site_the_report_calls_a_violation(
    engine: Engine, bundle: PolicyBundle
) -> None:
    entries = []
    for workload in _workloads():
        placement = engine.place(workload, now=NOW)
        for site in placement.allowed:
            assert not workload.residency or site.jurisdiction in workload.residency, workload
            labels = bundle.labels(("Docket::Data", workload.id))
            if workload.kind == "dataset" and labels is not None and labels.residency:
                assert site.jurisdiction in labels.residency, workload
        entries.append(placement_entry(workload, placement, decision_id="d", caller=None, now=NOW))
    assert sum(entry.decision == "allow" for entry in entries) > 100
    status = ReportStatus(intact=True, tree_size=0, checkpoint=None, problem=None, redacted=())
    report = build_report(
        enumerate(entries), since=None, until=None, status=status, generated_at=NOW
    )
    assert report.findings == ()


def test_sensitive_data_must_declare_a_residency(engine: Engine) -> None:
    for workload in (
        Workload(id="w", classification="restricted"),
        Workload(id="w", classification="internal", regulated=True),
    ):
        placement = engine.place(workload, now=NOW)
        assert placement.allowed == ()
        assert {d.reasons for d in placement.denied} >= {
            ("placement-sensitive-requires-residency",)
        }


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(pb.PlacementRequest(workload_id="w", residency=["mars"]), id="residency"),
        pytest.param(pb.PlacementRequest(workload_id="w", users_in="mars"), id="users_in"),
    ],
)
def test_grpc_place_refuses_unknown_jurisdictions(
    stub: pb_grpc.DecisionsStub, request_: pb.PlacementRequest
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Place(request_, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert '"mars" is not a jurisdiction of the site catalog' in raised.value.details()
