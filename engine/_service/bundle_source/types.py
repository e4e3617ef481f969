"""What every bundle source shares: media types, limits, what a fetch gives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MEDIA_TYPE = "application/vnd.docket.bundle.v1.tar+gzip"
"""A bundle archive: over HTTP its Content-Type, in an OCI manifest its layer's mediaType."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How much a fetch may take: ``max_bytes`` of download, ``timeout`` seconds for each
    socket operation and for the whole transfer."""

    max_bytes: int
    timeout: float


@dataclass(frozen=True, slots=True)
class Fetched:
    """A bundle downloaded: ``tag`` says what the source served (an HTTP ETag, an OCI
    manifest digest; None when the server gave none), ``digest`` the archive's sha256."""

    tag: str | None
    digest: str


class Source(Protocol):
    """A place bundles are pulled from and pushed to."""

    @property
    def url(self) -> str:
        """What the source was named by (``https://…``, ``oci://…``)."""
        ...

    def fetch(self, into: Path, *, tag: str | None, limits: Limits) -> Fetched | None:
        """The bundle into ``into``, or None when the source still serves ``tag``."""
        ...

    def push(self, archive: bytes, *, timeout: float) -> str:
        """Publish ``archive``; returns where (a URL, or an OCI reference with digest)."""
        ...
