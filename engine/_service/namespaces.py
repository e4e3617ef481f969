"""Where the admission webhook learns a namespace's labels (its
``docket.io/classification``), as Pod Security Admission reads its level from the
Namespace rather than from the object.

Two sources, chosen by the ``admission_namespaces`` setting (:func:`namespace_source`):

``in-cluster`` / ``kubeconfig:<path>``
    The Kubernetes API through the ``kubernetes`` client: ``read_namespace``, each
    answer cached for ``admission_namespace_cache_seconds`` (a label change takes effect
    within that time; the API server is not asked once per review).
``file:<path>``
    A JSON file as ``kubectl get namespaces -o json`` writes it (a ``List`` of
    Namespaces, or one Namespace), re-read when its size, inode or modification time
    changes.
``none`` (the default)
    No source: every namespace is at the configured default level and the object's
    own label applies (``engine._service.admission`` says so at start-up).

A namespace a source cannot find or read raises :class:`NamespaceUnavailable`, and the
review is denied with its message: with a source configured Docket never guesses.

Errors::

    RequestError (engine)
    └── NamespaceUnavailable    the namespace is not found or its source cannot be read
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from engine._errors import NamespaceUnavailable


class NamespaceLabels(Protocol):
    """A source of namespace labels."""

    description: str
    """How the source is named in logs (``file /etc/docket/namespaces.json``)."""

    def labels(self, namespace: str, now: datetime) -> Mapping[str, str]:
        """The labels of ``namespace``. Raises :class:`NamespaceUnavailable`."""
        ...


def _labels_of(item: Any, where: str) -> tuple[str, dict[str, str]]:
    meta = item.get("metadata") if isinstance(item, Mapping) else None
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str):
        raise NamespaceUnavailable(f"{where}: a Namespace without metadata.name")
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    labels = labels if isinstance(labels, Mapping) else {}
    return name, {str(k): str(v) for k, v in labels.items()}


class FileNamespaces:
    """Namespaces from ``kubectl get namespaces -o json`` output at ``path``, re-read
    when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._namespaces: dict[str, dict[str, str]] = {}

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise NamespaceUnavailable(
                f"the namespace file {self.path} cannot be read: {exc.strerror}"
            ) from exc
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if stamp == self._stamp:
                return self._namespaces
            try:
                data = json.loads(self.path.read_bytes())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise NamespaceUnavailable(
                    f"the namespace file {self.path} is not readable JSON: {exc}"
                ) from exc
            items = data.get("items") if isinstance(data, Mapping) else None
            if items is None and isinstance(data, Mapping) and data.get("kind") == "Namespace":
                items = [data]
            if not isinstance(items, list):
                raise NamespaceUnavailable(
                    f"the namespace file {self.path}: expected the output of "
                    "kubectl get namespaces -o json (a List with items)"
                )
            found = dict(_labels_of(item, str(self.path)) for item in items)
            self._stamp, self._namespaces = stamp, found
            return found

    def labels(self, namespace: str, now: datetime) -> Mapping[str, str]:
        """The labels of ``namespace`` in the file. Raises :class:`NamespaceUnavailable`
        when it is not there or the file cannot be read."""
        found = self._load().get(namespace)
        if found is None:
            raise NamespaceUnavailable(f'namespace "{namespace}" is not in {self.path}')
        return found


@dataclass(frozen=True, slots=True)
class _Cached:
    expires: datetime
    labels: Mapping[str, str]


class KubernetesNamespaces:
    """Namespaces read from the Kubernetes API (``read_namespace``), each cached for
    ``cache_seconds``. ``kubeconfig`` None means in-cluster configuration (the pod's
    service account; it needs ``get`` on ``namespaces``)."""

    TIMEOUT_SECONDS = 3.0
    """One read of the API server; a review must answer well within the webhook's 10 s."""

    def __init__(self, kubeconfig: Path | None, *, cache_seconds: float = 5.0) -> None:
        self.kubeconfig = kubeconfig
        self.cache = timedelta(seconds=cache_seconds)
        self.description = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster Kubernetes API"
        self._lock = threading.Lock()
        self._cached: dict[str, _Cached] = {}
        self._api: Any = None

    def _core(self) -> Any:
        # Imported here: only a webhook configured with this source pays for it.
        from kubernetes import client, config  # type: ignore[import-untyped]

        if self._api is None:
            try:
                if self.kubeconfig is not None:
                    api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
                else:
                    configuration = client.Configuration()
                    config.load_incluster_config(client_configuration=configuration)
                    api_client = client.ApiClient(configuration)
            except (config.ConfigException, OSError, ValueError) as exc:
                raise NamespaceUnavailable(
                    f"cannot configure the Kubernetes client ({self.description}): {exc}"
                ) from exc
            self._api = client.CoreV1Api(api_client)
        return self._api

    def labels(self, namespace: str, now: datetime) -> Mapping[str, str]:
        """The labels of ``namespace`` from the API server (or the cache). Raises
        :class:`NamespaceUnavailable` when it does not exist or cannot be read."""
        with self._lock:
            cached = self._cached.get(namespace)
            if cached is not None and now < cached.expires:
                return cached.labels
            api = self._core()
        from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

        try:
            found = api.read_namespace(namespace, _request_timeout=self.TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status == 404:
                raise NamespaceUnavailable(
                    f'namespace "{namespace}" does not exist ({self.description})'
                ) from exc
            raise NamespaceUnavailable(
                f'namespace "{namespace}" cannot be read from the Kubernetes API '
                f"({exc.status} {exc.reason})"
            ) from exc
        except Exception as exc:  # urllib3/ssl/socket errors: the API is unreachable
            raise NamespaceUnavailable(
                f'namespace "{namespace}" cannot be read from the Kubernetes API '
                f"({type(exc).__name__}: {exc})"
            ) from exc
        raw = found.metadata.labels if found.metadata is not None else None
        labels = {str(k): str(v) for k, v in (raw or {}).items()}
        with self._lock:
            self._cached[namespace] = _Cached(now + self.cache, labels)
        return labels


def namespace_source(spec: str, *, cache_seconds: float = 5.0) -> NamespaceLabels | None:
    """The source the ``admission_namespaces`` setting names: ``none``, ``in-cluster``,
    ``kubeconfig:<path>`` or ``file:<path>``. Raises ValueError for anything else."""
    text = spec.strip()
    if text in ("", "none"):
        return None
    if text == "in-cluster":
        return KubernetesNamespaces(None, cache_seconds=cache_seconds)
    kind, _, path = text.partition(":")
    if kind == "kubeconfig" and path:
        return KubernetesNamespaces(Path(path), cache_seconds=cache_seconds)
    if kind == "file" and path:
        return FileNamespaces(Path(path))
    raise ValueError(
        f"admission_namespaces {spec!r}: expected none, in-cluster, kubeconfig:<path> "
        "or file:<path>"
    )
