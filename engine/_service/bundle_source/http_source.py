"""A bundle at an HTTP(S) URL: any static file server or object store.

Pulled with ``GET`` and ``If-None-Match`` carrying the ETag of the bundle held (OPA's
bundle service does the same): ``304 Not Modified`` costs no download and confirms the
source still serves it. With long polling (``bundle_long_poll_seconds``) the request also
says ``Prefer: wait=N``: a server that supports it holds the request until the bundle
changes or N seconds pass, and says so with ``Preference-Applied: wait=N`` (RFC 7240);
the replica then asks again at once. A server that does not (any static server) answers
at once and the replica keeps its pull interval.

Published with ``PUT`` of the ``.tar.gz`` (what an object store or a WebDAV-style static
server takes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine._errors import SourceError
from engine._service.bundle_source.transfer import describe, download, request
from engine._service.bundle_source.types import MEDIA_TYPE, Fetched, Limits, Unchanged


@dataclass(frozen=True, slots=True)
class HttpSource:
    """A bundle served at ``url`` (``http://`` or ``https://``)."""

    url: str

    def fetch(self, into: Path, *, tag: str | None, limits: Limits) -> Fetched | Unchanged:
        """Download the bundle into ``into`` unless it is still ``tag`` (its ETag).
        Raises :class:`~engine.SourceError`."""
        headers = {"Accept": f"{MEDIA_TYPE}, application/gzip, */*"}
        wait = 0
        if tag is not None:
            headers["If-None-Match"] = tag
            if limits.long_poll is not None:
                wait = max(int(limits.long_poll), 1)
                headers["Prefer"] = f"wait={wait}"
        # A long poll's answer may take its whole wait to come: the socket waits that too.
        answer = request("GET", self.url, timeout=wait + limits.timeout, headers=headers)
        try:
            long_polled = wait > 0 and answer.headers.get("Preference-Applied") == f"wait={wait}"
            if answer.status == 304 and tag is not None:
                return Unchanged(long_polled=long_polled)
            if answer.status != 200:
                raise SourceError("bad-answer", describe(answer, self.url))
            with into.open("wb") as out:
                received = download(
                    answer, out, url=self.url, limit=limits.max_bytes, timeout=limits.timeout
                )
            return Fetched(
                tag=answer.headers.get("ETag"), digest=received.digest, long_polled=long_polled
            )
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
