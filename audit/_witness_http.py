"""The witness over HTTP: an ASGI app (served by uvicorn from ``docket witness serve``).

``POST /add-checkpoint`` (c2sp.org/tlog-witness): 200 with the cosignature lines, or
the status of the :class:`~audit._errors.WitnessError` and a one-line reason; a 409
carries the witness's size as ``text/x.tlog.size``. A body over
:data:`~audit._witness.MAX_BODY` is refused unread with 413 (by its Content-Length, or
as soon as it grows past the bound). ``GET /<origin hash>/checkpoint`` serves the
latest cosigned checkpoint of a log to monitors (404 until there is one). The check and
the write run on a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from audit._errors import StoreError, WitnessError
from audit._witness import MAX_BODY, Witness

__all__ = ["WitnessApp", "body_or_413", "read_asgi_body", "respond"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MONITOR = re.compile(r"/([0-9a-f]{64})/checkpoint")
_SIZE_TYPE = b"text/x.tlog.size"
_TEXT_TYPE = b"text/plain; charset=utf-8"


class WitnessApp:
    """The ASGI app of one :class:`~audit._witness.Witness`."""

    def __init__(self, witness: Witness, max_body: int = MAX_BODY) -> None:
        self.witness = witness
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/add-checkpoint":
            if method != "POST":
                await respond(send, 405, "add-checkpoint takes a POST\n", allow=b"POST")
                return
            await self._add_checkpoint(scope, receive, send)
        elif (monitored := _MONITOR.fullmatch(path)) is not None and method in ("GET", "HEAD"):
            note = await asyncio.to_thread(self.witness.checkpoint, monitored[1])
            if note is None:
                await respond(send, 404, "no checkpoint cosigned for this log\n")
            else:
                await respond(send, 200, note)
        else:
            await respond(send, 404, "not found\n")

    async def _add_checkpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await body_or_413(scope, receive, send, self.max_body)
        if body is None:
            return
        try:
            lines = await asyncio.to_thread(self.witness.add_checkpoint, body)
        except WitnessError as exc:
            if exc.status == 409 and exc.size is not None:
                await respond(send, 409, f"{exc.size}\n", kind=_SIZE_TYPE)
            else:
                await respond(send, exc.status or 500, f"{exc}\n")
            return
        except StoreError as exc:
            await respond(send, 503, f"the witness cannot record: {exc}\n")
            return
        await respond(send, 200, lines)


async def read_asgi_body(scope: Scope, receive: Receive, max_body: int) -> bytes | None:
    """The request's body, or None as soon as it is known to be over ``max_body``
    bytes (by its Content-Length, or as it arrives): the rest is not read."""
    for name, value in scope["headers"]:
        if name == b"content-length" and (not value.isdigit() or int(value) > max_body):
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def body_or_413(scope: Scope, receive: Receive, send: Send, max_body: int) -> bytes | None:
    """The request's body; None once a body over ``max_body`` was answered with 413."""
    body = await read_asgi_body(scope, receive, max_body)
    if body is None:
        await respond(send, 413, f"the body is over {max_body} bytes\n", close=True)
    return body


async def respond(
    send: Send,
    status: int,
    body: str,
    *,
    kind: bytes = _TEXT_TYPE,
    close: bool = False,
    allow: bytes | None = None,
) -> None:
    data = body.encode("utf-8")
    headers = [(b"content-type", kind), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if allow is not None:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
