"""A small records API protected by Docket through the SDK's ASGI middleware.

    .venv/bin/uvicorn examples.sidecar.app:app --port 8080

Every request is decided by Docket (``DOCKET_GRPC``, default 127.0.0.1:50051) before the
app sees it: ``GET /records/{id}`` asks whether the caller may ``read`` ``Data::"{id}"``.

DEMO SHORTCUT: the caller's identity is read from the ``x-user`` header, which any client
can set. Never do this in production: take the identity from the mTLS peer certificate
or from a verified JWT (check its signature, issuer, audience and expiry first).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sdk import AsyncDecisionClient, DocketASGIMiddleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

docket = AsyncDecisionClient(os.environ.get("DOCKET_GRPC", "127.0.0.1:50051"))
"""One client (one gRPC channel) for the whole app; it connects on the first request."""

RECORDS: dict[str, dict[str, object]] = {
    "employee-directory": {"kind": "dataset", "entries": 1204},
    "research-notes": {"kind": "document", "pages": 37},
    "quarterly-forecast": {"kind": "document", "quarter": "2026-Q1"},
}


async def _json(send: Callable[[Message], Awaitable[None]], status: int, body: object) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def records(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    """The unprotected application: ``GET /records/{id}`` returns the record."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        await docket.close()  # lifespan.shutdown: close the decision client's channel
        await send({"type": "lifespan.shutdown.complete"})
        return
    record_id = scope["path"].removeprefix("/records/")
    if record_id in RECORDS and scope["method"] in ("GET", "HEAD"):
        await _json(send, 200, {"id": record_id, **RECORDS[record_id]})
    else:
        await _json(send, 404, {"error": "no such record"})


def user_from_header(scope: Scope) -> dict[str, str] | None:
    """DEMO ONLY: trusts the x-user header. Production: mTLS peer identity or a verified JWT."""
    for name, value in scope["headers"]:
        if name == b"x-user":
            return {"type": "User", "id": value.decode()}
    return None


def record_from_path(scope: Scope) -> dict[str, str]:
    """``/records/employee-directory`` → ``Data::"employee-directory"``."""
    return {"type": "Data", "id": scope["path"].rsplit("/", 1)[-1]}


app = DocketASGIMiddleware(
    records,
    client=docket,
    principal=user_from_header,
    resource=record_from_path,
)
