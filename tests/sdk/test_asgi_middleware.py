"""DocketASGIMiddleware in front of an ASGI app, driven through httpx.ASGITransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from sdk_fakes import DENIED_PRINCIPAL, FakeDecisions, Running, unused_target

from sdk import AsyncDecisionClient, DocketASGIMiddleware
from sdk._convert import authorize_request_from_proto

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
T = TypeVar("T")


class RecordsApp:
    """An ASGI app that says which path it served, and remembers that it was called."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        self.calls.append(f"{scope['type']} {scope.get('path', '')}")
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        body = json.dumps({"served": scope["path"]}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def user_header(scope: Scope) -> dict[str, str] | None:
    for key, value in scope["headers"]:
        if key == b"x-user":
            return {"type": "User", "id": value.decode()}
    return None


async def record_from_path(scope: Scope) -> dict[str, str]:
    return {"type": "Data", "id": scope["path"].rsplit("/", 1)[-1]}


def with_middleware(
    target: str,
    use: Callable[[httpx.AsyncClient, RecordsApp], Awaitable[T]],
    **options: Any,
) -> tuple[T, RecordsApp]:
    app = RecordsApp()

    async def main() -> T:
        middleware = DocketASGIMiddleware(
            app,
            client=AsyncDecisionClient(target, retries=0, timeout=1.0),
            principal=user_header,
            resource=record_from_path,
            **options,
        )
        transport = httpx.ASGITransport(app=middleware)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://records.test"
            ) as http:
                return await use(http, app)
        finally:
            await middleware.aclose()

    return asyncio.run(main()), app


async def get(
    http: httpx.AsyncClient, user: str, path: str = "/records/employee-directory?x=1"
) -> httpx.Response:
    return await http.get(path, headers={"x-user": user})


def test_an_allowed_request_reaches_the_app_with_the_decision_id(
    docket: Running, fake: FakeDecisions
) -> None:
    async def use(http: httpx.AsyncClient, app: RecordsApp) -> httpx.Response:
        return await get(http, "dave")

    response, app = with_middleware(docket.target, use)

    assert response.status_code == 200
    assert response.json() == {"served": "/records/employee-directory"}
    assert response.headers["x-docket-decision-id"] == "dec-1"
    assert app.calls == ["http /records/employee-directory"]
    request = authorize_request_from_proto(fake.calls("Authorize")[0])
    assert request.model_dump() == {
        "principal": {"type": "User", "id": "dave"},
        "action": {"type": "Action", "id": "read"},
        "resource": {"type": "Data", "id": "employee-directory"},
        "context": {
            "http": {"method": "GET", "path": "/records/employee-directory", "host": "records.test"}
        },
        "entities": (),
        "device_token": None,
    }


def test_a_deny_is_a_403_with_the_decision_and_the_app_is_not_called(docket: Running) -> None:
    async def use(http: httpx.AsyncClient, app: RecordsApp) -> httpx.Response:
        return await get(http, DENIED_PRINCIPAL)

    response, app = with_middleware(docket.target, use)

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "decision": "deny",
        "decision_id": "dec-1",
        "reasons": ["fake-forbid"],
    }
    assert response.headers["x-docket-decision-id"] == "dec-1"
    assert app.calls == []


def test_an_unreachable_docket_is_a_503_and_the_app_is_not_called() -> None:
    async def use(http: httpx.AsyncClient, app: RecordsApp) -> httpx.Response:
        return await get(http, "dave")

    response, app = with_middleware(unused_target(), use)

    assert response.status_code == 503
    assert response.json() == {"error": "authorization service unavailable"}
    assert app.calls == []


def test_other_docket_failures_are_a_500(docket: Running, fake: FakeDecisions) -> None:
    fake.fail_with = (grpc.StatusCode.INVALID_ARGUMENT, "unknown action")

    async def use(http: httpx.AsyncClient, app: RecordsApp) -> httpx.Response:
        return await get(http, "dave")

    response, app = with_middleware(docket.target, use)

    assert response.status_code == 500
    assert response.json() == {"error": "authorization failed"}
    assert app.calls == []


def test_no_identity_is_a_401_without_asking_docket(docket: Running, fake: FakeDecisions) -> None:
    async def use(http: httpx.AsyncClient, app: RecordsApp) -> httpx.Response:
        return await http.get("/records/x")

    response, app = with_middleware(docket.target, use)

    assert response.status_code == 401
    assert app.calls == []
    assert fake.received == []


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("GET", "read"),
        ("HEAD", "read"),
        ("POST", "write"),
        ("PUT", "write"),
        ("PATCH", "write"),
        ("DELETE", "delete"),
    ],
)
def test_methods_map_to_actions(
    docket: Running, fake: FakeDecisions, method: str, action: str
) -> None:
    async def use(http: httpx.AsyncClient, app: RecordsApp) -> int:
        response = await http.request(method, "/records/r1", headers={"x-user": "dave"})
        return response.status_code

    status, _ = with_middleware(docket.target, use)

    assert status == 200
    request = authorize_request_from_proto(fake.calls("Authorize")[0])
    assert request.action.id == action
    assert request.context["http"]["method"] == method


def test_a_method_without_an_action_is_a_405(docket: Running, fake: FakeDecisions) -> None:
    async def use(http: httpx.AsyncClient, app: RecordsApp) -> int:
        return (await http.options("/records/r1", headers={"x-user": "dave"})).status_code

    status, app = with_middleware(docket.target, use)

    assert status == 405
    assert app.calls == []
    assert fake.received == []


def test_custom_action_and_extra_context(docket: Running, fake: FakeDecisions) -> None:
    async def use(http: httpx.AsyncClient, app: RecordsApp) -> int:
        return (await http.options("/records/r1", headers={"x-user": "dave"})).status_code

    status, _ = with_middleware(
        docket.target,
        use,
        action=lambda scope: "share",
        context=lambda scope: {"mfa": True, "http": "overridden"},
    )

    assert status == 200
    request = authorize_request_from_proto(fake.calls("Authorize")[0])
    assert request.action.id == "share"
    assert request.context["mfa"] is True
    assert request.context["http"]["path"] == "/records/r1"


class Wire:
    """Drives one raw ASGI connection: scripted incoming messages, recorded outgoing."""

    def __init__(self, *incoming: Message) -> None:
        self.incoming = list(incoming)
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return self.incoming.pop(0)

    async def send(self, message: Message) -> None:
        self.sent.append(message)


WEBSOCKET: Scope = {
    "type": "websocket",
    "path": "/records/live",
    "headers": [(b"x-user", b"dave"), (b"host", b"records.test")],
}


def drive(target: str, scope: Scope, wire: Wire, **options: Any) -> RecordsApp:
    app = RecordsApp()

    async def main() -> None:
        middleware = DocketASGIMiddleware(
            app,
            client=AsyncDecisionClient(target, retries=0),
            principal=user_header,
            resource=record_from_path,
            **options,
        )
        try:
            await middleware(scope, wire.receive, wire.send)
        finally:
            await middleware.aclose()

    asyncio.run(main())
    return app


def test_websockets_are_refused_unless_configured(docket: Running, fake: FakeDecisions) -> None:
    wire = Wire({"type": "websocket.connect"})

    app = drive(docket.target, WEBSOCKET, wire)

    assert wire.sent == [{"type": "websocket.close", "code": 1008}]
    assert app.calls == []
    assert fake.received == []


def test_a_configured_websocket_handshake_is_authorized(
    docket: Running, fake: FakeDecisions
) -> None:
    wire = Wire({"type": "websocket.connect"})

    app = drive(docket.target, WEBSOCKET, wire, websocket_action="read")

    assert app.calls == ["websocket /records/live"]
    assert wire.sent[0] == {"type": "websocket.accept"}
    request = authorize_request_from_proto(fake.calls("Authorize")[0])
    assert request.context["http"] == {
        "method": "GET",
        "path": "/records/live",
        "host": "records.test",
    }


def test_lifespan_passes_through_and_unknown_scopes_raise(
    docket: Running, fake: FakeDecisions
) -> None:
    wire = Wire({"type": "lifespan.startup"})

    app = drive(docket.target, {"type": "lifespan"}, wire)

    assert wire.sent == [{"type": "lifespan.startup.complete"}]
    assert app.calls == ["lifespan "]
    with pytest.raises(RuntimeError, match="unsupported ASGI scope type 'webtransport'"):
        drive(docket.target, {"type": "webtransport"}, Wire())
    assert fake.received == []
