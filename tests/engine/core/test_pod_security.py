"""The Pod Security Standards checks (engine._core.pod_security): each check's allowed and refused
values, in each kind of container, and the profiles as the webhook applies them to the
pod templates of every kind it inspects."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from admission_reviews import fixture, review

from audit import AuditLog
from engine import BundleWatcher, Engine, PolicyBundle
from engine._core.pod_security import CHECKS, check_pod, violation
from engine._service.admission import AdmissionController
from engine._service.decisions import DecisionService
from engine._service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]


def make_service(bundle: Path, data: Path) -> DecisionService:
    engine = Engine(PolicyBundle.load(bundle))
    log = AuditLog.open(f"sqlite:///{data / 'docket.db'}", keys=data / "keys").start()
    return DecisionService(engine, BundleWatcher(engine, bundle), Metrics(), log)


KINDS = ("containers", "initContainers", "ephemeralContainers")


def compliant() -> dict[str, Any]:
    """A pod (metadata and spec) meeting the restricted profile, with one container of
    each kind."""

    def container(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": "registry.k8s.io/pause:3.10",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
        }

    return {
        "metadata": {"name": "p", "labels": {}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container("app")],
            "initContainers": [container("init")],
            "ephemeralContainers": [container("debug")],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        },
    }


def failed(pod: dict[str, Any], level: str = "restricted") -> list[str]:
    return [f.check for f in check_pod(pod, level)]  # type: ignore[arg-type]


Change = Callable[[dict[str, Any]], None]


def spec(**fields: Any) -> Change:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"].update(fields)

    return change


def pod_context(**fields: Any) -> Change:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["securityContext"].update(fields)

    return change


def annotation(key: str, value: str) -> Change:
    def change(pod: dict[str, Any]) -> None:
        pod["metadata"]["annotations"] = {key: value}

    return change


def volume(**kind: Any) -> Change:
    def change(pod: dict[str, Any]) -> None:
        pod["spec"]["volumes"] = [{"name": "v", **kind}]

    return change


# (id, change to the pod, failed baseline checks, failed restricted checks)
POD_CASES: list[tuple[str, Change, list[str], list[str]]] = [
    ("compliant", lambda pod: None, [], []),
    ("hostNetwork", spec(hostNetwork=True), ["hostNamespaces"], ["hostNamespaces"]),
    ("hostPID", spec(hostPID=True), ["hostNamespaces"], ["hostNamespaces"]),
    ("hostIPC", spec(hostIPC=True), ["hostNamespaces"], ["hostNamespaces"]),
    ("hostPID-false", spec(hostPID=False), [], []),
    (
        "hostProcess-pod",
        pod_context(windowsOptions={"hostProcess": True}),
        ["windowsHostProcess"],
        ["windowsHostProcess"],
    ),
    ("hostProcess-false", pod_context(windowsOptions={"hostProcess": False}), [], []),
    (
        "hostPath",
        volume(hostPath={"path": "/"}),
        ["hostPathVolumes"],
        ["hostPathVolumes", "restrictedVolumes"],
    ),
    ("nfs-volume", volume(nfs={"server": "x", "path": "/"}), [], ["restrictedVolumes"]),
    ("gitRepo-volume", volume(gitRepo={"repository": "x"}), [], ["restrictedVolumes"]),
    *[
        (f"{kind}-volume", volume(**{kind: {}}), [], [])
        for kind in (
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
            "secret",
        )
    ],
    (
        "apparmor-annotation-unconfined",
        annotation("container.apparmor.security.beta.kubernetes.io/app", "unconfined"),
        ["appArmorProfile"],
        ["appArmorProfile"],
    ),
    (
        "apparmor-annotation-runtime-default",
        annotation("container.apparmor.security.beta.kubernetes.io/app", "runtime/default"),
        [],
        [],
    ),
    (
        "apparmor-annotation-localhost",
        annotation("container.apparmor.security.beta.kubernetes.io/app", "localhost/mine"),
        [],
        [],
    ),
    (
        "apparmor-pod-unconfined",
        pod_context(appArmorProfile={"type": "Unconfined"}),
        ["appArmorProfile"],
        ["appArmorProfile"],
    ),
    ("apparmor-pod-localhost", pod_context(appArmorProfile={"type": "Localhost"}), [], []),
    (
        "selinux-pod-type",
        pod_context(seLinuxOptions={"type": "spc_t"}),
        ["seLinuxOptions"],
        ["seLinuxOptions"],
    ),
    (
        "selinux-pod-user",
        pod_context(seLinuxOptions={"user": "system_u"}),
        ["seLinuxOptions"],
        ["seLinuxOptions"],
    ),
    (
        "selinux-pod-role",
        pod_context(seLinuxOptions={"role": "system_r"}),
        ["seLinuxOptions"],
        ["seLinuxOptions"],
    ),
    *[
        (f"selinux-{kind}", pod_context(seLinuxOptions={"type": kind, "level": "s0:c1"}), [], [])
        for kind in ("container_t", "container_init_t", "container_kvm_t", "container_engine_t")
    ],
    (
        "seccomp-pod-unconfined",
        pod_context(seccompProfile={"type": "Unconfined"}),
        ["seccompProfile_baseline"],
        ["seccompProfile_restricted"],
    ),
    ("seccomp-pod-localhost", pod_context(seccompProfile={"type": "Localhost"}), [], []),
    (
        "seccomp-pod-unset",
        lambda pod: pod["spec"]["securityContext"].pop("seccompProfile"),
        [],
        ["seccompProfile_restricted"],
    ),
    (
        "sysctl-unsafe",
        pod_context(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
        ["sysctls"],
        ["sysctls"],
    ),
    *[
        (f"sysctl-{name}", pod_context(sysctls=[{"name": name, "value": "1"}]), [], [])
        for name in (
            "kernel.shm_rmid_forced",
            "net.ipv4.ip_local_port_range",
            "net.ipv4.ip_unprivileged_port_start",
            "net.ipv4.tcp_syncookies",
            "net.ipv4.ping_group_range",
            "net.ipv4.ip_local_reserved_ports",
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        )
    ],
    ("runAsNonRoot-pod-false", pod_context(runAsNonRoot=False), [], ["runAsNonRoot"]),
    (
        "runAsNonRoot-unset",
        lambda pod: pod["spec"]["securityContext"].pop("runAsNonRoot"),
        [],
        ["runAsNonRoot"],
    ),
    ("runAsUser-pod-0", pod_context(runAsUser=0), [], ["runAsUser"]),
    ("runAsUser-pod-1000", pod_context(runAsUser=1000), [], []),
    (
        "windows-exempt-from-linux-only-checks",
        lambda pod: (
            pod["spec"].update(os={"name": "windows"}),
            pod["spec"]["securityContext"].pop("seccompProfile"),
            [c.pop("securityContext") for k in KINDS for c in pod["spec"][k]],
        ),
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("change", "baseline", "restricted"),
    [pytest.param(c, b, r, id=name) for name, c, b, r in POD_CASES],
)
def test_pod_level_checks(change: Change, baseline: list[str], restricted: list[str]) -> None:
    pod = compliant()
    change(pod)
    assert failed(pod, "baseline") == baseline
    assert failed(pod, "restricted") == restricted


def container_context(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(container: dict[str, Any]) -> None:
        container["securityContext"].update(fields)

    return change


def capabilities(add: list[str], drop: list[str] | None = None) -> Change:
    def change(container: dict[str, Any]) -> None:
        container["securityContext"]["capabilities"] = {
            "add": add,
            "drop": ["ALL"] if drop is None else drop,
        }

    return change


# (id, change to one container, failed baseline checks, failed restricted checks)
CONTAINER_CASES: list[tuple[str, Change, list[str], list[str]]] = [
    ("privileged", container_context(privileged=True), ["privileged"], ["privileged"]),
    ("privileged-false", container_context(privileged=False), [], []),
    (
        "hostProcess",
        container_context(windowsOptions={"hostProcess": True}),
        ["windowsHostProcess"],
        ["windowsHostProcess"],
    ),
    (
        "add-SYS_ADMIN",
        capabilities(["SYS_ADMIN"]),
        ["capabilities_baseline"],
        ["capabilities_restricted"],
    ),
    ("add-ALL", capabilities(["ALL"]), ["capabilities_baseline"], ["capabilities_restricted"]),
    *[
        (f"add-{cap}", capabilities([cap]), [], ["capabilities_restricted"])
        for cap in ("AUDIT_WRITE", "CHOWN", "KILL", "MKNOD", "SETUID", "SYS_CHROOT")
    ],
    ("add-NET_BIND_SERVICE", capabilities(["NET_BIND_SERVICE"]), [], []),
    ("drop-nothing", capabilities([], []), [], ["capabilities_restricted"]),
    (
        "hostPort",
        lambda c: c.update(ports=[{"containerPort": 80, "hostPort": 80}]),
        ["hostPorts"],
        ["hostPorts"],
    ),
    ("hostPort-0", lambda c: c.update(ports=[{"containerPort": 80, "hostPort": 0}]), [], []),
    (
        "apparmor-unconfined",
        container_context(appArmorProfile={"type": "Unconfined"}),
        ["appArmorProfile"],
        ["appArmorProfile"],
    ),
    (
        "apparmor-runtime-default",
        container_context(appArmorProfile={"type": "RuntimeDefault"}),
        [],
        [],
    ),
    (
        "selinux-type",
        container_context(seLinuxOptions={"type": "spc_t"}),
        ["seLinuxOptions"],
        ["seLinuxOptions"],
    ),
    (
        "procMount-Unmasked",
        container_context(procMount="Unmasked"),
        ["procMount"],
        ["procMount"],
    ),
    ("procMount-Default", container_context(procMount="Default"), [], []),
    (
        "seccomp-unconfined",
        container_context(seccompProfile={"type": "Unconfined"}),
        ["seccompProfile_baseline"],
        ["seccompProfile_restricted"],
    ),
    ("seccomp-localhost", container_context(seccompProfile={"type": "Localhost"}), [], []),
    (
        "allowPrivilegeEscalation-true",
        container_context(allowPrivilegeEscalation=True),
        [],
        ["allowPrivilegeEscalation"],
    ),
    (
        "allowPrivilegeEscalation-unset",
        lambda c: c["securityContext"].pop("allowPrivilegeEscalation"),
        [],
        ["allowPrivilegeEscalation"],
    ),
    ("runAsNonRoot-false", container_context(runAsNonRoot=False), [], ["runAsNonRoot"]),
    ("runAsUser-0", container_context(runAsUser=0), [], ["runAsUser"]),
    ("runAsUser-1000", container_context(runAsUser=1000), [], []),
    (
        "privileged-as-a-string",
        container_context(privileged="true"),
        ["privileged"],
        ["privileged"],
    ),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("change", "baseline", "restricted"),
    [pytest.param(c, b, r, id=name) for name, c, b, r in CONTAINER_CASES],
)
def test_container_level_checks(
    kind: str, change: Change, baseline: list[str], restricted: list[str]
) -> None:
    pod = compliant()
    change(pod["spec"][kind][0])
    assert failed(pod, "baseline") == baseline
    assert failed(pod, "restricted") == restricted


def test_container_settings_override_the_pods() -> None:
    pod = compliant()
    del pod["spec"]["securityContext"]
    for kind in KINDS:
        pod["spec"][kind][0]["securityContext"].update(
            runAsNonRoot=True, seccompProfile={"type": "RuntimeDefault"}
        )
    assert failed(pod) == []
    pod["spec"]["ephemeralContainers"][0]["securityContext"].pop("seccompProfile")
    assert failed(pod) == ["seccompProfile_restricted"]


def test_messages_name_every_failure_as_psa_does() -> None:
    pod = compliant()
    pod["spec"].update(hostPID=True, hostNetwork=True)
    pod["spec"]["containers"][0]["securityContext"]["privileged"] = True
    pod["spec"]["initContainers"][0]["securityContext"]["privileged"] = True
    pod["spec"]["securityContext"]["runAsUser"] = 0
    assert violation("restricted", check_pod(pod, "restricted")) == (
        'violates PodSecurity "restricted:latest": host namespaces (hostNetwork=true, '
        'hostPID=true), privileged (containers "app", "init" must not set '
        "securityContext.privileged=true), runAsUser=0 (pod must not set runAsUser=0)"
    )


def test_every_check_has_a_case() -> None:
    seen = {
        check
        for _, _, baseline, restricted in [*POD_CASES, *CONTAINER_CASES]
        for check in (*baseline, *restricted)
    }
    assert seen == {check.id for check in CHECKS}


# -- the profiles in the webhook, over the pod templates of every kind ---------------------


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[AdmissionController]:
    service = make_service(ROOT / "policies", tmp_path)
    try:
        yield AdmissionController(service, trust_domain="docket.example")
    finally:
        service.audit.close()


TEMPLATES = {
    "pod": (),
    "deployment": ("spec", "template"),
    "replicaset": ("spec", "template"),
    "statefulset-host-path": ("spec", "template"),
    "daemonset-privileged": ("spec", "template"),
    "job": ("spec", "template"),
    "cronjob": ("spec", "jobTemplate", "spec", "template"),
}


def _wrap(name: str, pod: dict[str, Any], classification: str) -> dict[str, Any]:
    obj = fixture(name)
    target = obj
    for key in TEMPLATES[name]:
        target = target[key]
    pod = copy.deepcopy(pod)
    pod["spec"]["containers"][0]["image"] = "registry.k8s.io/pause:3.10"
    pod["metadata"]["labels"] = {"docket.io/classification": classification}
    target["metadata"] = (
        pod["metadata"] if TEMPLATES[name] else {**obj["metadata"], **pod["metadata"]}
    )
    target["spec"] = pod["spec"]
    return obj


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize(
    ("classification", "change", "allowed"),
    [
        ("internal", lambda pod: None, True),
        ("internal", pod_context(runAsUser=0), True),  # baseline only
        ("internal", spec(hostPID=True), False),
        ("confidential", lambda pod: None, True),
        ("confidential", pod_context(runAsUser=0), False),
        ("restricted", pod_context(runAsUser=0), False),
    ],
)
def test_profiles_over_every_pod_template(
    controller: AdmissionController, name: str, classification: str, change: Change, allowed: bool
) -> None:
    pod = compliant()
    del pod["spec"]["ephemeralContainers"]  # a controller's template has none
    change(pod)
    obj = _wrap(name, pod, classification)
    if classification == "restricted":
        obj_labels = obj
        for key in TEMPLATES[name]:
            obj_labels = obj_labels[key]
        obj_labels["metadata"]["labels"]["docket.io/residency"] = "eu"
    status, answer = controller.review("validate", json.dumps(review(obj)).encode())
    assert status == 200
    response = answer["response"]
    assert response["allowed"] is allowed, response
    if not allowed:
        profile = "baseline" if classification == "internal" else "restricted"
        assert f'violates PodSecurity "{profile}:latest": ' in response["status"]["message"]
