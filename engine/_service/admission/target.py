"""What Docket reads from the object of a review: the pod (template) of the kinds it
inspects, its classification (namespace, labels, ``oldObject``), residency, images and
their registries, node constraints, the Pod Security checks it fails, and the principal
and Cedar context of the ``admit`` request made of them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import Field, StrictBool, StrictStr

from engine._core.models import EntityUID
from engine._core.placement import Classification
from engine._core.pod_security import Failure, check_pod
from engine._errors import AdmissionInputError
from engine._service.admission.image_reference import parse_image
from engine._service.admission.labels import CLASSIFICATION_LABEL, REGION_LABEL, RESIDENCY_LABEL
from engine._service.admission.review import AdmissionRequest, ReadModel, parse_part
from engine._service.constants import CALLER

DEFAULT_CLASSIFICATION: Classification = "internal"

_CLASSIFICATIONS: tuple[str, ...] = get_args(Classification)
_TEMPLATE = ("spec", "template")
POD_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (),
    ("apps", "Deployment"): _TEMPLATE,
    ("apps", "StatefulSet"): _TEMPLATE,
    ("apps", "DaemonSet"): _TEMPLATE,
    ("apps", "ReplicaSet"): _TEMPLATE,
    ("batch", "Job"): _TEMPLATE,
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}
"""(API group, kind) of the objects Docket inspects -> where their pod (template) is."""


# -- the parts of a pod (template) Docket reads --------------------------------------------


class _Meta(ReadModel):
    name: StrictStr | None = None
    namespace: StrictStr | None = None
    labels: dict[StrictStr, StrictStr] | None = None
    annotations: dict[StrictStr, StrictStr] | None = None


class _SecurityContext(ReadModel):
    privileged: StrictBool | None = None


class _Container(ReadModel):
    name: StrictStr
    image: StrictStr = Field(min_length=1)
    security_context: _SecurityContext | None = Field(default=None, alias="securityContext")


class _Volume(ReadModel):
    name: StrictStr
    host_path: dict[str, Any] | None = Field(default=None, alias="hostPath")


class _Requirement(ReadModel):
    key: StrictStr
    operator: StrictStr
    values: tuple[StrictStr, ...] | None = None


class _Term(ReadModel):
    match_expressions: tuple[_Requirement, ...] | None = Field(
        default=None, alias="matchExpressions"
    )


class _NodeSelector(ReadModel):
    node_selector_terms: tuple[_Term, ...] | None = Field(default=None, alias="nodeSelectorTerms")


class _NodeAffinity(ReadModel):
    required: _NodeSelector | None = Field(
        default=None, alias="requiredDuringSchedulingIgnoredDuringExecution"
    )


class _Affinity(ReadModel):
    node_affinity: _NodeAffinity | None = Field(default=None, alias="nodeAffinity")


class _PodSpec(ReadModel):
    containers: tuple[_Container, ...] = Field(min_length=1)
    init_containers: tuple[_Container, ...] | None = Field(default=None, alias="initContainers")
    ephemeral_containers: tuple[_Container, ...] | None = Field(
        default=None, alias="ephemeralContainers"
    )
    volumes: tuple[_Volume, ...] | None = None
    host_network: StrictBool | None = Field(default=None, alias="hostNetwork")
    node_selector: dict[StrictStr, StrictStr] | None = Field(default=None, alias="nodeSelector")
    affinity: _Affinity | None = None
    service_account_name: StrictStr | None = Field(default=None, alias="serviceAccountName")
    service_account: StrictStr | None = Field(default=None, alias="serviceAccount")

    def all_containers(self) -> Iterable[_Container]:
        yield from self.containers
        yield from self.init_containers or ()
        yield from self.ephemeral_containers or ()

    def container_fields(self) -> Iterable[tuple[str, _Container]]:
        """Each container with its field below ``spec``: ``initContainers[0]``, …"""
        for name, containers in (
            ("containers", self.containers),
            ("initContainers", self.init_containers or ()),
            ("ephemeralContainers", self.ephemeral_containers or ()),
        ):
            for index, container in enumerate(containers):
                yield f"{name}[{index}]", container

    def required_terms(self) -> tuple[_Term, ...]:
        affinity = self.affinity
        node = affinity.node_affinity if affinity is not None else None
        required = node.required if node is not None else None
        terms = required.node_selector_terms if required is not None else None
        return terms or ()


# -- what Docket reads from a pod (template) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The object of a review and what Docket read from its pod (template)."""

    kind: str
    namespace: str
    name: str | None
    template: tuple[str, ...]
    """Where the pod template is in the object (``()``: the object is a Pod)."""
    raw: Mapping[str, Any]
    """The pod (template): ``metadata`` and ``spec`` as sent."""
    classification: Classification
    residency: str | None
    context: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    baseline: tuple[Failure, ...] = ()
    """The Pod Security Standards baseline checks the pod (template) fails."""
    restricted: tuple[Failure, ...] = ()
    """The checks of the restricted profile (baseline included) it fails."""
    classified_by: Literal["namespace", "label", "default"] = "default"
    """Where ``classification`` came from: the namespace's label (an object label did not
    raise it), the object's label, or neither (the default). Recorded in the audit entry's
    ``provenance``."""

    @property
    def description(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name or '(generated name)'}"


def section(obj: Mapping[str, Any], path: tuple[str, ...], kind: str) -> Mapping[str, Any]:
    value: Any = obj
    for depth, key in enumerate(path):
        value = value.get(key) if isinstance(value, Mapping) else None
        if value is None:
            where = ".".join(("request.object", *path[: depth + 1]))
            raise AdmissionInputError(f"{where}: required for a {kind}")
    if not isinstance(value, Mapping):
        raise AdmissionInputError(f"{'.'.join(('request.object', *path))}: must be an object")
    return value


def _regions_requested(spec: _PodSpec) -> set[str] | None:
    """The regions the pod's nodeSelector and required node affinity leave open; None
    when they do not restrict the region."""
    selected = (spec.node_selector or {}).get(REGION_LABEL)
    regions: set[str] | None = {selected} if selected is not None else None
    terms = spec.required_terms()
    if terms:
        union: set[str] = set()
        for term in terms:
            allowed: set[str] | None = None
            for req in term.match_expressions or ():
                if req.key == REGION_LABEL and req.operator == "In":
                    values = set(req.values or ())
                    allowed = values if allowed is None else allowed & values
            if allowed is None:  # this term leaves every region open
                return regions
            union |= allowed
        regions = union if regions is None else regions & union
    return regions


def classification_of(value: str | None, where: str) -> Classification | None:
    """A label value as a classification (None when the label is absent). Raises
    :class:`AdmissionInputError` naming ``where`` for a value that is not one."""
    if value is None:
        return None
    if value not in _CLASSIFICATIONS:
        raise AdmissionInputError(
            f"{where}: {json.dumps(value)} is not a classification ({', '.join(_CLASSIFICATIONS)})"
        )
    return value  # type: ignore[return-value]  # checked just above


def _highest(*levels: Classification | None) -> Classification:
    present = [level for level in levels if level is not None]
    return max(present, key=_CLASSIFICATIONS.index) if present else DEFAULT_CLASSIFICATION


def _previous_classification(
    request: AdmissionRequest, template: tuple[str, ...], namespace_level: Classification | None
) -> Classification | None:
    """On an UPDATE, the classification the object had (``oldObject`` read as the new
    one is); None for a CREATE or a review without ``oldObject``."""
    old = request.old_object
    if request.operation != "UPDATE" or old is None:
        return None
    pod = section(old, template, request.kind.kind) if template else old
    prefix = ".".join(("request.oldObject", *template))
    meta = parse_part(_Meta, pod.get("metadata") or {}, f"{prefix}.metadata")
    label = classification_of(
        (meta.labels or {}).get(CLASSIFICATION_LABEL),
        f"{prefix}.metadata.labels[{json.dumps(CLASSIFICATION_LABEL)}]",
    )
    if namespace_level is None:
        return label or DEFAULT_CLASSIFICATION
    return _highest(namespace_level, label)


def read_target(
    request: AdmissionRequest,
    template: tuple[str, ...],
    *,
    trust_domain: str,
    jurisdictions: frozenset[str],
    caller: str | None,
    namespace_level: Classification | None = None,
) -> tuple[EntityUID, Target]:
    """The principal and what Docket reads from the object. ``namespace_level`` is the
    classification of the object's namespace (None: no namespace source is configured,
    and the object's own label decides as it always did). Raises
    :class:`AdmissionInputError` naming the field."""
    kind = request.kind.kind
    obj = request.object or {}
    pod = section(obj, template, kind) if template else obj
    prefix = ".".join(("request.object", *template))
    meta = parse_part(_Meta, pod.get("metadata") or {}, f"{prefix}.metadata")
    spec = parse_part(_PodSpec, section(obj, (*template, "spec"), kind), f"{prefix}.spec")
    own = (
        parse_part(_Meta, obj.get("metadata") or {}, "request.object.metadata")
        if template
        else meta
    )
    namespace = request.namespace or own.namespace
    if not namespace:
        raise AdmissionInputError(f"request.namespace: required for a {kind}")
    labels = meta.labels or {}
    warnings = []
    label = classification_of(
        labels.get(CLASSIFICATION_LABEL),
        f"{prefix}.metadata.labels[{json.dumps(CLASSIFICATION_LABEL)}]",
    )
    where = "pod template" if template else "pod"
    if namespace_level is None:
        # No namespace source: the object's label decides, as before namespaces were read.
        classification = label or DEFAULT_CLASSIFICATION
        classified_by: Literal["namespace", "label", "default"] = "label" if label else "default"
        if label is None:
            warnings.append(
                f"no {CLASSIFICATION_LABEL} label on the {where}: Docket treats it as internal"
            )
    else:
        # As Pod Security Admission: the namespace sets the level; a label only raises it.
        classification = _highest(namespace_level, label)
        classified_by = "namespace" if classification == namespace_level else "label"
        if label is not None and label != classification:
            warnings.append(
                f"{CLASSIFICATION_LABEL}={label} on the {where} is below its namespace's "
                f"{namespace_level}: the namespace's applies"
            )
    previous = _previous_classification(request, template, namespace_level)
    residency = labels.get(RESIDENCY_LABEL)
    if residency is not None and residency not in jurisdictions:
        known = ", ".join(sorted(jurisdictions)) or "none: no site catalog is loaded"
        raise AdmissionInputError(
            f"{prefix}.metadata.labels[{json.dumps(RESIDENCY_LABEL)}]: "
            f"{json.dumps(residency)} is not a jurisdiction of the site catalog ({known})"
        )
    if template:
        for key in (CLASSIFICATION_LABEL, RESIDENCY_LABEL):
            if (own.labels or {}).get(key) not in (None, labels.get(key)):
                warnings.append(
                    f"{key} is read from the pod template's labels; the {kind}'s own is ignored"
                )
    account = spec.service_account_name or spec.service_account or "default"
    images = [container.image for container in spec.all_containers()]
    references = [
        parse_image(container.image, f"{prefix}.spec.{where}.image")
        for where, container in spec.container_fields()
    ]
    regions = _regions_requested(spec)
    name = request.name or own.name or None
    # A relabel that raises a pod's classification is held to its new level's profile.
    checked = (
        bool(template)
        or kind != "Pod"
        or previous != classification
        or _significant_pod_update(request)
    )
    baseline = check_pod(pod, "baseline") if checked else ()
    restricted = check_pod(pod, "restricted") if checked else ()
    context: dict[str, Any] = {
        "kind": kind,
        "namespace": namespace,
        "operation": request.operation,
        "classification": _entity(classification),
        "images": sorted(set(images)),
        "registries": sorted({reference.registry for reference in references}),
        "privileged": any(
            c.security_context is not None and c.security_context.privileged is True
            for c in spec.all_containers()
        ),
        "host_path": any(volume.host_path is not None for volume in spec.volumes or ()),
        "host_network": spec.host_network is True,
        "namespace_classification": _entity(namespace_level or DEFAULT_CLASSIFICATION),
        "pss_baseline": sorted({f.check for f in baseline}),
        "pss_restricted": sorted({f.check for f in restricted}),
        "pss_baseline_messages": [f.message for f in baseline],
        "pss_restricted_messages": [f.message for f in restricted],
        "has_node_constraints": bool(spec.node_selector) or bool(spec.required_terms()),
        "service_account": account,
        "dry_run": request.dry_run is True,
    }
    optional = {
        "name": name,
        "residency": residency,
        "node_selector_regions": None if regions is None else sorted(regions),
        "user": request.user_info.username or None,
        "previous_classification": _entity(previous) if previous is not None else None,
        CALLER: caller,
    }
    context.update({key: value for key, value in optional.items() if value is not None})
    principal = EntityUID(
        type="Workload", id=f"spiffe://{trust_domain}/ns/{namespace}/sa/{account}"
    )
    target = Target(
        kind=kind,
        namespace=namespace,
        name=name,
        template=template,
        raw=pod,
        classification=classification,
        residency=residency,
        context=context,
        warnings=warnings,
        baseline=baseline,
        restricted=restricted,
        classified_by=classified_by,
    )
    return principal, target


_SECCOMP_POD = "seccomp.security.alpha.kubernetes.io/pod"
_SECCOMP_CONTAINER = "container.seccomp.security.alpha.kubernetes.io/"


def _significant_pod_update(request: AdmissionRequest) -> bool:
    """Whether a review of a Pod (not a template) is held to the Pod Security Standards:
    anything but an UPDATE is; an UPDATE is, as Pod Security Admission decides it
    (``isSignificantPodUpdate``, k8s.io/pod-security-admission), when it adds or removes
    a container or an init container, adds an ephemeral container, changes an image or
    a seccomp annotation (the pod's, or a container's). A pod's spec is otherwise
    immutable (the API server refuses other changes), so a label, annotation,
    toleration or deadline update of a pod admitted before a stricter bundle is not
    refused for what it already was. Anything not as expected is significant."""
    old, new = request.old_object, request.object
    if (
        request.operation != "UPDATE"
        or not isinstance(old, Mapping)
        or not isinstance(new, Mapping)
    ):
        return True
    try:
        annotations = _annotations(new)
        old_annotations = _annotations(old)
        if annotations.get(_SECCOMP_POD) != old_annotations.get(_SECCOMP_POD):
            return True
        for field_name in ("containers", "initContainers"):
            containers, old_containers = _containers(new, field_name), _containers(old, field_name)
            if len(containers) != len(old_containers):
                return True
            for container, old_container in zip(containers, old_containers, strict=True):
                if _container_changed(container, old_container, annotations, old_annotations):
                    return True
        old_ephemeral = {c.get("name"): c for c in _containers(old, "ephemeralContainers")}
        for container in _containers(new, "ephemeralContainers"):
            before = old_ephemeral.get(container.get("name"))
            if before is None or _container_changed(
                container, before, annotations, old_annotations
            ):
                return True
    except (TypeError, AttributeError):
        return True
    return False


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise TypeError("annotations")
    return annotations


def _containers(obj: Mapping[str, Any], field_name: str) -> list[Mapping[str, Any]]:
    containers = (obj.get("spec") or {}).get(field_name) or []
    if not isinstance(containers, list) or not all(isinstance(c, Mapping) for c in containers):
        raise TypeError(field_name)
    return containers


def _container_changed(
    container: Mapping[str, Any],
    old: Mapping[str, Any],
    annotations: Mapping[str, Any],
    old_annotations: Mapping[str, Any],
) -> bool:
    key = f"{_SECCOMP_CONTAINER}{container.get('name')}"
    return container.get("image") != old.get("image") or annotations.get(key) != (
        old_annotations.get(key)
    )


def _entity(classification: Classification) -> dict[str, Any]:
    return {"__entity": {"type": "Classification", "id": classification}}
