"""The drift audit: the objects already running in a cluster decided against the bundle
in force now, as Gatekeeper's audit does, and every one the validating webhook would
refuse listed with why.

Each object of a kind the webhook inspects (``target.POD_KINDS``) becomes the
AdmissionRequest of its CREATE and goes through the webhook's own reading
(:func:`~engine._service.admission.controller.admit_request`), decided offline by an
:class:`~engine._core.evaluate.Engine`. Namespace labels classify as the webhook's
source does: the Namespaces listed with the objects, when there are any.

Input is bounded: :data:`MAX_BYTES` of JSON, :data:`MAX_OBJECTS` objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from attestation import RevocationList, describe
from audit import Entry
from engine._core.evaluate import Engine
from engine._errors import AdmissionInputError, NamespaceUnavailable, RequestError
from engine._service.admission.controller import admit_request, namespace_level, refusal_reason
from engine._service.admission.review import AdmissionRequest, parse_part
from engine._service.admission.target import POD_KINDS
from engine._service.audit_entries import bounded
from engine._service.namespaces import NamespaceLabels

MAX_BYTES = 256 * 1024 * 1024
"""The largest ``kubectl get -A -o json`` output read."""
MAX_OBJECTS = 100_000
"""The most objects one audit reads."""


@dataclass(frozen=True, slots=True)
class Drift:
    """One thing running that policy now refuses: an object (its kind, namespace, name)
    or a device, the rule that refuses it (policy ids, ``revoked``, …) and why."""

    kind: str
    namespace: str | None
    name: str | None
    rules: tuple[str, ...]
    reason: str

    def row(self) -> dict[str, Any]:
        """The drift as a JSON object."""
        found = asdict(self)
        found["rules"] = list(self.rules)
        return found


DEVICE_KINDS = frozenset({"Device", "Credential"})
"""The kinds of drift that are devices and their credentials, not cluster objects."""


@dataclass(frozen=True, slots=True)
class Audit:
    """One run: where the objects came from, the bundle, how many objects were read and
    inspected, and every drift found."""

    source: str
    bundle_version: str
    objects: int
    inspected: int
    drifts: tuple[Drift, ...]


class ListedNamespaces:
    """Namespace labels from the Namespaces listed beside the objects."""

    def __init__(self, source: str, labels: Mapping[str, Mapping[str, str]]) -> None:
        self.description = source
        self._labels = labels

    def labels(self, namespace: str, now: datetime) -> Mapping[str, str]:
        """The labels of ``namespace``. Raises :class:`NamespaceUnavailable` when it was
        not listed."""
        found = self._labels.get(namespace)
        if found is None:
            raise NamespaceUnavailable(f'namespace "{namespace}" is not in {self.description}')
        return found


def read_list(data: bytes, source: str) -> list[dict[str, Any]]:
    """The objects of ``kubectl get -A -o json`` output (a ``List``). Raises
    :class:`AdmissionInputError` in one line for anything else or over a bound."""
    if len(data) > MAX_BYTES:
        raise AdmissionInputError(f"{source}: larger than {MAX_BYTES} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdmissionInputError(f"{source}: not JSON ({exc})") from exc
    items = document.get("items") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise AdmissionInputError(
            f"{source}: expected the output of kubectl get -A -o json (a List with items)"
        )
    if len(items) > MAX_OBJECTS:
        raise AdmissionInputError(f"{source}: {len(items)} objects, more than {MAX_OBJECTS}")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
            raise AdmissionInputError(f"{source}: items[{index}]: expected an object with a kind")
    return items


def listed_namespaces(items: Iterable[Mapping[str, Any]], source: str) -> ListedNamespaces | None:
    """The Namespaces among ``items`` as a label source; None when none is listed."""
    labels: dict[str, dict[str, str]] = {}
    for item in items:
        if item.get("kind") != "Namespace" or item.get("apiVersion") != "v1":
            continue
        meta = item.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        name, found = meta.get("name"), meta.get("labels")
        if isinstance(name, str):
            found = found if isinstance(found, Mapping) else {}
            labels[name] = {str(k): str(v) for k, v in found.items()}
    return ListedNamespaces(source, labels) if labels else None


def _as_create(item: Mapping[str, Any], index: int) -> AdmissionRequest:
    """The AdmissionRequest the API server sent when ``item`` was created."""
    group, _, version = str(item.get("apiVersion", "")).rpartition("/")
    meta = item.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    kind = str(item["kind"])
    uid = meta.get("uid")
    sent = {
        "uid": uid if isinstance(uid, str) and uid else f"drift-{index}",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "operation": "CREATE",
        "userInfo": {},
        "object": dict(item),
    }
    return parse_part(AdmissionRequest, sent, f"items[{index}]")


def _judge(
    engine: Engine,
    item: Mapping[str, Any],
    index: int,
    template: tuple[str, ...],
    *,
    namespaces: NamespaceLabels | None,
    trust_domain: str,
    cluster: str,
    jurisdictions: frozenset[str],
    now: datetime,
) -> tuple[tuple[str, ...], str] | None:
    """(the rules, the reason) the webhook would refuse ``item``'s creation for; None
    when it would admit it."""
    try:
        request = _as_create(item, index)
        level = namespace_level(namespaces, request, now)
        admit, target = admit_request(
            request,
            template,
            trust_domain=trust_domain,
            cluster=cluster,
            jurisdictions=jurisdictions,
            caller=None,
            level=level,
        )
        decision = engine.decide(admit, now=now)
    except NamespaceUnavailable as exc:
        return ("namespace",), f"Docket cannot read the namespace's classification: {exc}"
    except AdmissionInputError as exc:
        return ("unreadable",), str(exc)
    except RequestError as exc:
        return ("unevaluable",), f"Docket could not evaluate it against its bundle: {exc}"
    if decision.allowed:
        return None
    return decision.reasons, refusal_reason(decision, target)


def audit_objects(
    engine: Engine,
    items: Sequence[Mapping[str, Any]],
    *,
    source: str,
    namespaces: NamespaceLabels | None,
    trust_domain: str,
    cluster: str,
    now: datetime,
) -> Audit:
    """Decide every object of ``items`` the webhook inspects as its CREATE, with the
    bundle of ``engine``; each it would refuse is a :class:`Drift`."""
    bundle = engine.bundle
    assert bundle is not None
    jurisdictions = frozenset(site.jurisdiction for site in bundle.sites)
    drifts: list[Drift] = []
    inspected = 0
    for index, item in enumerate(items):
        group = str(item.get("apiVersion", "")).rpartition("/")[0]
        template = POD_KINDS.get((group, str(item["kind"])))
        if template is None:
            continue
        inspected += 1
        refused = _judge(
            engine,
            item,
            index,
            template,
            namespaces=namespaces,
            trust_domain=trust_domain,
            cluster=cluster,
            jurisdictions=jurisdictions,
            now=now,
        )
        if refused is None:
            continue
        meta = item.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        namespace, name = meta.get("namespace"), meta.get("name")
        drifts.append(
            Drift(
                kind=str(item["kind"]),
                namespace=namespace if isinstance(namespace, str) else None,
                name=name if isinstance(name, str) else None,
                rules=refused[0],
                reason=refused[1],
            )
        )
    return Audit(
        source=source,
        bundle_version=bundle.version,
        objects=len(items),
        inspected=inspected,
        drifts=tuple(drifts),
    )


def revoked(revocations: RevocationList) -> list[Drift]:
    """Each device and credential (SPIFFE ID, certificate serial) the CA has revoked."""
    return [
        Drift(
            kind="Device" if found.kind == "device" else "Credential",
            namespace=None,
            name=found.value,
            rules=("revoked",),
            reason=describe(found),
        )
        for found in revocations.revoked
    ]


def expired_postures(payloads: Iterable[Mapping[str, Any]], now: datetime) -> list[Drift]:
    """Each attested device whose last X.509-SVID (what its posture was attested for,
    as the audit log's ``certificate`` entries record it) expired before ``now``: its
    posture is no longer vouched for and it has not attested again."""
    last: dict[str, tuple[datetime, str, str]] = {}
    for entry in payloads:
        detail = entry.get("detail")
        subject = entry.get("subject")
        if (
            entry.get("kind") != "certificate"
            or entry.get("action") != "issue"
            or not isinstance(detail, Mapping)
            or detail.get("credential") != "x509-svid"
            or not isinstance(subject, str)
        ):
            continue
        try:
            expires = datetime.fromisoformat(str(detail.get("not_after")))
        except ValueError:
            continue
        if subject not in last or expires > last[subject][0]:
            last[subject] = (expires, str(detail.get("not_after")), str(detail.get("serial")))
    return [
        Drift(
            kind="Device",
            namespace=None,
            name=subject,
            rules=("posture-expired",),
            reason=f"its last posture expired at {text} (x509-svid {serial}); "
            "it has not attested since",
        )
        for subject, (expires, text, serial) in last.items()
        if expires <= now
    ]


def audit_entries(audit: Audit, *, run_id: str, now: datetime) -> list[Entry]:
    """What a run writes to the audit log: one ``audit`` entry with its counts, then one
    entry per drift (``detail.drift`` true): an ``admission`` deny for an object, an
    ``attestation`` deny for a device."""
    counts = {
        "objects": audit.objects,
        "inspected": audit.inspected,
        "violations": sum(d.kind not in DEVICE_KINDS for d in audit.drifts),
        "devices": sum(d.kind in DEVICE_KINDS for d in audit.drifts),
    }
    entries = [
        Entry(
            kind="audit",
            time=now,
            action="drift-audit",
            resource=audit.source,
            bundle_version=audit.bundle_version,
            detail={"run_id": run_id, "source": audit.source, **counts},
        )
    ]
    for found in audit.drifts:
        device = found.kind in DEVICE_KINDS
        entries.append(
            Entry(
                kind="attestation" if device else "admission",
                time=now,
                subject=found.name if device else None,
                action="drift-audit",
                decision="deny",
                policies=found.rules,
                bundle_version=audit.bundle_version,
                detail=bounded(
                    {
                        "drift": True,
                        "run_id": run_id,
                        "object": {
                            "kind": found.kind,
                            "namespace": found.namespace,
                            "name": found.name,
                        },
                        "reason": found.reason,
                    }
                ),
            )
        )
    return entries


_LISTS: tuple[tuple[str, str, str, str], ...] = (
    ("CoreV1Api", "list_namespace", "v1", "Namespace"),
    ("CoreV1Api", "list_pod_for_all_namespaces", "v1", "Pod"),
    ("AppsV1Api", "list_deployment_for_all_namespaces", "apps/v1", "Deployment"),
    ("AppsV1Api", "list_stateful_set_for_all_namespaces", "apps/v1", "StatefulSet"),
    ("AppsV1Api", "list_daemon_set_for_all_namespaces", "apps/v1", "DaemonSet"),
    ("AppsV1Api", "list_replica_set_for_all_namespaces", "apps/v1", "ReplicaSet"),
    ("BatchV1Api", "list_job_for_all_namespaces", "batch/v1", "Job"),
    ("BatchV1Api", "list_cron_job_for_all_namespaces", "batch/v1", "CronJob"),
)
"""What is listed from the API server: the Namespaces (their labels classify) and every
kind the webhook inspects (``target.POD_KINDS``)."""
PAGE = 500
"""Objects asked for per list call (the API server pages with ``continue``)."""
TIMEOUT_SECONDS = 30.0
"""One list call to the API server."""


def _failure(exc: Exception) -> str:
    """An API or connection failure in one line: ``403 Forbidden``, ``MaxRetryError: …``."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return f"{status} {getattr(exc, 'reason', '')}".strip()
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


def list_cluster(kubeconfig: Path | None) -> tuple[list[dict[str, Any]], str]:
    """The Namespaces and the objects of every inspected kind, across namespaces, from
    the Kubernetes API (``kubeconfig`` None: in-cluster configuration, the pod's service
    account, which needs ``list`` on them), and how the source is named. Raises
    :class:`AdmissionInputError` in one line when the API cannot be configured or read,
    or holds more than :data:`MAX_OBJECTS`."""
    # Imported here: only an audit of a live cluster pays for the client.
    from kubernetes import client, config  # type: ignore[import-untyped]

    source = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster Kubernetes API"
    try:
        if kubeconfig is not None:
            api_client = config.new_client_from_config(config_file=str(kubeconfig))
        else:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
    except (config.ConfigException, OSError, ValueError) as exc:
        message = f"cannot configure the Kubernetes client ({source}): {exc}"
        raise AdmissionInputError(message) from exc
    items: list[dict[str, Any]] = []
    with api_client:
        for api_name, method, api_version, kind in _LISTS:
            call = getattr(getattr(client, api_name)(api_client), method)
            token: str | None = None
            while True:
                try:
                    response = call(
                        limit=PAGE,
                        _continue=token,
                        _preload_content=False,
                        _request_timeout=TIMEOUT_SECONDS,
                    )
                    page = json.loads(response.data)
                except Exception as exc:  # ApiException, urllib3/ssl/socket, bad JSON
                    raise AdmissionInputError(
                        f"cannot list {kind} objects from {source} ({_failure(exc)})"
                    ) from exc
                for item in page.get("items") or ():
                    items.append({"apiVersion": api_version, "kind": kind, **item})
                if len(items) > MAX_OBJECTS:
                    raise AdmissionInputError(f"{source}: more than {MAX_OBJECTS} objects")
                token = (page.get("metadata") or {}).get("continue") or None
                if token is None:
                    break
    return items, source
