"""``docket serve``: the gRPC server, its HTTP endpoint (``/metrics``, the CA's
``/.well-known/jwks.json`` and ``/.well-known/docket-revocations.json``), signals and
worker processes.

Each process watches the CA directory (every ``revocation_poll_seconds``, and at once on
SIGHUP): after ``docket ca rotate`` it issues with the new key and refuses what the
retired one signs later, after ``docket ca revoke`` it refuses the revoked credentials
and devices. A revocation list that does not verify, or is older than the one in force
(a rollback), is logged and refused; the one in force stays.

One process by default. With ``workers > 1`` a supervisor starts that many worker
processes that share the gRPC port (SO_REUSEPORT); the supervisor serves the summed
metrics and the JWKS, forwards SIGHUP (reload) and SIGTERM (drain, then exit) to the
workers and restarts a worker that dies. ``trusted_peps`` (ext_authz enforcement points
that may name a Check's subject) needs mTLS: without ``tls_client_ca`` the server does not
start.

The bundle is checked against the revisions this replica accepted
(``<data_dir>/bundle-state.json``, :mod:`engine._service.bundle_revisions`) before anything listens,
and each worker records it; a bundle refused on reload, and one let in by an operator's
pin, is written to the audit log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import multiprocessing
import os
import queue
import shutil
import signal
import ssl
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIServer

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
    ChallengeStore,
    ReferenceValues,
    StoreUnavailable,
    TrustRoots,
    load_revocations,
)
from audit import AuditError, AuditLog, Entry
from audit._kept import KEPT_NAME
from audit.note import VerifierKey
from engine._adapters.admission_http import AdmissionServer, server_context
from engine._adapters.attestation_rpc import AttestationServicer
from engine._adapters.audit_rpc import AuditServicer
from engine._adapters.decisions_rpc import DecisionsServicer
from engine._adapters.ext_authz import AuthorizationServicer
from engine._core.bundle import PolicyBundle
from engine._core.evaluate import Engine
from engine._core.signing import load_verifier
from engine._errors import EngineError, ServeError, TrustConfigError
from engine._runtime.logging_setup import configure_logging
from engine._runtime.settings import Settings
from engine._service.admission import AdmissionController
from engine._service.attest import (
    AttestationService,
    load_trust_roots,
    quote_hash_algorithms,
)
from engine._service.bundle_revisions import RevisionGuard, pin_entry, refusal_entry
from engine._service.bundle_watch import BundleWatcher
from engine._service.decisions import DecisionService, utcnow
from engine._service.metrics import (
    MULTIPROC_ENV,
    Metrics,
    multiprocess_registry,
    serve_metrics,
    worker_exited,
)
from engine._service.posture import PostureReader
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
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Larger requests are refused with RESOURCE_EXHAUSTED by gRPC itself."""
DRAIN_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Address:
    """A ``HOST:PORT`` to listen on."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> Address:
        """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6). Raises :class:`ServeError`."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ServeError(f"{what} address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:50051")
        return cls(host.strip("[]"), int(port))

    @property
    def loopback(self) -> bool:
        """True for localhost and loopback IPs."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Listening:
    """Where a started server listens."""

    grpc: Address
    metrics: Address
    tls: str  # "plaintext", "TLS" or "mTLS"
    bundle: PolicyBundle | None
    workers: int
    audit: str = ""
    """The audit database (password hidden)."""
    audit_key: str = ""
    """The verifier key of the audit log's checkpoints (``name+id+base64``)."""
    attestation: str = ""
    """What attestation trusts: the CA's trust domain, EK roots, reference classes."""
    admission: Address | None = None
    """Where the admission webhook listens (HTTPS), if it does."""
    admission_cert: str = ""
    """The webhook's certificate file."""


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings, or None for plaintext. Raises :class:`ServeError`."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ServeError("tls_client_ca needs tls_cert and tls_key (mTLS is TLS first)")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ServeError("TLS needs both tls_cert and tls_key")
    try:
        cert = settings.tls_cert.read_bytes()
        key = settings.tls_key.read_bytes()
        client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    except OSError as exc:
        raise ServeError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _tls_mode(settings: Settings) -> str:
    if settings.tls_cert is None:
        return "plaintext"
    return "mTLS" if settings.tls_client_ca is not None else "TLS"


def admission_address(settings: Settings) -> Address | None:
    """The webhook's address, or None when ``admission`` is ``off``. Raises ServeError."""
    if settings.admission.strip().lower() == "off":
        return None
    return Address.parse(settings.admission, "admission")


def admission_tls(settings: Settings, ca: CertificateAuthority) -> tuple[Path, Path]:
    """The webhook's certificate and key files: the configured ones, else one issued now
    by the CA for localhost, 127.0.0.1, ::1 and the listening host, written (key 0600)
    to ``<data_dir>/admission/``. Raises :class:`ServeError`."""
    if (settings.admission_cert is None) != (settings.admission_key is None):
        raise ServeError("admission_cert and admission_key go together: give both or neither")
    if settings.admission_cert is not None and settings.admission_key is not None:
        return settings.admission_cert, settings.admission_key
    address = admission_address(settings)
    names = ["localhost", "127.0.0.1", "::1"]
    wildcard = ("0.0.0.0", "::")  # noqa: S104  (names, not binds: they get no SAN)
    if address is not None and address.host not in (*wildcard, *names):
        names.append(address.host)
    try:
        credential = ca.issue_server_cert(names, now=utcnow())
    except CAError as exc:
        raise ServeError(f"admission certificate: {exc}") from exc
    directory = settings.data_dir / "admission"
    cert, key = directory / "server.pem", directory / "server.key"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(credential.key_pem())
        cert.write_bytes(credential.chain_pem())
    except OSError as exc:
        raise ServeError(f"cannot write the admission certificate to {directory}: {exc}") from exc
    return cert, key


def check_settings(settings: Settings) -> tuple[Address, Address]:
    """The gRPC and metrics addresses, after the checks that keep a server safe to start.

    Raises :class:`ServeError`: plaintext off loopback without ``insecure_plaintext``;
    ``trusted_peps`` without mTLS (nobody could be authenticated as one).
    """
    grpc_address = Address.parse(settings.grpc, "gRPC")
    metrics_address = Address.parse(settings.metrics, "metrics")
    admission_address(settings)
    server_credentials(settings)
    if settings.trusted_peps and settings.tls_client_ca is None:
        raise ServeError(
            "trusted_peps needs mTLS: an enforcement point is trusted only when its client "
            "certificate says who it is; configure tls_cert, tls_key and tls_client_ca"
        )
    if settings.tls_cert is None and not grpc_address.loopback and not settings.insecure_plaintext:
        raise ServeError(
            f"refusing plaintext gRPC on {grpc_address}, which is not loopback: configure "
            "tls_cert and tls_key (and tls_client_ca for mTLS), or set insecure_plaintext"
        )
    return grpc_address, metrics_address


def _bundle_key(settings: Settings) -> VerifierKey | None:
    path = settings.bundle_public_key
    return load_verifier(path) if path else None


def revision_guard(settings: Settings) -> RevisionGuard:
    """The anti-rollback state of this replica (``<data_dir>/bundle-state.json``)."""
    return RevisionGuard(settings.data_dir, signed=settings.bundle_public_key is not None)


def load_bundle(settings: Settings) -> PolicyBundle:
    """The configured bundle, checked against the revisions this replica accepted (not
    yet recorded: a worker does that). Raises :class:`~engine.BundleError`."""
    bundle = PolicyBundle.load(settings.bundle, public_key=_bundle_key(settings))
    revision_guard(settings).check(bundle)
    return bundle


def open_audit(settings: Settings) -> AuditLog:
    """The audit log the settings name (created, with its signing key, on first use),
    keeping its latest checkpoint in ``<data-dir>/audit-checkpoint`` too. A log that
    does not contain the checkpoint kept there (an older or another database) is
    refused. Raises :class:`ServeError` with one line saying what is wrong."""
    try:
        audit = AuditLog.open(
            settings.database_url,
            keys=settings.audit_keys_dir,
            checkpoint_every=settings.audit_checkpoint_every,
            checkpoint_interval=settings.audit_checkpoint_seconds,
            max_queue=settings.audit_queue,
            kept=settings.data_dir / KEPT_NAME,
        )
    except (AuditError, OSError) as exc:
        raise ServeError(f"audit log: {exc}") from exc
    try:
        audit.check_kept()
    except AuditError as exc:
        audit.store.close()
        raise ServeError(f"audit log: {exc}") from exc
    return audit


def prepare_ca(settings: Settings) -> CertificateAuthority:
    """The CA under the data directory, created on first start. Raises :class:`ServeError`."""
    directory = settings.ca_dir
    try:
        if (directory / "ca.json").exists():
            return CertificateAuthority.load(directory)
        ca = CertificateAuthority.init(directory, settings.trust_domain, utcnow())
    except CAError as exc:
        raise ServeError(f"CA: {exc}") from exc
    log.info("serve.ca_created", directory=str(directory), trust_domain=ca.trust_domain)
    return ca


def trust_roots(settings: Settings) -> TrustRoots:
    """The EK roots and allow-list the settings name. Raises :class:`ServeError`."""
    try:
        return load_trust_roots(settings.ek_roots_dir, settings.ek_allowlist_file)
    except TrustConfigError as exc:
        raise ServeError(str(exc)) from exc


def open_challenges(settings: Settings) -> ChallengeStore:
    """The challenge store (in the audit database). Raises :class:`ServeError`."""
    try:
        return ChallengeStore(settings.database_url)
    except StoreUnavailable as exc:
        raise ServeError(f"challenge store: {exc}") from exc


def describe_attestation(
    ca: CertificateAuthority, roots: TrustRoots, reference: ReferenceValues
) -> str:
    """One line on what attestation trusts, for the start-up banner."""
    classes = ", ".join(c.name for c in reference.classes) or "none: no device can attest"
    trusted = f"{len(roots.ek_roots)} EK roots, {len(roots.ek_allowlist)} allow-listed EKs"
    if not roots.ek_roots and not roots.ek_allowlist:
        trusted += " (no device is trusted)"
    return f"trust domain {ca.trust_domain}; {trusted}; reference classes: {classes}"


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
    ) -> None:
        self.settings = settings
        guard = revision_guard(settings)
        # Recorded before anything serves: a revision in force is one a rollback is
        # measured against. A pin it used is audited once the log is open.
        admission = guard.admit(bundle, utcnow())
        self.engine = Engine(bundle)
        self.watcher = BundleWatcher(
            self.engine,
            settings.bundle,
            interval=settings.bundle_poll_seconds,
            public_key=_bundle_key(settings),
            guard=guard,
            clock=utcnow,
        )
        # The CA and its revocation list first: one that does not verify stops the start
        # before anything runs.
        self.ca = prepare_ca(settings)
        self.trust = TrustFiles(settings.ca_dir, self.ca)
        self.audit = open_audit(settings).start()
        if admission.pin is not None:
            self._audit_bundle_event(pin_entry(bundle, admission, now=utcnow()))
        self.watcher.on_pin(
            lambda pinned, why: self._audit_bundle_event(pin_entry(pinned, why, now=utcnow()))
        )
        self.watcher.on_refuse(self._refused)
        self.service = DecisionService(
            self.engine, self.watcher, metrics, self.audit, announce=False
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
        self.posture = posture = PostureReader(
            self.ca, settings.jwt_audience, self.trust.revocations
        )
        self.metrics = metrics
        self.admission: AdmissionServer | None = None
        self.health = health.HealthServicer()
        self.server = grpc.server(
            ThreadPoolExecutor(settings.grpc_threads, thread_name_prefix="docket-grpc"),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.so_reuseport", int(reuse_port)),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        decisions_pb2_grpc.add_DecisionsServicer_to_server(
            DecisionsServicer(self.service, on_reload, posture), self.server
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationServicer(self.service, posture, settings.trusted_peps), self.server
        )
        attestation_pb2_grpc.add_AttestationServicer_to_server(
            AttestationServicer(self.attestation, metrics), self.server
        )
        audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(self.service), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (
                DECISIONS,
                AUTHORIZATION,
                ATTESTATION,
                AUDIT,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            self.server,
        )
        self.watcher.on_swap(lambda _bundle: self._set_health())
        self._serving: bool | None = None
        self._stopping = threading.Event()
        self._health_thread = threading.Thread(
            target=self._watch_health, name="docket-health", daemon=True
        )
        self._reload_lock = threading.Lock()
        self._trust_thread = threading.Thread(
            target=self._watch_trust, name="docket-trust", daemon=True
        )

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

    def _reference(self) -> ReferenceValues:
        bundle = self.engine.bundle
        return bundle.reference if bundle is not None else ReferenceValues()

    def start(self, address: Address) -> int:
        """Bind gRPC and start serving it (and the admission webhook, if bound); returns
        the port (useful with port 0). Bind the webhook first (:meth:`bind_admission`)
        so that a port in use stops the start before anything is recorded. Raises
        :class:`ServeError`."""
        credentials = server_credentials(self.settings)
        try:
            if credentials is None:
                port = self.server.add_insecure_port(str(address))
            else:
                port = self.server.add_secure_port(str(address), credentials)
        except RuntimeError as exc:  # grpc's own message only points at its debug log
            raise ServeError(
                f"cannot listen on {address}: the address is in use or not available here"
            ) from exc
        # Every listener is bound: only now is the bundle recorded as loaded (a start
        # that fails to bind leaves the log as it was), before the first call is answered.
        try:
            self.service.announce()
        except AuditError as exc:
            raise ServeError(f"audit log: {exc}") from exc
        self.server.start()
        if self.admission is not None and not self.admission.started:
            self.admission.start()
        self._set_health()
        self.watcher.start()
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
        for name in ("", DECISIONS, AUTHORIZATION, ATTESTATION, AUDIT):
            self.health.set(name, status)

    def _watch_health(self) -> None:
        # The audit log can become unwritable (disk full) at any time, and writable
        # again: an unhealthy server gets no traffic to find that out by, so the watcher
        # probes it. The probe also notices a database deleted, replaced or truncated
        # underneath the server without traffic; that failure is never cleared.
        while not self._stopping.wait(HEALTH_POLL_SECONDS):
            self.audit.writer.probe()
            self._set_health()

    def _watch_trust(self) -> None:
        # `docket ca rotate` and `docket ca revoke` write the CA directory of a running
        # server: a revocation must count within seconds, without a signal.
        while not self._stopping.wait(self.settings.revocation_poll_seconds):
            if self.trust.changed():
                self.reload_credentials()

    def reload(self) -> None:
        """Reload the bundle, the CA, the revocation list and the EK trust from disk
        (SIGHUP); what does not load is logged and the old one stays."""
        with contextlib.suppress(EngineError):  # logged by the watcher; the old bundle stays
            self.watcher.reload()
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
        self.health.enter_graceful_shutdown()
        if self.admission is not None:
            self.admission.stop()
        self.server.stop(grace).wait()
        self.watcher.stop()
        self.challenges.close()
        self.audit.close()


class _Signals:
    """SIGTERM/SIGINT end the wait; SIGHUP runs ``on_hup`` in a thread of its own."""

    def __init__(self, on_hup: Callable[[], None]) -> None:
        self.stop = threading.Event()
        self._on_hup = on_hup
        signal.signal(signal.SIGTERM, self._terminate)
        signal.signal(signal.SIGINT, self._terminate)
        signal.signal(signal.SIGHUP, self._hup)

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()

    def _hup(self, signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=self._on_hup, name="docket-reload", daemon=True).start()


def serve(settings: Settings, on_ready: Callable[[Listening], None]) -> None:
    """Serve until SIGTERM or SIGINT, then drain and return.

    Raises :class:`ServeError` or :class:`~engine.BundleError` before anything listens.
    """
    grpc_address, metrics_address = check_settings(settings)
    bundle = load_bundle(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Create the database and the signing key once, before workers race to.
    prepared = open_audit(settings)
    audit_url, audit_key = prepared.store.url, str(prepared.verifiers()[0])
    prepared.store.close()
    # …and the challenge tables, the CA and the (empty) place for EK roots.
    open_challenges(settings).close()
    if settings.ek_roots is None:
        settings.ek_roots_dir.mkdir(parents=True, exist_ok=True)
    ca = prepare_ca(settings)
    TrustFiles(settings.ca_dir, ca)  # a revocation list that does not verify: ServeError
    attestation = describe_attestation(ca, trust_roots(settings), bundle.reference)
    admission_cert = ""
    if admission_address(settings) is not None:
        admission_cert = str(admission_tls(settings, ca)[0])

    def ready(where: Listening) -> None:
        on_ready(
            dataclasses.replace(
                where,
                audit=audit_url,
                audit_key=audit_key,
                attestation=attestation,
                admission_cert=admission_cert,
            )
        )

    if settings.workers == 1:
        _serve_one(settings, bundle, grpc_address, metrics_address, ready)
    else:
        _supervise(settings, bundle, grpc_address, metrics_address, ready)


def _serve_metrics(address: Address, registry: CollectorRegistry, trust: TrustFiles) -> WSGIServer:
    try:
        return serve_metrics(
            address.host, address.port, registry, trust.jwks, lambda: trust.document
        )
    except OSError as exc:
        raise ServeError(f"cannot serve metrics on {address}: {exc.strerror}") from exc


def _serve_one(
    settings: Settings,
    bundle: PolicyBundle,
    grpc_address: Address,
    metrics_address: Address,
    on_ready: Callable[[Listening], None],
) -> None:
    metrics = Metrics()
    worker = Worker(settings, bundle, metrics, reuse_port=False)
    signals = _Signals(worker.reload)
    admission = admission_address(settings)
    # Every listener is bound before anything starts or is recorded: a port in use
    # leaves the audit log as it was.
    # The JWKS and revocation list the worker verifies with: they reload together.
    metrics_server = _serve_metrics(metrics_address, metrics.registry, worker.trust)
    try:
        if admission is not None:
            admission = Address(admission.host, worker.bind_admission(admission))
        port = worker.start(grpc_address)
    except ServeError:
        worker.stop(0)
        metrics_server.shutdown()
        metrics_server.server_close()
        raise
    on_ready(
        Listening(
            grpc=Address(grpc_address.host, port),
            metrics=Address(metrics_address.host, metrics_server.server_port),
            tls=_tls_mode(settings),
            bundle=worker.engine.bundle,
            workers=1,
            admission=admission,
        )
    )
    # Poll: SIGTERM may be delivered to a gRPC thread, and an untimed wait in the main
    # thread would then never run the handler (seen: "ignored SIGTERM for 20 s").
    while not signals.stop.wait(0.5):
        pass
    log.info("serve.draining", grace_seconds=DRAIN_SECONDS)
    worker.stop()
    metrics_server.shutdown()
    metrics_server.server_close()
    log.info("serve.stopped")


def _worker_main(settings: Settings, ports: tuple[int, int | None], ready: Any) -> None:
    """A worker process (started by the supervisor with the spawn method)."""
    configure_logging(settings.log_format, settings.log_level)
    supervisor = os.getppid()

    def tell_siblings() -> None:
        os.kill(supervisor, signal.SIGHUP)

    worker = Worker(
        settings, load_bundle(settings), Metrics(), reuse_port=True, on_reload=tell_siblings
    )
    signals = _Signals(worker.reload)
    address = Address.parse(settings.grpc, "gRPC")
    admission = admission_address(settings)
    port, admission_port = ports
    try:
        bound_admission = None
        if admission is not None and admission_port is not None:
            bound_admission = worker.bind_admission(
                Address(admission.host, admission_port), reuse_port=True
            )
        bound = worker.start(Address(address.host, port))
    except ServeError as exc:
        worker.stop(0)
        ready.put(("error", str(exc)))
        return
    ready.put(("ready", (bound, bound_admission)))
    while not signals.stop.wait(0.5):  # polled: see _serve_one
        pass
    worker.stop()


class _Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.ready = self.context.Queue()
        self.processes: list[BaseProcess] = []
        self.ports: tuple[int, int | None] = (0, None)

    def start_worker(self, ports: tuple[int, int | None]) -> tuple[int, int | None]:
        """Start a worker on (gRPC port, admission port or None); the ports it bound."""
        process = self.context.Process(
            target=_worker_main, args=(self.settings, ports, self.ready), name="docket-worker"
        )
        process.start()
        self.processes.append(process)
        while True:
            try:
                status, value = self.ready.get(timeout=0.5)
                break
            except queue.Empty:
                if not process.is_alive():
                    raise ServeError(
                        f"a worker process exited ({process.exitcode}) before it listened; "
                        "its log above says why"
                    ) from None
        if status != "ready":
            raise ServeError(str(value))
        grpc_port, admission_port = value
        return int(grpc_port), None if admission_port is None else int(admission_port)

    def signal_all(self, signum: int) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    def reap(self) -> None:
        """Restart workers that died (not while shutting down)."""
        for process in list(self.processes):
            if process.is_alive():
                continue
            self.processes.remove(process)
            if process.pid is not None:
                worker_exited(process.pid)
            log.error("serve.worker_died", pid=process.pid, exitcode=process.exitcode)
            self.start_worker(self.ports)

    def stop(self) -> None:
        self.signal_all(signal.SIGTERM)
        for process in self.processes:
            process.join(DRAIN_SECONDS + 5)
            if process.is_alive():
                process.kill()
                process.join()


def _supervise(
    settings: Settings,
    bundle: PolicyBundle,
    grpc_address: Address,
    metrics_address: Address,
    on_ready: Callable[[Listening], None],
) -> None:
    metrics_dir = Path(tempfile.mkdtemp(prefix="docket-metrics-"))
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    supervisor = _Supervisor(settings)
    # The supervisor's copy of the CA's JWKS and revocation list (it serves the HTTP
    # listener; the workers verify with their own copies, and poll as it does).
    trust = TrustFiles(settings.ca_dir, prepare_ca(settings))

    def reload() -> None:
        supervisor.signal_all(signal.SIGHUP)
        trust.reload()

    signals = _Signals(reload)
    # Bound before any worker starts (and records its bundle): a busy port leaves the
    # audit log as it was.
    metrics_server = _serve_metrics(metrics_address, multiprocess_registry(), trust)
    try:
        admission = admission_address(settings)
        supervisor.ports = supervisor.start_worker(
            (grpc_address.port, None if admission is None else admission.port)
        )
        for _ in range(settings.workers - 1):
            supervisor.start_worker(supervisor.ports)
        on_ready(
            Listening(
                grpc=Address(grpc_address.host, supervisor.ports[0]),
                metrics=Address(metrics_address.host, metrics_server.server_port),
                tls=_tls_mode(settings),
                bundle=bundle,
                workers=settings.workers,
                admission=None
                if admission is None or supervisor.ports[1] is None
                else Address(admission.host, supervisor.ports[1]),
            )
        )
        while not signals.stop.wait(0.5):
            supervisor.reap()
            if trust.changed():
                trust.reload()
        log.info("serve.draining", grace_seconds=DRAIN_SECONDS)
    finally:
        metrics_server.shutdown()
        metrics_server.server_close()
        supervisor.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        os.environ.pop(MULTIPROC_ENV, None)
    log.info("serve.stopped")
