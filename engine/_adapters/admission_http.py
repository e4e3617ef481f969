"""The Kubernetes admission webhook over HTTPS: ``POST /validate``, ``POST /mutate`` and
``GET /healthz``.

The transport only: bodies go to a :class:`Reviewer` (``engine._service.admission``), which
answers with an HTTP status and a JSON body. HTTP/1.1 with keep-alive (the API server
reuses connections). Bodies are limited to 4 MiB and must be JSON; a missing or wrong
``Content-Length`` is a 400, a path other than the three a 404.

Connections are bounded, so a client cannot exhaust the process's threads: at most
``max_connections`` are served at once, each by a thread of a pool (the TLS handshake
there too: a slow client never holds up the accept loop); the accept loop queues up to
:data:`QUEUED` more and closes any beyond. A connection must complete its TLS handshake,
headers and body within ``request_seconds`` of being accepted (time spent queued
counts; one that waited past that gets :data:`GRACE_FRACTION` of it once a thread takes
it: enough for a client that sent its request at once, not for one that trickles), and
each later request on it within ``request_seconds`` of its first byte; a client that
trickles is cut off. An idle
keep-alive connection is kept for :data:`IDLE_SECONDS`, but let go at once when other
connections are waiting for a thread.
"""

from __future__ import annotations

import io
import json
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from engine._service.metrics import Metrics

log = structlog.get_logger("docket.admission")

MAX_BODY = 4 * 1024 * 1024
IDLE_SECONDS = 30.0
QUEUED = 1024
"""Accepted connections that may wait for a thread; past this they are closed at once."""
MAX_CONNECTIONS = 64
REQUEST_SECONDS = 5.0
GRACE_FRACTION = 0.2
"""A connection that waited in the queue past its deadline still gets this fraction of
``request_seconds`` once a thread takes it."""
_IDLE_STEP = 0.25
ReviewPath = Literal["validate", "mutate"]


class Reviewer(Protocol):
    """What answers AdmissionReviews (``engine._service.admission.AdmissionController``)."""

    def review(self, path: ReviewPath, body: bytes) -> tuple[int, dict[str, Any]]: ...


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context with the certificate chain and key at these paths.
    Raises OSError or ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


_Queued = tuple[ssl.SSLSocket, Any, float]


class _Server(HTTPServer):
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext,
        *,
        reuse_port: bool,
        reviewer: Reviewer,
        healthy: Callable[[], bool],
        metrics: Metrics,
        max_connections: int = MAX_CONNECTIONS,
        request_seconds: float = REQUEST_SECONDS,
    ) -> None:
        self.context = context
        self.reuse_port = reuse_port
        self.reviewer = reviewer
        self.healthy = healthy
        self.metrics = metrics
        self.max_connections = max_connections
        self.request_seconds = request_seconds
        self.waiting: queue.Queue[_Queued | None] = queue.Queue(QUEUED)
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self.local = threading.local()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Hand the connection to the pool; start a worker while there are fewer than
        # max_connections and more connections waiting than idle workers. Never blocks
        # the accept loop.
        try:
            self.waiting.put_nowait((request, client_address, time.monotonic()))
        except queue.Full:
            log.warning("admission.connections_full", queued=QUEUED)
            self.shutdown_request(request)
            return
        with self._lock:
            if self.waiting.qsize() > self._idle and len(self._workers) < self.max_connections:
                worker = threading.Thread(
                    target=self._work,
                    name=f"docket-admission-{self.server_address[1]}-{len(self._workers)}",
                    daemon=True,
                )
                self._workers.append(worker)
                worker.start()

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self.waiting.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                return
            request, address, accepted = item
            # The deadline counts from the accept, so a queue of tricklers drains fast;
            # but one that waited past it still gets a short grace, in which a real
            # client (its ClientHello already sent) completes its handshake and request.
            grace = time.monotonic() + self.request_seconds * GRACE_FRACTION
            self.local.deadline = max(accepted + self.request_seconds, grace)
            try:
                self.finish_request(request, address)
            except Exception:
                self.handle_error(request, address)
            finally:
                self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        while True:  # connections still queued are closed unanswered
            try:
                item = self.waiting.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.shutdown_request(item[0])
        with self._lock:
            workers = len(self._workers)
        for _ in range(workers):
            try:
                self.waiting.put_nowait(None)
            except queue.Full:
                break

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        # The handshake happens on the first read, in the connection's own thread.
        wrapped = self.context.wrap_socket(
            connection, server_side=True, do_handshake_on_connect=False
        )
        return wrapped, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-handshake or mid-request is not a server error.
        log.debug("admission.connection_error", client=str(client_address))


class _DeadlineReader(io.RawIOBase):
    """The connection's bytes, read under the handler's deadline (``deadline`` None: the
    connection is idle between requests, and the first byte starts a new deadline)."""

    def __init__(self, handler: _Handler) -> None:
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        handler = self.handler
        sock: ssl.SSLSocket = handler.connection
        if handler.deadline is None:
            if not self._wait_idle(sock):
                return 0  # as if the client closed: the connection ends quietly
            handler.deadline = time.monotonic() + handler.server.request_seconds
        remaining = handler.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive within its deadline")
        sock.settimeout(remaining)
        return sock.recv_into(buffer)

    def _wait_idle(self, sock: ssl.SSLSocket) -> bool:
        """Wait for the next request's first byte; False when the connection should go
        (idle too long, or other connections wait for a thread)."""
        until = time.monotonic() + IDLE_SECONDS
        server = self.handler.server
        while sock.pending() == 0:
            left = until - time.monotonic()
            if left <= 0 or not server.waiting.empty():
                return False
            readable, _, _ = select.select([sock], [], [], min(_IDLE_STEP, left))
            if readable:
                break
        return True


class _Writer(io.BufferedIOBase):
    """Writes go out whole (sendall), under the socket's timeout."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sock.sendall(data)
        return len(data)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY a response written in two sends waits for the client's
    # delayed ACK of the first (40 ms on Linux); _send writes one, but error pages
    # from the stdlib still write two.
    disable_nagle_algorithm = True
    server_version = "docket"
    sys_version = ""
    server: _Server
    connection: ssl.SSLSocket
    deadline: float | None

    def setup(self) -> None:
        # Handshake, headers and body of the first request share one deadline, counted
        # from when the connection was accepted.
        self.deadline = float(self.server.local.deadline)
        self.connection = self.request
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the connection waited past its deadline")
        self.connection.settimeout(remaining)
        self.connection.do_handshake()
        self.rfile = io.BufferedReader(_DeadlineReader(self))
        self.wfile = _Writer(self.connection)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.deadline = None  # idle until the next request's first byte
            self.handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("admission.http", message=format % args, client=self.client_address[0])

    def _send(self, status: int, body: dict[str, Any] | str) -> None:
        if isinstance(body, str):
            data, kind = body.encode(), "text/plain; charset=utf-8"
        else:
            data, kind = json.dumps(body, separators=(",", ":")).encode(), "application/json"
        # Status line, headers and body in one TLS record and one send (send_response
        # and end_headers would send the headers on their own first).
        self.log_request(status)
        head = [
            f"{self.protocol_version} {status} {HTTPStatus(status).phrase}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {kind}",
            f"Content-Length: {len(data)}",
        ]
        if self.close_connection:
            head.append("Connection: close")
        self.connection.settimeout(self.server.request_seconds)  # a client that will not read
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)

    def do_GET(self) -> None:
        route = self.path.partition("?")[0]
        if route in ("/validate", "/mutate"):
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{route} takes POST"})
            return
        if route != "/healthz":
            self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {route!r}"})
            return
        if self.server.healthy():
            self._send(HTTPStatus.OK, "ok\n")
        else:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, "not serving\n")

    def do_POST(self) -> None:
        route = self.path.partition("?")[0]
        if route not in ("/validate", "/mutate"):
            self.close_connection = True  # its body is not read: the connection is spent
            self._send(
                HTTPStatus.NOT_FOUND,
                {"error": f"no such path {route!r}; POST to /validate or /mutate"},
            )
            return
        path: ReviewPath = "validate" if route == "/validate" else "mutate"
        api = f"admission_{path}"
        metrics = self.server.metrics
        with metrics.track(api):
            status, body = self._review(path)
            metrics.answered(api, str(status))
        self._send(status, body)

    def _review(self, path: ReviewPath) -> tuple[int, dict[str, Any]]:
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self.close_connection = True
            return HTTPStatus.BAD_REQUEST, {"error": "a Content-Length header is required"}
        length = int(length_text)
        if length > MAX_BODY:
            self.close_connection = True
            return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {
                "error": f"the body is {length} bytes; the limit is {MAX_BODY}"
            }
        body = self.rfile.read(length)
        kind = self.headers.get("Content-Type", "application/json").partition(";")[0].strip()
        if kind != "application/json":
            return HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {
                "error": f"Content-Type {kind!r}: an AdmissionReview is application/json"
            }
        try:
            return self.server.reviewer.review(path, body)
        except Exception:  # nothing a client sends may take the server down
            log.exception("admission.failed", path=path)
            return HTTPStatus.INTERNAL_SERVER_ERROR, {
                "error": "internal error; the server log has the details"
            }


class AdmissionServer:
    """The webhook on one address, served from a thread and a pool of at most
    ``max_connections`` connection threads; :meth:`stop` stops it."""

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext,
        reviewer: Reviewer,
        *,
        healthy: Callable[[], bool],
        metrics: Metrics,
        reuse_port: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        request_seconds: float = REQUEST_SECONDS,
    ) -> None:
        self._server = _Server(
            (host, port),
            context,
            reuse_port=reuse_port,
            reviewer=reviewer,
            healthy=healthy,
            metrics=metrics,
            max_connections=max_connections,
            request_seconds=request_seconds,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="docket-admission", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen, for port 0)."""
        return int(self._server.server_address[1])

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran."""
        return self._thread.is_alive() or self._thread.ident is not None

    def start(self) -> AdmissionServer:
        """Serve on the bound socket (in a thread); returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close the socket (connections in flight finish)."""
        if self.started:  # shutdown() waits for a serve loop that never ran otherwise
            self._server.shutdown()
        self._server.server_close()
