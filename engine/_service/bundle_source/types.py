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
    long_poll: float | None = None
    """Ask an HTTP source to hold a pull up to this many seconds until the bundle
    changes (OPA's long polling: ``Prefer: wait=N``); None: ordinary polling."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A bundle downloaded: ``tag`` says what the source served (an HTTP ETag, an OCI
    manifest digest; None when the server gave none), ``digest`` the archive's sha256."""

    tag: str | None
    digest: str
    long_polled: bool = False
    """The server held the request until there was something new (``Preference-Applied``)."""


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The source still serves the bundle held (a ``304``, the same manifest digest);
    ``long_polled``: the server held the request until its wait ran out."""

    long_polled: bool = False


class Source(Protocol):
    """A place bundles are pulled from and pushed to."""

    @property
    def url(self) -> str:
        """What the source was named by (``https://…``, ``oci://…``)."""
        ...

    def fetch(self, into: Path, *, tag: str | None, limits: Limits) -> Fetched | Unchanged:
        """The bundle into ``into``, or :class:`Unchanged` when the source still serves
        ``tag``."""
        ...

    def push(self, archive: bytes, *, timeout: float) -> str:
        """Publish ``archive``; returns where (a URL, or an OCI reference with digest)."""
        ...
