"""The Kubernetes admission webhook over HTTPS: ``POST /validate``, ``POST /mutate`` and
``GET /healthz``, an ASGI app (:class:`AdmissionApp`) served by uvicorn; and the
server that serves it (:class:`HttpServer`), which also serves the plain-HTTP listener
of ``/metrics``, the JWKS and AuthZEN (:mod:`engine._adapters.authzen_http`).

The transport only: bodies go to a :class:`Reviewer` (``engine._service.admission``), which
answers with an HTTP status and a JSON body. uvicorn (httptools) does the HTTP/1.1
framing and keep-alive (the API server reuses connections), asyncio the TLS. Bodies are
limited to 4 MiB and must be JSON; a request without a ``Content-Length`` is a 400, a
path other than the three a 404.

Connections are bounded, so a client cannot exhaust the process: at most
``max_connections`` are served at once (uvicorn's ``limit_concurrency``; past it a request
is answered 503), and a new connection lets an idle keep-alive one go to make room.
Reviews run in a pool of at most ``max_connections`` threads (a review waits for the audit
log's fsync), never on the event loop. Trickling clients are cut off: a connection must
complete its TLS handshake within ``request_seconds`` of being accepted (asyncio's
``ssl_handshake_timeout``, which uvicorn leaves at 60 s: :class:`_EventLoop` sets it), and
each request's headers and body within ``request_seconds`` of its first byte (the first
request: of the handshake's end). uvicorn bounds only the idle time between requests, so
that deadline is :func:`_protocol`'s. An idle keep-alive connection is kept for
:data:`IDLE_SECONDS`. Each accepted connection gets ``TCP_NODELAY``: uvicorn writes a
response's head and body apart, and without it the body waits for the client's delayed
ACK (40 ms). asyncio sets it only on sockets whose ``proto`` is ``IPPROTO_TCP``, which a
connection accepted on our pre-bound socket (``proto`` 0) is not.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from engine._service import tracing
from engine._service.metrics import Metrics

log = structlog.get_logger("docket.admission")

MAX_BODY = 4 * 1024 * 1024
IDLE_SECONDS = 30
QUEUED = 1024
"""The listening socket's backlog: connections the kernel holds until they are accepted."""
MAX_CONNECTIONS = 64
REQUEST_SECONDS = 5.0
ReviewPath = Literal["validate", "mutate"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
_REVIEWS: dict[str, ReviewPath] = {"/validate": "validate", "/mutate": "mutate"}
_SPANS = {path: tracing.Call.http("POST", route) for route, path in _REVIEWS.items()}


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


class AdmissionApp:
    """The webhook as an ASGI 3 app: routes, the body limit, and the review run in
    ``pool`` (a thread: reviews block on the audit log)."""

    def __init__(
        self,
        reviewer: Reviewer,
        *,
        healthy: Callable[[], bool],
        metrics: Metrics,
        pool: ThreadPoolExecutor,
    ) -> None:
        self.reviewer = reviewer
        self.healthy = healthy
        self.metrics = metrics
        self.pool = pool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else reaches an HTTP server
            return
        route, method = scope["path"], scope["method"]
        status, body, close = await self._route(route, method, scope, receive)
        log.debug("admission.http", method=method, path=route, status=int(status))
        await _respond(send, status, body, close=close)

    async def _route(
        self, route: str, method: str, scope: Scope, receive: Receive
    ) -> tuple[int, dict[str, Any] | str, bool]:
        """(status, body, whether the connection closes: its request body went unread)."""
        if method == "GET":
            if route in _REVIEWS:
                return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{route} takes POST"}, False
            if route != "/healthz":
                return HTTPStatus.NOT_FOUND, {"error": f"no such path {route!r}"}, False
            if self.healthy():
                return HTTPStatus.OK, "ok\n", False
            return HTTPStatus.SERVICE_UNAVAILABLE, "not serving\n", False
        if method != "POST":
            return (
                HTTPStatus.METHOD_NOT_ALLOWED,
                {"error": f"{method}: GET /healthz, POST /validate or /mutate"},
                True,
            )
        path = _REVIEWS.get(route)
        if path is None:
            return (
                HTTPStatus.NOT_FOUND,
                {"error": f"no such path {route!r}; POST to /validate or /mutate"},
                True,
            )
        headers = {name.decode("latin-1"): value for name, value in scope["headers"]}
        length_text = headers.get("content-length", b"").decode("latin-1")
        if not length_text.isdigit():
            return HTTPStatus.BAD_REQUEST, {"error": "a Content-Length header is required"}, True
        length = int(length_text)
        if length > MAX_BODY:
            return (
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"the body is {length} bytes; the limit is {MAX_BODY}"},
                True,
            )
        body = await _read_body(receive)
        kind_text = headers.get("content-type", b"application/json").decode("latin-1")
        kind = kind_text.partition(";")[0].strip()
        if kind != "application/json":
            return (
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                {"error": f"Content-Type {kind!r}: an AdmissionReview is application/json"},
                False,
            )
        loop = asyncio.get_running_loop()
        with tracing.server_span(_SPANS[path], lambda: scope["headers"]) as span:
            # In a copy of this request's context: a review's span and log fields are its
            # own, not its thread's (a pool thread would keep them for the next review).
            review = contextvars.copy_context().run
            status, answer = await loop.run_in_executor(self.pool, review, self._review, path, body)
            tracing.annotate(span, **{"http.response.status_code": int(status)})
        return status, answer, False

    def _review(self, path: ReviewPath, body: bytes) -> tuple[int, dict[str, Any]]:
        api = f"admission_{path}"
        with self.metrics.track(api):
            try:
                status, answer = self.reviewer.review(path, body)
            except Exception:  # nothing a client sends may take the server down
                log.exception("admission.failed", path=path)
                status, answer = (
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    {"error": "internal error; the server log has the details"},
                )
            self.metrics.answered(api, str(status))
        return status, answer


async def _read_body(receive: Receive) -> bytes:
    """The request body (the parser holds it to its Content-Length, checked against MAX_BODY)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break  # the client went away; what answers it is never sent
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: dict[str, Any] | str, *, close: bool) -> None:
    if isinstance(body, str):
        data, kind = body.encode(), b"text/plain; charset=utf-8"
    else:
        data, kind = json.dumps(body, separators=(",", ":")).encode(), b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": int(status), "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _protocol(request_seconds: float, max_connections: int) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``TCP_NODELAY``, a deadline on each request, and
    room made for a new connection by letting an idle keep-alive one go."""

    class Guarded(HttpToolsProtocol):
        deadline: asyncio.TimerHandle | None = None
        receiving = False
        """Between a request's first byte and its last."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self.connections) > max_connections:
                self._let_idle_go()
            self._arm()  # the first request's deadline counts from the handshake's end

        def data_received(self, data: bytes) -> None:
            if self.deadline is None and not self.receiving:
                self._arm()  # the first byte of the next request
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.receiving = True
            if self.deadline is None:  # pipelined after one that completed
                self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self.receiving = False
            self._disarm()  # the whole request is in

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self.deadline = self.loop.call_later(request_seconds, self._expired)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expired(self) -> None:
            self.deadline = None
            log.info("admission.request_timeout", client=str(self.client))
            self.connections.discard(self)
            self.transport.abort()  # no TLS close_notify to wait on from a trickler

        def _let_idle_go(self) -> None:
            for other in list(self.connections):
                if not isinstance(other, HttpToolsProtocol) or other is self:
                    continue
                if other.timeout_keep_alive_task is not None:  # idle between requests
                    self.connections.discard(other)  # its slot is free now, not once closed
                    other.timeout_keep_alive_handler()
                    return

    return Guarded


class _EventLoop(asyncio.SelectorEventLoop):
    """An event loop whose TLS servers give a handshake, and a closing client's
    close_notify, ``seconds`` (uvicorn passes neither, and asyncio's defaults are 60 s
    and 30 s: a trickling handshake would hold its connection that long)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.seconds)
            kwargs.setdefault("ssl_shutdown_timeout", self.seconds)
        return await super().create_server(*args, **kwargs)


class _UvicornLog(logging.Handler):
    """uvicorn's own warnings and errors (a 503 at the limit, a request httptools refused, an
    app error), as structured log lines beside Docket's."""

    def emit(self, record: logging.LogRecord) -> None:
        log.log(record.levelno, "admission.server", message=record.getMessage())


def _route_uvicorn_log() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(handler, _UvicornLog) for handler in logger.handlers):
        logger.addHandler(_UvicornLog())
    logger.setLevel(logging.WARNING)  # not its "Started server process" lines
    logger.propagate = False


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A listening TCP socket on (host, port), SO_REUSEPORT when workers share the port.
    Raises OSError."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(QUEUED)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """An ASGI app on one address: the socket bound and listening when this returns,
    served by uvicorn from a thread of its own (its own event loop) once :meth:`start`
    runs; :meth:`stop` stops it. HTTPS with ``context``, plain HTTP without. Connections,
    request deadlines and keep-alive are bounded as the module docstring says. Raises
    OSError when the address cannot be bound."""

    def __init__(
        self,
        host: str,
        port: int,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        context: ssl.SSLContext | None = None,
        name: str = "docket-http",
        reuse_port: bool = False,
        max_connections: int = MAX_CONNECTIONS,
        request_seconds: float = REQUEST_SECONDS,
    ) -> None:
        self._socket = _listen(host, port, reuse_port=reuse_port)
        self._request_seconds = request_seconds
        _route_uvicorn_log()
        config = uvicorn.Config(
            app,
            http=_protocol(request_seconds, max_connections),
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            headers=[("server", "docket")],
            # The request's own connection counts: max_connections + 1 serves max_connections.
            limit_concurrency=max_connections + 1,
            backlog=QUEUED,
            timeout_keep_alive=IDLE_SECONDS,
            timeout_graceful_shutdown=math.ceil(request_seconds),
            ssl_context_factory=None if context is None else lambda _config, _default: context,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on (the one chosen, for port 0)."""
        return int(self._socket.getsockname()[1])

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran."""
        return self._thread.ident is not None

    def _serve(self) -> None:
        with asyncio.Runner(loop_factory=lambda: _EventLoop(self._request_seconds)) as runner:
            runner.run(self._server.serve(sockets=[self._socket]))

    def start(self) -> HttpServer:
        """Serve on the bound socket (in a thread); returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and close the socket; requests in flight finish (up to
        ``request_seconds``)."""
        if self.started:
            self._server.should_exit = True
            self._thread.join(self._request_seconds + 5)
        self._socket.close()


class AdmissionServer(HttpServer):
    """The webhook (:class:`AdmissionApp`) over HTTPS on one address, its reviews on a
    pool of ``max_connections`` threads. Raises OSError when the address cannot be
    bound."""

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
        self._pool = ThreadPoolExecutor(
            max_connections, thread_name_prefix=f"docket-admission-{port}-review"
        )
        app = AdmissionApp(reviewer, healthy=healthy, metrics=metrics, pool=self._pool)
        try:
            super().__init__(
                host,
                port,
                app,
                context=context,
                name="docket-admission",
                reuse_port=reuse_port,
                max_connections=max_connections,
                request_seconds=request_seconds,
            )
        except OSError:
            self._pool.shutdown(wait=False)
            raise

    def stop(self) -> None:
        """Stop serving (see :meth:`HttpServer.stop`), then the review pool."""
        super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
