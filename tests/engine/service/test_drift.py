"""The drift audit without a command line: the recorded cluster
(fixtures/drift/cluster.json) decided against the default bundle, and the same objects
sent to the validating webhook as CREATE reviews: what the audit lists is exactly what
the webhook refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from admission_reviews import body, review

from audit import AuditLog
from engine import BundleWatcher, Engine, PolicyBundle
from engine._service.admission import AdmissionController
from engine._service.admission.drift import (
    ListedNamespaces,
    audit_entries,
    audit_objects,
    listed_namespaces,
)
from engine._service.decisions import DecisionService
from engine._service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "tests" / "engine" / "fixtures" / "drift" / "cluster.json"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def items() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(CLUSTER.read_text())["items"]
    return found


def run(objects: list[dict[str, Any]], namespaces: ListedNamespaces | None) -> Any:
    engine = Engine(PolicyBundle.load(ROOT / "policies"))
    return audit_objects(
        engine,
        objects,
        source="test",
        namespaces=namespaces,
        trust_domain="docket.example",
        cluster="kubernetes",
        now=NOW,
    )


def test_the_audit_lists_exactly_what_the_webhook_refuses(tmp_path: Path) -> None:
    objects = items()
    audit = run(objects, listed_namespaces(objects, "test"))
    listed = {(d.kind, d.namespace, d.name) for d in audit.drifts}
    engine = Engine(PolicyBundle.load(ROOT / "policies"))
    log = AuditLog.open(f"sqlite:///{tmp_path / 'docket.db'}", keys=tmp_path / "keys").start()
    try:
        service = DecisionService(engine, BundleWatcher(engine, ROOT / "policies"), Metrics(), log)
        controller = AdmissionController(
            service,
            trust_domain="docket.example",
            namespaces=listed_namespaces(objects, "test"),
        )
        refused = set()
        for obj in objects:
            if obj["kind"] in ("Namespace", "Service", "ConfigMap"):
                continue
            sent = review(obj, namespace=obj["metadata"]["namespace"])
            status, answer = controller.review("validate", body(sent), now=NOW)
            assert status == 200
            if not answer["response"]["allowed"]:
                refused.add((obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"]))
    finally:
        log.close()
    assert listed == refused
    assert len(listed) == 5
    assert audit.inspected == 8


def test_an_unlisted_namespace_is_a_violation_never_a_guess() -> None:
    objects = items()
    namespaces = ListedNamespaces("test", {"web": {}})
    payments = {
        (d.name, d.rules) for d in run(objects, namespaces).drifts if d.namespace == "payments"
    }
    assert payments == {
        ("ledger-0", ("namespace",)),
        ("api-5c6d7-fghij", ("namespace",)),
        ("reporting", ("namespace",)),
    }


def test_without_namespaces_the_objects_own_labels_classify() -> None:
    # payments' confidential label is not listed: its pods are internal, and a pod
    # failing only the restricted profile is no longer refused.
    objects = [o for o in items() if o["kind"] != "Namespace"]
    names = {d.name for d in run(objects, listed_namespaces(objects, "test")).drifts}
    assert "reporting" not in names
    assert "ledger-0" in names


def test_entries_one_audit_entry_then_one_per_violation() -> None:
    objects = items()
    audit = run(objects, listed_namespaces(objects, "test"))
    entries = audit_entries(audit, run_id="r1", now=NOW)
    assert [e.kind for e in entries] == ["audit"] + ["admission"] * 5
    assert entries[0].detail == {
        "run_id": "r1",
        "source": "test",
        "objects": 13,
        "inspected": 8,
        "violations": 5,
        "devices": 0,
    }
    first = entries[1]
    assert first.decision == "deny"
    assert first.policies == ("admit-pod-security-baseline",)
    assert first.detail["drift"] is True
    assert first.detail["object"] == {"kind": "Pod", "namespace": "web", "name": "debug-shell"}
