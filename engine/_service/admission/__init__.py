"""Kubernetes admission without a transport: an AdmissionReview ``admission.k8s.io/v1``
in, the HTTP status and the JSON body to answer with out.

The HTTPS server (``/validate``, ``/mutate``) hands each request body to
:meth:`AdmissionController.review` and sends back what it returns.

**Validating** (``/validate``): the object's pod spec becomes a Cedar ``admit`` request:
principal ``Workload::"spiffe://<trust domain>/ns/<namespace>/sa/<service account>"``,
resource ``Cluster::"<cluster>"``, context an ``AdmissionContext`` (see the schema):
kind, namespace, name, operation, the classification, the label ``docket.io/residency``
(a jurisdiction of the site catalog), images and their registries (:func:`registry_of`),
privileged / hostPath / hostNetwork, the Pod Security Standards checks the pod fails
(``engine._core.pod_security``: check ids of the baseline and restricted profiles and their
messages), the node constraints the user set, the service account, the user and dry
run. Cedar decides; when a Pod Security policy denies, the message names every failed
check as Pod Security Admission does (``violates PodSecurity "restricted:latest": …``).

**Classification** is the namespace's ``docket.io/classification`` label, read from a
:class:`~engine._service.namespaces.NamespaceLabels` source, raised (never lowered) by the same
label on the pod (template). Without a source every namespace is ``internal`` and the
object's label alone decides (``internal`` when absent). With one, a namespace it
cannot find or read is denied. On an UPDATE the classification ``oldObject`` had, read
the same way, is ``previous_classification``, so policy can forbid a downgrade.

**Mutating** (``/mutate``): placement over the site catalog (only the sites of the
residency jurisdiction when the label is set: it is a requirement, not a hint) becomes
required node affinity on ``topology.kubernetes.io/region``, with ``docket.io/tier``
where a region also holds a site the workload may not use (nodes in such regions carry
that label: ``edge`` | ``cloud`` | ``onprem``), plus the annotation
``docket.io/decision-id``. The user's own restrictions are never widened: node selector
terms are ORed and their expressions ANDed, so Docket's expressions are added to every
existing term (a term already holding them is left alone, so mutating twice changes
nothing) and ``nodeSelector`` is kept. A workload that may run nowhere is denied. On an
UPDATE that needs no new affinity the annotation is left as it is: rewriting it would
roll out every Deployment on every update.

Pods and the pod templates of Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob are
inspected. Anything else, DELETE and CONNECT, other subresources and (for ``/mutate``)
a Pod UPDATE (a pod's affinity cannot change) are allowed without evaluation, and
recorded as such; ``/validate`` warns "Docket does not inspect <kind>" for other kinds.

Every review is audited (decision, object kind/namespace/name, operation, user, dry
run, and ``provenance``: the caller and where the classification came from — the
namespace's label, the object's label, or the default) before it is answered; ``dryRun``
only marks the entry. When the audit log cannot take the entry the review is denied
(code 429 when it is busy, 503 when it is unavailable), never allowed unrecorded.

A body that is not an AdmissionReview v1 gets HTTP 400 ``{"error": "<field>: …"}``.
An object Docket cannot read (a label value outside the catalog, a container without
an image) is denied in the AdmissionReview with code 400: a denial holds whatever the
webhook's ``failurePolicy``, an HTTP error does not. Both are recorded as refusals. A
namespace the configured source cannot read is denied with code 403 and its reason,
also recorded as a refusal.

Errors::

    RequestError (engine)
    └── AdmissionInputError    the review or its object cannot be read; the message
                               starts with the field at fault
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, get_args

import structlog
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from audit import AuditError, Overloaded
from engine._core.models import EntityUID, Request
from engine._core.placement import Classification, Placement, Workload
from engine._core.pod_security import Failure, check_pod, violation
from engine._core.sites import Site
from engine._errors import AdmissionInputError, NamespaceUnavailable, RequestError
from engine._service.constants import CALLER
from engine._service.decisions import Decided, DecisionService
from engine._service.namespaces import NamespaceLabels

log = structlog.get_logger("docket.admission")

API = "admission"
"""The ``api`` name of admission decisions in metrics and audit entries."""
API_VERSION = "admission.k8s.io/v1"
CLASSIFICATION_LABEL = "docket.io/classification"
RESIDENCY_LABEL = "docket.io/residency"
DECISION_ANNOTATION = "docket.io/decision-id"
REGION_LABEL = "topology.kubernetes.io/region"
TIER_LABEL = "docket.io/tier"
DEFAULT_CLASSIFICATION: Classification = "internal"
MAX_WARNING = 120
"""Kubernetes shows warnings of at most 120 characters; longer ones are cut."""

_CLASSIFICATIONS: tuple[str, ...] = get_args(Classification)
_TEMPLATE = ("spec", "template")
_POD_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): (),
    ("apps", "Deployment"): _TEMPLATE,
    ("apps", "StatefulSet"): _TEMPLATE,
    ("apps", "DaemonSet"): _TEMPLATE,
    ("apps", "ReplicaSet"): _TEMPLATE,
    ("batch", "Job"): _TEMPLATE,
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
}
"""(API group, kind) of the objects Docket inspects -> where their pod (template) is."""


# -- the AdmissionReview as the API server sends it ---------------------------------------
# Unknown fields are ignored, not refused: the API server adds fields to AdmissionRequest
# over releases (requestKind, options, …) and sends whole objects; Docket reads what it
# needs and insists on the types of that.


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class GroupVersionKind(_Read):
    """``request.kind``: the kind of ``request.object``."""

    group: StrictStr = ""
    version: StrictStr
    kind: StrictStr = Field(min_length=1)


class GroupVersionResource(_Read):
    """``request.resource``."""

    group: StrictStr = ""
    version: StrictStr
    resource: StrictStr = Field(min_length=1)


class UserInfo(_Read):
    """Who asked the API server."""

    username: StrictStr | None = None
    uid: StrictStr | None = None
    groups: tuple[StrictStr, ...] = ()


class AdmissionRequest(_Read):
    """``request`` of an AdmissionReview v1 (the fields Docket reads)."""

    uid: StrictStr = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: StrictStr | None = Field(default=None, alias="subResource")
    name: StrictStr | None = None
    namespace: StrictStr | None = None
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    user_info: UserInfo = Field(alias="userInfo")
    object: dict[str, Any] | None = None
    old_object: dict[str, Any] | None = Field(default=None, alias="oldObject")
    dry_run: StrictBool | None = Field(default=None, alias="dryRun")


class AdmissionReview(_Read):
    """An AdmissionReview ``admission.k8s.io/v1`` request."""

    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


# -- the parts of a pod (template) Docket reads --------------------------------------------


_R = TypeVar("_R", bound=_Read)


class _Meta(_Read):
    name: StrictStr | None = None
    namespace: StrictStr | None = None
    labels: dict[StrictStr, StrictStr] | None = None
    annotations: dict[StrictStr, StrictStr] | None = None


class _SecurityContext(_Read):
    privileged: StrictBool | None = None


class _Container(_Read):
    name: StrictStr
    image: StrictStr = Field(min_length=1)
    security_context: _SecurityContext | None = Field(default=None, alias="securityContext")


class _Volume(_Read):
    name: StrictStr
    host_path: dict[str, Any] | None = Field(default=None, alias="hostPath")


class _Requirement(_Read):
    key: StrictStr
    operator: StrictStr
    values: tuple[StrictStr, ...] | None = None


class _Term(_Read):
    match_expressions: tuple[_Requirement, ...] | None = Field(
        default=None, alias="matchExpressions"
    )


class _NodeSelector(_Read):
    node_selector_terms: tuple[_Term, ...] | None = Field(default=None, alias="nodeSelectorTerms")


class _NodeAffinity(_Read):
    required: _NodeSelector | None = Field(
        default=None, alias="requiredDuringSchedulingIgnoredDuringExecution"
    )


class _Affinity(_Read):
    node_affinity: _NodeAffinity | None = Field(default=None, alias="nodeAffinity")


class _PodSpec(_Read):
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

    def required_terms(self) -> tuple[_Term, ...]:
        affinity = self.affinity
        node = affinity.node_affinity if affinity is not None else None
        required = node.required if node is not None else None
        terms = required.node_selector_terms if required is not None else None
        return terms or ()


def _where(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _invalid(exc: ValidationError, prefix: str) -> AdmissionInputError:
    # A failing item also fails the length check of its list: report the item only.
    found = exc.errors()
    locs = [tuple(error["loc"]) for error in found]
    errors = [
        error
        for error, loc in zip(found, locs, strict=True)
        if not any(other[: len(loc)] == loc and other != loc for other in locs)
    ]
    first = errors[0]
    where = _where([*([prefix] if prefix else []), *first["loc"]])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return AdmissionInputError(f"{where}: {first['msg']}{more}")


def parse_review(body: bytes) -> AdmissionReview:
    """Read an AdmissionReview ``admission.k8s.io/v1`` request.

    Raises :class:`AdmissionInputError` for a body that is not JSON, another
    ``apiVersion`` (``v1beta1``: configure ``admissionReviewVersions: [v1]``), or a
    review missing a field Docket needs (``request.uid``, ``request.kind``,
    ``request.operation``, ``request.object`` for CREATE and UPDATE, …).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdmissionInputError(f"body: not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise AdmissionInputError("body: expected an AdmissionReview object")
    version = data.get("apiVersion")
    if version != API_VERSION:
        got = "missing" if version is None else json.dumps(version)
        raise AdmissionInputError(
            f"apiVersion: {got}; Docket reads AdmissionReview {API_VERSION} only "
            "(set admissionReviewVersions: [v1] in the webhook configuration)"
        )
    try:
        review = AdmissionReview.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, "") from exc
    request = review.request
    if request.operation in ("CREATE", "UPDATE") and request.object is None:
        raise AdmissionInputError(f"request.object: required for {request.operation}")
    return review


# -- what Docket reads from a pod (template) ------------------------------------------------


def registry_of(image: str) -> str:
    """Where an image comes from: its repository without the last path segment, named
    as Docker does (no registry host: ``docker.io``; a single name: ``docker.io/library``).

    ``nginx:1.27`` -> ``docker.io/library``; ``bitnami/redis`` -> ``docker.io/bitnami``;
    ``registry.k8s.io/pause:3.10`` -> ``registry.k8s.io``;
    ``ghcr.io/acme/team/api@sha256:…`` -> ``ghcr.io/acme/team``. The host is lowercased
    (DNS names are case-insensitive); the path is kept as written.
    """
    name = image.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):
        name = name[: name.rfind(":")]
    parts = name.split("/")
    first = parts[0]
    if len(parts) == 1 or not ("." in first or ":" in first or first == "localhost"):
        parts = ["docker.io", *parts]
    else:
        parts[0] = first.lower()
        if parts[0] == "index.docker.io":
            parts[0] = "docker.io"
    if parts[0] == "docker.io" and len(parts) == 2:
        parts.insert(1, "library")
    return "/".join(parts[:-1])


@dataclass(frozen=True, slots=True)
class _Target:
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


def _section(obj: Mapping[str, Any], path: tuple[str, ...], kind: str) -> Mapping[str, Any]:
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


def _parse(model: type[_R], value: Any, where: str) -> _R:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _invalid(exc, where) from exc


def _classification_of(value: str | None, where: str) -> Classification | None:
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
    pod = _section(old, template, request.kind.kind) if template else old
    prefix = ".".join(("request.oldObject", *template))
    meta = _parse(_Meta, pod.get("metadata") or {}, f"{prefix}.metadata")
    label = _classification_of(
        (meta.labels or {}).get(CLASSIFICATION_LABEL),
        f"{prefix}.metadata.labels[{json.dumps(CLASSIFICATION_LABEL)}]",
    )
    if namespace_level is None:
        return label or DEFAULT_CLASSIFICATION
    return _highest(namespace_level, label)


def _read_target(
    request: AdmissionRequest,
    template: tuple[str, ...],
    *,
    trust_domain: str,
    jurisdictions: frozenset[str],
    caller: str | None,
    namespace_level: Classification | None = None,
) -> tuple[EntityUID, _Target]:
    """The principal and what Docket reads from the object. ``namespace_level`` is the
    classification of the object's namespace (None: no namespace source is configured,
    and the object's own label decides as it always did). Raises
    :class:`AdmissionInputError` naming the field."""
    kind = request.kind.kind
    obj = request.object or {}
    pod = _section(obj, template, kind) if template else obj
    prefix = ".".join(("request.object", *template))
    meta = _parse(_Meta, pod.get("metadata") or {}, f"{prefix}.metadata")
    spec = _parse(_PodSpec, _section(obj, (*template, "spec"), kind), f"{prefix}.spec")
    own = _parse(_Meta, obj.get("metadata") or {}, "request.object.metadata") if template else meta
    namespace = request.namespace or own.namespace
    if not namespace:
        raise AdmissionInputError(f"request.namespace: required for a {kind}")
    labels = meta.labels or {}
    warnings = []
    label = _classification_of(
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
    regions = _regions_requested(spec)
    name = request.name or own.name or None
    baseline = check_pod(pod, "baseline")
    restricted = check_pod(pod, "restricted")
    context: dict[str, Any] = {
        "kind": kind,
        "namespace": namespace,
        "operation": request.operation,
        "classification": _entity(classification),
        "images": sorted(set(images)),
        "registries": sorted({registry_of(image) for image in images}),
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
    target = _Target(
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


def _entity(classification: Classification) -> dict[str, Any]:
    return {"__entity": {"type": "Classification", "id": classification}}


# -- the patch -------------------------------------------------------------------------------


def pointer(*parts: str) -> str:
    """An RFC 6901 JSON Pointer (``~`` as ``~0``, ``/`` as ``~1``)."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def _requirement(key: str, values: Iterable[str]) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": sorted(values)}


def node_groups(placement: Placement, catalog: Sequence[Site]) -> list[list[dict[str, Any]]]:
    """The node-selector expressions that admit exactly the allowed sites' nodes, as
    alternatives (ORed): the regions whose every catalog tier is allowed, then per set of
    allowed tiers the regions that also hold a site of another tier, with ``docket.io/tier``.
    """
    allowed: dict[str, set[str]] = {}
    for site in placement.allowed:
        allowed.setdefault(site.region, set()).add(site.tier)
    present: dict[str, set[str]] = {}
    for catalogued in catalog:
        present.setdefault(catalogued.region, set()).add(catalogued.tier)
    open_regions = [r for r, tiers in allowed.items() if present.get(r, set()) <= tiers]
    by_tiers: dict[tuple[str, ...], list[str]] = {}
    for region, tiers in allowed.items():
        if region not in open_regions:
            by_tiers.setdefault(tuple(sorted(tiers)), []).append(region)
    groups = [[_requirement(REGION_LABEL, open_regions)]] if open_regions else []
    for tier_set, regions in sorted(by_tiers.items()):
        groups.append([_requirement(REGION_LABEL, regions), _requirement(TIER_LABEL, tier_set)])
    return groups


def _region_values(expressions: Iterable[Any]) -> set[str] | None:
    regions: set[str] | None = None
    for expression in expressions:
        if (
            isinstance(expression, Mapping)
            and expression.get("key") == REGION_LABEL
            and expression.get("operator") == "In"
        ):
            values = set(expression.get("values") or ())
            regions = values if regions is None else regions & values
    return regions


def narrow_terms(
    terms: Sequence[Mapping[str, Any]], groups: Sequence[Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]] | None:
    """``terms`` (ORed) narrowed to ``groups`` (ORed): each term ANDed with each group,
    dropping combinations whose region sets cannot meet; None when every term already
    holds a group's expressions (nothing to change)."""
    if not terms:
        return [{"matchExpressions": [dict(e) for e in group]} for group in groups]
    narrowed: list[dict[str, Any]] = []
    unpruned: list[dict[str, Any]] = []
    changed = False
    for term in terms:
        expressions = list(term.get("matchExpressions") or ())
        if any(all(e in expressions for e in group) for group in groups):
            narrowed.append(dict(term))
            unpruned.append(dict(term))
            continue
        changed = True
        wanted = _region_values(expressions)
        for group in groups:
            combined = {**term, "matchExpressions": [*expressions, *(dict(e) for e in group)]}
            unpruned.append(combined)
            offered = _region_values(group)
            if wanted is None or offered is None or wanted & offered:
                narrowed.append(combined)
    if not changed:
        return None
    # Terms that can meet no allowed region are dropped; when none is left the pod
    # cannot be scheduled either way, and the unpruned product says why.
    return narrowed or unpruned


def _present(value: Mapping[str, Any], key: str) -> bool:
    return value.get(key) is not None


def affinity_ops(
    pod_path: tuple[str, ...], pod: Mapping[str, Any], groups: Sequence[Sequence[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """RFC 6902 operations that make the pod (template) at ``pod_path`` require
    ``groups``, creating whatever part of ``spec.affinity`` is missing."""
    spec = pod.get("spec") or {}
    chain = ("affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution")
    node: Mapping[str, Any] = spec
    path = (*pod_path, "spec")
    for depth, key in enumerate(chain):
        if not _present(node, key):
            terms = narrow_terms((), groups)
            value: Any = {"nodeSelectorTerms": terms}
            for outer in reversed(chain[depth + 1 :]):
                value = {outer: value}
            return [{"op": "add", "path": pointer(*path, key), "value": value}]
        node = node[key]
        path = (*path, key)
    existing = node.get("nodeSelectorTerms") or []
    terms = narrow_terms(existing, groups)
    if terms is None:
        return []
    op = "replace" if _present(node, "nodeSelectorTerms") else "add"
    return [{"op": op, "path": pointer(*path, "nodeSelectorTerms"), "value": terms}]


def annotation_ops(
    pod_path: tuple[str, ...], pod: Mapping[str, Any], decision: str
) -> list[dict[str, Any]]:
    """RFC 6902 operations that set the decision-id annotation on the pod (template)."""
    metadata = pod.get("metadata")
    annotation = {DECISION_ANNOTATION: decision}
    if not isinstance(metadata, Mapping):
        value = {"annotations": annotation}
        return [{"op": "add", "path": pointer(*pod_path, "metadata"), "value": value}]
    if not _present(metadata, "annotations"):
        path = pointer(*pod_path, "metadata", "annotations")
        return [{"op": "add", "path": path, "value": annotation}]
    path = pointer(*pod_path, "metadata", "annotations", DECISION_ANNOTATION)
    return [{"op": "add", "path": path, "value": decision}]


# -- the answer ------------------------------------------------------------------------------


def _warning(text: str) -> str:
    return text if len(text) <= MAX_WARNING else text[: MAX_WARNING - 3] + "..."


def _respond(
    uid: str,
    *,
    allowed: bool,
    decision_id: str | None,
    code: int = 403,
    message: str = "",
    warnings: Sequence[str] = (),
    patch: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {"code": code, "message": message}
    if warnings:
        response["warnings"] = [_warning(w) for w in dict.fromkeys(warnings)]
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(patch)).encode()).decode("ascii")
    if decision_id is not None:
        # The API server's own audit log then names the Docket decision.
        response["auditAnnotations"] = {"decision-id": decision_id}
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _why(decided: Decided) -> str:
    decision = decided.decision
    why = (
        f"denied by Docket policy {', '.join(decision.reasons)}"
        if decision.reasons
        else "no Docket policy permits it"
    )
    failed = "; ".join(f"policy {e.policy or '(engine)'}: {e.message}" for e in decision.errors)
    return f"{why}{f' ({failed})' if failed else ''}"


PSS_BASELINE_POLICY = "admit-pod-security-baseline"
PSS_RESTRICTED_POLICY = "admit-pod-security-restricted"


def _pod_security(decided: Decided, target: _Target) -> str:
    """``: violates PodSecurity "restricted:latest": …`` naming every failed check, when
    a Pod Security policy of the bundle denied the review; "" otherwise."""
    reasons = decided.decision.reasons
    if PSS_RESTRICTED_POLICY in reasons and target.restricted:
        return f"; {violation('restricted', target.restricted)}"
    if PSS_BASELINE_POLICY in reasons and target.baseline:
        return f"; {violation('baseline', target.baseline)}"
    return ""


class AdmissionController:
    """Answers Kubernetes AdmissionReviews (``/validate`` and ``/mutate``) with the
    decision service: no sockets, no TLS; the HTTPS server is a thin driver around it.

    ``trust_domain`` names the pods' service accounts as SPIFFE IDs; ``cluster`` is the
    id of the ``Cluster`` entity (allowed registries, restricted jurisdictions) the
    reviews are about.
    """

    def __init__(
        self,
        service: DecisionService,
        *,
        trust_domain: str,
        cluster: str = "kubernetes",
        namespaces: NamespaceLabels | None = None,
    ) -> None:
        self.service = service
        self.trust_domain = trust_domain
        self.cluster = cluster
        self.namespaces = namespaces

    def review(
        self,
        path: Literal["validate", "mutate"],
        body: bytes,
        *,
        caller: str | None = None,
        now: datetime | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Answer one AdmissionReview: ``(HTTP status, JSON body)``.

        200 with an AdmissionReview v1 response for every review that could be read
        (allowed, denied, patched; denied with code 429/503 when the audit log cannot
        record it); 400 with ``{"error": "<field>: …"}`` for a body that is not an
        AdmissionReview v1. ``caller`` is the SPIFFE ID of an mTLS peer, if any (it goes
        into ``context.caller``); ``now`` (default: the clock) dates the namespace cache.
        Raises only ``ValueError`` for an unknown ``path``.
        """
        now = now if now is not None else datetime.now(UTC)
        if path not in ("validate", "mutate"):
            raise ValueError(f"unknown admission path {path!r}: expected validate or mutate")
        try:
            parsed = parse_review(body)
        except AdmissionInputError as exc:
            self._record_malformed(str(exc), path, caller)
            return 400, {"error": str(exc)}
        request = parsed.request
        detail = _detail(path, request)
        try:
            return 200, self._answer(path, request, detail, caller, now)
        except Overloaded as exc:
            log.warning("admission.audit_busy", uid=request.uid, error=str(exc))
            message = f"Docket's audit log is busy; retry shortly ({exc})"
            return 200, _respond(
                request.uid, allowed=False, decision_id=None, code=429, message=message
            )
        except AuditError as exc:
            log.error("admission.audit_unavailable", uid=request.uid, error=str(exc))
            message = f"Docket's audit log is unavailable, so nothing is admitted ({exc})"
            return 200, _respond(
                request.uid, allowed=False, decision_id=None, code=503, message=message
            )

    def _record_malformed(self, error: str, path: str, caller: str | None) -> None:
        try:
            self.service.refuse(error, api=API, caller=caller, detail={"webhook": path})
        except AuditError as exc:  # the answer is a 400 all the same; say it went unrecorded
            log.error("admission.refusal_unrecorded", error=error, audit_error=str(exc))

    def _namespace_level(self, request: AdmissionRequest, now: datetime) -> Classification | None:
        """The classification of the review's namespace from the configured source (None
        without one). Raises :class:`NamespaceUnavailable` or :class:`AdmissionInputError`."""
        if self.namespaces is None:
            return None
        meta = (request.object or {}).get("metadata")
        namespace = request.namespace or (
            meta.get("namespace") if isinstance(meta, Mapping) else None
        )
        if not isinstance(namespace, str) or not namespace:
            return None  # _read_target refuses the review for want of a namespace
        labels = self.namespaces.labels(namespace, now)
        where = f"namespace {namespace} label {CLASSIFICATION_LABEL}"
        return _classification_of(labels.get(CLASSIFICATION_LABEL), where) or (
            DEFAULT_CLASSIFICATION
        )

    def _answer(
        self,
        path: str,
        request: AdmissionRequest,
        detail: dict[str, Any],
        caller: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        uid = request.uid
        kind = request.kind
        template = _POD_KINDS.get((kind.group, kind.kind))
        skip: str | None = None
        warnings: list[str] = []
        if request.operation in ("DELETE", "CONNECT"):
            skip = f"{request.operation} is admitted without evaluation"
        elif template is None:
            name = f"{kind.group}/{kind.kind}" if kind.group else kind.kind
            skip = f"Docket does not inspect {name}"
            warnings = [skip] if path == "validate" else []
        elif request.sub_resource and not (
            path == "validate" and template == () and request.sub_resource == "ephemeralcontainers"
        ):
            skip = f"the {request.sub_resource} subresource is admitted without evaluation"
        elif path == "mutate" and template == () and request.operation == "UPDATE":
            skip = "a Pod's node affinity cannot change after it is created"
        if skip is not None:
            decided = self.service.allow_unevaluated(skip, api=API, caller=caller, detail=detail)
            return _respond(uid, allowed=True, decision_id=decided.decision_id, warnings=warnings)
        assert template is not None
        bundle = self.service.engine.bundle
        jurisdictions = frozenset(s.jurisdiction for s in bundle.sites) if bundle else frozenset()
        try:
            namespace_level = self._namespace_level(request, now)
        except NamespaceUnavailable as exc:
            # A namespace Docket cannot read is never taken as unclassified.
            message = f"Docket cannot read the namespace's classification: {exc}"
            log.warning("admission.namespace_unavailable", uid=uid, error=str(exc))
            refused = self.service.refuse(message, api=API, caller=caller, detail=detail)
            return _respond(uid, allowed=False, decision_id=refused.decision_id, message=message)
        except AdmissionInputError as exc:
            refused = self.service.refuse(str(exc), api=API, caller=caller, detail=detail)
            return _respond(
                uid, allowed=False, decision_id=refused.decision_id, code=400, message=str(exc)
            )
        try:
            principal, target = _read_target(
                request,
                template,
                trust_domain=self.trust_domain,
                jurisdictions=jurisdictions,
                caller=caller,
                namespace_level=namespace_level,
            )
        except AdmissionInputError as exc:
            refused = self.service.refuse(str(exc), api=API, caller=caller, detail=detail)
            return _respond(
                uid, allowed=False, decision_id=refused.decision_id, code=400, message=str(exc)
            )
        detail["provenance"] = {
            "caller": caller,
            "classification": {"value": target.classification, "from": target.classified_by},
        }
        if path == "validate":
            return self._validate(uid, principal, target, detail, caller)
        return self._mutate(uid, request.operation, principal, target, detail, caller)

    def _unevaluable(
        self, uid: str, exc: RequestError, detail: dict[str, Any], caller: str | None
    ) -> dict[str, Any]:
        message = f"Docket could not evaluate the review against its policy bundle: {exc}"
        log.error("admission.unevaluable", uid=uid, error=str(exc))
        refused = self.service.refuse(message, api=API, caller=caller, detail=detail)
        return _respond(
            uid, allowed=False, decision_id=refused.decision_id, code=500, message=message
        )

    def _validate(
        self,
        uid: str,
        principal: EntityUID,
        target: _Target,
        detail: dict[str, Any],
        caller: str | None,
    ) -> dict[str, Any]:
        request = Request(
            principal=principal,
            action=EntityUID(type="Action", id="admit"),
            resource=EntityUID(type="Cluster", id=self.cluster),
            context=target.context,
        )
        try:
            (decided,) = self.service.authorize([request], api=API, detail=detail)
        except RequestError as exc:
            return self._unevaluable(uid, exc, detail, caller)
        if decided.decision.allowed:
            return _respond(
                uid, allowed=True, decision_id=decided.decision_id, warnings=target.warnings
            )
        why = f"{_why(decided)}{_pod_security(decided, target)}"
        message = f"{target.description}: {why} (decision {decided.decision_id})"
        return _respond(
            uid,
            allowed=False,
            decision_id=decided.decision_id,
            message=message,
            warnings=target.warnings,
        )

    def _mutate(
        self,
        uid: str,
        operation: str,
        principal: EntityUID,
        target: _Target,
        detail: dict[str, Any],
        caller: str | None,
    ) -> dict[str, Any]:
        bundle = self.service.engine.bundle
        catalog = bundle.sites if bundle is not None else ()
        sites = None
        if target.residency is not None:
            sites = [site.name for site in catalog if site.jurisdiction == target.residency]
        workload = Workload(
            id=principal.id,
            kind="workload",
            classification=target.classification,
            residency=(target.residency,) if target.residency else (),
            context={CALLER: caller} if caller else {},
        )
        try:
            placed = self.service.place(workload, sites, detail=detail)
        except RequestError as exc:
            return self._unevaluable(uid, exc, detail, caller)
        placement = placed.placement
        if not placement.allowed:
            reasons = sorted({r for denied in placement.denied for r in denied.reasons})
            where = f" in {target.residency}" if target.residency else ""
            why = f"denied by {', '.join(reasons)}" if reasons else "no policy permits any"
            message = (
                f"{target.description}: no site{where} may run it ({why}; "
                f"decision {placed.decision_id})"
            )
            return _respond(uid, allowed=False, decision_id=placed.decision_id, message=message)
        groups = node_groups(placement, catalog)
        ops = affinity_ops(target.template, target.raw, groups)
        annotations = (target.raw.get("metadata") or {}).get("annotations") or {}
        if ops or operation == "CREATE" or DECISION_ANNOTATION not in annotations:
            ops += annotation_ops(target.template, target.raw, placed.decision_id)
        warnings = []
        requested = target.context.get("node_selector_regions")
        allowed_regions = {site.region for site in placement.allowed}
        if requested is not None and not allowed_regions & set(requested):
            warnings.append(
                f"the pod may only run in {', '.join(sorted(requested))}, where Docket places "
                f"none of its sites ({', '.join(sorted(allowed_regions))}): it will not schedule"
            )
        return _respond(
            uid, allowed=True, decision_id=placed.decision_id, warnings=warnings, patch=ops
        )


def _detail(path: str, request: AdmissionRequest) -> dict[str, Any]:
    """What each audit entry of a review says about it, besides the decision."""
    obj = request.object if request.object is not None else request.old_object
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    name = request.name or meta.get("name")
    return {
        "webhook": path,
        "review_uid": request.uid,
        "object": {
            "kind": request.kind.kind,
            "namespace": request.namespace or meta.get("namespace"),
            "name": name if isinstance(name, str) else None,
        },
        "operation": request.operation,
        "user": request.user_info.username,
        "dry_run": request.dry_run is True,
    }
