"""The AdmissionController: a review read, the decision asked of the decision service
(``admit`` for ``/validate``, a placement for ``/mutate``), and the AdmissionReview
response made of it; every review audited before it is answered."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from audit import AuditError, Overloaded
from engine._core.models import Decision, EntityUID, Request
from engine._core.placement import Classification, Workload
from engine._core.pod_security import violation
from engine._errors import AdmissionInputError, NamespaceUnavailable, RequestError
from engine._service.admission.labels import CLASSIFICATION_LABEL, DECISION_ANNOTATION
from engine._service.admission.patch import affinity_ops, annotation_ops, node_groups
from engine._service.admission.review import API_VERSION, AdmissionRequest, parse_review
from engine._service.admission.target import (
    DEFAULT_CLASSIFICATION,
    POD_KINDS,
    Target,
    classification_of,
    read_target,
)
from engine._service.constants import CALLER
from engine._service.decisions import DecisionService
from engine._service.namespaces import NamespaceLabels

log = structlog.get_logger("docket.admission")

API = "admission"
"""The ``api`` name of admission decisions in metrics and audit entries."""
MAX_WARNING = 120
"""Kubernetes shows warnings of at most 120 characters; longer ones are cut."""


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


def _why(decision: Decision) -> str:
    why = (
        f"denied by Docket policy {', '.join(decision.reasons)}"
        if decision.reasons
        else "no Docket policy permits it"
    )
    failed = "; ".join(f"policy {e.policy or '(engine)'}: {e.message}" for e in decision.errors)
    return f"{why}{f' ({failed})' if failed else ''}"


PSS_BASELINE_POLICY = "admit-pod-security-baseline"
PSS_RESTRICTED_POLICY = "admit-pod-security-restricted"


def _pod_security(decision: Decision, target: Target) -> str:
    """``: violates PodSecurity "restricted:latest": …`` naming every failed check, when
    a Pod Security policy of the bundle denied the review; "" otherwise."""
    reasons = decision.reasons
    if PSS_RESTRICTED_POLICY in reasons and target.restricted:
        return f"; {violation('restricted', target.restricted)}"
    if PSS_BASELINE_POLICY in reasons and target.baseline:
        return f"; {violation('baseline', target.baseline)}"
    return ""


def refusal_reason(decision: Decision, target: Target) -> str:
    """Why ``decision`` refuses the object of ``target``, in the words of the webhook's
    denial: the policies that denied it and every Pod Security check it fails."""
    return f"{_why(decision)}{_pod_security(decision, target)}"


def namespace_level(
    namespaces: NamespaceLabels | None, request: AdmissionRequest, now: datetime
) -> Classification | None:
    """The classification of the request's namespace from ``namespaces`` (None without
    a source). Raises :class:`NamespaceUnavailable` or :class:`AdmissionInputError`."""
    if namespaces is None:
        return None
    meta = (request.object or {}).get("metadata")
    namespace = request.namespace or (meta.get("namespace") if isinstance(meta, Mapping) else None)
    if not isinstance(namespace, str) or not namespace:
        return None  # read_target refuses the review for want of a namespace
    labels = namespaces.labels(namespace, now)
    where = f"namespace {namespace} label {CLASSIFICATION_LABEL}"
    return classification_of(labels.get(CLASSIFICATION_LABEL), where) or (DEFAULT_CLASSIFICATION)


def admit_request(
    request: AdmissionRequest,
    template: tuple[str, ...],
    *,
    trust_domain: str,
    cluster: str,
    jurisdictions: frozenset[str],
    caller: str | None,
    level: Classification | None,
) -> tuple[Request, Target]:
    """The Cedar ``admit`` request the validating webhook decides for ``request`` (its
    object's pod at ``template``), and what was read from the object. Raises
    :class:`AdmissionInputError` naming the field."""
    principal, target = read_target(
        request,
        template,
        trust_domain=trust_domain,
        jurisdictions=jurisdictions,
        caller=caller,
        namespace_level=level,
    )
    admit = Request(
        principal=principal,
        action=EntityUID(type="Action", id="admit"),
        resource=EntityUID(type="Cluster", id=cluster),
        context=target.context,
    )
    return admit, target


@dataclass(frozen=True, slots=True)
class _Review:
    """The review being answered: its uid, what each of its audit entries says about it
    (:func:`_detail`), and the mTLS caller."""

    uid: str
    detail: dict[str, Any]
    caller: str | None


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

    def _answer(
        self,
        path: str,
        request: AdmissionRequest,
        detail: dict[str, Any],
        caller: str | None,
        now: datetime,
    ) -> dict[str, Any]:
        review = _Review(request.uid, detail, caller)
        kind = request.kind
        template = POD_KINDS.get((kind.group, kind.kind))
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
            return _respond(
                review.uid, allowed=True, decision_id=decided.decision_id, warnings=warnings
            )
        assert template is not None
        bundle = self.service.engine.bundle
        jurisdictions = frozenset(s.jurisdiction for s in bundle.sites) if bundle else frozenset()
        try:
            level = namespace_level(self.namespaces, request, now)
        except NamespaceUnavailable as exc:
            # A namespace Docket cannot read is never taken as unclassified.
            message = f"Docket cannot read the namespace's classification: {exc}"
            log.warning("admission.namespace_unavailable", uid=review.uid, error=str(exc))
            return self._refuse(review, message)
        except AdmissionInputError as exc:
            return self._refuse(review, str(exc), code=400)
        try:
            admit, target = admit_request(
                request,
                template,
                trust_domain=self.trust_domain,
                cluster=self.cluster,
                jurisdictions=jurisdictions,
                caller=caller,
                level=level,
            )
        except AdmissionInputError as exc:
            return self._refuse(review, str(exc), code=400)
        detail["provenance"] = {
            "caller": caller,
            "classification": {"value": target.classification, "from": target.classified_by},
        }
        if path == "validate":
            return self._validate(review, admit, target)
        return self._mutate(review, request.operation, admit.principal, target)

    def _refuse(self, review: _Review, message: str, *, code: int = 403) -> dict[str, Any]:
        """Deny the review with ``message`` (and ``code``), the refusal recorded first."""
        refused = self.service.refuse(message, api=API, caller=review.caller, detail=review.detail)
        return _respond(
            review.uid, allowed=False, decision_id=refused.decision_id, code=code, message=message
        )

    def _unevaluable(self, review: _Review, exc: RequestError) -> dict[str, Any]:
        message = f"Docket could not evaluate the review against its policy bundle: {exc}"
        log.error("admission.unevaluable", uid=review.uid, error=str(exc))
        return self._refuse(review, message, code=500)

    def _validate(self, review: _Review, request: Request, target: Target) -> dict[str, Any]:
        try:
            (decided,) = self.service.authorize([request], api=API, detail=review.detail)
        except RequestError as exc:
            return self._unevaluable(review, exc)
        if decided.decision.allowed:
            return _respond(
                review.uid, allowed=True, decision_id=decided.decision_id, warnings=target.warnings
            )
        why = refusal_reason(decided.decision, target)
        message = f"{target.description}: {why} (decision {decided.decision_id})"
        return _respond(
            review.uid,
            allowed=False,
            decision_id=decided.decision_id,
            message=message,
            warnings=target.warnings,
        )

    def _mutate(
        self, review: _Review, operation: str, principal: EntityUID, target: Target
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
            context={CALLER: review.caller} if review.caller else {},
        )
        try:
            placed = self.service.place(workload, sites, detail=review.detail)
        except RequestError as exc:
            return self._unevaluable(review, exc)
        placement = placed.placement
        if not placement.allowed:
            reasons = sorted({r for denied in placement.denied for r in denied.reasons})
            where = f" in {target.residency}" if target.residency else ""
            why = f"denied by {', '.join(reasons)}" if reasons else "no policy permits any"
            message = (
                f"{target.description}: no site{where} may run it ({why}; "
                f"decision {placed.decision_id})"
            )
            return _respond(
                review.uid, allowed=False, decision_id=placed.decision_id, message=message
            )
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
            review.uid, allowed=True, decision_id=placed.decision_id, warnings=warnings, patch=ops
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
