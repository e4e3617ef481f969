"""Kubernetes objects (tests/engine/fixtures/admission, made by make_fixtures.sh) wrapped
in AdmissionReview v1 requests as the API server sends them to a webhook, and the
answers read back."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "engine" / "fixtures" / "admission"

# (apiVersion, kind) -> the resource the API server names in request.resource.
RESOURCES = {
    ("v1", "Pod"): "pods",
    ("v1", "ConfigMap"): "configmaps",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("apps/v1", "DaemonSet"): "daemonsets",
    ("apps/v1", "ReplicaSet"): "replicasets",
    ("batch/v1", "Job"): "jobs",
    ("batch/v1", "CronJob"): "cronjobs",
}
OPTIONS = {
    "CREATE": {"kind": "CreateOptions", "fieldManager": "kubectl-create"},
    "UPDATE": {"kind": "UpdateOptions", "fieldManager": "kubectl-edit"},
    "DELETE": {"kind": "DeleteOptions", "propagationPolicy": "Background"},
}
ADMIN = {
    "username": "kubernetes-admin",
    "uid": "aws-iam-authenticator:123456789012:AROAEXAMPLE",
    "groups": ["kubeadm:cluster-admins", "system:authenticated"],
}


def fixture(name: str) -> dict[str, Any]:
    """A fixture object (a fresh copy: tests may change it)."""
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def review(
    obj: dict[str, Any],
    *,
    namespace: str = "default",
    operation: str = "CREATE",
    dry_run: bool = False,
    old: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    sub_resource: str | None = None,
) -> dict[str, Any]:
    """An AdmissionReview v1 request for ``obj`` as the API server sends it: the object
    in the request's namespace, ``object`` null for a DELETE (the object is then in
    ``oldObject``), the options of the operation."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    group, _, version = api_version.rpartition("/")
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": RESOURCES[(api_version, kind)]}
    sent = copy.deepcopy(obj)
    sent["metadata"]["namespace"] = namespace
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "name": obj["metadata"].get("name", ""),
        "namespace": namespace,
        "operation": operation,
        "userInfo": user or ADMIN,
        "object": None if operation == "DELETE" else sent,
        "oldObject": sent if operation == "DELETE" else old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", **OPTIONS.get(operation, {})},
    }
    if sub_resource is not None:
        request["subResource"] = request["requestSubResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def body(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The RFC 6902 operations of an AdmissionReview response (none without a patch)."""
    answer = response["response"]
    if "patch" not in answer:
        return []
    assert answer["patchType"] == "JSONPatch"
    operations: list[dict[str, Any]] = json.loads(base64.b64decode(answer["patch"]))
    return operations
