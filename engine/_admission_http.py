"""The Kubernetes admission webhook over HTTPS: ``POST /validate``, ``POST /mutate`` and
``GET /healthz``.

The transport only: bodies go to a :class:`Reviewer` (``engine._admission``), which
answers with an HTTP status and a JSON body. HTTP/1.1 with keep-alive (the API server
reuses connections), one thread per connection, the TLS handshake in that thread (a slow
client never holds up the accept loop). Bodies are limited to 4 MiB and must be JSON;
a missing or wrong ``Content-Length`` is a 400, a path other than the three a 404.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from engine._metrics import Metrics

log = structlog.get_logger("docket.admission")

MAX_BODY = 4 * 1024 * 1024
IDLE_SECONDS = 30.0
ReviewPath = Literal["validate", "mutate"]


class Reviewer(Protocol):
    """What answers AdmissionReviews (``engine._admission.AdmissionController``)."""

    def review(self, path: ReviewPath, body: bytes) -> tuple[int, dict[str, Any]]: ...


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context with the certificate chain and key at these paths.
    Raises OSError or ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        context: ssl.SSLContext,
        *,
        reuse_port: bool,
        reviewer: Reviewer,
        healthy: Callable[[], bool],
        metrics: Metrics,
    ) -> None:
        self.context = context
        self.reuse_port = reuse_port
        self.reviewer = reviewer
        self.healthy = healthy
        self.metrics = metrics
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY a response written in two sends waits for the client's
    # delayed ACK of the first (40 ms on Linux); _send writes one, but error pages
    # from the stdlib still write two.
    disable_nagle_algorithm = True
    server_version = "docket"
    sys_version = ""
    timeout = IDLE_SECONDS
    server: _Server

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
    """The webhook on one address, served from a thread; :meth:`stop` stops it."""

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
    ) -> None:
        self._server = _Server(
            (host, port),
            context,
            reuse_port=reuse_port,
            reviewer=reviewer,
            healthy=healthy,
            metrics=metrics,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="docket-admission", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen, for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> AdmissionServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close the socket (connections in flight finish)."""
        self._server.shutdown()
        self._server.server_close()
