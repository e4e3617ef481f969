"""A fake Docket: an in-process gRPC server with a small ``DecisionsServicer`` (or an
``AttestationServicer``) that records what it received and can be told to fail, plus the
standard health service."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from pki import PKI

from sdk import AuthorizeResult
from sdk._convert import authorize_result_to_proto
from sdk.v1 import attestation_pb2, attestation_pb2_grpc, decisions_pb2_grpc
from sdk.v1 import decisions_pb2 as pb

CLIENT_SPIFFE_ID = "spiffe://docket.example/ns/test/sa/client"
"""The SPIFFE ID in the tests' client certificate (fixture ``client_pair``)."""

DENIED_PRINCIPAL = "mallory"
"""The fake denies every request whose principal has this id."""


@dataclass
class Received:
    rpc: str
    message: Any
    spiffe_id: str | None
    at: float


@dataclass
class FakeDecisions(decisions_pb2_grpc.DecisionsServicer):
    """Allows every request except those of ``DENIED_PRINCIPAL`` (or all, with ``deny_all``).

    The first ``unavailable_first`` calls fail with ``first_code`` (UNAVAILABLE unless
    set); ``fail_with`` makes every call fail with that status; ``delay`` holds each call
    that long (until ``release`` is set).
    """

    unavailable_first: int = 0
    first_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    fail_with: tuple[grpc.StatusCode, str] | None = None
    delay: float = 0.0
    deny_all: bool = False
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, rpc: str) -> list[Any]:
        return [r.message for r in self.received if r.rpc == rpc]

    def _enter(self, rpc: str, message: Any, context: grpc.ServicerContext) -> int:
        spiffe: Any = context.auth_context().get("peer_spiffe_id")  # a list, despite the stubs
        with self._lock:
            self.received.append(
                Received(rpc, message, spiffe[0].decode() if spiffe else None, time.monotonic())
            )
            count = len(self.received)
        if count <= self.unavailable_first:
            context.abort(self.first_code, f"warming up (call {count})")
        if self.fail_with is not None:
            context.abort(*self.fail_with)
        if self.delay:
            self.release.wait(self.delay)
        return count

    def _answer(self, request: pb.AuthorizeRequest, number: str) -> pb.AuthorizeResponse:
        denied = self.deny_all or request.principal.id == DENIED_PRINCIPAL
        return authorize_result_to_proto(
            AuthorizeResult(
                decision="deny" if denied else "allow",
                decision_id=f"dec-{number}",
                reasons=("fake-forbid",) if denied else ("fake-permit",),
                bundle_version="sha256:fake",
            )
        )

    def Authorize(
        self, request: pb.AuthorizeRequest, context: grpc.ServicerContext
    ) -> pb.AuthorizeResponse:
        count = self._enter("Authorize", request, context)
        return self._answer(request, str(count))

    def BatchAuthorize(
        self, request: pb.BatchAuthorizeRequest, context: grpc.ServicerContext
    ) -> pb.BatchAuthorizeResponse:
        count = self._enter("BatchAuthorize", request, context)
        return pb.BatchAuthorizeResponse(
            results=[self._answer(r, f"{count}.{i}") for i, r in enumerate(request.requests)]
        )

    def Place(
        self, request: pb.PlacementRequest, context: grpc.ServicerContext
    ) -> pb.PlacementResponse:
        self._enter("Place", request, context)
        return pb.PlacementResponse(
            workload_id=request.workload_id,
            decision_id="dec-place",
            allowed=[
                pb.PlacedSite(
                    site="eu-west-cloud",
                    region="eu-west",
                    jurisdiction="eu",
                    tier="cloud",
                    latency_ms=12.5,
                    cost_per_hour=2.25,
                    within_latency_budget=True,
                    reasons=["placement-baseline"],
                )
            ],
            denied=[
                pb.DeniedSite(
                    site="us-east-edge",
                    reasons=["placement-residency"],
                    errors=[pb.PolicyError(policy_id="p9", message="boom")],
                )
            ],
            bundle_version="sha256:fake",
        )

    def ReloadBundle(
        self, request: pb.ReloadBundleRequest, context: grpc.ServicerContext
    ) -> pb.ReloadBundleResponse:
        self._enter("ReloadBundle", request, context)
        return pb.ReloadBundleResponse(
            bundle_version="sha256:new", changed=True, previous_version="sha256:fake"
        )


@dataclass
class FakeAttestation(attestation_pb2_grpc.AttestationServicer):
    """Answers Challenge and Attest with fixed messages, and records every call by method.

    The first ``unavailable_first`` calls of each method fail with UNAVAILABLE.
    """

    unavailable_first: int = 0
    received: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _enter(self, rpc: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.received.append(rpc)
            count = self.received.count(rpc)
        if count <= self.unavailable_first:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"warming up ({rpc} {count})")

    def Challenge(
        self, request: attestation_pb2.ChallengeRequest, context: grpc.ServicerContext
    ) -> attestation_pb2.ChallengeResponse:
        self._enter("Challenge", context)
        return attestation_pb2.ChallengeResponse(challenge_id="ch-1", nonce=b"n" * 16)

    def Attest(
        self, request: attestation_pb2.AttestRequest, context: grpc.ServicerContext
    ) -> attestation_pb2.AttestResponse:
        self._enter("Attest", context)
        return attestation_pb2.AttestResponse(spiffe_id="spiffe://docket.test/device/ab")


@dataclass
class Running:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(None).wait()


def serve(
    servicers: Callable[[grpc.Server], None],
    *,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> Running:
    """Start a gRPC server on 127.0.0.1, port 0, with the standard health service."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=list(interceptors))
    servicers(server)
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return Running(server, port, checker)


def serve_docket(fake: FakeDecisions, credentials: grpc.ServerCredentials | None = None) -> Running:
    """The fake Docket, reporting SERVING for "" and docket.v1.Decisions."""
    running = serve(
        lambda server: decisions_pb2_grpc.add_DecisionsServicer_to_server(fake, server),
        credentials=credentials,
    )
    for service in ("", "docket.v1.Decisions"):
        running.health.set(service, health_pb2.HealthCheckResponse.SERVING)
    return running


def unused_target() -> str:
    """An address on which nothing listens (a port the OS just handed out and took back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def mtls_server_credentials(pki: PKI) -> grpc.ServerCredentials:
    """Server credentials that demand a client certificate issued by the test CA."""
    return grpc.ssl_server_credentials(
        [(pki.server.key.read_bytes(), pki.server.cert.read_bytes())],
        root_certificates=pki.ca.read_bytes(),
        require_client_auth=True,
    )


def serve_attestation(fake: FakeAttestation) -> Running:
    """The fake Attestation service."""
    return serve(
        lambda server: attestation_pb2_grpc.add_AttestationServicer_to_server(fake, server)
    )
