"""``docket serve --shadow-bundle`` through the APIs beside Authorize (issue 18): an
Envoy ext_authz Check (a direct gRPC call, as Envoy makes it) and an AuthZEN
``/access/v1/evaluation``. On a request the candidate decides the other way, the answer
is still the live bundle's, the counter says which way it flipped, and the entry carries
the candidate's annotation (which ``docket policy shadow-report`` reads)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from e2e.docket_process import DOCKET, Docket, start_docket
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.rpc import code_pb2
from prometheus_client.parser import text_string_to_metric_families
from shadow_bundles import FORBID_HEIDI, candidate

from engine._core.bundle import PolicyBundle

pytestmark = pytest.mark.e2e

PERMIT_ANONYMOUS = """
@id("candidate-permits-anonymous-website")
permit (principal == Docket::User::"anonymous", action, resource == Docket::Data::"public-website");
"""
NONE = {"flip_allow_to_deny": 0, "flip_deny_to_allow": 0, "error": 0}


@pytest.fixture
def shadowed(tmp_path: Path) -> Any:
    path = candidate(tmp_path, FORBID_HEIDI, PERMIT_ANONYMOUS)
    server = start_docket(tmp_path / "serve", "--admission", "off", "--shadow-bundle", str(path))
    try:
        yield server, PolicyBundle.load(path).version
    finally:
        assert server.stop() == 0


def shadow_counts(server: Docket) -> dict[str, float]:
    text = httpx.get(server.metrics_url, timeout=5).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "docket_shadow_decisions_total"
    }


def entry_of(server: Docket, api: str) -> dict[str, Any]:
    (entry,) = [e for e in server.audit_entries("decision") if e["detail"]["api"] == api]
    return entry


def shadow_report(server: Docket) -> dict[str, Any]:
    done = subprocess.run(
        [DOCKET, "policy", "shadow-report", "--data-dir", str(server.data_dir), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr  # flips found
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_a_check_the_candidate_would_allow_is_still_denied_and_annotated(
    shadowed: tuple[Docket, str],
) -> None:
    server, version = shadowed
    check = authz.CheckRequest()
    http = check.attributes.request.http
    http.method, http.path = "GET", "/site/index.html"
    check.attributes.context_extensions["resource_id"] = "public-website"
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        answer = authz_grpc.AuthorizationStub(channel).Check(check, timeout=10)
    assert answer.status.code == code_pb2.PERMISSION_DENIED
    assert answer.denied_response.status.code == 403
    assert shadow_counts(server) == {"flip_deny_to_allow": 1.0}
    entry = entry_of(server, "ext_authz")
    assert (
        entry["detail"]["decision_id"] == answer.dynamic_metadata.fields["decision_id"].string_value
    )
    assert (entry["subject"], entry["decision"]) == ('Docket::User::"anonymous"', "deny")
    note = entry["detail"]["shadow"]
    assert (note["bundle"], note["outcome"], note["decision"]) == (
        version,
        "flip_deny_to_allow",
        "allow",
    )
    assert note["policies"] == ["candidate-permits-anonymous-website"]
    assert shadow_report(server)["by_kind"] == {**NONE, "flip_deny_to_allow": 1}


def test_an_authzen_evaluation_the_candidate_would_deny_is_still_allowed_and_annotated(
    shadowed: tuple[Docket, str],
) -> None:
    server, version = shadowed
    answer = httpx.post(
        server.metrics_url.removesuffix("/metrics") + "/access/v1/evaluation",
        json={
            "subject": {"type": "User", "id": "heidi"},
            "action": {"name": "read"},
            "resource": {"type": "Data", "id": "public-website"},
        },
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.json() == {"decision": True}
    assert shadow_counts(server) == {"flip_allow_to_deny": 1.0}
    entry = entry_of(server, "authzen")
    assert (entry["subject"], entry["decision"]) == ('Docket::User::"heidi"', "allow")
    note = entry["detail"]["shadow"]
    assert (note["bundle"], note["outcome"], note["decision"]) == (
        version,
        "flip_allow_to_deny",
        "deny",
    )
    assert note["policies"] == ["candidate-forbids-heidi-website"]
    assert shadow_report(server)["by_kind"] == {**NONE, "flip_allow_to_deny": 1}
