"""Issue 13, finding 5: the attacks on the admission webhook, each against a real
``docket serve`` over HTTPS (trusting only ``docket ca bundle``), each refused.

A "confidential" pod that takes over its node (host namespaces, capabilities, host
ports, root with privilege escalation, seccomp/AppArmor Unconfined, an unmasked /proc);
a classification lowered by the object's own label or by an UPDATE; a namespace Docket
cannot read; a container image whose registry host Docket read otherwise than kubelet
pulls it (``MyReg/app``); trickling TLS connections that used to cost the process a
thread each.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from admission_reviews import FakeKubernetes, body, fixture, review
from e2e.docket_process import ROOT, Docket, start_docket
from e2e.test_admission_serve import JSON
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.e2e

CLASSIFICATION = "docket.io/classification"


def confidential_pod(name: str = "ledger") -> dict[str, Any]:
    """A confidential Pod that meets the restricted profile: each attack changes one thing."""
    pod = fixture("pod")
    pod["metadata"]["name"] = name
    pod["metadata"]["labels"][CLASSIFICATION] = "confidential"
    pod["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return pod


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = pod["spec"]["containers"][0]["securityContext"]
    return context


def _host_pid(pod: dict[str, Any]) -> None:
    pod["spec"]["hostPID"] = True


def _host_ipc(pod: dict[str, Any]) -> None:
    pod["spec"]["hostIPC"] = True


def _sys_admin(pod: dict[str, Any]) -> None:
    _container(pod)["capabilities"]["add"] = ["SYS_ADMIN"]


def _all_capabilities(pod: dict[str, Any]) -> None:
    _container(pod)["capabilities"]["add"] = ["ALL"]


def _host_port(pod: dict[str, Any]) -> None:
    pod["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "hostPort": 8080}]


def _root_escalating(pod: dict[str, Any]) -> None:
    pod["spec"]["securityContext"]["runAsUser"] = 0
    _container(pod)["allowPrivilegeEscalation"] = True


def _seccomp_unconfined(pod: dict[str, Any]) -> None:
    _container(pod)["seccompProfile"] = {"type": "Unconfined"}


def _apparmor_unconfined(pod: dict[str, Any]) -> None:
    _container(pod)["appArmorProfile"] = {"type": "Unconfined"}


def _apparmor_annotation(pod: dict[str, Any]) -> None:
    key = "container.apparmor.security.beta.kubernetes.io/shell"
    pod["metadata"]["annotations"] = {key: "unconfined"}


def _proc_unmasked(pod: dict[str, Any]) -> None:
    _container(pod)["procMount"] = "Unmasked"


ATTACKS: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("hostPID", _host_pid, ["host namespaces (hostPID=true)"]),
    ("hostIPC", _host_ipc, ["host namespaces (hostIPC=true)"]),
    (
        "capabilities-SYS_ADMIN",
        _sys_admin,
        [
            'unrestricted capabilities (container "shell" must not include "SYS_ADMIN" in '
            "securityContext.capabilities.add)"
        ],
    ),
    (
        "capabilities-ALL",
        _all_capabilities,
        ['unrestricted capabilities (container "shell" must not include "ALL" in'],
    ),
    ("hostPort", _host_port, ['hostPort (container "shell" uses hostPort 8080)']),
    (
        "runAsUser-0-with-allowPrivilegeEscalation",
        _root_escalating,
        [
            'allowPrivilegeEscalation != false (container "shell" must set '
            "securityContext.allowPrivilegeEscalation=false)",
            "runAsUser=0 (pod must not set runAsUser=0)",
        ],
    ),
    (
        "seccomp-Unconfined",
        _seccomp_unconfined,
        [
            'seccompProfile (container "shell" must not set '
            'securityContext.seccompProfile.type to "Unconfined")'
        ],
    ),
    (
        "AppArmor-Unconfined",
        _apparmor_unconfined,
        [
            'forbidden AppArmor profiles (container "shell" must not set '
            'appArmorProfile.type to "Unconfined")'
        ],
    ),
    (
        "AppArmor-unconfined-annotation",
        _apparmor_annotation,
        [
            "forbidden AppArmor profiles "
            '(container.apparmor.security.beta.kubernetes.io/shell="unconfined")'
        ],
    ),
    (
        "procMount-Unmasked",
        _proc_unmasked,
        ['procMount (container "shell" must not set securityContext.procMount to "Unmasked")'],
    ),
]


@pytest.fixture(scope="module")
def docket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docket]:
    """``docket serve`` on the defaults (no namespace source)."""
    running = start_docket(tmp_path_factory.mktemp("attacks"))
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log.read_text()


def validate(docket: Docket, sent: dict[str, Any]) -> dict[str, Any]:
    with docket.admission_client() as http:
        answer = http.post("/validate", content=body(sent), headers=JSON)
    assert answer.status_code == 200, answer.text
    response: dict[str, Any] = answer.json()["response"]
    return response


def test_a_confidential_pod_meeting_the_restricted_profile_is_admitted(docket: Docket) -> None:
    answer = validate(docket, review(confidential_pod(), namespace="finance"))
    assert answer["allowed"] is True, answer


@pytest.mark.parametrize(
    ("mutate", "messages"),
    [pytest.param(m, msgs, id=name) for name, m, msgs in ATTACKS],
)
def test_attack_confidential_pod_takes_over_its_node(
    docket: Docket, mutate: Callable[[dict[str, Any]], None], messages: list[str]
) -> None:
    pod = confidential_pod("attack" + mutate.__name__.replace("_", "-").lower())
    mutate(pod)
    answer = validate(docket, review(pod, namespace="finance"))
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert answer["status"]["code"] == 403
    assert 'violates PodSecurity "restricted:latest": ' in message
    for expected in messages:
        assert expected in message
    entries = docket.audit_entries("admission")
    (entry,) = [e for e in entries if e["detail"]["object"]["name"] == pod["metadata"]["name"]]
    assert entry["decision"] == "deny"
    assert "admit-pod-security-restricted" in entry["policies"]


def test_attack_internal_pod_takes_over_its_node(docket: Docket) -> None:
    """Baseline holds for every workload, not only confidential ones."""
    pod = fixture("pod")
    pod["metadata"]["name"] = "internal-host-pid"
    pod["spec"]["hostPID"] = True
    answer = validate(docket, review(pod, namespace="shop"))
    assert answer["allowed"] is False
    assert (
        'violates PodSecurity "baseline:latest": host namespaces (hostPID=true)'
        in answer["status"]["message"]
    )


def test_attack_update_downgrades_restricted_to_unlabelled(docket: Docket) -> None:
    old = fixture("deployment-restricted-eu")
    new = copy.deepcopy(old)
    del new["spec"]["template"]["metadata"]["labels"][CLASSIFICATION]
    sent = review(new, namespace="clinical", operation="UPDATE", old=old)
    answer = validate(docket, sent)
    assert answer["allowed"] is False
    assert "admit-no-classification-downgrade" in answer["status"]["message"]
    # Raising it stays allowed (the same update the other way round).
    back = review(old, namespace="clinical", operation="UPDATE", old=new)
    assert validate(docket, back)["allowed"] is True


# -- classification from the namespace, read from a (fake) Kubernetes API ------------------


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKubernetes]:
    namespaces = {
        "finance": {CLASSIFICATION: "confidential"},
        "shop": {},
    }
    with FakeKubernetes(namespaces) as fake:
        yield fake


@pytest.fixture(scope="module")
def docket_k8s(tmp_path_factory: pytest.TempPathFactory, kube: FakeKubernetes) -> Iterator[Docket]:
    """``docket serve`` reading namespace labels from the Kubernetes API (a kubeconfig)."""
    root = tmp_path_factory.mktemp("attacks-k8s")
    kubeconfig = kube.kubeconfig(root / "kubeconfig")
    (root / "docket.toml").write_text(
        f'admission_namespaces = "kubeconfig:{kubeconfig}"\nadmission_namespace_cache_seconds = 0\n'
    )
    running = start_docket(root)
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log.read_text()


def _root_pod(name: str, label: str | None) -> dict[str, Any]:
    """A pod that meets baseline but not restricted: it runs as root."""
    pod = confidential_pod(name)
    del pod["metadata"]["labels"][CLASSIFICATION]
    if label is not None:
        pod["metadata"]["labels"][CLASSIFICATION] = label
    pod["spec"]["securityContext"]["runAsUser"] = 0
    return pod


def test_attack_unlabelled_pod_in_a_confidential_namespace(docket_k8s: Docket) -> None:
    answer = validate(docket_k8s, review(_root_pod("unlabelled", None), namespace="finance"))
    assert answer["allowed"] is False
    assert "runAsUser=0 (pod must not set runAsUser=0)" in answer["status"]["message"]
    # The same pod in a namespace without a level is internal: baseline only.
    assert validate(docket_k8s, review(_root_pod("elsewhere", None), namespace="shop"))["allowed"]


def test_attack_object_label_lowers_its_namespace_classification(docket_k8s: Docket) -> None:
    answer = validate(docket_k8s, review(_root_pod("public", "public"), namespace="finance"))
    assert answer["allowed"] is False
    assert "admit-pod-security-restricted" in answer["status"]["message"]
    # A label may raise the level: a confidential label in an unlabelled namespace holds.
    raised = review(_root_pod("raised", "confidential"), namespace="shop")
    assert validate(docket_k8s, raised)["allowed"] is False


def test_attack_namespace_docket_cannot_read_is_denied(
    docket_k8s: Docket, kube: FakeKubernetes
) -> None:
    answer = validate(docket_k8s, review(confidential_pod("nowhere"), namespace="no-such-ns"))
    assert answer["allowed"] is False
    assert 'namespace "no-such-ns" does not exist' in answer["status"]["message"]
    entries = docket_k8s.audit_entries("refusal", "admission")
    assert any("no-such-ns" in str(e) for e in entries)


# -- images read as kubelet pulls them ------------------------------------------------------

ALLOWED_REGISTRIES = ["docker.io/library", "localhost", "myreg"]


@pytest.fixture(scope="module")
def docket_registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docket]:
    """``docket serve`` on the default bundle, its Cluster allowing only
    :data:`ALLOWED_REGISTRIES`: Docker's official images and two registry hosts."""
    root = tmp_path_factory.mktemp("attacks-registries")
    bundle = root / "policies"
    shutil.copytree(ROOT / "policies", bundle)
    entities = json.loads((bundle / "entities.json").read_text())
    for entity in entities:
        if entity["uid"] == {"type": "Docket::Cluster", "id": "kubernetes"}:
            entity["attrs"]["allowed_registries"] = ALLOWED_REGISTRIES
    (bundle / "entities.json").write_text(json.dumps(entities))
    running = start_docket(root / "serve", bundle=bundle)
    try:
        yield running
    finally:
        code = running.stop()
    assert code == 0, running.log.read_text()


def _pod_with_image(name: str, image: str) -> dict[str, Any]:
    pod = fixture("pod")
    pod["metadata"]["name"] = name
    pod["spec"]["containers"][0]["image"] = image
    return pod


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        # kubelet pulls these from the hosts MyReg and LOCALHOST (a first path component
        # that is not all lowercase is a host), which the Cluster allows...
        ("MyReg/app:1.0", True),
        ("LOCALHOST/team/app", False),  # localhost/team is not allowed, localhost is
        ("LOCALHOST/app", True),
        # ...while a lowercase first component is a Docker Hub namespace: docker.io/myreg.
        ("myreg/app:1.0", False),
        ("nginx:1.27", True),
    ],
)
def test_attack_image_host_read_otherwise_than_kubelet_pulls_it(
    docket_registries: Docket, image: str, allowed: bool
) -> None:
    name = "image-" + "".join(c if c.isalnum() else "-" for c in image.lower())
    answer = validate(docket_registries, review(_pod_with_image(name, image), namespace="shop"))
    assert answer["allowed"] is allowed, answer
    if not allowed:
        assert "admit-allowed-registries" in answer["status"]["message"]


def test_attack_image_kubelet_cannot_pull_is_refused(docket_registries: Docket) -> None:
    """An uppercase repository path: kubelet refuses it, so Docket cannot say where it
    comes from; the review is denied (code 400, a denial whatever the failurePolicy)."""
    sent = review(_pod_with_image("uppercase-path", "MyReg/App:1.0"), namespace="shop")
    answer = validate(docket_registries, sent)
    assert answer["allowed"] is False
    assert answer["status"] == {
        "code": 400,
        "message": 'request.object.spec.containers[0].image: "MyReg/App:1.0" is not an image '
        "reference kubelet can pull (repository name must be lowercase)",
    }
    (entry,) = [
        e
        for e in docket_registries.audit_entries("admission")
        if e["detail"]["object"]["name"] == "uppercase-path"
    ]
    assert entry["decision"] == "deny"
    assert entry["detail"]["error"] == answer["status"]["message"]


# -- trickling connections -----------------------------------------------------------------

TRICKLERS = 300
TRICKLE_SECONDS = 8.0


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def _client_hello() -> bytes:
    """The first flight of a real TLS client (what a trickler sends one byte at a time)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_attack_trickling_tls_connections_exhaust_threads(tmp_path: Path) -> None:
    running = start_docket(tmp_path / "trickle")
    try:
        assert running.admission_port is not None
        pid = running.process.pid
        before = _threads(pid)
        hello = _client_hello()
        sockets = []
        for _ in range(TRICKLERS):
            sock = socket.create_connection(("127.0.0.1", running.admission_port), timeout=5)
            sock.setblocking(False)
            sockets.append(sock)
        peak = before
        answered: dict[str, float] = {}

        def normal_traffic() -> None:
            started = time.monotonic()
            with running.admission_client() as http:
                http.timeout = httpx.Timeout(30)
                answer = http.post("/validate", content=body(review(fixture("pod"))), headers=JSON)
            assert answer.json()["response"]["allowed"] is True
            answered["review"] = time.monotonic() - started
            started = time.monotonic()
            with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=30).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            answered["health"] = time.monotonic() - started

        time.sleep(0.5)
        traffic = threading.Thread(target=normal_traffic)
        traffic.start()
        deadline = time.monotonic() + TRICKLE_SECONDS
        sent = 0
        while time.monotonic() < deadline:
            for sock in sockets:
                if sent < len(hello) - 1:  # never the last byte: the handshake never ends
                    # An error: the server cut it off, which is what should happen.
                    with contextlib.suppress(OSError):
                        sock.send(hello[sent : sent + 1])
            sent += 1
            peak = max(peak, _threads(pid))
            time.sleep(0.2)
        traffic.join(60)
        for sock in sockets:
            sock.close()
        assert not traffic.is_alive()
        # The pool (64 by default) and a few more; not one thread per connection.
        assert peak <= before + 64 + 8, f"threads: {before} before, {peak} under attack"
        # Generous liveness bounds: the review may wait for trickling connections'
        # deadline (5 s) to free a slot; health never waits on the webhook.
        assert answered["review"] < 20, answered
        assert answered["health"] < 5, answered
    finally:
        code = running.stop()
    assert code == 0, running.log.read_text()


def test_a_trickling_connection_is_cut_off(docket: Docket) -> None:
    assert docket.admission_port is not None
    with socket.create_connection(("127.0.0.1", docket.admission_port), timeout=30) as sock:
        hello = _client_hello()
        started = time.monotonic()
        closed = False
        for byte in hello[:-1]:
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.5)
            if time.monotonic() - started > 15:
                break
        if not closed:
            sock.settimeout(15)
            try:
                closed = sock.recv(1) == b""
            except OSError:
                closed = True
        assert closed
        assert time.monotonic() - started < 15
