"""``docket serve``: the process or processes, their HTTP endpoint (``/metrics``, the
CA's ``/.well-known/jwks.json`` and ``/.well-known/docket-revocations.json``), signals and
the supervisor of worker processes. What is checked and opened before anything listens is
in :mod:`engine._runtime.prepare`; one serving process is a :class:`~engine._runtime.worker.Worker`.

Each process watches the CA directory (every ``revocation_poll_seconds``, and at once on
SIGHUP): after ``docket ca rotate`` it issues with the new key and refuses what the
retired one signs later, after ``docket ca revoke`` it refuses the revoked credentials
and devices. A revocation list that does not verify, or is older than the one in force
(a rollback), is logged and refused; the one in force stays.

One process by default. With ``workers > 1`` a supervisor starts that many worker
processes that share the gRPC port (SO_REUSEPORT; new connections dealt to them in
turn where the kernel lets a worker attach the program of :mod:`engine._runtime.balance`,
else by the kernel's hash); each worker commits its own audit
entries, or with ``audit_writer = "supervisor"`` the supervisor owns the log's one writer,
which every worker's entries are committed through (:mod:`audit._relay`: one transaction
and one fsync carries what all workers have waiting); it forwards SIGHUP
(reload) and SIGTERM (drain, then exit) to the workers and restarts a worker that dies.
The HTTP listener (``/metrics``, the CA's key documents, AuthZEN) is the workers' too,
on a shared port like gRPC's: an AuthZEN call is decided and recorded in a worker as a
gRPC call is, and any worker serves the metrics of all (they are summed from the shared
multiprocess directory). With one process, that process serves it all.
``trusted_peps`` (ext_authz enforcement points that may name a Check's subject) needs
mTLS: without ``tls_client_ca`` the server does not start.

The bundle is checked against the revisions this replica accepted
(``<data_dir>/bundle-state.json``, :mod:`engine._service.bundle_revisions`) before anything listens,
and each worker records it; a bundle refused on reload, and one let in by an operator's
pin, is written to the audit log.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from audit import LogServer, RelayAddress
from engine._core.bundle import PolicyBundle
from engine._errors import ServeError
from engine._runtime.balance import deal_in_turn
from engine._runtime.logging_setup import configure_logging
from engine._runtime.prepare import (
    Address,
    Listening,
    admission_address,
    admission_tls,
    check_settings,
    describe_attestation,
    load_bundle,
    load_shadow,
    open_audit,
    open_challenges,
    prepare_ca,
    pull_at_start,
    search_key,
    tls_mode,
    trust_roots,
)
from engine._runtime.settings import Settings
from engine._runtime.site_push import start_site_push
from engine._runtime.worker import DRAIN_SECONDS, TrustFiles, Worker, settle_heap
from engine._service.metrics import (
    Metrics,
    multiprocess_registry,
    shared_metrics,
    worker_exited,
)
from engine._service.revocation_source import STATE_NAME as REVOCATIONS_STATE
from engine._service.revocation_source import RevocationPuller
from engine._service.revocation_source import start as start_pulling

log = structlog.get_logger("docket.serve")


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
    pull_at_start(settings)  # bundle_url: the last good bundle when the source is down
    bundle = load_bundle(settings)
    shadow = load_shadow(settings)  # a candidate that does not verify stops the start
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Create the database and the signing key once, before workers race to.
    prepared = open_audit(settings)
    audit_url, audit_key = prepared.store.url, str(prepared.verifiers()[0])
    prepared.store.close()
    # …and the challenge tables, the CA and the (empty) place for EK roots.
    open_challenges(settings).close()
    search_key(settings)  # AuthZEN search page tokens: one key for every worker
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
                shadow=shadow,
            )
        )

    plan = _Plan(settings, bundle, grpc_address, metrics_address, ready)
    stop_pulling = _pull_revocations(settings)
    try:
        if settings.workers == 1:
            _serve_one(plan)
        else:
            _supervise(plan)
    finally:
        stop_pulling()


def _pull_revocations(settings: Settings) -> Callable[[], None]:
    """With ``revocations_url``: pull the revocation list into the CA directory, once per
    replica (this process: the one process, or the supervisor), until the server stops."""
    if settings.revocations_url is None:
        return lambda: None
    return start_pulling(
        RevocationPuller(
            settings.revocations_url,
            settings.ca_dir,
            settings.data_dir / REVOCATIONS_STATE,
            interval=settings.revocations_pull_seconds,
            timeout=settings.bundle_pull_timeout_seconds,
        )
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """What :func:`serve` checked before anything listens, and whom to tell once it does."""

    settings: Settings
    bundle: PolicyBundle
    grpc: Address
    metrics: Address
    on_ready: Callable[[Listening], None]

    def ready(
        self,
        grpc_port: int,
        http_port: int,
        bundle: PolicyBundle | None,
        admission: Address | None,
    ) -> None:
        self.on_ready(
            Listening(
                grpc=Address(self.grpc.host, grpc_port),
                metrics=Address(self.metrics.host, http_port),
                tls=tls_mode(self.settings),
                bundle=bundle,
                workers=self.settings.workers,
                admission=admission,
            )
        )


def _serve_one(plan: _Plan) -> None:
    settings = plan.settings
    metrics = Metrics()
    worker = Worker(settings, plan.bundle, metrics, reuse_port=False)
    signals = _Signals(worker.reload)
    admission = admission_address(settings)
    # Every listener is bound before anything starts or is recorded: a port in use
    # leaves the audit log as it was.
    try:
        http_port = worker.bind_http(plan.metrics, metrics.registry)
        if admission is not None:
            admission = Address(admission.host, worker.bind_admission(admission))
        port = worker.start(plan.grpc)
    except ServeError:
        worker.stop(0)
        raise
    settle_heap()
    plan.ready(port, http_port, worker.engine.bundle, admission)
    pusher = start_site_push(settings, worker.audit)  # the log's owner pushes it
    # Poll: SIGTERM may be delivered to a gRPC thread, and an untimed wait in the main
    # thread would then never run the handler (seen: "ignored SIGTERM for 20 s").
    while not signals.stop.wait(0.5):
        pass
    log.info("serve.draining", grace_seconds=DRAIN_SECONDS)
    if pusher is not None:
        pusher.stop()
    worker.stop()
    log.info("serve.stopped")


Ports = tuple[int, int | None, int]
"""What a worker binds: gRPC, the admission webhook (None: off), the HTTP listener."""


def _worker_main(settings: Settings, ports: Ports, ready: Any, relay: RelayAddress | None) -> None:
    """A worker process (started by the supervisor with the spawn method); it commits
    its audit entries itself, or through the supervisor's writer (``relay``)."""
    configure_logging(settings.log_format, settings.log_level)
    supervisor = os.getppid()

    def tell_siblings() -> None:
        os.kill(supervisor, signal.SIGHUP)

    worker = Worker(
        settings,
        load_bundle(settings),
        Metrics(),
        reuse_port=True,
        on_reload=tell_siblings,
        relay=relay,
    )
    signals = _Signals(worker.reload)
    address = Address.parse(settings.grpc, "gRPC")
    admission = admission_address(settings)
    port, admission_port, http_port = ports
    try:
        http = Address.parse(settings.metrics, "metrics")
        bound_http = worker.bind_http(
            Address(http.host, http_port), multiprocess_registry(), reuse_port=True
        )
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
    if settings.connection_balancing == "round-robin":
        _deal_in_turn(bound, settings.workers)
    settle_heap()
    ready.put(("ready", (bound, bound_admission, bound_http)))
    while not signals.stop.wait(0.5):  # polled: see _serve_one
        if os.getppid() != supervisor:
            # The supervisor, and with it the log's writer, is gone (killed): nothing
            # can be recorded any more, so stop instead of refusing every call forever.
            log.error("serve.supervisor_gone", supervisor=supervisor)
            break
    worker.stop()


def _deal_in_turn(port: int, workers: int) -> None:
    """Have the kernel deal new connections on the gRPC port to the workers in turn
    (:mod:`engine._runtime.balance`); where it cannot, say why: its hash goes on."""
    reason = deal_in_turn(port, workers)
    if reason is None:
        log.info("serve.connections", dealt="round-robin", workers=workers)
    else:
        log.warning("serve.connections", dealt="by the kernel's hash", reason=reason)


class _Supervisor:
    def __init__(self, settings: Settings, relay: RelayAddress | None) -> None:
        self.settings = settings
        self.relay = relay
        self.context = multiprocessing.get_context("spawn")
        self.ready = self.context.Queue()
        self.processes: list[BaseProcess] = []
        self.ports: Ports = (0, None, 0)

    def start_worker(self, ports: Ports) -> Ports:
        """Start a worker on (gRPC port, admission port or None, HTTP port); the ports it
        bound."""
        process = self.context.Process(
            target=_worker_main,
            args=(self.settings, ports, self.ready, self.relay),
            name="docket-worker",
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
        grpc_port, admission_port, http_port = value
        return (
            int(grpc_port),
            None if admission_port is None else int(admission_port),
            int(http_port),
        )

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


def _supervise(plan: _Plan) -> None:
    metrics_dir = Path(tempfile.mkdtemp(prefix="docket-metrics-"))
    try:
        with shared_metrics(str(metrics_dir)):
            if plan.settings.audit_writer == "per-worker":
                _run_workers_pushing(plan)
            else:
                _run_workers_with_one_writer(plan)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("serve.stopped")


def _run_workers_with_one_writer(plan: _Plan) -> None:
    """One writer for the log, fed by every worker: their batches share its commits
    (audit._relay), and it observes entries per commit for them all."""
    audit = open_audit(plan.settings).start()
    pusher = start_site_push(plan.settings, audit)  # the log's owner pushes it
    try:
        audit.writer.observe_commits(Metrics().committed)
        log_server = LogServer(audit).start()
        try:
            _run_workers(plan, log_server.address)
        finally:
            log_server.close()
    finally:
        if pusher is not None:
            pusher.stop()
        audit.close()


def _run_workers_pushing(plan: _Plan) -> None:
    """Workers that each commit their own entries; the supervisor pushes the site's log
    to the collector (with ``site_name`` and ``collector_url``), reading it as any
    auditor does."""
    settings = plan.settings
    if settings.site_name is None or settings.collector_url is None:
        _run_workers(plan, None)
        return
    audit = open_audit(settings)  # not started: the workers write, this one reads
    pusher = start_site_push(settings, audit)
    try:
        _run_workers(plan, None)
    finally:
        if pusher is not None:
            pusher.stop()
        audit.store.close()


def _run_workers(plan: _Plan, relay: RelayAddress | None) -> None:
    settings = plan.settings
    supervisor = _Supervisor(settings, relay)
    signals = _Signals(lambda: supervisor.signal_all(signal.SIGHUP))
    try:
        admission = admission_address(settings)
        # The first worker binds every port (port 0: one chosen), the others share them.
        supervisor.ports = supervisor.start_worker(
            (plan.grpc.port, None if admission is None else admission.port, plan.metrics.port)
        )
        for _ in range(settings.workers - 1):
            supervisor.start_worker(supervisor.ports)
        plan.ready(
            supervisor.ports[0],
            supervisor.ports[2],
            plan.bundle,
            None
            if admission is None or supervisor.ports[1] is None
            else Address(admission.host, supervisor.ports[1]),
        )
        while not signals.stop.wait(0.5):
            supervisor.reap()
        log.info("serve.draining", grace_seconds=DRAIN_SECONDS)
    finally:
        supervisor.stop()
