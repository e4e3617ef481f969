"""Namespace labels for admission (engine._service.namespaces): from ``kubectl get namespaces -o
json`` output and from the Kubernetes API (the real ``kubernetes`` client against a fake
API server on 127.0.0.1), and the classification the webhook derives from them."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from admission_reviews import FakeKubernetes, fixture, review

from audit import AuditLog
from engine import BundleWatcher, Engine, PolicyBundle
from engine._errors import NamespaceUnavailable
from engine._service.admission import AdmissionController
from engine._service.decisions import DecisionService
from engine._service.metrics import Metrics
from engine._service.namespaces import FileNamespaces, KubernetesNamespaces, namespace_source

ROOT = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LABEL = "docket.io/classification"


def kubectl_list(namespaces: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What ``kubectl get namespaces -o json`` prints for these namespaces."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/metadata.name": name, **labels},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            for name, labels in namespaces.items()
        ],
    }


def test_file_source_reads_kubectl_output_and_rereads_it_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "namespaces.json"
    path.write_text(json.dumps(kubectl_list({"finance": {LABEL: "confidential"}})))
    source = FileNamespaces(path)
    assert source.labels("finance", NOW)[LABEL] == "confidential"
    with pytest.raises(NamespaceUnavailable, match='namespace "clinical" is not in'):
        source.labels("clinical", NOW)
    path.write_text(json.dumps(kubectl_list({"clinical": {LABEL: "restricted"}})))
    os.utime(path, ns=(1, 1))  # a different mtime even within one clock tick
    assert source.labels("clinical", NOW)[LABEL] == "restricted"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot be read"),
        ("{not json", "not readable JSON"),
        ('{"kind": "List"}', "expected the output of kubectl get namespaces"),
    ],
)
def test_file_source_that_cannot_be_read_fails_closed(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "namespaces.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(NamespaceUnavailable, match=message):
        FileNamespaces(path).labels("finance", NOW)


@pytest.fixture
def kube() -> Iterator[FakeKubernetes]:
    with FakeKubernetes({"finance": {LABEL: "confidential"}, "shop": {}}) as fake:
        yield fake


def test_kubernetes_source_reads_the_api_and_caches(kube: FakeKubernetes, tmp_path: Path) -> None:
    source = KubernetesNamespaces(kube.kubeconfig(tmp_path / "kubeconfig"), cache_seconds=5)
    assert source.labels("finance", NOW)[LABEL] == "confidential"
    assert source.labels("shop", NOW).get(LABEL) is None
    reads = kube.reads
    kube.namespaces["finance"] = {LABEL: "restricted"}
    assert source.labels("finance", NOW + timedelta(seconds=4))[LABEL] == "confidential"
    assert kube.reads == reads
    assert source.labels("finance", NOW + timedelta(seconds=6))[LABEL] == "restricted"
    assert kube.reads == reads + 1


def test_kubernetes_source_missing_namespace(kube: FakeKubernetes, tmp_path: Path) -> None:
    source = KubernetesNamespaces(kube.kubeconfig(tmp_path / "kubeconfig"))
    with pytest.raises(NamespaceUnavailable, match='namespace "nope" does not exist'):
        source.labels("nope", NOW)


def test_kubernetes_source_unreachable_fails_closed(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with FakeKubernetes({}) as fake:
        kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
    kubeconfig.write_text(kubeconfig.read_text().replace(fake.url, f"http://127.0.0.1:{port}"))
    source = KubernetesNamespaces(kubeconfig)
    with pytest.raises(NamespaceUnavailable, match="cannot be read from the Kubernetes API"):
        source.labels("finance", NOW)


def test_kubernetes_source_without_configuration_fails_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(NamespaceUnavailable, match="cannot configure the Kubernetes client"):
        KubernetesNamespaces(None).labels("finance", NOW)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("none", type(None)),
        ("", type(None)),
        ("in-cluster", KubernetesNamespaces),
        ("kubeconfig:/etc/kube/config", KubernetesNamespaces),
        ("file:/etc/docket/namespaces.json", FileNamespaces),
    ],
)
def test_namespace_source_setting(spec: str, kind: type) -> None:
    assert isinstance(namespace_source(spec), kind)


@pytest.mark.parametrize("spec", ["kubernetes", "file:", "http://x"])
def test_namespace_source_setting_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="admission_namespaces"):
        namespace_source(spec)


# -- the classification the webhook derives --------------------------------------------------


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[AdmissionController]:
    bundle = ROOT / "policies"
    engine = Engine(PolicyBundle.load(bundle))
    log = AuditLog.open(f"sqlite:///{tmp_path / 'docket.db'}", keys=tmp_path / "keys").start()
    service = DecisionService(engine, BundleWatcher(engine, bundle), Metrics(), log)
    path = tmp_path / "namespaces.json"
    path.write_text(
        json.dumps(
            kubectl_list({"finance": {LABEL: "confidential"}, "shop": {}, "odd": {LABEL: "secret"}})
        )
    )
    try:
        yield AdmissionController(
            service, trust_domain="docket.example", namespaces=FileNamespaces(path)
        )
    finally:
        log.close()


def seen_context(controller: AdmissionController, sent: dict[str, Any]) -> dict[str, Any]:
    seen: list[Any] = []
    authorize = controller.service.authorize

    def spy(requests: Any, **kwargs: Any) -> Any:
        seen.extend(requests)
        return authorize(requests, **kwargs)

    controller.service.authorize = spy  # type: ignore[method-assign]
    controller.review("validate", json.dumps(sent).encode(), now=NOW)
    (request,) = seen
    context: dict[str, Any] = request.context
    return context


def _level(context: dict[str, Any], key: str = "classification") -> str:
    value: str = context[key]["__entity"]["id"]
    return value


@pytest.mark.parametrize(
    ("namespace", "label", "expected"),
    [
        ("finance", None, "confidential"),
        ("finance", "public", "confidential"),  # a label never lowers the namespace's level
        ("finance", "restricted", "restricted"),  # it may raise it
        ("shop", None, "internal"),
        ("shop", "confidential", "confidential"),
    ],
)
def test_classification_is_the_namespaces_raised_by_the_label(
    controller: AdmissionController, namespace: str, label: str | None, expected: str
) -> None:
    pod = fixture("pod")
    if label is not None:
        pod["metadata"]["labels"][LABEL] = label
    context = seen_context(controller, review(pod, namespace=namespace))
    assert _level(context) == expected
    assert _level(context, "namespace_classification") == (
        "confidential" if namespace == "finance" else "internal"
    )


@pytest.mark.parametrize(
    ("namespace", "label", "expected"),
    [
        ("finance", None, {"value": "confidential", "from": "namespace"}),
        ("finance", "public", {"value": "confidential", "from": "namespace"}),
        ("finance", "restricted", {"value": "restricted", "from": "label"}),
    ],
)
def test_the_audit_entry_says_where_the_classification_came_from(
    controller: AdmissionController, namespace: str, label: str | None, expected: dict[str, str]
) -> None:
    pod = fixture("pod")
    if label is not None:
        pod["metadata"]["labels"][LABEL] = label
    controller.review("validate", json.dumps(review(pod, namespace=namespace)).encode(), now=NOW)
    store = controller.service.audit.store
    row = store.entry(store.head().size - 1)
    assert row is not None
    assert row.payload is not None
    entry = json.loads(row.payload)
    assert entry["kind"] == "admission"
    assert entry["detail"]["provenance"] == {"caller": None, "classification": expected}


def test_an_unknown_namespace_is_denied_and_recorded(controller: AdmissionController) -> None:
    status, answer = controller.review(
        "validate", json.dumps(review(fixture("pod"), namespace="ghost")).encode(), now=NOW
    )
    response = answer["response"]
    assert (status, response["allowed"]) == (200, False)
    assert 'namespace "ghost" is not in' in response["status"]["message"]
    assert response["auditAnnotations"]["decision-id"]


def test_a_namespace_label_that_is_not_a_classification_is_denied(
    controller: AdmissionController,
) -> None:
    _, answer = controller.review(
        "validate", json.dumps(review(fixture("pod"), namespace="odd")).encode(), now=NOW
    )
    response = answer["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 400
    assert '"secret" is not a classification' in response["status"]["message"]


def test_update_carries_the_previous_classification(controller: AdmissionController) -> None:
    old = fixture("pod")
    old["metadata"]["labels"][LABEL] = "restricted"
    sent = review(fixture("pod"), namespace="shop", operation="UPDATE", old=old)
    context = seen_context(controller, sent)
    assert _level(context) == "internal"
    assert _level(context, "previous_classification") == "restricted"
