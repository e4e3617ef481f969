"""A bundle in an OCI registry, by plain HTTP per the OCI distribution specification.

``oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:…]`` (tag ``latest`` when none). The bundle is
an OCI artifact: an image manifest whose ``artifactType`` is
``application/vnd.docket.bundle.v1``, whose config blob (``…config.v1+json``) names the
bundle and whose one layer is the ``.tar.gz`` (:data:`~.types.MEDIA_TYPE`).

Pulling reads the manifest (bounded), compares its digest with the one held (the same
manifest: nothing more is downloaded, and the source is known to still serve the bundle),
then streams the layer blob, refusing it past the bound and unless its size and sha256
are the manifest's. Pushing uploads both blobs (monolithic POST then PUT, skipped when
the registry has them) and then the manifest under the tag.

The registry is reached over HTTPS, except on a loopback host (``localhost``,
``127.0.0.1``, ``[::1]``), where it is plain HTTP, as docker and oras treat a local
registry. Registries that require a token (the ``WWW-Authenticate: Bearer`` challenge)
are not supported yet.

Why not the ``oras`` package: the four requests above are all Docket needs, and it must
bound and check every byte as it arrives (``oras`` buffers and checks after the fact, and
brings ``requests`` and ``jsonschema`` into every replica).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine._errors import SourceError
from engine._service.bundle_source.transfer import describe, download, request
from engine._service.bundle_source.types import MEDIA_TYPE, Fetched, Limits, Unchanged

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.docket.bundle.v1"
CONFIG_TYPE = "application/vnd.docket.bundle.config.v1+json"
MAX_MANIFEST_BYTES = 256 * 1024
_REFERENCE = re.compile(
    r"oci://(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::(?P<port>\d{1,5}))?"
    r"/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_LOOPBACK = {"localhost", "127.0.0.1", "[::1]"}


@dataclass(frozen=True, slots=True)
class OciSource:
    """A bundle in an OCI registry at ``oci://host:port/repo:tag``."""

    url: str
    base: str
    registry: str
    repository: str
    reference: str

    @classmethod
    def parse(cls, url: str) -> OciSource:
        """Read an ``oci://`` reference. Raises :class:`~engine.SourceError`."""
        found = _REFERENCE.fullmatch(url)
        if found is None:
            raise SourceError(
                "bad-answer",
                f"{url}: not an OCI reference (oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:…])",
            )
        host = found["host"]
        scheme = "http" if host in _LOOPBACK else "https"
        port = f":{found['port']}" if found["port"] else ""
        return cls(
            url=url,
            base=f"{scheme}://{host}{port}/v2/{found['repo']}",
            registry=f"{host}{port}",
            repository=found["repo"],
            reference=found["digest"] or found["tag"] or "latest",
        )

    def fetch(self, into: Path, *, tag: str | None, limits: Limits) -> Fetched | Unchanged:
        """The layer of the manifest into ``into``, unless the manifest's digest is still
        ``tag``. Raises :class:`~engine.SourceError`."""
        manifest_url = f"{self.base}/manifests/{self.reference}"
        raw = self._get(manifest_url, io.BytesIO(), MAX_MANIFEST_BYTES, limits, MANIFEST_TYPE)
        manifest_digest = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
        if self.reference.startswith("sha256:") and manifest_digest != self.reference:
            raise SourceError(
                "bad-answer", f"{manifest_url}: the manifest's digest is {manifest_digest}"
            )
        if tag is not None and tag == manifest_digest:
            return Unchanged()
        layer = _bundle_layer(raw.getvalue(), manifest_url)
        size, digest = layer["size"], layer["digest"]
        if size > limits.max_bytes:
            raise SourceError(
                "too-big",
                f"{self.url}: the bundle is {size} bytes, past the bound of {limits.max_bytes}",
            )
        blob_url = f"{self.base}/blobs/{digest}"
        with into.open("wb") as out:
            received = self._download(blob_url, out, size, limits)
        if received.size != size:
            raise SourceError(
                "truncated", f"{blob_url}: truncated: {received.size} of the {size} bytes"
            )
        if received.digest != digest:
            raise SourceError(
                "bad-answer", f"{blob_url}: the blob's digest is {received.digest}, not {digest}"
            )
        return Fetched(tag=manifest_digest, digest=digest)

    def _get(
        self, url: str, out: io.BytesIO, limit: int, limits: Limits, accept: str
    ) -> io.BytesIO:
        answer = request("GET", url, timeout=limits.timeout, headers={"Accept": accept})
        try:
            if answer.status != 200:
                raise SourceError("bad-answer", describe(answer, url))
            download(answer, out, url=url, limit=limit, timeout=limits.timeout)
        finally:
            answer.close()
        return out

    def _download(self, url: str, out: Any, size: int, limits: Limits) -> Any:
        answer = request("GET", url, timeout=limits.timeout)
        try:
            if answer.status != 200:
                raise SourceError("bad-answer", describe(answer, url))
            return download(answer, out, url=url, limit=size, timeout=limits.timeout)
        finally:
            answer.close()

    def push(self, archive: bytes, *, timeout: float, config: bytes = b"{}") -> str:
        """Upload the archive and a config blob, then the manifest under the tag; returns
        ``oci://…@sha256:…`` (the manifest's digest). Raises :class:`~engine.SourceError`."""
        if self.reference.startswith("sha256:"):
            raise SourceError("bad-answer", f"{self.url}: push to a tag, not to a digest")
        layer = self._blob(archive, timeout)
        config_descriptor = self._blob(config, timeout)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "artifactType": ARTIFACT_TYPE,
                "config": {"mediaType": CONFIG_TYPE, **config_descriptor},
                "layers": [
                    {
                        "mediaType": MEDIA_TYPE,
                        **layer,
                        "annotations": {"org.opencontainers.image.title": "bundle.tar.gz"},
                    }
                ],
            },
            separators=(",", ":"),
        ).encode()
        url = f"{self.base}/manifests/{self.reference}"
        answer = request(
            "PUT", url, timeout=timeout, headers={"Content-Type": MANIFEST_TYPE}, body=manifest
        )
        answer.close()
        if answer.status != 201:
            raise SourceError("bad-answer", describe(answer, url, "PUT"))
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        return f"oci://{self.registry}/{self.repository}@{digest}"

    def _blob(self, data: bytes, timeout: float) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        descriptor = {"digest": digest, "size": len(data)}
        head = request("HEAD", f"{self.base}/blobs/{digest}", timeout=timeout)
        head.close()
        if head.status == 200:
            return descriptor
        start_url = f"{self.base}/blobs/uploads/"
        started = request("POST", start_url, timeout=timeout)
        started.close()
        location = started.headers.get("Location")
        if started.status != 202 or not location:
            raise SourceError("bad-answer", describe(started, start_url, "POST"))
        upload = urllib.parse.urljoin(start_url, location)
        upload += ("&" if "?" in upload else "?") + urllib.parse.urlencode({"digest": digest})
        answer = request(
            "PUT",
            upload,
            timeout=timeout,
            headers={"Content-Type": "application/octet-stream"},
            body=data,
        )
        answer.close()
        if answer.status != 201:
            raise SourceError("bad-answer", describe(answer, start_url, "PUT"))
        return descriptor


def _bundle_layer(raw: bytes, url: str) -> dict[str, Any]:
    """The one Docket bundle layer of a manifest. Raises :class:`~engine.SourceError`."""
    try:
        manifest = json.loads(raw)
        layers = [
            layer
            for layer in manifest["layers"]
            if isinstance(layer, dict) and layer.get("mediaType") == MEDIA_TYPE
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError("bad-answer", f"{url}: not an OCI image manifest") from exc
    if len(layers) != 1:
        raise SourceError(
            "bad-answer", f"{url}: expected one layer of type {MEDIA_TYPE}, found {len(layers)}"
        )
    layer = layers[0]
    size, digest = layer.get("size"), layer.get("digest")
    if (
        type(size) is not int
        or size < 0
        or not isinstance(digest, str)
        or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    ):
        raise SourceError("bad-answer", f"{url}: the bundle layer has no sha256 digest and size")
    return layer
