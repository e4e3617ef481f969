"""The admission webhook under a real ``docket serve`` (a subprocess): HTTPS with the
certificate it issued from its own CA, the reviews the API server sends, and the audit
entries they leave; also with two worker processes sharing the port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jsonpatch
import pytest
from admission_reviews import body, fixture, patch_of, review
from e2e.docket_process import Docket, start_docket

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def docket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docket]:
    running = start_docket(tmp_path_factory.mktemp("admission"))
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log.read_text()


def test_reviews_over_https_are_answered_and_audited(docket: Docket, tmp_path: Path) -> None:
    with docket.admission_client() as http:
        assert http.get("/healthz").status_code == 200
        allowed = http.post("/validate", content=body(review(fixture("deployment"))), headers=JSON)
        denied = http.post(
            "/validate",
            content=body(review(fixture("daemonset-privileged"), dry_run=True)),
            headers=JSON,
        )
        obj = fixture("deployment-restricted-eu")
        mutated = http.post("/mutate", content=body(review(obj)), headers=JSON)
        malformed = http.post("/validate", content=b"[]", headers=JSON)
    assert allowed.json()["response"]["allowed"] is True
    refusal = denied.json()["response"]
    assert refusal["allowed"] is False
    assert refusal["status"]["code"] == 403
    patched = jsonpatch.apply_patch(obj, patch_of(mutated.json()))
    template = patched["spec"]["template"]
    assert "affinity" in template["spec"]
    assert template["metadata"]["annotations"]["docket.io/decision-id"]
    assert malformed.status_code == 400

    entries = docket.audit_entries("admission", "placement")
    by_name = {e["detail"].get("object", {}).get("name"): e for e in entries}
    privileged = by_name[fixture("daemonset-privileged")["metadata"]["name"]]
    assert privileged["decision"] == "deny"
    assert privileged["detail"]["dry_run"] is True
    assert privileged["detail"]["user"] == "kubernetes-admin"
    assert privileged["detail"]["object"]["kind"] == "DaemonSet"
    assert any(e["kind"] == "placement" for e in entries)


def test_two_workers_share_the_webhook_port(tmp_path: Path) -> None:
    running = start_docket(tmp_path / "two", "--workers", "2")
    try:
        with running.admission_client() as http:
            answers = [
                http.post("/validate", content=body(review(fixture("pod"))), headers=JSON)
                for _ in range(10)
            ]
        assert all(a.json()["response"]["allowed"] for a in answers)
    finally:
        code = running.stop()
    assert code == 0, running.log.read_text()
