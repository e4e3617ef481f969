"""The SDK's ``authorize_resources`` against a real ``docket serve``: one principal and
action over many resources, decided as a batch, each answer the one Authorize gives
alone, and each decision in the audit log."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e.docket_process import start_docket

from sdk import DecisionClient

pytestmark = pytest.mark.e2e

HEIDI = {"type": "User", "id": "heidi"}
RESOURCES = [
    {"type": "Data", "id": name}
    for name in ("public-website", "payroll", "quarterly-forecast", "patient-records-eu")
]


def test_many_resources_decide_as_each_alone_and_are_all_audited(tmp_path: Path) -> None:
    server = start_docket(tmp_path / "serve", "--admission", "off")
    try:
        with DecisionClient(f"127.0.0.1:{server.grpc_port}", timeout=10) as client:
            together = client.authorize_resources(HEIDI, "read", RESOURCES * 3)
            alone = [client.authorize(HEIDI, "read", resource) for resource in RESOURCES * 3]
    finally:
        assert server.stop() == 0
    assert [r.decision for r in together] == [r.decision for r in alone]
    assert {r.decision for r in together} == {"allow", "deny"}
    logged = {entry["detail"]["decision_id"]: entry for entry in server.audit_entries("decision")}
    for result, resource in zip(together, RESOURCES * 3, strict=True):
        entry = logged[result.decision_id]
        assert entry["decision"] == result.decision
        assert resource["id"] in entry["resource"]
