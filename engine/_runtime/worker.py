"""One serving process: the gRPC server with every servicer, the admission webhook, the
health and trust watchers, reload and drain (:class:`Worker`), and the CA files it
verifies with (:class:`TrustFiles`).

The gRPC server is asynchronous (grpc.aio) on an event loop in a thread of its own.
Authorize, BatchAuthorize and Check are coroutines there: each evaluates on the loop and
awaits its audit entries' commit, so up to ``max_concurrent_rpcs`` calls wait at once and
the audit writer commits all that are waiting in one transaction and one fsync. The
other RPCs (Place, ReloadBundle, attestation, audit proofs, health) are ordinary
functions that the server runs on a pool of ``grpc_threads`` threads. Past
``max_concurrent_rpcs`` calls in flight, gRPC itself answers RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import ssl
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import structlog
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from attestation import (
    REVOCATIONS_FILE,
    CAError,
    CertificateAuthority,
    ReferenceValues,
    load_revocations,
)
from audit import AuditError, Entry, RelayAddress
from engine._adapters.admission_http import AdmissionServer, HttpServer, server_context
from engine._adapters.attestation_rpc import AttestationServicer
from engine._adapters.audit_rpc import AuditServicer
from engine._adapters.authzen_http import AuthzenApp
from engine._adapters.decisions_rpc import DecisionsServicer
from engine._adapters.ext_authz import AuthorizationServicer
from engine._adapters.request_memo import ENTRIES as REQUEST_MEMO_ENTRIES
from engine._adapters.request_memo import RequestMemo
from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._errors import EngineError, ServeError
from engine._runtime.prepare import (
    Address,
    bundle_key,
    bundle_path,
    bundle_puller,
    http_context,
    load_shadow,
    open_audit,
    open_challenges,
    prepare_ca,
    revision_guard,
    search_key,
    server_credentials,
    trust_roots,
)
from engine._runtime.settings import Settings
from engine._service import tracing
from engine._service.admission import AdmissionController
from engine._service.attest import (
    AttestationService,
    quote_hash_algorithms,
)
from engine._service.audit_entries import shadow_entry
from engine._service.bundle_revisions import pin_entry, refusal_entry
from engine._service.bundle_source import Freshness
from engine._service.bundle_watch import BundleWatcher
from engine._service.decisions import DecisionService, utcnow
from engine._service.metrics import Metrics, metrics_app
from engine._service.posture import PostureReader
from engine._service.revocation_source import STATE_NAME as REVOCATIONS_STATE
from engine._service.revocation_source import confirmed_at as revocations_confirmed_at
from engine._service.shadow import Shadow
from sdk.v1 import (
    attestation_pb2,
    attestation_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    decisions_pb2,
    decisions_pb2_grpc,
)

log = structlog.get_logger("docket.serve")

DECISIONS = decisions_pb2.DESCRIPTOR.services_by_name["Decisions"].full_name
AUTHORIZATION = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
AUDIT = audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name
ATTESTATION = attestation_pb2.DESCRIPTOR.services_by_name["Attestation"].full_name
HEALTH_POLL_SECONDS = 1.0
BUNDLE_HEALTH = "docket.bundle"
"""A health service name that is NOT_SERVING while the bundle is stale (the rest serve)."""
REVOCATIONS_HEALTH = "docket.revocations"
"""NOT_SERVING while the pulled revocation list is stale (``max_revocation_staleness``)."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Larger requests are refused with RESOURCE_EXHAUSTED by gRPC itself."""
DRAIN_SECONDS = 10.0
T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The gRPC server's event loop: uvloop's (libuv, in C: the loop's own scheduling,
    run for every call, costs less there), else asyncio's where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover (a dependency everywhere but Windows)
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _Loop:
    """An event loop running in a thread of its own; :meth:`run` runs a coroutine on it
    from any other thread and waits for its result."""

    def __init__(self) -> None:
        self.loop = new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="docket-grpc-loop", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and wait for it (never call this on the loop)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def settle_heap() -> None:
    """Collect what start-up left, then freeze the rest (the bundle, the schema, grpc's
    and the libraries' objects) out of the cyclic collector's generations. Its full
    collections traverse the oldest generation; with start-up's heap in it, each paused
    every thread of a serving process for 80-90 ms, and every call waiting for a commit
    with it (benchmarks/README.md, "Issue 15: the tail"). Frozen objects are still freed
    by reference counting; only a cycle among them outlives its use. Call once, when the
    process is serving (not in a test process: its heap would stay frozen)."""
    gc.collect()
    gc.freeze()


class _CallThreads(ThreadPoolExecutor):
    """The threads of the RPCs that are not coroutines, each call in a context of its
    own: what one call binds (its decision id in log lines, its span) does not stay on
    its thread for the next."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(contextvars.Context().run, fn, *args, **kwargs)


class TrustFiles:
    """The CA and its signed revocation list as one process applies them, re-read from
    the CA directory when ``ca.json`` or ``revocations.json`` change (:meth:`changed`
    is a ``stat``, cheap enough to poll) or on demand.

    A revocation list that does not verify with the CA's root, or whose version is lower
    than the one in force (an older list put back: a rollback would un-revoke), is
    refused with a logged error and the one in force stays. At start it is an error.
    """

    def __init__(self, directory: Path, ca: CertificateAuthority) -> None:
        self.directory = directory
        self.ca = ca
        try:
            self.revocations, self.document = load_revocations(directory, ca)
        except CAError as exc:
            raise ServeError(f"CA: {exc}") from exc
        self._stamp = self._stat()

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        stamps: list[tuple[int, int, int] | None] = []
        for name in ("ca.json", REVOCATIONS_FILE):
            try:
                found = (self.directory / name).stat()
            except OSError:
                stamps.append(None)
                continue
            stamps.append((found.st_mtime_ns, found.st_size, found.st_ino))
        return tuple(stamps)

    def changed(self) -> bool:
        """Whether the files changed since they were last read successfully."""
        return self._stat() != self._stamp

    def reload(self) -> bool:
        """Re-read the CA and the revocation list; True when both loaded (what did not
        is logged, and the old one stays)."""
        stamp = self._stat()
        try:
            ca = CertificateAuthority.load(self.directory)
            revocations, document = load_revocations(self.directory, ca)
        except CAError as exc:
            log.error("serve.trust_reload_failed", error=str(exc))
            return False
        if revocations.version < self.revocations.version:
            log.error(
                "serve.revocations_rollback_refused",
                error=f"the revocation list in {self.directory} is version "
                f"{revocations.version}, older than version {self.revocations.version} in "
                "force: refused (a rollback would un-revoke)",
            )
            self.ca = ca
            self._stamp = stamp
            return True
        if revocations.version > self.revocations.version:
            log.info(
                "serve.revocations_loaded",
                version=revocations.version,
                revoked=len(revocations.revoked),
            )
        self.ca, self.revocations, self.document = ca, revocations, document
        self._stamp = stamp
        return True

    def jwks(self) -> dict[str, Any]:
        """The JWKS of the CA in force, without retired keys past their window."""
        return self.ca.jwks(utcnow())


class Worker:
    """One serving process: engine, bundle watcher, audit log, gRPC server and health."""

    def __init__(
        self,
        settings: Settings,
        bundle: PolicyBundle,
        metrics: Metrics,
        *,
        reuse_port: bool,
        on_reload: Callable[[], None] | None = None,
        relay: RelayAddress | None = None,
    ) -> None:
        self.settings = settings
        guard = revision_guard(settings)
        # Recorded before anything serves: a revision in force is one a rollback is
        # measured against. A pin it used is audited once the log is open.
        admission = guard.admit(bundle, utcnow())
        self.engine = Engine(bundle, memo_entries=settings.memo_entries)
        self.watcher = BundleWatcher(
            self.engine,
            bundle_path(settings),
            interval=settings.bundle_poll_seconds,
            public_key=bundle_key(settings),
            guard=guard,
            clock=utcnow,
            puller=bundle_puller(settings),
            max_staleness=settings.max_bundle_staleness,
        )
        self.watcher.on_freshness(metrics.bundle_freshness)
        # The CA and its revocation list first: one that does not verify stops the start
        # before anything runs.
        self.ca = prepare_ca(settings)
        self.trust = TrustFiles(settings.ca_dir, self.ca)
        self.audit = open_audit(settings, relay).start()
        if admission.pin is not None:
            self._audit_bundle_event(pin_entry(bundle, admission, now=utcnow()))
        self.watcher.on_pin(
            lambda pinned, why: self._audit_bundle_event(pin_entry(pinned, why, now=utcnow()))
        )
        self.watcher.on_refuse(self._refused)
        self.service = DecisionService(
            self.engine, self.watcher, metrics, self.audit, announce=False
        )
        self.shadow = self._shadow(settings, metrics)
        self.service.shadow = self.shadow
        self._revocations_stale = False
        self._bundle_stale = False
        if settings.revocations_url is not None:
            self.service.revocations = Freshness(
                settings.max_revocation_staleness,
                what="the revocation list",
                setting="max_revocation_staleness",
            )
        self.challenges = open_challenges(settings)
        self.attestation = AttestationService(
            self.ca,
            trust_roots(settings),
            self.challenges,
            self.audit,
            self._reference,
            clock=utcnow,
            svid_ttl=timedelta(seconds=settings.svid_ttl_seconds),
            quote_hashes=quote_hash_algorithms(settings.quote_hashes),
            revocations=self.trust.revocations,
        )
        self.posture = PostureReader(self.ca, settings.jwt_audience, self.trust.revocations)
        self.metrics = metrics
        self.admission: AdmissionServer | None = None
        self.http: HttpServer | None = None
        # Asynchronous: a Watch stream holds no thread (a blocked one would keep the
        # process from exiting after SIGTERM).
        self.health = health.aio.HealthServicer()
        if relay is None:  # else the log's owner observes its commits
            self.audit.writer.observe_commits(metrics.committed)
        self._tracing = settings.otel_endpoint is not None
        if settings.otel_endpoint is not None:
            tracing.start(
                tracing.otlp_exporter(settings.otel_endpoint, settings.otel_protocol),
                service_name=settings.otel_service_name,
                ratio=settings.otel_sampling_ratio,
            )
            log.info(
                "serve.tracing", endpoint=settings.otel_endpoint, protocol=settings.otel_protocol
            )
        self._threads = _CallThreads(settings.grpc_threads, thread_name_prefix="docket-grpc")
        self._loop = _Loop()
        self.server = self._loop.run(self._server(reuse_port, on_reload))
        self._started = False
        self.watcher.on_swap(lambda _bundle: self._set_health())
        self.watcher.on_freshness(self._bundle_freshness)
        self._serving: bool | None = None
        self._stopping = threading.Event()
        self._health_thread = threading.Thread(
            target=self._watch_health, name="docket-health", daemon=True
        )
        self._reload_lock = threading.Lock()
        self._trust_thread = threading.Thread(
            target=self._watch_trust, name="docket-trust", daemon=True
        )

    async def _server(
        self, reuse_port: bool, on_reload: Callable[[], None] | None
    ) -> grpc.aio.Server:
        # Made on the loop it serves on (grpc.aio binds a server to the running loop).
        server = grpc.aio.server(
            migration_thread_pool=self._threads,
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", int(reuse_port)),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        decisions_pb2_grpc.add_DecisionsServicer_to_server(
            DecisionsServicer(
                self.service,
                on_reload,
                self.posture,
                RequestMemo(entries=min(REQUEST_MEMO_ENTRIES, self.settings.memo_entries)),
            ),
            server,
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationServicer(self.service, self.posture, self.settings.trusted_peps), server
        )
        attestation_pb2_grpc.add_AttestationServicer_to_server(
            AttestationServicer(self.attestation, self.metrics), server
        )
        audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(self.service), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                DECISIONS,
                AUTHORIZATION,
                ATTESTATION,
                AUDIT,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        return server

    async def _bind(self, address: Address) -> int:
        credentials = server_credentials(self.settings)
        if credentials is None:
            return self.server.add_insecure_port(str(address))
        return self.server.add_secure_port(str(address), credentials)

    def _shadow(self, settings: Settings, metrics: Metrics) -> Shadow | None:
        candidate = load_shadow(settings)  # ServeError: checked before, so not changed since
        if candidate is None or settings.shadow_bundle is None:
            return None
        shadow = Shadow(
            candidate,
            settings.shadow_bundle,
            metrics=metrics,
            public_key=bundle_key(settings),
            interval=settings.bundle_poll_seconds,
            clock=utcnow,
        )
        shadow.watcher.on_swap(lambda bundle: self._audit_bundle_event(self._shadow_entry(bundle)))
        return shadow

    def _shadow_entry(self, candidate: PolicyBundle) -> Entry:
        live = self.engine.bundle
        return shadow_entry(candidate, live=live.version if live else None, now=utcnow())

    def _refused(self, source: str, problems: list[str]) -> None:
        bundle = self.engine.bundle
        self._audit_bundle_event(
            refusal_entry(
                source,
                problems,
                active_version=bundle.version if bundle is not None else None,
                now=utcnow(),
            )
        )

    def _audit_bundle_event(self, entry: Entry) -> None:
        try:
            self.audit.record([entry])
        except AuditError as exc:  # the bundle decision stands; say loudly it went unrecorded
            log.error("audit.bundle_unrecorded", action=entry.action, error=str(exc))

    def start_admission(self, address: Address, *, reuse_port: bool = False) -> int:
        """Serve the admission webhook (HTTPS) on ``address`` now; returns the port.
        Raises :class:`ServeError`."""
        port = self.bind_admission(address, reuse_port=reuse_port)
        assert self.admission is not None
        self.admission.start()
        return port

    def bind_admission(self, address: Address, *, reuse_port: bool = False) -> int:
        """Bind the admission webhook (HTTPS) on ``address``; :meth:`start` serves it.
        Returns the port. The certificate is the configured one or what
        :func:`admission_tls` wrote. Raises :class:`ServeError`."""
        settings = self.settings
        if settings.admission_cert is not None and settings.admission_key is not None:
            cert, key = settings.admission_cert, settings.admission_key
        else:
            directory = settings.data_dir / "admission"
            cert, key = directory / "server.pem", directory / "server.key"
        try:
            context = server_context(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ServeError(f"admission TLS ({cert}, {key}): {exc}") from exc
        from engine._service.namespaces import namespace_source  # admission only

        try:
            namespaces = namespace_source(
                settings.admission_namespaces,
                cache_seconds=settings.admission_namespace_cache_seconds,
            )
        except ValueError as exc:
            raise ServeError(str(exc)) from exc
        if namespaces is None:
            log.warning(
                "admission.no_namespace_source",
                note="admission_namespaces is none: every namespace is internal and a pod's "
                "own docket.io/classification label decides",
            )
        else:
            log.info("admission.namespaces", source=namespaces.description)
        controller = AdmissionController(
            self.service,
            trust_domain=self.ca.trust_domain,
            cluster=settings.admission_cluster,
            namespaces=namespaces,
        )
        try:
            self.admission = AdmissionServer(
                address.host,
                address.port,
                context,
                controller,
                healthy=lambda: self.service.serving,
                metrics=self.metrics,
                reuse_port=reuse_port,
                max_connections=settings.admission_max_connections,
                request_seconds=settings.admission_request_seconds,
            )
        except OSError as exc:
            raise ServeError(f"cannot serve admission on {address}: {exc.strerror}") from exc
        return self.admission.port

    def bind_http(
        self, address: Address, registry: CollectorRegistry, *, reuse_port: bool = False
    ) -> int:
        """Bind the HTTP listener on ``address``: AuthZEN, ``/metrics`` (of ``registry``)
        and the CA's JWKS and revocation list this process applies; :meth:`start` serves
        it. Returns the port. Raises :class:`ServeError`."""
        documents = metrics_app(registry, self.trust.jwks, lambda: self.trust.document)
        app = AuthzenApp(
            self.service,
            documents,
            base_url=self.settings.authzen_url,
            search_key=search_key(self.settings),
        )
        try:
            self.http = HttpServer(
                address.host,
                address.port,
                app,
                context=http_context(self.settings),
                name="docket-http",
                reuse_port=reuse_port,
                max_connections=self.settings.http_max_connections,
            )
        except OSError as exc:
            raise ServeError(f"cannot serve metrics on {address}: {exc.strerror}") from exc
        return self.http.port

    def _reference(self) -> ReferenceValues:
        bundle = self.engine.bundle
        return bundle.reference if bundle is not None else ReferenceValues()

    def start(self, address: Address) -> int:
        """Bind gRPC and start serving it (and the admission webhook, if bound); returns
        the port (useful with port 0). Bind the webhook first (:meth:`bind_admission`)
        so that a port in use stops the start before anything is recorded. Raises
        :class:`ServeError`."""
        try:
            port = self._loop.run(self._bind(address))
        except RuntimeError as exc:  # grpc's own message only points at its debug log
            raise ServeError(
                f"cannot listen on {address}: the address is in use or not available here"
            ) from exc
        # Every listener is bound: only now is the bundle recorded as loaded (a start
        # that fails to bind leaves the log as it was), before the first call is answered.
        try:
            self.service.announce()
            if self.shadow is not None:  # the decisions that follow are shadowed
                self.audit.record([self._shadow_entry(self.shadow.bundle)])
        except AuditError as exc:
            raise ServeError(f"audit log: {exc}") from exc
        self._loop.run(self.server.start())
        self._started = True
        if self.admission is not None and not self.admission.started:
            self.admission.start()
        if self.http is not None and not self.http.started:
            self.http.start()
        self._set_health()
        self._observe_revocations()
        self.watcher.start()
        if self.shadow is not None:
            self.shadow.watcher.start()
        self._health_thread.start()
        self._trust_thread.start()
        return port

    def _set_health(self) -> None:
        serving = self.service.serving
        if serving != self._serving:
            self._serving = serving
            log.info("serve.health", serving=serving, audit_failure=self.audit.writer.failure)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self._loop.run(self._set_all(status))
        fresh = serving and not self.watcher.stale
        self._loop.run(self.health.set(BUNDLE_HEALTH, SERVING if fresh else NOT_SERVING))
        fresh = serving and not self._revocations_stale
        self._loop.run(self.health.set(REVOCATIONS_HEALTH, SERVING if fresh else NOT_SERVING))

    def _bundle_freshness(self, _age: float | None, stale: bool) -> None:
        # The bundle health follows staleness at once, not at the next health poll: a
        # probe that sees the metric say stale sees the health say so too.
        if self._started and stale != self._bundle_stale:
            self._bundle_stale = stale
            self._set_health()

    async def _set_all(self, status: int) -> None:
        for name in ("", DECISIONS, AUTHORIZATION, ATTESTATION, AUDIT):
            await self.health.set(name, status)

    def _watch_health(self) -> None:
        # The audit log can become unwritable (disk full) at any time, and writable
        # again: an unhealthy server gets no traffic to find that out by, so the watcher
        # probes it. The probe also notices a database deleted, replaced or truncated
        # underneath the server without traffic; that failure is never cleared.
        while not self._stopping.wait(HEALTH_POLL_SECONDS):
            self.audit.writer.probe()
            self._set_health()
            memo = self.engine.memo_stats()
            self.metrics.memo(memo.hits, memo.misses, memo.entries)

    def _watch_trust(self) -> None:
        # `docket ca rotate` and `docket ca revoke` write the CA directory of a running
        # server (and so does the revocation puller): a revocation must count within
        # seconds, without a signal.
        while not self._stopping.wait(self.settings.revocation_poll_seconds):
            if self.trust.changed():
                self.reload_credentials()
            self._observe_revocations()

    def _observe_revocations(self) -> None:
        """Bring the pulled revocation list's age (when the puller last had it confirmed)
        into the decisions, the metrics and the ``docket.revocations`` health."""
        freshness = self.service.revocations
        if freshness is None:
            return
        freshness.confirmed_at = revocations_confirmed_at(
            self.settings.data_dir / REVOCATIONS_STATE
        )
        now = utcnow()
        stale = freshness.stale(now)
        self.metrics.revocations_freshness(freshness.age(now), stale)
        if stale != self._revocations_stale:
            self._revocations_stale = stale
            if stale:
                log.error(
                    "revocations.stale",
                    age_seconds=freshness.age(now),
                    max_staleness_seconds=freshness.max_staleness,
                )
            self._set_health()

    def reload(self) -> None:
        """Reload the bundle, the CA, the revocation list and the EK trust from disk
        (SIGHUP); what does not load is logged and the old one stays."""
        with contextlib.suppress(EngineError):  # logged by the watcher; the old bundle stays
            self.watcher.reload()
        if self.shadow is not None:
            with contextlib.suppress(EngineError):  # likewise: the last good candidate stays
                self.shadow.reload()
        self.reload_credentials()

    def reload_credentials(self) -> None:
        """Reload the CA, its revocation list and the EK trust (see :class:`TrustFiles`)."""
        with self._reload_lock:
            try:
                roots = trust_roots(self.settings)
            except ServeError as exc:
                log.error("serve.trust_reload_failed", error=str(exc))
                return
            if not self.trust.reload():
                return
            ca, revocations = self.trust.ca, self.trust.revocations
            if ca is not self.posture.ca:
                self.attestation.ca = self.posture.ca = ca
            self.attestation.revocations = self.posture.revocations = revocations
            self.attestation.roots = roots
            # A remembered decision rests on postures read under the old CA and list.
            self.engine.forget()
            if self.shadow is not None:
                self.shadow.engine.forget()
        log.info(
            "serve.trust_reloaded",
            ek_roots=len(roots.ek_roots),
            ek_allowlist=len(roots.ek_allowlist),
            jwks=len(ca.jwks(utcnow())["keys"]),
            revocations=revocations.version,
        )

    def stop(self, grace: float = DRAIN_SECONDS) -> None:
        """Stop taking calls, let the ones in flight finish (up to ``grace``), stop."""
        self._stopping.set()
        if self._health_thread.is_alive():  # its last probe may still set the health
            self._health_thread.join()
        self._loop.run(self.health.enter_graceful_shutdown())
        if self.admission is not None:
            self.admission.stop()
        if self.http is not None:
            self.http.stop()
        if self._started:
            # Calls in flight keep being answered (their commits resolve them) for up
            # to `grace` seconds; new ones are refused.
            self._loop.run(self.server.stop(grace))
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.watcher.stop()
        if self.shadow is not None:
            self.shadow.watcher.stop()
        self.challenges.close()
        self.audit.close()
        self._loop.close()
        if self._tracing:
            tracing.stop()  # sends what is left
