"""Bounded HTTP transfers for bundle sources, on the standard library's ``urllib``.

Every answer is read in pieces into a file, never into memory whole: a declared
``Content-Length`` past the bound is refused before a byte of the body is read, and a
body that grows past it while streaming is cut off. A body shorter than its declared
length, and an archive whose gzip stream (or tar end marker) is missing, are refused as
truncated. Each socket operation has ``timeout`` seconds, and the whole transfer too, so
that a source trickling a byte at a time cannot hold a replica. Every failure is a
:class:`~engine.SourceError` of one line naming the URL.
"""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPMessage
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from engine._core.bundle import MAX_BUNDLE_BYTES
from engine._errors import SourceError

CHUNK = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_TAR_END = bytes(1024)


class Answer(Protocol):
    """What ``urllib`` gives back (a response, or an ``HTTPError`` for a non-2xx)."""

    status: int
    headers: Message

    def read(self, amt: int = ..., /) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Received:
    """A body written to a file: its size and ``sha256:<hex>``."""

    size: int
    digest: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A PUT or POST is never followed to another place (urllib would turn it into a GET)."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class _HttpRedirect(urllib.request.HTTPRedirectHandler):
    """A GET follows redirects (object stores and registries send blobs elsewhere), but
    only to http:// or https:// (urllib would follow one to ftp://)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not newurl.startswith(("http://", "https://")):
            raise SourceError("bad-answer", f"{req.full_url}: redirected to {newurl}, refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_opener = urllib.request.build_opener(_HttpRedirect())
_no_redirect = urllib.request.build_opener(_NoRedirect())


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """Send one request; the answer whatever its status (the caller reads the status).
    Raises :class:`SourceError` (``unreachable``) when no answer comes."""
    if not url.startswith(("http://", "https://")):  # never file: or another scheme
        raise SourceError("bad-answer", f"{url}: not an http:// or https:// URL")
    prepared = urllib.request.Request(  # noqa: S310  (the scheme is checked above)
        url, data=body, method=method, headers=dict(headers or {})
    )
    opener = _opener if method in ("GET", "HEAD") else _no_redirect
    try:
        answer: Answer = opener.open(prepared, timeout=timeout)
    except urllib.error.HTTPError as exc:
        return exc  # type: ignore[return-value]  # an HTTPError is the (non-2xx) answer
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError("unreachable", f"{url}: unreachable: {reason}") from exc
    return answer


def describe(answer: Answer, url: str, method: str = "GET") -> str:
    """``URL: GET answered 404 Not Found`` (for refusals)."""
    reason = getattr(answer, "reason", "") or ""
    return f"{url}: {method} answered {answer.status} {reason}".rstrip()


def download(answer: Answer, into: BinaryIO, *, url: str, limit: int, timeout: float) -> Received:
    """Stream ``answer``'s body into ``into``, at most ``limit`` bytes and ``timeout``
    seconds; its size and digest. Raises :class:`SourceError` (``too-big``,
    ``truncated``, ``unreachable`` for a transfer that failed or took too long)."""
    declared = answer.headers.get("Content-Length")
    length = int(declared) if declared is not None and declared.isdigit() else None
    if length is not None and length > limit:
        raise SourceError(
            "too-big", f"{url}: the bundle is {length} bytes, past the bound of {limit}"
        )
    digest = hashlib.sha256()
    size = 0
    deadline = time.monotonic() + timeout
    try:
        while chunk := answer.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise SourceError(
                    "too-big", f"{url}: the bundle is past the bound of {limit} bytes (cut off)"
                )
            if time.monotonic() > deadline:
                raise SourceError("unreachable", f"{url}: the transfer took over {timeout} s")
            digest.update(chunk)
            into.write(chunk)
    except (OSError, ValueError) as exc:  # a reset, a timeout, a broken chunked framing
        raise SourceError("truncated", f"{url}: the transfer broke off: {exc}") from exc
    if length is not None and size != length:
        raise SourceError(
            "truncated", f"{url}: truncated: {size} of the {length} bytes announced arrived"
        )
    return Received(size, "sha256:" + digest.hexdigest())


def check_complete(path: Path, url: str) -> None:
    """Refuse an archive that stops early: a gzip stream without its end (and CRC), or a
    plain tar without its end marker. Inflates in bounded pieces, keeping nothing.
    Raises :class:`SourceError` (``truncated``)."""
    with path.open("rb") as handle:
        if handle.read(2) != _GZIP_MAGIC:
            size = handle.seek(0, 2)
            handle.seek(max(size - len(_TAR_END), 0))
            if size % 512 or handle.read() != _TAR_END:
                raise SourceError("truncated", f"{url}: truncated: the tar archive has no end")
            return
        handle.seek(0)
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        produced = 0
        try:
            while data := handle.read(CHUNK):
                while data:
                    produced += len(inflate.decompress(data, CHUNK))
                    if produced > MAX_BUNDLE_BYTES * 2:
                        raise SourceError("too-big", f"{url}: the archive inflates past the bound")
                    data = inflate.unconsumed_tail
                    if inflate.eof:
                        # Another gzip member may follow; zero padding after the last may too.
                        data = inflate.unused_data + data
                        if not data.strip(b"\0"):
                            break
                        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        except zlib.error as exc:
            raise SourceError("truncated", f"{url}: not a readable .tar.gz: {exc}") from exc
    if not inflate.eof:
        raise SourceError("truncated", f"{url}: truncated: the gzip stream stops before its end")
