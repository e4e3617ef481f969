"""A bundle at an HTTP(S) URL: any static file server or object store.

Pulled with ``GET`` and ``If-None-Match`` carrying the ETag of the bundle held (OPA's
bundle service does the same): ``304 Not Modified`` costs no download and confirms the
source still serves it. Published with ``PUT`` of the ``.tar.gz`` (what an object store
or a WebDAV-style static server takes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine._errors import SourceError
from engine._service.bundle_source.transfer import describe, download, request
from engine._service.bundle_source.types import MEDIA_TYPE, Fetched, Limits


@dataclass(frozen=True, slots=True)
class HttpSource:
    """A bundle served at ``url`` (``http://`` or ``https://``)."""

    url: str

    def fetch(self, into: Path, *, tag: str | None, limits: Limits) -> Fetched | None:
        """Download the bundle into ``into`` unless it is still ``tag`` (its ETag): then
        None. Raises :class:`~engine.SourceError`."""
        headers = {"Accept": f"{MEDIA_TYPE}, application/gzip, */*"}
        if tag is not None:
            headers["If-None-Match"] = tag
        answer = request("GET", self.url, timeout=limits.timeout, headers=headers)
        try:
            if answer.status == 304 and tag is not None:
                return None
            if answer.status != 200:
                raise SourceError("bad-answer", describe(answer, self.url))
            with into.open("wb") as out:
                received = download(
                    answer, out, url=self.url, limit=limits.max_bytes, timeout=limits.timeout
                )
            return Fetched(tag=answer.headers.get("ETag"), digest=received.digest)
        finally:
            answer.close()

    def push(self, archive: bytes, *, timeout: float) -> str:
        """``PUT`` the archive at the URL; where it went. Raises :class:`~engine.SourceError`."""
        answer = request(
            "PUT",
            self.url,
            timeout=timeout,
            headers={"Content-Type": MEDIA_TYPE},
            body=archive,
        )
        answer.close()
        if answer.status not in (200, 201, 204):
            raise SourceError("bad-answer", describe(answer, self.url, "PUT"))
        return self.url
