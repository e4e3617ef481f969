"""Bundle sources: where a replica pulls its signed bundle from (``bundle_url``), and
where ``docket bundle push`` publishes one.

- ``http://…``, ``https://…``: any static file server or object store
  (:mod:`.http_source`);
- ``oci://host:port/repository:tag``: an OCI registry (:mod:`.oci`).

:mod:`.pull` fetches, verifies (signature, anti-rollback) and atomically installs the
bundle every worker loads; :mod:`.freshness` says how old it is and what a stale one may
no longer allow; :mod:`.transfer` bounds every download.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Mapping

from engine._core.bundle import PolicyBundle
from engine._errors import SourceError
from engine._service.bundle_source.freshness import Freshness
from engine._service.bundle_source.http_source import HttpSource
from engine._service.bundle_source.oci import OciSource
from engine._service.bundle_source.pull import Pulled, Puller, PullState
from engine._service.bundle_source.types import MEDIA_TYPE, Fetched, Limits, Source, Unchanged

__all__ = [
    "MEDIA_TYPE",
    "Fetched",
    "Freshness",
    "HttpSource",
    "Limits",
    "OciSource",
    "PullState",
    "Pulled",
    "Puller",
    "Source",
    "Unchanged",
    "open_source",
    "pack",
    "publish",
]


def open_source(url: str) -> Source:
    """The source ``url`` names. Raises :class:`~engine.SourceError` for another scheme."""
    if url.startswith(("http://", "https://")):
        return HttpSource(url)
    if url.startswith("oci://"):
        return OciSource.parse(url)
    raise SourceError(
        "bad-answer", f"{url}: a bundle URL is http://…, https://… or oci://host/repository:tag"
    )


def pack(files: Mapping[str, bytes]) -> bytes:
    """A bundle's files as a ``.tar.gz`` that is the same bytes for the same files (sorted
    names, no times or owners), so that publishing it twice changes nothing."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(files[name]), 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


def publish(bundle: PolicyBundle, url: str, *, timeout: float) -> str:
    """Push a signed bundle (its files as :func:`pack` makes them) to ``url``; returns
    where it went. Raises :class:`~engine.SourceError`."""
    source = open_source(url)
    archive = pack(bundle.files)
    if isinstance(source, OciSource):
        config = {"name": bundle.name, "revision": bundle.revision, "version": bundle.version}
        return source.push(archive, timeout=timeout, config=json.dumps(config).encode())
    return source.push(archive, timeout=timeout)
