"""Kubernetes objects (tests/engine/fixtures/admission, made by make_fixtures.sh) wrapped
in AdmissionReview v1 requests as the API server sends them to a webhook, the answers
read back, and a fake Kubernetes API server that serves Namespaces."""

from __future__ import annotations

import base64
import copy
import json
import threading
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


# -- a tiny Kubernetes API server: namespaces only ---------------------------------------


class FakeKubernetes:
    """A Kubernetes API server on 127.0.0.1 that knows Namespaces and nothing else:
    ``GET /api/v1/namespaces/<name>`` answers the Namespace (its labels from
    :attr:`namespaces`, changeable while it runs) or a 404 Status, as the real one does.
    :attr:`reads` counts the reads. Use as a context manager; :meth:`kubeconfig` writes
    a kubeconfig the ``kubernetes`` client (and ``docket serve``) can use.

    With ``objects`` it also answers the lists across namespaces (``GET /api/v1/pods``,
    ``/apis/apps/v1/deployments``, …) as the real one does: items without kind and
    apiVersion, here one a page (the client must follow ``continue``); a path in
    :attr:`forbidden` is answered 403."""

    def __init__(
        self, namespaces: dict[str, dict[str, str]], objects: Sequence[dict[str, Any]] = ()
    ) -> None:
        self.namespaces = namespaces
        self.objects = objects
        self.forbidden: set[str] = set()
        self.reads = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.reads += 1
                listed = fake.listed(self.path)
                if listed is not None:
                    self._send(*listed)
                    return
                prefix = "/api/v1/namespaces/"
                name = self.path.partition("?")[0].removeprefix(prefix)
                labels = fake.namespaces.get(name) if self.path.startswith(prefix) else None
                if labels is None:
                    status, payload = (
                        404,
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "message": f'namespaces "{name}" not found',
                            "reason": "NotFound",
                            "code": 404,
                        },
                    )
                else:
                    status, payload = (
                        200,
                        {
                            "kind": "Namespace",
                            "apiVersion": "v1",
                            "metadata": {
                                "name": name,
                                "labels": {"kubernetes.io/metadata.name": name, **labels},
                            },
                            "spec": {"finalizers": ["kubernetes"]},
                            "status": {"phase": "Active"},
                        },
                    )
                self._send(status, payload)

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def listed(self, path: str) -> tuple[int, dict[str, Any]] | None:
        """The answer to a list of one kind across namespaces; None for another path."""
        where, _, query = path.partition("?")
        group = where.removeprefix("/api/v1").removeprefix("/apis/")
        kinds = {(o["apiVersion"], o["kind"].lower() + "s"): o["kind"] for o in self.objects}
        api_version = "v1" if where.startswith("/api/v1/") else group.rpartition("/")[0]
        kind = kinds.get((api_version, where.rpartition("/")[2]))
        if not self.objects or where.count("/") != (3 if api_version == "v1" else 4):
            return None
        if where in self.forbidden:
            return 403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403}
        items = [
            {k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
            for o in self.objects
            if (o["apiVersion"], o["kind"]) == (api_version, kind)
        ]
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        at = int(params.get("continue", "0"))
        more = {"continue": str(at + 1)} if at + 1 < len(items) else {}
        page = {"kind": f"{kind}List", "apiVersion": api_version, "metadata": more}
        return 200, {**page, "items": items[at : at + 1]}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig for this server at ``path``; returns ``path``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "docket", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "docket"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

    def __enter__(self) -> FakeKubernetes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
