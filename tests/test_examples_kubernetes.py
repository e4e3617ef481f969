"""The manifests in examples/kubernetes/ are valid Kubernetes objects, and keep the
properties issue 6 asks of them (fail closed, two replicas, the excluded namespaces…).

Validation is offline: kubernetes-validate checks each document against the OpenAPI
schemas of a Kubernetes release it bundles, in strict mode (an unknown field is an
error). No cluster or kubectl is needed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "kubernetes"
# 1.30: the oldest release the README supports (matchConditions GA, preStop sleep);
# 1.32: the kubectl the developers have.
VERSIONS = ["1.30", "1.32"]
NAMESPACE = "docket-system"
EXCLUDED_NAMESPACES = {"kube-system", NAMESPACE}
CA_BUNDLE_PLACEHOLDER = "${CA_BUNDLE}"
WORKLOADS = {
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
}

Doc = dict[str, Any]


def load_documents() -> list[tuple[str, Doc]]:
    """(``file#index``, document) for every non-empty document of every manifest."""
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                docs.append((f"{path.name}#{index}", doc))
    return docs


DOCUMENTS = load_documents()


def one(kind: str) -> Doc:
    """The single document of ``kind``."""
    found = [doc for _, doc in DOCUMENTS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def webhooks() -> Iterator[tuple[str, Doc]]:
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for hook in one(kind)["webhooks"]:
            yield kind, hook


WEBHOOKS = list(webhooks())
WEBHOOK_IDS = [hook["name"] for _, hook in WEBHOOKS]


def covered(hook: Doc) -> set[tuple[str, str, str]]:
    """(api group, resource, operation) triples the webhook's rules match."""
    triples = set()
    for rule in hook["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for operation in rule["operations"]:
                    triples.add((group, resource, operation))
    return triples


def test_the_examples_are_there() -> None:
    names = {path.name for path in EXAMPLES.glob("*.yaml")}
    assert names == {"deployment.yaml", "validating-webhook.yaml", "mutating-webhook.yaml"}
    kinds = sorted(doc["kind"] for _, doc in DOCUMENTS)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "MutatingWebhookConfiguration",
        "Namespace",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
        "ValidatingWebhookConfiguration",
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("where", "doc"), DOCUMENTS, ids=[where for where, _ in DOCUMENTS])
def test_document_is_a_valid_kubernetes_object(where: str, doc: Doc, version: str) -> None:
    try:
        validated = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(part) for part in exc.path)
        pytest.fail(f"{where} ({doc['kind']}) against {exc.version}: {path}: {exc.message}")
    assert validated == version


@pytest.mark.parametrize(
    ("kind", "break_it"),
    [
        ("Deployment", lambda d: d["spec"].update(replica=2)),
        ("Deployment", lambda d: d["spec"]["template"]["spec"].update(securitycontext={})),
        ("ValidatingWebhookConfiguration", lambda d: d["webhooks"][0].pop("sideEffects")),
        ("PodDisruptionBudget", lambda d: d["spec"].update(minAvailable=[1])),
    ],
    ids=["unknown-field", "misspelt-field-in-the-pod", "required-field-missing", "wrong-type"],
)
def test_the_validation_catches_mistakes(kind: str, break_it: Any) -> None:
    doc = copy.deepcopy(one(kind))
    break_it(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("kind", "path"),
    [("ValidatingWebhookConfiguration", "/validate"), ("MutatingWebhookConfiguration", "/mutate")],
)
def test_webhook_calls_docket(kind: str, path: str) -> None:
    (hook,) = one(kind)["webhooks"]
    assert hook["clientConfig"] == {
        "service": {"name": "docket", "namespace": NAMESPACE, "path": path, "port": 8443},
        # Unfilled in the repository; the README's sed fills it when applying.
        "caBundle": CA_BUNDLE_PLACEHOLDER,
    }


@pytest.mark.parametrize(("kind", "hook"), WEBHOOKS, ids=WEBHOOK_IDS)
def test_webhook_fails_closed_within_bounds(kind: str, hook: Doc) -> None:
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 3
    assert hook["sideEffects"] == "NoneOnDryRun"
    assert hook["matchPolicy"] == "Equivalent"


@pytest.mark.parametrize(("kind", "hook"), WEBHOOKS, ids=WEBHOOK_IDS)
def test_webhook_skips_exactly_kube_system_and_docket(kind: str, hook: Doc) -> None:
    # Exactly these two: any other exclusion, or a label a workload could set to opt
    # out, would be a silent bypass.
    selector = dict(hook["namespaceSelector"])
    (expression,) = selector.pop("matchExpressions")
    assert selector == {}  # no matchLabels either
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["operator"] == "NotIn"
    assert sorted(expression["values"]) == sorted(EXCLUDED_NAMESPACES)
    assert "objectSelector" not in hook
    for condition in hook.get("matchConditions", []):
        # No exemption by who asks (system:masters, controllers' service accounts).
        assert "userInfo" not in condition["expression"], condition["name"]


def test_validating_webhook_sees_pods_and_every_workload() -> None:
    (hook,) = one("ValidatingWebhookConfiguration")["webhooks"]
    triples = covered(hook)
    for operation in ("CREATE", "UPDATE"):
        assert ("", "pods", operation) in triples
        for group, resource in WORKLOADS:
            assert (group, resource, operation) in triples


def test_mutating_webhook_places_every_new_workload() -> None:
    (hook,) = one("MutatingWebhookConfiguration")["webhooks"]
    assert hook["reinvocationPolicy"] == "Never"
    triples = covered(hook)
    assert ("", "pods", "CREATE") in triples
    # A pod's affinity is immutable: a patch on a pod UPDATE would fail the update.
    assert ("", "pods", "UPDATE") not in triples
    for group, resource in WORKLOADS:
        assert (group, resource, "CREATE") in triples


def container(deployment: Doc) -> Doc:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def container_port(deployment: Doc, port: int | str) -> int:
    """A container port by number or by name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container(deployment)["ports"] if p["name"] == port]
    return int(number)


def test_two_replicas_on_different_nodes_with_a_disruption_budget() -> None:
    deployment = one("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod_labels = spec["template"]["metadata"]["labels"]
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= pod_labels.items()

    budget = one("PodDisruptionBudget")
    assert budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_service_reaches_the_pods_on_every_port() -> None:
    deployment = one("Deployment")
    service = one("Service")
    assert service["metadata"]["name"] == "docket"
    assert service["metadata"]["namespace"] == NAMESPACE
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {
        p["name"]: (p["port"], container_port(deployment, p["targetPort"]))
        for p in service["spec"]["ports"]
    }
    assert ports == {"admission": (8443, 8443), "grpc": (50051, 50051), "metrics": (9464, 9464)}


def test_docket_serve_is_configured_for_a_cluster() -> None:
    deployment = one("Deployment")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    main = container(deployment)
    args = main["args"]
    assert args[0] == "serve"
    assert {
        "--bundle=/etc/docket/policies",
        "--data-dir=/var/lib/docket",
        "--admission=0.0.0.0:8443",
        "--admission-cert=/etc/docket/tls/server.pem",
        "--admission-key=/etc/docket/tls/server.key",
        "--grpc=0.0.0.0:50051",
        "--tls-cert=/etc/docket/tls/server.pem",
        "--tls-key=/etc/docket/tls/server.key",
        "--metrics=0.0.0.0:9464",
    } <= set(args)
    assert not [a for a in args if a.startswith(("--insecure-plaintext", "--db"))]
    env = {e["name"]: e for e in main["env"]}
    assert env["DOCKET_DB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "docket-db", "key": "url"}
    assert "DOCKET_AUDIT_KEYS" in env  # replicas sharing one log share its signing key

    probe = main["readinessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert probe["scheme"] == "HTTPS"
    assert container_port(deployment, probe["port"]) == 8443


def test_docket_runs_unprivileged() -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The token is mounted for one thing: reading namespaces' labels.
    assert pod["automountServiceAccountToken"] is True
    assert one("ClusterRole")["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}
    ]
    binding = one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one("ClusterRole")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NAMESPACE}
    ]
    main = container(deployment)
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"cpu", "memory"} <= main["resources"]["requests"].keys()
    assert "memory" in main["resources"]["limits"]
    namespace = one("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_docket_meets_the_restricted_pod_security_profile() -> None:
    """Docket's own pods pass the checks Docket applies to confidential workloads."""
    from engine._core.pod_security import check_pod

    assert check_pod(one("Deployment")["spec"]["template"], "restricted") == ()


def test_docket_reads_namespace_labels_in_the_cluster() -> None:
    env = {e["name"]: e.get("value") for e in container(one("Deployment"))["env"]}
    assert env["DOCKET_ADMISSION_NAMESPACES"] == "in-cluster"
