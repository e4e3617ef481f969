"""Protect an ASGI application with Docket decisions (raw ASGI: no framework needed).

``DocketASGIMiddleware`` asks Docket about each HTTP request before the application sees
it. Responses it makes itself, all JSON:

======  ===========================================================================
status  when
======  ===========================================================================
401     the ``principal`` callable found no identity (returned ``None``)
403     Docket denied: ``{"decision": "deny", "decision_id": ..., "reasons": [...]}``
405     the method has no action (see ``DEFAULT_ACTIONS``)
503     Docket unreachable or overloaded: fail closed, ``{"error": ...}``
500     any other failure to get a decision (e.g. Docket refused the request)
======  ===========================================================================

Only an allow reaches the application, and its response carries the decision id in the
``x-docket-decision-id`` header (so does the 403). Scope types:

- ``http``: authorized as above;
- ``websocket``: refused (closed with 1008 before the handshake, which the server turns
  into HTTP 403) unless ``websocket_action`` is given; then the handshake is authorized
  like a GET with that action;
- ``lifespan``: passed through; other types raise, as the ASGI spec asks.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from sdk._client import AsyncDecisionClient, EntityLike
from sdk._errors import DocketError, OverloadedError, TransportError
from sdk._models import AuthorizeResult

__all__ = ["DEFAULT_ACTIONS", "ASGIApp", "DocketASGIMiddleware"]

_log = logging.getLogger("sdk.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

DEFAULT_ACTIONS: Mapping[str, str] = {
    "GET": "read",
    "HEAD": "read",
    "POST": "write",
    "PUT": "write",
    "PATCH": "write",
    "DELETE": "delete",
}
"""HTTP method → Cedar action id, used unless ``action`` is given."""

DECISION_HEADER = b"x-docket-decision-id"
_WEBSOCKET_POLICY_VIOLATION = 1008

_Maybe = Callable[[Scope], Any]
"""A callable taking the scope and returning a value, or an awaitable of one."""


async def _call(function: _Maybe, scope: Scope) -> Any:
    value = function(scope)
    return await value if inspect.isawaitable(value) else value


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class _Refusal(Exception):
    """The middleware answers the request itself with ``status`` and a JSON ``body``."""

    def __init__(self, status: int, body: dict[str, Any], decision_id: str | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.decision_id = decision_id


def _denied(result: AuthorizeResult) -> _Refusal:
    body = {"decision": "deny", "decision_id": result.decision_id, "reasons": list(result.reasons)}
    return _Refusal(403, body, result.decision_id)


def _no_decision(exc: DocketError) -> _Refusal:
    # Errors become HTTP statuses here and nowhere else.
    if isinstance(exc, TransportError | OverloadedError):
        return _Refusal(503, {"error": "authorization service unavailable"})
    return _Refusal(500, {"error": "authorization failed"})


class DocketASGIMiddleware:
    """Wrap ``app`` so that each request runs only when Docket allows it; fail closed.

    ``principal(scope)`` and ``resource(scope)`` return entity uids (a dict such as
    ``{"type": "User", "id": "alice"}`` or an ``EntityRef``; may be async);
    ``principal`` returns ``None`` when the request carries no identity (→ 401). The
    action is ``DEFAULT_ACTIONS[method]`` unless ``action(scope)`` is given. The context is
    ``{"http": {"method", "path" (without the query), "host"}}`` plus whatever
    ``context(scope)`` adds. ``client`` defaults to an ``AsyncDecisionClient`` for the
    default target, which ``aclose()`` closes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        principal: Callable[[Scope], EntityLike | Awaitable[EntityLike | None] | None],
        resource: Callable[[Scope], EntityLike | Awaitable[EntityLike]],
        client: AsyncDecisionClient | None = None,
        action: Callable[[Scope], str] | None = None,
        context: Callable[[Scope], Mapping[str, Any]] | None = None,
        websocket_action: str | None = None,
    ) -> None:
        self.app = app
        self.client = client if client is not None else AsyncDecisionClient()
        self._principal: _Maybe = principal
        self._resource: _Maybe = resource
        self._action = action
        self._context = context
        self._websocket_action = websocket_action

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection: authorize it, then hand it to the app or refuse."""
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind not in ("http", "websocket"):
            raise RuntimeError(f"DocketASGIMiddleware: unsupported ASGI scope type {kind!r}")
        try:
            result = await self._authorize(scope)
        except _Refusal as refusal:
            await self._refuse(scope, receive, send, refusal)
            return
        await self.app(scope, receive, self._tagged(send, result.decision_id))

    async def aclose(self) -> None:
        """Close the decision client."""
        await self.client.close()

    def _action_of(self, scope: Scope) -> str:
        if scope["type"] == "websocket":
            if self._websocket_action is None:
                raise _Refusal(403, {"error": "websockets are not authorized here"})
            return self._websocket_action
        if self._action is not None:
            return self._action(scope)
        action = DEFAULT_ACTIONS.get(scope["method"])
        if action is None:
            raise _Refusal(405, {"error": f"method {scope['method']} is not allowed"})
        return action

    def _http_context(self, scope: Scope) -> dict[str, Any]:
        http = {"method": scope.get("method", "GET"), "path": scope["path"]}
        host = _header(scope, b"host")
        if host is not None:
            http["host"] = host
        extra = self._context(scope) if self._context is not None else {}
        return {**extra, "http": http}

    async def _authorize(self, scope: Scope) -> AuthorizeResult:
        action = self._action_of(scope)
        principal = await _call(self._principal, scope)
        if principal is None:
            raise _Refusal(401, {"error": "unauthenticated"})
        resource = await _call(self._resource, scope)
        try:
            result = await self.client.authorize(
                principal, action, resource, context=self._http_context(scope)
            )
        except DocketError as exc:
            _log.warning("no decision for %s %s: %s", action, scope["path"], exc)
            raise _no_decision(exc) from exc
        if not result.allowed:
            raise _denied(result)
        return result

    @staticmethod
    def _tagged(send: Send, decision_id: str) -> Send:
        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (DECISION_HEADER, decision_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        return tagged

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, refusal: _Refusal) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": _WEBSOCKET_POLICY_VIOLATION})
            return
        body = json.dumps(refusal.body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if refusal.decision_id is not None:
            headers.append((DECISION_HEADER, refusal.decision_id.encode()))
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
