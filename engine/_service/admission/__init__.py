"""Kubernetes admission without a transport: an AdmissionReview ``admission.k8s.io/v1``
in, the HTTP status and the JSON body to answer with out.

The HTTPS server (``/validate``, ``/mutate``) hands each request body to
:meth:`AdmissionController.review` and sends back what it returns.

**Validating** (``/validate``): the object's pod spec becomes a Cedar ``admit`` request:
principal ``Workload::"spiffe://<trust domain>/ns/<namespace>/sa/<service account>"``,
resource ``Cluster::"<cluster>"``, context an ``AdmissionContext`` (see the schema):
kind, namespace, name, operation, the classification, the label ``docket.io/residency``
(a jurisdiction of the site catalog), images and their registries (:func:`registry_of`:
the hosts kubelet pulls from), privileged / hostPath / hostNetwork, the Pod Security
Standards checks the pod fails (``engine._core.pod_security``: check ids of the baseline
and restricted profiles and their messages), the node constraints the user set, the
service account, the user and dry run. Cedar decides; when a Pod Security policy
denies, the message names every failed check as Pod Security Admission does
(``violates PodSecurity "restricted:latest": …``).

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
an image, an image reference kubelet could not pull) is denied in the AdmissionReview
with code 400: a denial holds whatever the webhook's ``failurePolicy``, an HTTP error
does not. Both are recorded as refusals. A namespace the configured source cannot read
is denied with code 403 and its reason, also recorded as a refusal.

The package, by reason to change::

    review.py           the AdmissionReview v1 models and parse_review
    target.py           reading the object: pod (template), classification, oldObject,
                        the Cedar context
    image_reference.py  container images read as kubelet pulls them, their registries
    patch.py            the JSON-patch algebra: node affinity narrowing, the annotation
    controller.py       AdmissionController: the decision, the audit entry, the response
    labels.py           the label and annotation names Docket reads and writes
    drift.py            the drift audit: objects already running decided as their CREATE,
                        revoked and expired devices, the entries a run writes

Errors::

    RequestError (engine)
    └── AdmissionInputError    the review or its object cannot be read; the message
                               starts with the field at fault
"""

from engine._service.admission.controller import API, MAX_WARNING, AdmissionController
from engine._service.admission.image_reference import ImageReference, parse_image, registry_of
from engine._service.admission.labels import (
    CLASSIFICATION_LABEL,
    DECISION_ANNOTATION,
    REGION_LABEL,
    RESIDENCY_LABEL,
    TIER_LABEL,
)
from engine._service.admission.patch import affinity_ops, annotation_ops, narrow_terms, node_groups
from engine._service.admission.review import API_VERSION, AdmissionReview, parse_review
from engine._service.admission.target import DEFAULT_CLASSIFICATION

__all__ = [
    "API",
    "API_VERSION",
    "CLASSIFICATION_LABEL",
    "DECISION_ANNOTATION",
    "DEFAULT_CLASSIFICATION",
    "MAX_WARNING",
    "REGION_LABEL",
    "RESIDENCY_LABEL",
    "TIER_LABEL",
    "AdmissionController",
    "AdmissionReview",
    "ImageReference",
    "affinity_ops",
    "annotation_ops",
    "narrow_terms",
    "node_groups",
    "parse_image",
    "parse_review",
    "registry_of",
]
