"""``docket serve --shadow-bundle`` through the APIs beside Authorize (issue 18): an
Envoy ext_authz Check (a direct gRPC call, as Envoy makes it) and an AuthZEN
``/access/v1/evaluation``. On a request the candidate decides the other way, the answer
is still the live bundle's, the counter says which way it flipped, and the entry carries
the candidate's annotation (which ``docket policy shadow-report`` reads)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from e2e.docket_process import Docket, start_docket
from e2e.test_shadow_serve import report, shadow_counts
from envoy.service.auth.v3 import external_auth_pb2 as authz
from envoy.service.auth.v3 import external_auth_pb2_grpc as authz_grpc
from google.rpc import code_pb2
from shadow_bundles import FORBID_HEIDI, candidate

from engine._core.bundle import PolicyBundle

pytestmark = pytest.mark.e2e

PERMIT_ANONYMOUS = """
@id("candidate-permits-anonymous-website")
permit (principal == Docket::User::"anonymous", action, resource == Docket::Data::"public-website");
"""
HEIDI_READS_WEBSITE = {
    "subject": {"type": "User", "id": "heidi"},
    "action": {"name": "read"},
    "resource": {"type": "Data", "id": "public-website"},
}
NONE = {"flip_allow_to_deny": 0, "flip_deny_to_allow": 0, "error": 0}


@pytest.fixture
def shadowed(tmp_path: Path) -> Iterator[tuple[Docket, str]]:
    path = candidate(tmp_path, FORBID_HEIDI, PERMIT_ANONYMOUS)
    server = start_docket(tmp_path / "serve", "--admission", "off", "--shadow-bundle", str(path))
    try:
        yield server, PolicyBundle.load(path).version
    finally:
        assert server.stop() == 0


def flipped_once(server: Docket, api: str, outcome: str, by: str, version: str) -> dict[str, Any]:
    """The one decision of ``api``: counted as ``outcome``, annotated with the candidate
    (``version``) deciding otherwise by policy ``by``, and reported so; its entry."""
    assert shadow_counts(server) == {outcome: 1.0}
    (entry,) = [e for e in server.audit_entries("decision") if e["detail"]["api"] == api]
    note = entry["detail"]["shadow"]
    candidate_says = "allow" if outcome == "flip_deny_to_allow" else "deny"
    assert (note["bundle"], note["outcome"], note["decision"]) == (version, outcome, candidate_says)
    assert note["policies"] == [by]
    code, found = report(server)
    assert (code, found["by_kind"]) == (1, {**NONE, outcome: 1})
    return entry


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
    entry = flipped_once(
        server, "ext_authz", "flip_deny_to_allow", "candidate-permits-anonymous-website", version
    )
    assert (
        entry["detail"]["decision_id"] == answer.dynamic_metadata.fields["decision_id"].string_value
    )
    assert (entry["subject"], entry["decision"]) == ('Docket::User::"anonymous"', "deny")


def test_an_authzen_evaluation_the_candidate_would_deny_is_still_allowed_and_annotated(
    shadowed: tuple[Docket, str],
) -> None:
    server, version = shadowed
    url = server.metrics_url.removesuffix("/metrics") + "/access/v1/evaluation"
    answer = httpx.post(url, json=HEIDI_READS_WEBSITE, timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"decision": True})
    entry = flipped_once(
        server, "authzen", "flip_allow_to_deny", "candidate-forbids-heidi-website", version
    )
    assert (entry["subject"], entry["decision"]) == ('Docket::User::"heidi"', "allow")
