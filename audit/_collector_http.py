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
from audit._witness_http import Receive, Scope, Send, body_or_413, respond

__all__ = ["CollectorApp", "status_document"]

_JSON = b"application/json"
_UNKNOWN = {"error": "unknown site"}


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
        if scope["type"] == "http":
            await self._route(scope["method"], scope["path"], scope, receive, send)

    async def _route(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        store = self.collector.store
        match method, path.split("/")[1:]:
            case "POST", ["push"]:
                await self._push(scope, receive, send)
            case "GET", ["sites"]:
                statuses = await asyncio.to_thread(store.statuses)
                await _json(send, 200, [status_document(s) for s in statuses])
            case "GET", ["sites", name]:
                state = await asyncio.to_thread(store.site, name)
                held = None if state is None else {"site": name, "size": state.log.size}
                await _json(send, 200, held) if held else await _json(send, 404, _UNKNOWN)
            case _:
                await _json(send, 404, {"error": "not found"})

    async def _push(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await body_or_413(scope, receive, send, self.max_body)
        if body is not None:
            await self._answer(body, send)

    async def _answer(self, body: bytes, send: Send) -> None:
        try:
            accepted = await asyncio.to_thread(self.collector.push, body)
        except WitnessError as exc:
            answer: dict[str, Any] = {"error": str(exc)}
            if exc.size is not None:
                answer["size"] = exc.size
            if isinstance(exc, ForkDetected):
                answer["fork"] = True
            await _json(send, exc.status or 500, answer)
        except StoreError as exc:
            await _json(send, 503, {"error": f"the collector cannot record: {exc}"})
        else:
            await _json(send, 200, {"size": accepted.size, "cosignatures": accepted.lines})
