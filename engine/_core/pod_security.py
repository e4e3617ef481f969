"""The Kubernetes Pod Security Standards (v1.30 and later, "latest"), checked in
Python over a pod (template): which checks of the *baseline* and *restricted* profiles
it fails, each with Pod Security Admission's check id and a message in PSA's words
(``host namespaces (hostPID=true)``).

Pure functions over the pod as sent (``metadata`` and ``spec``, plain JSON): no I/O,
no clock. Docket does not decide here: the failed checks go into the admission context
and Cedar policy decides (``policies/admission.cedar``).

The checks (the table :data:`CHECKS`), over containers, initContainers and
ephemeralContainers, with container-level securityContext overriding the pod's where
Kubernetes does:

baseline
    ``windowsHostProcess``, ``hostNamespaces`` (hostNetwork, hostPID, hostIPC),
    ``privileged``, ``capabilities_baseline`` (add only the default set),
    ``hostPathVolumes``, ``hostPorts``, ``appArmorProfile`` (annotations and
    securityContext.appArmorProfile), ``seLinuxOptions`` (type, user, role),
    ``procMount``, ``seccompProfile_baseline`` (not Unconfined), ``sysctls`` (the
    safe set).
restricted (baseline and)
    ``restrictedVolumes``, ``allowPrivilegeEscalation``, ``runAsNonRoot``,
    ``runAsUser``, ``seccompProfile_restricted`` (RuntimeDefault or Localhost),
    ``capabilities_restricted`` (drop ALL, add only NET_BIND_SERVICE). As in PSA, the
    restricted seccomp and capabilities checks replace their baseline ones under the
    restricted profile, and a pod with ``spec.os.name: windows`` is exempt from the
    Linux-only restricted checks (seccomp, capabilities, allowPrivilegeEscalation).

A value of an unexpected type (a string where a bool belongs) fails the check it
belongs to: the API server would not have accepted it, and an unreadable value is
never taken as safe.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["baseline", "restricted"]

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
"""The capabilities a baseline container may add (the container runtime's defaults)."""
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",  # 1.27
        "net.ipv4.tcp_keepalive_time",  # 1.29
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
"""Allowed seLinuxOptions.type values (container_engine_t since 1.31, "latest")."""
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
"""The volume types a restricted pod may use."""
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_ALLOWED = ("RuntimeDefault", "Localhost")


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed check: PSA's check id, the profile it belongs to and the message."""

    check: str
    level: Level
    message: str


@dataclass(frozen=True, slots=True)
class _Container:
    name: str
    context: Mapping[str, Any]
    """Its securityContext ({} when absent)."""
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class _Pod:
    metadata: Mapping[str, Any]
    spec: Mapping[str, Any]
    context: Mapping[str, Any]
    """spec.securityContext ({} when absent)."""
    containers: tuple[_Container, ...]

    @property
    def windows(self) -> bool:
        os_ = _map(self.spec.get("os"))
        return os_.get("name") == "windows"


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _read(pod: Mapping[str, Any]) -> _Pod:
    spec = _map(pod.get("spec"))
    containers = []
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for raw in _list(spec.get(key)):
            item = _map(raw)
            name = item.get("name")
            containers.append(
                _Container(
                    name=name if isinstance(name, str) else "?",
                    context=_map(item.get("securityContext")),
                    raw=item,
                )
            )
    return _Pod(
        metadata=_map(pod.get("metadata")),
        spec=spec,
        context=_map(spec.get("securityContext")),
        containers=tuple(containers),
    )


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _containers(names: Sequence[str]) -> str:
    """``container "a"`` / ``containers "a", "b"``, as PSA writes them."""
    return f"{'container' if len(names) == 1 else 'containers'} {_quoted(names)}"


def _set(value: Any, ok: Callable[[Any], bool]) -> bool:
    """Whether a field is set to a value ``ok`` does not accept (unset is fine)."""
    return value is not None and not ok(value)


# -- baseline ----------------------------------------------------------------------------


def _host_process(pod: _Pod) -> str | None:
    def on(context: Mapping[str, Any]) -> bool:
        return _map(context.get("windowsOptions")).get("hostProcess") not in (None, False)

    pod_level = on(pod.context)
    names = [c.name for c in pod.containers if on(c.context)]
    if not pod_level and not names:
        return None
    who = " and ".join(
        part for part in ("pod" if pod_level else "", _containers(names) if names else "") if part
    )
    return f"{who} must not set securityContext.windowsOptions.hostProcess=true"


def _host_namespaces(pod: _Pod) -> str | None:
    found = [
        f"{field}=true"
        for field in ("hostNetwork", "hostPID", "hostIPC")
        if pod.spec.get(field) not in (None, False)
    ]
    return ", ".join(found) or None


def _privileged(pod: _Pod) -> str | None:
    names = [c.name for c in pod.containers if c.context.get("privileged") not in (None, False)]
    if not names:
        return None
    return f"{_containers(names)} must not set securityContext.privileged=true"


def _added(container: _Container) -> list[Any]:
    return list(_list(_map(container.context.get("capabilities")).get("add")))


def _added_beyond(pod: _Pod, allowed: Collection[str]) -> list[str]:
    """One detail per container that adds a capability outside ``allowed``."""
    details = []
    for container in pod.containers:
        bad = [cap for cap in _added(container) if cap not in allowed]
        if bad:
            caps = ", ".join(f'"{cap}"' for cap in bad)
            details.append(
                f'container "{container.name}" must not include {caps} in '
                "securityContext.capabilities.add"
            )
    return details


def _capabilities_baseline(pod: _Pod) -> str | None:
    return "; ".join(_added_beyond(pod, BASELINE_CAPABILITIES)) or None


def _volumes(pod: _Pod) -> list[Mapping[str, Any]]:
    return [_map(volume) for volume in _list(pod.spec.get("volumes"))]


def _host_path(pod: _Pod) -> str | None:
    names = [str(v.get("name")) for v in _volumes(pod) if v.get("hostPath") is not None]
    if not names:
        return None
    return f"{'volume' if len(names) == 1 else 'volumes'} {_quoted(names)}"


def _host_ports(pod: _Pod) -> str | None:
    details = []
    for container in pod.containers:
        ports = [
            _map(port).get("hostPort")
            for port in _list(container.raw.get("ports"))
            if _map(port).get("hostPort") not in (None, 0)
        ]
        if ports:
            used = ", ".join(str(port) for port in ports)
            details.append(
                f'container "{container.name}" uses hostPort{"s" if len(ports) > 1 else ""} {used}'
            )
    return "; ".join(details) or None


def _apparmor(pod: _Pod) -> str | None:
    details = []
    annotations = _map(pod.metadata.get("annotations"))
    for key, value in annotations.items():
        if not (isinstance(key, str) and key.startswith(APPARMOR_ANNOTATION)):
            continue
        if value == "runtime/default" or (
            isinstance(value, str) and value.startswith("localhost/")
        ):
            continue
        details.append(f'{key}="{value}"')

    def profile(context: Mapping[str, Any]) -> Any:
        return _map(context.get("appArmorProfile")).get("type")

    if _set(profile(pod.context), lambda t: t in SECCOMP_ALLOWED):
        details.append(f'pod must not set appArmorProfile.type to "{profile(pod.context)}"')
    for container in pod.containers:
        kind = profile(container.context)
        if _set(kind, lambda t: t in SECCOMP_ALLOWED):
            details.append(
                f'container "{container.name}" must not set appArmorProfile.type to "{kind}"'
            )
    return ", ".join(details) or None


def _selinux(pod: _Pod) -> str | None:
    def wrong(context: Mapping[str, Any]) -> list[str]:
        options = _map(context.get("seLinuxOptions"))
        found = []
        kind = options.get("type")
        if _set(kind, lambda t: t in SELINUX_TYPES):
            found.append(f'type "{kind}"')
        for field in ("user", "role"):
            value = options.get(field)
            if _set(value, lambda v: v == ""):
                found.append(f'{field} "{value}"')
        return found

    details = []
    if found := wrong(pod.context):
        details.append(f"pod set forbidden securityContext.seLinuxOptions: {'; '.join(found)}")
    for container in pod.containers:
        if found := wrong(container.context):
            details.append(
                f'container "{container.name}" set forbidden securityContext.seLinuxOptions: '
                + "; ".join(found)
            )
    return ", ".join(details) or None


def _proc_mount(pod: _Pod) -> str | None:
    details = []
    for container in pod.containers:
        mount = container.context.get("procMount")
        if _set(mount, lambda m: m == "Default"):
            details.append(
                f'container "{container.name}" must not set securityContext.procMount to "{mount}"'
            )
    return "; ".join(details) or None


def _seccomp_type(context: Mapping[str, Any]) -> Any:
    return _map(context.get("seccompProfile")).get("type")


def _seccomp_baseline(pod: _Pod) -> str | None:
    def confined(kind: Any) -> bool:
        return isinstance(kind, str) and kind != "Unconfined"

    details = []
    if _set(_seccomp_type(pod.context), confined):
        kind = _seccomp_type(pod.context)
        details.append(f'pod must not set securityContext.seccompProfile.type to "{kind}"')
    for container in pod.containers:
        kind = _seccomp_type(container.context)
        if _set(kind, confined):
            details.append(
                f'container "{container.name}" must not set '
                f'securityContext.seccompProfile.type to "{kind}"'
            )
    return "; ".join(details) or None


def _sysctls(pod: _Pod) -> str | None:
    bad = [
        str(_map(sysctl).get("name"))
        for sysctl in _list(pod.context.get("sysctls"))
        if _map(sysctl).get("name") not in SAFE_SYSCTLS
    ]
    return ", ".join(bad) or None


# -- restricted --------------------------------------------------------------------------


def _restricted_volumes(pod: _Pod) -> str | None:
    details = []
    for volume in _volumes(pod):
        kinds = [key for key in volume if key != "name" and key not in RESTRICTED_VOLUMES]
        for kind in kinds:
            details.append(f'volume "{volume.get("name")}" uses restricted volume type "{kind}"')
    return ", ".join(details) or None


def _privilege_escalation(pod: _Pod) -> str | None:
    if pod.windows:
        return None
    names = [
        c.name for c in pod.containers if c.context.get("allowPrivilegeEscalation") is not False
    ]
    if not names:
        return None
    return f"{_containers(names)} must set securityContext.allowPrivilegeEscalation=false"


def _run_as_non_root(pod: _Pod) -> str | None:
    pod_value = pod.context.get("runAsNonRoot")
    details = []
    if pod_value is not None and pod_value is not True:
        details.append("pod must not set securityContext.runAsNonRoot=false")
    explicit_false = [
        c.name
        for c in pod.containers
        if c.context.get("runAsNonRoot") is not None and c.context.get("runAsNonRoot") is not True
    ]
    if explicit_false:
        details.append(
            f"{_containers(explicit_false)} must not set securityContext.runAsNonRoot=false"
        )
    if pod_value is not True:
        unset = [c.name for c in pod.containers if c.context.get("runAsNonRoot") is None]
        if unset:
            details.append(
                f"pod or {_containers(unset)} must set securityContext.runAsNonRoot=true"
            )
    return "; ".join(details) or None


def _run_as_user(pod: _Pod) -> str | None:
    def root(context: Mapping[str, Any]) -> bool:
        value = context.get("runAsUser")
        return value is not None and not (isinstance(value, int) and value != 0)

    details = []
    if root(pod.context):
        details.append("pod must not set runAsUser=0")
    names = [c.name for c in pod.containers if root(c.context)]
    if names:
        details.append(f"{_containers(names)} must not set runAsUser=0")
    return "; ".join(details) or None


def _seccomp_restricted(pod: _Pod) -> str | None:
    if pod.windows:
        return None
    pod_type = _seccomp_type(pod.context)
    details = []
    if _set(pod_type, lambda t: t in SECCOMP_ALLOWED):
        details.append(f'pod must not set securityContext.seccompProfile.type to "{pod_type}"')
    wrong = [
        c for c in pod.containers if _set(_seccomp_type(c.context), lambda t: t in SECCOMP_ALLOWED)
    ]
    for container in wrong:
        details.append(
            f'container "{container.name}" must not set securityContext.seccompProfile.type '
            f'to "{_seccomp_type(container.context)}"'
        )
    if pod_type is None:
        unset = [c.name for c in pod.containers if _seccomp_type(c.context) is None]
        if unset:
            details.append(
                f"pod or {_containers(unset)} must set securityContext.seccompProfile.type to "
                '"RuntimeDefault" or "Localhost"'
            )
    return "; ".join(details) or None


def _capabilities_restricted(pod: _Pod) -> str | None:
    if pod.windows:
        return None
    no_drop = []
    details = []
    for container in pod.containers:
        dropped = _list(_map(container.context.get("capabilities")).get("drop"))
        if "ALL" not in dropped:
            no_drop.append(container.name)
    if no_drop:
        details.append(f'{_containers(no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    details += _added_beyond(pod, RESTRICTED_CAPABILITIES)
    return "; ".join(details) or None


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a profile: PSA's id, what it is called in messages, and the
    function that returns the detail of a failure (None when the pod passes)."""

    id: str
    level: Level
    reason: str
    detail: Callable[[_Pod], str | None]
    overrides: str | None = None
    """The baseline check this restricted one replaces under the restricted profile."""


CHECKS: tuple[Check, ...] = (
    Check("windowsHostProcess", "baseline", "hostProcess", _host_process),
    Check("hostNamespaces", "baseline", "host namespaces", _host_namespaces),
    Check("privileged", "baseline", "privileged", _privileged),
    Check("capabilities_baseline", "baseline", "non-default capabilities", _capabilities_baseline),
    Check("hostPathVolumes", "baseline", "hostPath volumes", _host_path),
    Check("hostPorts", "baseline", "hostPort", _host_ports),
    Check("appArmorProfile", "baseline", "forbidden AppArmor profiles", _apparmor),
    Check("seLinuxOptions", "baseline", "seLinuxOptions", _selinux),
    Check("procMount", "baseline", "procMount", _proc_mount),
    Check("seccompProfile_baseline", "baseline", "seccompProfile", _seccomp_baseline),
    Check("sysctls", "baseline", "forbidden sysctls", _sysctls),
    Check("restrictedVolumes", "restricted", "restricted volume types", _restricted_volumes),
    Check(
        "allowPrivilegeEscalation",
        "restricted",
        "allowPrivilegeEscalation != false",
        _privilege_escalation,
    ),
    Check("runAsNonRoot", "restricted", "runAsNonRoot != true", _run_as_non_root),
    Check("runAsUser", "restricted", "runAsUser=0", _run_as_user),
    Check(
        "seccompProfile_restricted",
        "restricted",
        "seccompProfile",
        _seccomp_restricted,
        overrides="seccompProfile_baseline",
    ),
    Check(
        "capabilities_restricted",
        "restricted",
        "unrestricted capabilities",
        _capabilities_restricted,
        overrides="capabilities_baseline",
    ),
)
"""Every check of both profiles, in the order PSA reports them."""


def check_pod(pod: Mapping[str, Any], level: Level) -> tuple[Failure, ...]:
    """The checks of profile ``level`` that the pod (template) ``pod`` (its ``metadata``
    and ``spec``, as JSON) fails, in :data:`CHECKS` order; () when it meets the profile.
    Raises nothing: a malformed field fails its check."""
    read = _read(pod)
    checks = [c for c in CHECKS if level == "restricted" or c.level == "baseline"]
    replaced = {c.overrides for c in checks if c.overrides is not None}
    failures = []
    for check in checks:
        if check.id in replaced:
            continue
        detail = check.detail(read)
        if detail is not None:
            failures.append(Failure(check.id, check.level, f"{check.reason} ({detail})"))
    return tuple(failures)


def violation(level: Level, failures: Sequence[Failure]) -> str:
    """PSA's summary of failed checks: ``violates PodSecurity "restricted:latest": …``."""
    return f'violates PodSecurity "{level}:latest": ' + ", ".join(f.message for f in failures)
