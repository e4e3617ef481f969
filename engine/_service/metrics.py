"""Prometheus metrics of the decision service, and the HTTP app that serves them.

With several worker processes, each records into files under
``PROMETHEUS_MULTIPROC_DIR`` and every worker serves their sum on the shared HTTP port
(prometheus_client's multiprocess mode; the supervisor's own metrics, the log writer's
entries per commit, are recorded there too: :func:`shared_metrics`); with one process,
the process serves its own. :func:`metrics_app` is that HTTP app (ASGI; the listener,
which also answers AuthZEN, is :mod:`engine._adapters.authzen_http`'s);
:func:`serve_metrics` serves the same documents without AuthZEN from a thread (WSGI),
for tools and tests.

The same listener serves the CA's JWT-SVID keys at ``/.well-known/jwks.json``
(``application/json``, what ``docket ca jwks`` prints), so that Envoy's jwt_authn
(``remote_jwks``) and other verifiers of Docket's JWT-SVIDs fetch them as they fetch an
OIDC provider's or a SPIFFE bundle endpoint's; and the signed revocation list at
``/.well-known/docket-revocations.json`` (a flattened JWS, ES256 by the CA's root: see
``attestation._ca.CertificateAuthority.sign_revocations``), exactly the document of the
CA directory that this process verified and applies, so other replicas and relying
parties fetch it and verify it with the root of ``docket ca bundle``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_asgi_app,
    make_wsgi_app,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client import values as prom_values
from prometheus_client.exposition import ThreadingWSGIServer

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
JWKS_PATH = "/.well-known/jwks.json"
"""Where the HTTP listener serves the CA's JWKS."""
REVOCATIONS_PATH = "/.well-known/docket-revocations.json"
"""Where the HTTP listener serves the CA's signed revocation list."""

# Decisions take ~0.1 ms of evaluation; the buckets resolve that and reach a second.
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Group commit: one entry per commit is a starved log; hundreds is a full one.
_COMMIT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's counters, histograms and gauges, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.decisions = Counter(
            "docket_decisions",
            "Decisions made, by API and result.",
            ["api", "decision"],
            registry=self.registry,
        )
        self.requests = Counter(
            "docket_requests",
            "RPCs answered, by API and gRPC status code.",
            ["api", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "docket_request_duration_seconds",
            "Time to answer an RPC, by API.",
            ["api"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "docket_in_flight_requests",
            "RPCs being answered now, by API.",
            ["api"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.bundle = Gauge(
            "docket_bundle_info",
            "The policy bundle in force (value 1) by version.",
            ["version"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.entries_per_commit = Histogram(
            "docket_audit_entries_per_commit",
            "Audit entries made durable by one commit (one transaction, one fsync).",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.memo_lookups = Counter(
            "docket_decision_memo_lookups",
            "Decisions looked up in the decision memo, by result (hit: not evaluated again; "
            "every decision is recorded either way).",
            ["result"],
            registry=self.registry,
        )
        self.memo_entries = Gauge(
            "docket_decision_memo_entries",
            "Decisions the memo holds now (emptied by a new bundle, CA or revocation list).",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.bundle_age = Gauge(
            "docket_bundle_age_seconds",
            "Seconds since the bundle source (bundle_url) last served the bundle in force.",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.bundle_stale = Gauge(
            "docket_bundle_stale",
            "1 while the pulled bundle is past max_bundle_staleness (permits marked "
            "@fresh_policy then do not allow), else 0.",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.revocations_age = Gauge(
            "docket_revocations_age_seconds",
            "Seconds since revocations_url last served the revocation list in force.",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.revocations_stale = Gauge(
            "docket_revocations_stale",
            "1 while the pulled revocation list is past max_revocation_staleness (permits "
            "marked @fresh_policy then do not allow), else 0.",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.shadow_decisions = Counter(
            "docket_shadow_decisions",
            "Decisions made again by the shadow bundle (shadow_bundle), by how its decision "
            "compared with the live one: agree, flip_allow_to_deny, flip_deny_to_allow, error.",
            ["outcome"],
            registry=self.registry,
        )
        self.shadow_bundle = Gauge(
            "docket_shadow_bundle_info",
            "The shadow (candidate) bundle in use (value 1) by version.",
            ["version"],
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self._memo_seen = (0, 0)
        self._version: str | None = None
        self._shadow_version: str | None = None
        # Labelled children, looked up once: `labels()` costs microseconds per call.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def decided(self, api: str, decision: str, count: int = 1) -> None:
        """Count ``count`` decisions (``allow`` or ``deny``) made through ``api``."""
        self._child(self.decisions, api, decision).inc(count)

    def shadow_compared(self, outcome: str) -> None:
        """Count one decision the shadow bundle made again, by ``outcome``."""
        self._child(self.shadow_decisions, outcome).inc()

    def answered(self, api: str, code: str) -> None:
        """Count one RPC answered with a gRPC status code (by name)."""
        self._child(self.requests, api, code).inc()

    def committed(self, entries: int) -> None:
        """Observe one audit commit of ``entries`` entries."""
        self.entries_per_commit.observe(entries)

    def memo(self, hits: int, misses: int, entries: int) -> None:
        """Bring the memo's counters up to the engine's running totals (called about once
        a second: the decision path itself pays nothing for these metrics)."""
        seen_hits, seen_misses = self._memo_seen
        if hits > seen_hits:
            self._child(self.memo_lookups, "hit").inc(hits - seen_hits)
        if misses > seen_misses:
            self._child(self.memo_lookups, "miss").inc(misses - seen_misses)
        self._memo_seen = (max(hits, seen_hits), max(misses, seen_misses))
        self.memo_entries.set(entries)

    def bundle_freshness(self, age: float | None, stale: bool) -> None:
        """Record the pulled bundle's age (-1 when never confirmed) and staleness."""
        self.bundle_age.set(-1 if age is None else age)
        self.bundle_stale.set(int(stale))

    def revocations_freshness(self, age: float | None, stale: bool) -> None:
        """Record the pulled revocation list's age (-1 when never confirmed) and staleness."""
        self.revocations_age.set(-1 if age is None else age)
        self.revocations_stale.set(int(stale))

    def track(self, api: str) -> _Tracked:
        """Count one RPC as in flight and observe how long it took (a context manager:
        a class, not a generator, for it wraps every call)."""
        return _Tracked(self._child(self.in_flight, api), self._child(self.latency, api))

    def bundle_loaded(self, version: str | None) -> None:
        """Record the bundle version in force (an info metric: 1 for current, 0 for old)."""
        self._version = _info(self.bundle, self._version, version)

    def shadow_loaded(self, version: str) -> None:
        """Record the shadow bundle version in use (1 for current, 0 for old)."""
        self._shadow_version = _info(self.shadow_bundle, self._shadow_version, version)


class _Tracked:
    """One RPC in flight (see :meth:`Metrics.track`)."""

    __slots__ = ("_gauge", "_histogram", "_start")

    def __init__(self, gauge: Any, histogram: Any) -> None:
        self._gauge = gauge
        self._histogram = histogram
        self._start = 0.0

    def __enter__(self) -> None:
        self._gauge.inc()
        self._start = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self._histogram.observe(time.perf_counter() - self._start)
        self._gauge.dec()


def _info(gauge: Gauge, previous: str | None, version: str | None) -> str | None:
    """Set an info gauge's ``version`` to 1 and the ``previous`` one to 0; ``version``."""
    if previous is not None and previous != version:
        gauge.labels(previous).set(0)
    if version is not None:
        gauge.labels(version).set(1)
    return version


class _Quiet(WSGIRequestHandler):
    """No access log line per scrape on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


Jwks = Callable[[], Mapping[str, Any]]
"""Gives the current JWK Set (it changes on SIGHUP after ``docket ca rotate``)."""


Revocations = Callable[[], bytes]
"""Gives the signed revocation list in force (it changes after ``docket ca revoke``)."""


def _well_known(
    path: str | None, jwks: Jwks | None, revocations: Revocations | None
) -> tuple[bytes, int] | None:
    """The body of a key document at ``path`` and its max-age, or None for another path."""
    if jwks is not None and path == JWKS_PATH:
        # Verifiers refetch soon after a rotation; retired keys stay in the set until
        # their last token has expired, so a minute's staleness is safe.
        return json.dumps(jwks(), separators=(",", ":")).encode(), 60
    if revocations is not None and path == REVOCATIONS_PATH:
        # A revocation should reach relying parties within seconds, as it reaches
        # Docket's own checks.
        return revocations(), 5
    return None


def _document_headers(method: str, body: bytes, max_age: int) -> tuple[int, list[tuple[str, str]]]:
    """The status and headers answering ``method`` on a key document."""
    if method not in ("GET", "HEAD"):
        return 405, [("Allow", "GET, HEAD")]
    return 200, [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", f"max-age={max_age}"),
    ]


def _app(
    registry: CollectorRegistry, jwks: Jwks | None, revocations: Revocations | None
) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        found = _well_known(environ.get("PATH_INFO"), jwks, revocations)
        if found is None:
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        body, max_age = found
        method = environ.get("REQUEST_METHOD", "")
        status, headers = _document_headers(method, body, max_age)
        start_response("200 OK" if status == 200 else "405 Method Not Allowed", headers)
        return [body] if status == 200 and method == "GET" else [b""]

    return app


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""


def metrics_app(
    registry: CollectorRegistry, jwks: Jwks | None = None, revocations: Revocations | None = None
) -> Asgi:
    """``/metrics`` (every other path too, as prometheus_client serves it), and, given
    ``jwks`` and ``revocations``, the two key documents, as an ASGI app: what the HTTP
    listener of ``docket serve`` answers besides AuthZEN."""
    metrics = make_asgi_app(registry)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        found = _well_known(scope.get("path"), jwks, revocations)
        if found is None:
            await metrics(scope, receive, send)
            return
        body, max_age = found
        method = scope.get("method", "")
        status, headers = _document_headers(method, body, max_age)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": body if status == 200 and method == "GET" else b"",
            }
        )

    return app


def serve_metrics(
    host: str,
    port: int,
    registry: CollectorRegistry,
    jwks: Jwks | None = None,
    revocations: Revocations | None = None,
) -> WSGIServer:
    """Serve ``/metrics`` (and, given ``jwks``, ``/.well-known/jwks.json``; given
    ``revocations``, ``/.well-known/docket-revocations.json``) in a daemon thread;
    returns the server (``server_port``). Raises ``OSError`` if it cannot bind."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(
        host, port, _app(registry, jwks, revocations), Server, handler_class=_Quiet
    )
    threading.Thread(target=server.serve_forever, name="docket-metrics", daemon=True).start()
    return server


@contextmanager
def shared_metrics(directory: str) -> Iterator[None]:
    """While inside: worker processes started from here record into ``directory``, and
    so do the metrics this process creates (prometheus_client chooses how values are
    kept when it is imported, so the choice is made again here, and undone after)."""
    os.environ[MULTIPROC_ENV] = directory
    kept = prom_values.ValueClass
    prom_values.ValueClass = prom_values.MultiProcessValue()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        prom_values.ValueClass = kept
        os.environ.pop(MULTIPROC_ENV, None)


def multiprocess_registry() -> CollectorRegistry:
    """A registry that sums the metrics files of every worker process."""
    registry = CollectorRegistry()
    prom_multiprocess.MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
    return registry


def worker_exited(pid: int) -> None:
    """Drop the live gauges of a worker that has exited."""
    prom_multiprocess.mark_process_dead(pid, path=os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
