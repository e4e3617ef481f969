"""The collector over HTTP: an ASGI app (served by uvicorn from ``docket collector
serve``).

- ``POST /push``: a site's push (:mod:`audit._collector`). 200 with JSON ``{"size": n,
  "cosignatures": "<lines>"}``; a refusal answers the
  :class:`~audit._errors.WitnessError`'s status with JSON ``{"error": reason}`` (and
  ``"size"``, the size held, with a 409; ``"fork": true`` with a fork's 422). A body over
  :data:`~audit._collector.MAX_BODY` is refused unread with 413.
- ``GET /sites``: every site's status (``docket fleet status`` reads it).
- ``GET /sites/<name>``: the size held for one site (where its pusher resumes).

The check and the write run on a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from audit._collector import MAX_BODY, Collector
from audit._collector_store import SiteStatus
from audit._errors import ForkDetected, StoreError, WitnessError
from audit._witness_http import Receive, Scope, Send, read_body, respond

__all__ = ["CollectorApp", "status_document"]

_JSON = b"application/json"


def status_document(status: SiteStatus) -> dict[str, Any]:
    """One site's status as JSON values."""
    return {
        "site": status.name,
        "origin": status.origin,
        "size": status.size,
        "cosigned": None if status.cosigned is None else status.cosigned.isoformat(),
        "head": status.head,
        "bundle_revision": status.bundle_revision,
        "bundle_pulled": status.bundle_pulled,
        "incidents": status.incidents,
        "last_incident": status.last_incident,
    }


async def _json(send: Send, status: int, document: Mapping[str, Any] | list[Any]) -> None:
    await respond(send, status, json.dumps(document) + "\n", kind=_JSON)


class CollectorApp:
    """The ASGI app of one :class:`~audit._collector.Collector`."""

    def __init__(self, collector: Collector, max_body: int = MAX_BODY) -> None:
        self.collector = collector
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        store = self.collector.store
        if path == "/push" and method == "POST":
            await self._push(scope, receive, send)
        elif path == "/sites" and method == "GET":
            statuses = await asyncio.to_thread(store.statuses)
            await _json(send, 200, [status_document(s) for s in statuses])
        elif path.startswith("/sites/") and method == "GET":
            state = await asyncio.to_thread(store.site, path.removeprefix("/sites/"))
            if state is None:
                await _json(send, 404, {"error": "unknown site"})
            else:
                await _json(send, 200, {"site": state.name, "size": state.log.size})
        else:
            await _json(send, 404, {"error": "not found"})

    async def _push(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(scope, receive, self.max_body)
        if body is None:
            await respond(send, 413, f"the body is over {self.max_body} bytes\n", close=True)
            return
        try:
            accepted = await asyncio.to_thread(self.collector.push, body)
        except WitnessError as exc:
            answer: dict[str, Any] = {"error": str(exc)}
            if exc.size is not None:
                answer["size"] = exc.size
            if isinstance(exc, ForkDetected):
                answer["fork"] = True
            await _json(send, exc.status or 500, answer)
            return
        except StoreError as exc:
            await _json(send, 503, {"error": f"the collector cannot record: {exc}"})
            return
        await _json(send, 200, {"size": accepted.size, "cosignatures": accepted.lines})
