"""DocketServerInterceptor guarding an application's gRPC server: allow runs the handler,
deny and an unreachable Docket never do."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from pki import PKI, Pair
from sdk_fakes import (
    CLIENT_SPIFFE_ID,
    FakeDecisions,
    Running,
    mtls_server_credentials,
    serve,
    unused_target,
)

from sdk import (
    AuthorizeRequest,
    ConfigurationError,
    DecisionClient,
    DocketServerInterceptor,
    GrpcCall,
)
from sdk._convert import authorize_request_from_proto

GET = "/demo.Records/Get"
WATCH = "/demo.Records/Watch"
RESOURCE = {"type": "Service", "id": "records"}


@dataclass
class RecordsApp(grpc.GenericRpcHandler):
    """A tiny application service on raw bytes; counts the calls its handlers ran."""

    handled: list[str] = field(default_factory=list)

    def _get(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.handled.append(GET)
        return b"record:" + request

    def _watch(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self.handled.append(WATCH)
        yield b"one"
        yield b"two"

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        if details.method == GET:
            return grpc.unary_unary_rpc_method_handler(self._get)
        if details.method == WATCH:
            return grpc.unary_stream_rpc_method_handler(self._watch)
        return None


@dataclass
class Setup:
    app: RecordsApp
    running: Running
    client: DecisionClient
    credentials: grpc.ChannelCredentials
    """The app's clients present the SPIFFE ID certificate (``client_pair``)."""

    def channel(self, secure: bool) -> grpc.Channel:
        if not secure:
            return grpc.insecure_channel(self.running.target)
        return grpc.secure_channel(self.running.target, self.credentials)


@pytest.fixture
def guarded(
    request: pytest.FixtureRequest, docket: Running, pki: PKI, client_pair: Pair
) -> Iterator[Setup]:
    """The app behind the interceptor; parametrize with (use_mtls, interceptor kwargs, down)."""
    use_mtls, options, down = request.param
    app = RecordsApp()
    client = DecisionClient(unused_target() if down else docket.target, retries=0, timeout=1.0)
    interceptor = DocketServerInterceptor(client, **options)
    running = serve(
        lambda server: server.add_generic_rpc_handlers([app]),
        credentials=mtls_server_credentials(pki) if use_mtls else None,
        interceptors=[interceptor],
    )
    credentials = grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), client_pair.key.read_bytes(), client_pair.cert.read_bytes()
    )
    yield Setup(app, running, client, credentials)
    running.stop()
    client.close()


def raw(data: bytes) -> bytes:
    return data


def get(setup: Setup, secure: bool, metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    with setup.channel(secure) as channel:
        response: bytes = channel.unary_unary(GET, raw, raw)(b"42", timeout=5, metadata=metadata)
        return response


DEFAULT = (True, {"resource": RESOURCE}, False)


@pytest.mark.parametrize("guarded", [DEFAULT], indirect=True)
def test_an_allowed_mtls_call_reaches_the_handler(guarded: Setup, fake: FakeDecisions) -> None:
    assert get(guarded, secure=True) == b"record:42"

    assert guarded.app.handled == [GET]
    (sent,) = fake.calls("Authorize")
    request = authorize_request_from_proto(sent)
    assert request.principal.model_dump() == {"type": "Workload", "id": CLIENT_SPIFFE_ID}
    assert request.action.model_dump() == {"type": "Action", "id": "Get"}
    assert request.resource.model_dump() == RESOURCE


@pytest.mark.parametrize("guarded", [DEFAULT], indirect=True)
def test_a_denied_call_is_permission_denied_and_names_the_decision(
    guarded: Setup, fake: FakeDecisions
) -> None:
    fake.deny_all = True

    with pytest.raises(grpc.RpcError) as caught:
        get(guarded, secure=True)

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "denied by policy (decision dec-1)"
    assert guarded.app.handled == []


@pytest.mark.parametrize("guarded", [DEFAULT], indirect=True)
def test_streaming_methods_are_guarded_too(guarded: Setup, fake: FakeDecisions) -> None:
    with guarded.channel(secure=True) as channel:
        assert list(channel.unary_stream(WATCH, raw, raw)(b"", timeout=5)) == [b"one", b"two"]
        fake.deny_all = True
        with pytest.raises(grpc.RpcError) as caught:
            list(channel.unary_stream(WATCH, raw, raw)(b"", timeout=5))

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert guarded.app.handled == [WATCH]
    assert [authorize_request_from_proto(m).action.id for m in fake.calls("Authorize")] == [
        "Watch",
        "Watch",
    ]


@pytest.mark.parametrize("guarded", [(True, {"resource": RESOURCE}, True)], indirect=True)
def test_an_unreachable_docket_fails_closed_with_unavailable(guarded: Setup) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        get(guarded, secure=True)

    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "authorization service unavailable"
    assert guarded.app.handled == []


@pytest.mark.parametrize("guarded", [(False, {"resource": RESOURCE}, False)], indirect=True)
def test_without_a_peer_identity_the_default_refuses_without_asking(
    guarded: Setup, fake: FakeDecisions
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        get(guarded, secure=False)

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "no authorization decision"
    assert guarded.app.handled == []
    assert fake.received == []


SEEN: list[GrpcCall] = []


def user_from_metadata(call: GrpcCall) -> AuthorizeRequest:
    SEEN.append(call)
    user = dict(call.metadata)["x-user"]
    return AuthorizeRequest.model_validate(
        {"principal": {"type": "User", "id": user}, "action": "read", "resource": RESOURCE}
    )


@pytest.mark.parametrize(
    "guarded",
    [(False, {"mapper": user_from_metadata, "unprotected_methods": [WATCH]}, False)],
    indirect=True,
)
def test_a_custom_mapper_and_an_explicit_bypass(guarded: Setup, fake: FakeDecisions) -> None:
    SEEN.clear()

    assert get(guarded, secure=False, metadata=(("x-user", "alice"),)) == b"record:42"
    with pytest.raises(grpc.RpcError) as caught:
        get(guarded, secure=False, metadata=(("x-user", "mallory"),))
    with guarded.channel(secure=False) as channel:
        assert list(channel.unary_stream(WATCH, raw, raw)(b"", timeout=5)) == [b"one", b"two"]

    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert guarded.app.handled == [GET, WATCH]
    assert [authorize_request_from_proto(m).principal.id for m in fake.calls("Authorize")] == [
        "alice",
        "mallory",
    ]
    assert SEEN[0].method == GET
    assert SEEN[0].method_name == "Get"
    assert SEEN[0].spiffe_id is None
    assert SEEN[0].peer.startswith("ipv4:127.0.0.1:")


def test_the_interceptor_needs_a_resource_or_a_mapper() -> None:
    with (
        DecisionClient(unused_target()) as client,
        pytest.raises(ConfigurationError, match="resource"),
    ):
        DocketServerInterceptor(client)
