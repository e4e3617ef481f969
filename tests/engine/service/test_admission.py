"""The admission controller without HTTP: AdmissionReview v1 requests of real objects
(fixtures/admission, made by kubectl) in, AdmissionReview v1 answers out, every review
in the audit log first."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import jsonpatch
import pytest
from admission_reviews import ADMIN, body, fixture, patch_of, review

from audit import AuditLog, Overloaded
from engine import BundleWatcher, Engine, PolicyBundle
from engine._service.admission import (
    DECISION_ANNOTATION,
    MAX_WARNING,
    REGION_LABEL,
    TIER_LABEL,
    AdmissionController,
    registry_of,
)
from engine._service.decisions import DecisionService
from engine._service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
TRUST_DOMAIN = "docket.example"
Webhook = Literal["validate", "mutate"]


def make_service(bundle: Path, data: Path) -> DecisionService:
    engine = Engine(PolicyBundle.load(bundle))
    log = AuditLog.open(f"sqlite:///{data / 'docket.db'}", keys=data / "keys").start()
    return DecisionService(engine, BundleWatcher(engine, bundle), Metrics(), log)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[DecisionService]:
    service = make_service(ROOT / "policies", tmp_path)
    try:
        yield service
    finally:
        service.audit.close()


@pytest.fixture
def controller(service: DecisionService) -> AdmissionController:
    return AdmissionController(service, trust_domain=TRUST_DOMAIN)


def ask(
    controller: AdmissionController,
    path: Webhook,
    sent: dict[str, Any],
    *,
    caller: str | None = None,
) -> dict[str, Any]:
    status, answer = controller.review(path, body(sent), caller=caller)
    assert status == 200, answer
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == sent["request"]["uid"]
    return answer


def entries(service: DecisionService) -> list[dict[str, Any]]:
    """Every entry in the log after the bundle load."""
    found = []
    for index in range(1, service.audit.store.head().size):
        row = service.audit.store.entry(index)
        assert row is not None
        assert row.payload is not None
        found.append(json.loads(row.payload))
    return found


def last_entry(service: DecisionService) -> dict[str, Any]:
    return entries(service)[-1]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return dict(obj["spec"])
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(obj["spec"]["template"]["spec"])


def pod_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return dict(obj["metadata"])
    if obj["kind"] == "CronJob":
        return dict(obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"])
    return dict(obj["spec"]["template"]["metadata"])


# -- a scheduler's view: which nodes a pod spec may run on -------------------------------


def _meets(requirement: dict[str, Any], values: dict[str, str]) -> bool:
    key, operator = requirement["key"], requirement["operator"]
    if operator == "In":
        return key in values and values[key] in requirement["values"]
    if operator == "NotIn":
        return key not in values or values[key] not in requirement["values"]
    if operator == "Exists":
        return key in values
    assert operator == "DoesNotExist", operator
    return key not in values


def schedulable(spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """Kubernetes' rule: every nodeSelector label, and (when required node affinity is
    set) any one term whose expressions and fields all hold."""
    labels = node["labels"]
    if any(labels.get(key) != value for key, value in (spec.get("nodeSelector") or {}).items()):
        return False
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    fields = {"metadata.name": node["name"]}
    return any(
        (term.get("matchExpressions") or term.get("matchFields"))
        and all(_meets(r, labels) for r in term.get("matchExpressions") or ())
        and all(_meets(r, fields) for r in term.get("matchFields") or ())
        for term in required["nodeSelectorTerms"]
    )


def nodes(bundle: PolicyBundle) -> list[dict[str, Any]]:
    """One node per catalog site, labelled as Docket expects; plus node-7, which the
    restricted fixture's user excludes by name."""
    found = [
        {
            "name": f"node-{site.name}",
            "site": site.name,
            "labels": {
                REGION_LABEL: site.region,
                TIER_LABEL: site.tier,
                "topology.kubernetes.io/zone": f"{site.region}a",
                "kubernetes.io/os": "linux",
            },
        }
        for site in bundle.sites
    ]
    seven = copy.deepcopy(next(n for n in found if n["site"] == "eu-central-1-cloud"))
    seven["name"] = "node-7"
    return [*found, seven]


# -- validating -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "namespace"),
    [
        ("pod", "default"),
        ("deployment", "public-web"),
        ("deployment-restricted-eu", "clinical"),
        ("job", "finance"),
        ("cronjob", "ops"),
    ],
)
def test_allowed(
    controller: AdmissionController, service: DecisionService, name: str, namespace: str
) -> None:
    obj = fixture(name)
    sent = review(obj, namespace=namespace)
    answer = ask(controller, "validate", sent)["response"]
    assert answer["allowed"] is True
    assert "status" not in answer
    assert "patch" not in answer
    entry = last_entry(service)
    assert entry["kind"] == "admission"
    assert entry["decision"] == "allow"
    assert entry["policies"] == ["admit-workloads"]
    assert entry["resource"] == 'Docket::Cluster::"kubernetes"'
    account = pod_spec(obj).get("serviceAccountName", "default")
    spiffe = f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{account}"
    assert entry["subject"] == f"Docket::Workload::{json.dumps(spiffe)}"
    assert entry["detail"]["decision_id"] == answer["auditAnnotations"]["decision-id"]
    assert entry["detail"]["object"] == {
        "kind": obj["kind"],
        "namespace": namespace,
        "name": obj["metadata"]["name"],
    }
    assert entry["detail"]["operation"] == "CREATE"
    assert entry["detail"]["user"] == ADMIN["username"]
    assert entry["detail"]["dry_run"] is False
    assert entry["detail"]["webhook"] == "validate"


HOST_ACCESS = [
    "admit-no-host-access-for-confidential",
    "admit-pod-security-baseline",
    "admit-pod-security-restricted",
]


@pytest.mark.parametrize(
    ("name", "policies", "pod_security"),
    [
        ("deployment-restricted", ["admit-restricted-requires-residency"], ""),
        ("deployment-restricted-us", ["admit-restricted-in-permitted-jurisdictions"], ""),
        (
            "statefulset-host-path",
            HOST_ACCESS,
            '; violates PodSecurity "restricted:latest": hostPath volumes (volume "host-logs"), '
            'restricted volume types (volume "host-logs" uses restricted volume type '
            '"hostPath"), allowPrivilegeEscalation != false (container "ledger" must set '
            "securityContext.allowPrivilegeEscalation=false), runAsNonRoot != true (pod or "
            'container "ledger" must set securityContext.runAsNonRoot=true), seccompProfile '
            '(pod or container "ledger" must set securityContext.seccompProfile.type to '
            '"RuntimeDefault" or "Localhost"), unrestricted capabilities (container "ledger" '
            'must set securityContext.capabilities.drop=["ALL"])',
        ),
        (
            "daemonset-privileged",
            HOST_ACCESS,
            '; violates PodSecurity "restricted:latest": host namespaces (hostNetwork=true), '
            'privileged (container "agent" must not set securityContext.privileged=true), '
            'allowPrivilegeEscalation != false (container "agent" must set '
            "securityContext.allowPrivilegeEscalation=false), runAsNonRoot != true (pod or "
            'container "agent" must set securityContext.runAsNonRoot=true), seccompProfile '
            '(pod or container "agent" must set securityContext.seccompProfile.type to '
            '"RuntimeDefault" or "Localhost"), unrestricted capabilities (container "agent" '
            'must set securityContext.capabilities.drop=["ALL"])',
        ),
        ("deployment-untrusted-registry", ["admit-allowed-registries"], ""),
    ],
)
def test_denied_with_the_policy_in_the_message(
    controller: AdmissionController,
    service: DecisionService,
    name: str,
    policies: list[str],
    pod_security: str,
) -> None:
    obj = fixture(name)
    answer = ask(controller, "validate", review(obj, namespace="clinical"))["response"]
    decision_id = answer["auditAnnotations"]["decision-id"]
    assert answer["allowed"] is False
    entry = last_entry(service)
    assert (entry["kind"], entry["decision"]) == ("admission", "deny")
    assert sorted(entry["policies"]) == sorted(policies)
    message = answer["status"]["message"]
    assert answer["status"]["code"] == 403
    assert message.startswith(f"{obj['kind']} clinical/{obj['metadata']['name']}: denied by ")
    assert message.endswith(f"{pod_security} (decision {decision_id})")
    assert all(policy in message for policy in policies)
    assert entry["detail"]["decision_id"] == decision_id


def test_an_ephemeral_debug_container_is_inspected_too(controller: AdmissionController) -> None:
    pod = fixture("pod")
    pod["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "quay.io/toolbox/netshoot:latest"}
    ]
    sent = review(pod, operation="UPDATE", old=fixture("pod"), sub_resource="ephemeralcontainers")
    answer = ask(controller, "validate", sent)["response"]
    assert answer["allowed"] is False
    assert "admit-allowed-registries" in answer["status"]["message"]


def test_what_policies_see(controller: AdmissionController, service: DecisionService) -> None:
    seen = []
    authorize = service.authorize

    def spy(requests: Any, **kwargs: Any) -> Any:
        seen.extend(requests)
        return authorize(requests, **kwargs)

    service.authorize = spy  # type: ignore[method-assign]
    sent = review(fixture("deployment-restricted-eu"), namespace="clinical", dry_run=True)
    ask(controller, "validate", sent, caller="spiffe://docket.example/ns/kube/sa/apiserver")
    (request,) = seen
    assert request.principal.id == "spiffe://docket.example/ns/clinical/sa/ehr-gateway"
    assert request.context == {
        "kind": "Deployment",
        "namespace": "clinical",
        "name": "ehr-gateway",
        "operation": "CREATE",
        "classification": {"__entity": {"type": "Classification", "id": "restricted"}},
        "residency": "eu",
        "images": ["registry.docket.example/ehr-gateway:3.0.1"],
        "registries": ["registry.docket.example"],
        "privileged": False,
        "host_path": False,
        "host_network": False,
        "namespace_classification": {"__entity": {"type": "Classification", "id": "internal"}},
        "pss_baseline": [],
        "pss_restricted": [],
        "pss_baseline_messages": [],
        "pss_restricted_messages": [],
        # No node_selector_regions: one of the user's two affinity terms names regions
        # (eu-west-1, us-east-1), the other leaves the region open.
        "has_node_constraints": True,
        "service_account": "ehr-gateway",
        "user": "kubernetes-admin",
        "dry_run": True,
        "caller": "spiffe://docket.example/ns/kube/sa/apiserver",
    }


def test_an_unlabelled_pod_is_internal_and_told_so(
    controller: AdmissionController, service: DecisionService
) -> None:
    answer = ask(controller, "validate", review(fixture("pod")))["response"]
    assert answer["allowed"] is True
    assert answer["warnings"] == [
        "no docket.io/classification label on the pod: Docket treats it as internal"
    ]


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("nginx", "docker.io/library"),
        ("nginx:1.27", "docker.io/library"),
        ("library/nginx@sha256:" + "a" * 64, "docker.io/library"),
        ("docker.io/nginx", "docker.io/library"),
        ("index.docker.io/library/nginx:1", "docker.io/library"),
        ("bitnami/redis:7.4", "docker.io/bitnami"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io"),
        ("registry.k8s.io/ingress-nginx/controller:v1.12.0", "registry.k8s.io/ingress-nginx"),
        ("ghcr.io/docket-example/api:1.0@sha256:" + "b" * 64, "ghcr.io/docket-example"),
        ("GHCR.io/docket-example/api", "ghcr.io/docket-example"),
        ("localhost:5000/app:dev", "localhost:5000"),
        ("localhost/app", "localhost"),
        ("10.0.0.1:5000/team/app", "10.0.0.1:5000/team"),
    ],
)
def test_registry_of(image: str, registry: str) -> None:
    assert registry_of(image) == registry


# -- mutating ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "namespace", "pointer"),
    [
        ("pod", "default", "/spec"),
        ("deployment", "public-web", "/spec/template/spec"),
        ("deployment-restricted-eu", "clinical", "/spec/template/spec"),
        ("statefulset-host-path", "finance", "/spec/template/spec"),
        ("daemonset-privileged", "monitoring", "/spec/template/spec"),
        ("job", "finance", "/spec/template/spec"),
        ("cronjob", "ops", "/spec/jobTemplate/spec/template/spec"),
    ],
)
def test_patched_to_exactly_the_allowed_sites(
    controller: AdmissionController,
    service: DecisionService,
    name: str,
    namespace: str,
    pointer: str,
) -> None:
    obj = fixture(name)
    sent = review(obj, namespace=namespace)
    answer = ask(controller, "mutate", sent)["response"]
    assert answer["allowed"] is True
    operations = patch_of({"response": answer})
    assert all(op["path"].startswith(pointer.removesuffix("/spec")) for op in operations)
    patched = jsonpatch.apply_patch(sent["request"]["object"], operations)

    placement = last_entry(service)
    assert placement["kind"] == "placement"
    assert placement["detail"]["webhook"] == "mutate"
    assert placement["detail"]["object"]["name"] == obj["metadata"]["name"]
    decision_id = placement["detail"]["decision_id"]
    assert pod_metadata(patched)["annotations"][DECISION_ANNOTATION] == decision_id
    assert answer["auditAnnotations"] == {"decision-id": decision_id}
    allowed = {site["site"] for site in placement["detail"]["allowed"]}
    assert allowed

    # A scheduler puts the pod only on nodes the user allowed AND placement allowed.
    bundle = service.engine.bundle
    assert bundle is not None
    before = pod_spec(sent["request"]["object"])
    after = pod_spec(patched)
    every = nodes(bundle)
    wanted = [n["name"] for n in every if schedulable(before, n) and n["site"] in allowed]
    assert [n["name"] for n in every if schedulable(after, n)] == wanted
    assert wanted
    # Nothing but the affinity and the annotation changed.
    assert after.get("nodeSelector") == before.get("nodeSelector")
    del after["affinity"]
    before.pop("affinity", None)
    assert after == before
    annotations = pod_metadata(patched)["annotations"]
    del annotations[DECISION_ANNOTATION]
    assert annotations == (pod_metadata(sent["request"]["object"]).get("annotations") or {})


def test_the_users_terms_are_narrowed_not_widened(controller: AdmissionController) -> None:
    sent = review(fixture("deployment-restricted-eu"), namespace="clinical")
    answer = ask(controller, "mutate", sent)
    operations = patch_of(answer)
    # The annotation key's "/" is escaped as "~1" (RFC 6901).
    assert operations[-1]["path"] == "/spec/template/metadata/annotations/docket.io~1decision-id"
    terms = operations[0]["value"]
    assert operations[0]["op"] == "replace"
    assert operations[0]["path"].endswith("/nodeSelectorTerms")
    original = pod_spec(sent["request"]["object"])["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    for term in terms:
        assert any(
            all(e in term["matchExpressions"] for e in user["matchExpressions"])
            and term.get("matchFields") == user.get("matchFields")
            for user in original
        ), term
    regions = [
        e["values"] for t in terms for e in t["matchExpressions"] if e["key"] == REGION_LABEL
    ]
    # eu only (the residency), and the user's eu-west-1-or-us-east-1 term kept as it was.
    assert ["eu-west-1", "us-east-1"] in regions
    assert {
        r for values in regions[1:] for r in values if values != ["eu-west-1", "us-east-1"]
    } <= {
        "eu-west-1",
        "eu-central-1",
    }


def test_mutating_twice_changes_nothing_more(controller: AdmissionController) -> None:
    sent = review(fixture("deployment-restricted-eu"), namespace="clinical")
    first = jsonpatch.apply_patch(
        sent["request"]["object"], patch_of(ask(controller, "mutate", sent))
    )
    again = review(first, namespace="clinical", operation="UPDATE", old=first)
    answer = ask(controller, "mutate", again)["response"]
    assert answer["allowed"] is True
    assert "patch" not in answer  # same affinity; the decision-id annotation is kept


def test_an_update_that_needs_affinity_gets_a_new_decision_id(
    controller: AdmissionController,
) -> None:
    sent = review(fixture("deployment"), namespace="public-web")
    first = jsonpatch.apply_patch(
        sent["request"]["object"], patch_of(ask(controller, "mutate", sent))
    )
    changed = copy.deepcopy(first)
    changed["spec"]["template"]["metadata"]["labels"]["docket.io/classification"] = "confidential"
    answer = ask(controller, "mutate", review(changed, namespace="public-web", operation="UPDATE"))
    operations = patch_of(answer)
    assert [op["op"] for op in operations] == ["replace", "add"]
    decision_id = answer["response"]["auditAnnotations"]["decision-id"]
    assert operations[1]["value"] == decision_id


def test_a_workload_that_may_run_nowhere_is_denied(tmp_path: Path) -> None:
    bundle = tmp_path / "policies"
    bundle.mkdir()
    for item in (ROOT / "policies").iterdir():
        if item.is_file():
            (bundle / item.name).write_bytes(item.read_bytes())
    (bundle / "zz-lockdown.cedar").write_text(
        "// No placement anywhere.\n"
        '@id("placement-lockdown")\n'
        'forbid (principal, action == Docket::Action::"place", resource);\n'
    )
    service = make_service(bundle, tmp_path)
    try:
        controller = AdmissionController(service, trust_domain=TRUST_DOMAIN)
        answer = ask(controller, "mutate", review(fixture("job"), namespace="finance"))["response"]
        decision_id = answer["auditAnnotations"]["decision-id"]
        assert answer["allowed"] is False
        assert answer["status"]["code"] == 403
        assert answer["status"]["message"] == (
            "Job finance/export: no site may run it (denied by placement-lockdown, "
            f"placement-unattested-edge-low-classification-only; decision {decision_id})"
        )
        assert "patch" not in answer
        assert last_entry(service)["decision"] == "deny"
    finally:
        service.audit.close()


def test_restricted_placement_keeps_to_the_residency(
    controller: AdmissionController, service: DecisionService
) -> None:
    sent = review(fixture("deployment-restricted-us"), namespace="clinical")
    ask(controller, "mutate", sent)
    placement = last_entry(service)
    assert placement["residency"] == ["us"]
    assert {site["jurisdiction"] for site in placement["detail"]["allowed"]} == {"us"}
    assert placement["detail"]["denied"] == ["us-west-2-edge-sfo"]  # only us sites were asked


def test_a_region_the_user_chose_outside_the_placement_is_warned_about(
    controller: AdmissionController,
) -> None:
    obj = fixture("deployment-restricted-eu")
    obj["spec"]["template"]["spec"]["nodeSelector"][REGION_LABEL] = "us-east-1"
    answer = ask(controller, "mutate", review(obj, namespace="clinical"))["response"]
    assert answer["allowed"] is True
    (warning,) = answer["warnings"]
    assert warning.startswith("the pod may only run in us-east-1, where Docket places none")
    assert len(warning) <= MAX_WARNING


def test_a_pod_update_is_not_patched(controller: AdmissionController) -> None:
    pod = fixture("pod")
    answer = ask(controller, "mutate", review(pod, operation="UPDATE", old=pod))["response"]
    assert answer == {
        "uid": answer["uid"],
        "allowed": True,
        "auditAnnotations": answer["auditAnnotations"],
    }


# -- dry run ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["validate", "mutate"])
def test_dry_run_only_marks_the_entry(
    controller: AdmissionController, service: DecisionService, path: Webhook
) -> None:
    obj = fixture("job")
    answers = []
    for dry_run in (False, True):
        sent = review(obj, namespace="finance", dry_run=dry_run)
        answers.append(ask(controller, path, sent)["response"])
    real, dry = entries(service)[-2:]
    assert (real["detail"]["dry_run"], dry["detail"]["dry_run"]) == (False, True)

    def same(entry: dict[str, Any]) -> dict[str, Any]:
        detail = {
            k: v for k, v in entry["detail"].items() if k not in ("decision_id", "review_uid")
        }
        del detail["dry_run"]
        unique = ("time", "salt", "detail", "request_digest")
        return {**{k: v for k, v in entry.items() if k not in unique}, "detail": detail}

    assert same(real) == same(dry)

    def answer_without_ids(answer: dict[str, Any]) -> dict[str, Any]:
        operations = patch_of({"response": answer})
        for op in operations:
            if op["path"].endswith("annotations"):
                op["value"] = {}
        return {
            **{k: v for k, v in answer.items() if k not in ("uid", "auditAnnotations", "patch")},
            "patch": operations,
        }

    assert answer_without_ids(answers[0]) == answer_without_ids(answers[1])


# -- what Docket does not evaluate -------------------------------------------------------


def test_an_unknown_kind_is_allowed_with_a_warning(
    controller: AdmissionController, service: DecisionService
) -> None:
    sent = review(fixture("configmap"), namespace="shop")
    answer = ask(controller, "validate", sent)["response"]
    assert answer["allowed"] is True
    assert answer["warnings"] == ["Docket does not inspect ConfigMap"]
    entry = last_entry(service)
    assert (entry["kind"], entry["decision"]) == ("admission", "allow")
    assert entry["detail"]["unevaluated"] == "Docket does not inspect ConfigMap"
    assert entry["detail"]["object"] == {
        "kind": "ConfigMap",
        "namespace": "shop",
        "name": "settings",
    }

    mutated = ask(controller, "mutate", sent)["response"]
    assert mutated["allowed"] is True
    assert "patch" not in mutated
    assert "warnings" not in mutated


def test_warnings_are_cut_to_120_characters(controller: AdmissionController) -> None:
    sent = review(fixture("configmap"))
    sent["request"]["kind"] = {"group": "example.com", "version": "v1", "kind": "Widget" * 30}
    (warning,) = ask(controller, "validate", sent)["response"]["warnings"]
    assert len(warning) == MAX_WARNING
    assert warning.startswith("Docket does not inspect example.com/WidgetWidget")
    assert warning.endswith("...")


@pytest.mark.parametrize("path", ["validate", "mutate"])
def test_delete_is_allowed_without_evaluation(
    controller: AdmissionController, service: DecisionService, path: Webhook
) -> None:
    sent = review(fixture("deployment-restricted"), namespace="clinical", operation="DELETE")
    answer = ask(controller, path, sent)["response"]
    assert answer == {
        "uid": sent["request"]["uid"],
        "allowed": True,
        "auditAnnotations": answer["auditAnnotations"],
    }
    entry = last_entry(service)
    assert entry["decision"] == "allow"
    assert entry["detail"]["unevaluated"] == "DELETE is admitted without evaluation"
    assert entry["detail"]["object"]["name"] == "ehr-export"
    assert entry["detail"]["operation"] == "DELETE"


# -- input Docket cannot read -----------------------------------------------------------


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    sent = review(fixture("deployment"))
    node: Any = sent
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return sent


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    sent = review(fixture("deployment"))
    node: Any = sent
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return sent


MALFORMED = [
    pytest.param(b"{not json", "body: not JSON", id="not-json"),
    pytest.param(b"\xff\xfe", "body: not JSON", id="not-utf8"),
    pytest.param(b"[]", "body: expected an AdmissionReview object", id="array"),
    pytest.param(body(_without(("request", "uid"))), "request.uid: Field required", id="no-uid"),
    pytest.param(body(_with(("request", "uid"), "")), "request.uid: String should", id="empty-uid"),
    pytest.param(body(_without(("request", "kind"))), "request.kind: Field required", id="no-kind"),
    pytest.param(
        body(_with(("request", "operation"), "PATCH")),
        "request.operation: Input should be 'CREATE', 'UPDATE', 'DELETE' or 'CONNECT'",
        id="bad-operation",
    ),
    pytest.param(
        body(_without(("request", "object"))),
        "request.object: required for CREATE",
        id="no-object",
    ),
    pytest.param(
        body(_with(("request", "dryRun"), "yes")),
        "request.dryRun: Input should be a valid boolean",
        id="dry-run-text",
    ),
    pytest.param(
        body(_with(("kind",), "Review")), "kind: Input should be 'AdmissionReview'", id="kind"
    ),
    pytest.param(body(_without(("request",))), "request: Field required", id="no-request"),
]


@pytest.mark.parametrize(("sent", "error"), MALFORMED)
def test_malformed_is_400_naming_the_field(
    controller: AdmissionController, service: DecisionService, sent: bytes, error: str
) -> None:
    status, answer = controller.review("validate", sent)
    assert status == 400
    assert answer["error"].startswith(error), answer
    entry = last_entry(service)
    assert (entry["kind"], entry["decision"]) == ("admission", "deny")
    assert entry["detail"]["error"] == answer["error"]
    assert entry["detail"]["webhook"] == "validate"


@pytest.mark.parametrize("version", ["admission.k8s.io/v1beta1", "admission.k8s.io/v2", None])
def test_an_unsupported_version_is_refused_clearly(
    controller: AdmissionController, version: str | None
) -> None:
    sent = review(fixture("pod"))
    if version is None:
        del sent["apiVersion"]
    else:
        sent["apiVersion"] = version
    status, answer = controller.review("mutate", body(sent))
    assert status == 400
    got = json.dumps(version) if version else "missing"
    assert answer == {
        "error": f"apiVersion: {got}; Docket reads AdmissionReview admission.k8s.io/v1 only "
        "(set admissionReviewVersions: [v1] in the webhook configuration)"
    }


@pytest.mark.parametrize("path", ["validate", "mutate"])
def test_a_residency_outside_the_catalog_is_refused(
    controller: AdmissionController, service: DecisionService, path: Webhook
) -> None:
    sent = review(fixture("deployment-bad-residency"), namespace="ops")
    answer = ask(controller, path, sent)["response"]
    message = (
        'request.object.spec.template.metadata.labels["docket.io/residency"]: '
        '"mars" is not a jurisdiction of the site catalog (apac, eu, uk, us)'
    )
    # Denied in the review (it holds whatever the failurePolicy), with code 400.
    assert answer["allowed"] is False
    assert answer["status"] == {"code": 400, "message": message}
    entry = last_entry(service)
    assert (entry["kind"], entry["decision"]) == ("admission", "deny")
    assert entry["detail"]["error"] == message
    assert entry["detail"]["object"]["name"] == "probe"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"docket.io/classification": "secret"},
            'request.object.spec.template.metadata.labels["docket.io/classification"]: '
            '"secret" is not a classification (public, internal, confidential, restricted)',
        ),
        (
            {"docket.io/classification": "Public"},
            'request.object.spec.template.metadata.labels["docket.io/classification"]: '
            '"Public" is not a classification (public, internal, confidential, restricted)',
        ),
    ],
)
def test_an_unknown_classification_is_refused(
    controller: AdmissionController, change: dict[str, str], message: str
) -> None:
    obj = fixture("deployment")
    obj["spec"]["template"]["metadata"]["labels"].update(change)
    answer = ask(controller, "validate", review(obj))["response"]
    assert answer["status"] == {"code": 400, "message": message}


def test_a_container_without_an_image_is_refused(controller: AdmissionController) -> None:
    obj = fixture("cronjob")
    del obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
    answer = ask(controller, "validate", review(obj))["response"]
    assert answer["allowed"] is False
    assert answer["status"] == {
        "code": 400,
        "message": "request.object.spec.jobTemplate.spec.template.spec.containers[0].image: "
        "Field required",
    }


@pytest.mark.parametrize("path", ["validate", "mutate"])
def test_an_image_kubelet_could_not_pull_is_refused_naming_its_container(
    controller: AdmissionController, path: Webhook
) -> None:
    obj = fixture("cronjob")
    spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    spec["initContainers"] = [{"name": "setup", "image": "registry.docket.example/Setup:1"}]
    answer = ask(controller, path, review(obj))["response"]
    assert answer["allowed"] is False
    assert answer["status"] == {
        "code": 400,
        "message": "request.object.spec.jobTemplate.spec.template.spec.initContainers[0].image: "
        '"registry.docket.example/Setup:1" is not an image reference kubelet can pull '
        "(repository name must be lowercase)",
    }


# -- the audit log first ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["validate", "mutate"])
def test_an_unavailable_audit_log_fails_closed(tmp_path: Path, path: Webhook) -> None:
    service = make_service(ROOT / "policies", tmp_path)
    controller = AdmissionController(service, trust_domain=TRUST_DOMAIN)
    size = service.audit.store.head().size
    service.audit.close()
    for name in ("deployment", "configmap"):  # evaluated or not, nothing is unrecorded
        sent = review(fixture(name), namespace="public-web")
        answer = ask(controller, path, sent)["response"]
        assert answer["allowed"] is False
        assert answer["status"]["code"] == 503
        assert answer["status"]["message"].startswith(
            "Docket's audit log is unavailable, so nothing is admitted"
        )
        assert "patch" not in answer
    status, _ = controller.review(path, b"{")
    assert status == 400
    reopened = AuditLog.open(f"sqlite:///{tmp_path / 'docket.db'}", keys=None)
    try:
        assert reopened.store.head().size == size
    finally:
        reopened.store.close()


def test_a_busy_audit_log_is_429(
    controller: AdmissionController, service: DecisionService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(*args: Any, **kwargs: Any) -> Any:
        raise Overloaded("audit log busy: retry shortly")

    monkeypatch.setattr(service.audit.writer, "append", busy)
    answer = ask(controller, "mutate", review(fixture("job"), namespace="finance"))["response"]
    assert answer["allowed"] is False
    assert answer["status"] == {
        "code": 429,
        "message": "Docket's audit log is busy; retry shortly (audit log busy: retry shortly)",
    }


def test_an_unknown_path_is_a_programming_error(controller: AdmissionController) -> None:
    with pytest.raises(ValueError, match="unknown admission path"):
        controller.review("admit", b"{}")  # type: ignore[arg-type]


# -- Pod Security Admission's pod update rule ---------------------------------------------


def _cap_net_admin(pod: dict[str, Any]) -> dict[str, Any]:
    """``pod`` failing the baseline profile (a capability beyond the default set)."""
    pod["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["NET_ADMIN"]}}
    return pod


def _relabel(pod: dict[str, Any]) -> None:
    pod["metadata"]["labels"]["team"] = "payments"
    pod["metadata"].setdefault("annotations", {})["owner"] = "ops"
    pod["spec"]["tolerations"] = [{"key": "maintenance", "operator": "Exists"}]
    pod["spec"]["activeDeadlineSeconds"] = 600


def test_a_pod_update_that_changes_no_container_is_not_held_to_pod_security(
    controller: AdmissionController,
) -> None:
    """As Pod Security Admission: a pod admitted before the profile applied to it may
    still be relabelled (its spec is otherwise immutable); a new pod like it may not be
    created."""
    running = _cap_net_admin(fixture("pod"))
    created = ask(controller, "validate", review(running))["response"]
    assert created["allowed"] is False
    assert "admit-pod-security-baseline" in created["status"]["message"]
    updated = copy.deepcopy(running)
    _relabel(updated)
    answer = ask(controller, "validate", review(updated, operation="UPDATE", old=running))
    assert answer["response"]["allowed"] is True, answer


def _image(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["image"] = "registry.k8s.io/pause:3.9"


def _container(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"].append({"name": "side", "image": "registry.k8s.io/pause:3.10"})


def _init_container(pod: dict[str, Any]) -> None:
    pod["spec"]["initContainers"] = [{"name": "init", "image": "registry.k8s.io/pause:3.10"}]


def _ephemeral(pod: dict[str, Any]) -> None:
    pod["spec"]["ephemeralContainers"] = [{"name": "debug", "image": "registry.k8s.io/pause:3.10"}]


def _seccomp_annotation(pod: dict[str, Any]) -> None:
    pod["metadata"]["annotations"] = {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}


def _container_seccomp_annotation(pod: dict[str, Any]) -> None:
    key = "container.seccomp.security.alpha.kubernetes.io/shell"
    pod["metadata"]["annotations"] = {key: "unconfined"}


def _broken_containers(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"] = "not a list"


def _raised_classification(pod: dict[str, Any]) -> None:
    pod["metadata"]["labels"]["docket.io/classification"] = "confidential"


@pytest.mark.parametrize(
    "change",
    [_image, _container, _init_container, _ephemeral, _seccomp_annotation,
     _container_seccomp_annotation, _broken_containers, _raised_classification],
    ids=["image", "container", "init-container", "ephemeral-container", "pod-seccomp",
         "container-seccomp", "malformed", "classification-raised"],
)  # fmt: skip
def test_a_significant_pod_update_is_held_to_pod_security(
    controller: AdmissionController, change: Any
) -> None:
    running = _cap_net_admin(fixture("pod"))
    updated = copy.deepcopy(running)
    _relabel(updated)
    change(updated)
    answer = ask(controller, "validate", review(updated, operation="UPDATE", old=running))
    assert answer["response"]["allowed"] is False
    message = answer["response"]["status"]["message"]
    if change is _broken_containers:  # refused as unreadable, before any policy
        assert answer["response"]["status"]["code"] == 400, message
    else:
        assert "admit-pod-security-baseline" in message, message
