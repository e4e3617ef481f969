"""The fleet, simulated: 1,000 edge sites as lightweight in-process actors pushing to one
collector, with the real protocol code — each site's checkpoints signed
(``sign_checkpoint``), its pushes built by the site's own code (``next_push``: the
entries, the consistency proof from the collector's size) and encoded as on the wire;
the collector parses, judges (signature, proof, every leaf, the recomputed root),
stores in its database (SQLite here, as on one machine) and cosigns. No HTTP: what is
timed is the protocol and the store, not the loopback.

Figures:

- **collector entries per second**: every site pushes ``BATCH`` new entries per round
  (a decision rate of ``BATCH`` per site per push interval), for ``ROUNDS`` rounds;
  total entries over the collector's time;
- **bytes per site per push** (the body), at that rate;
- **reconciliation after an hour's partition**: one site decides at ``RATE`` per second
  for ``PARTITION_SECONDS`` while cut off, signing a checkpoint every 1,000 entries (the
  log's default), then pushes its backlog (in pushes of at most 10,000 entries, each
  ending at a checkpoint) until the collector holds all of it; the time that takes,
  site and collector together.
- **a new bundle across the fleet** (:func:`run_propagation`): 1,000 sites pull one
  bundle source, a real HTTP server on loopback (``http.server``, ETags, long polling),
  each with the code ``docket serve`` runs: its ``Puller`` (``If-None-Match``, the pull
  interval with its ±10 % jitter, or long polls; the download bounds; the signature and
  the anti-rollback check; the atomic install) driven by its ``BundleWatcher`` thread,
  which swaps the bundle into the site's ``Engine``. The Puller takes no simulated clock
  for its schedule (it waits on real time), so the interval is a real 2 s; the sites
  start spread over one interval, as sites started at different times would be. At t0
  (the ``PUT`` of ``docket bundle push``'s ``publish`` answered) revision 2 is served;
  timed until each site has it verified and in force (its watcher's swap). All 1,000
  share this process's CPU (one GIL), so the wall times here are bound by that; each
  site's own figure is its wait for its next pull after t0 plus the CPU its pull thread
  spent from that fetch to the swap. The bytes are the HTTP exchanges (request and
  answer, headers and body; not TCP/IP framing) the server counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from audit import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    Collector,
    CollectorStore,
    Cosigner,
    SignerKey,
    next_push,
)
from audit._collector import encode_push
from audit._merkle import CompactRange, NodeId, consistency_proof, leaf_hash
from audit._note import sign_checkpoint
from benchmarks.bench_audit import decision_entry
from engine._core.bundle import PolicyBundle, bundle_version, read_bundle_files
from engine._core.evaluate import Engine
from engine._core.signing import sign_bundle
from engine._runtime.logging_setup import configure_logging
from engine._service.bundle_revisions import RevisionGuard
from engine._service.bundle_source import (
    MEDIA_TYPE,
    Fetched,
    Limits,
    Puller,
    Source,
    Unchanged,
    open_source,
    pack,
    publish,
)
from engine._service.bundle_source.pull import DIRECTORY
from engine._service.bundle_watch import BundleWatcher

ROOT = Path(__file__).resolve().parents[1]
_TMPFS = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108

SITES = 1_000
ROUNDS = 3
BATCH = 10
RATE = 10
PARTITION_SECONDS = 3_600
CHECKPOINT_EVERY = 1_000


@dataclass(frozen=True)
class _Row:
    payload: bytes | None
    leaf: bytes


@dataclass(frozen=True)
class _Signed:
    size: int
    note: str


class SimSite:
    """A site's log in memory: entries, the perfect nodes proofs are built from, signed
    checkpoints. It offers what :func:`audit.next_push` reads of a site's store."""

    def __init__(self, name: str, payloads: Sequence[bytes]) -> None:
        self.name = name
        self.origin = f"sim.example/{name}"
        self.key = SignerKey.generate(self.origin)
        self.payloads = payloads
        self.rows: list[_Row] = []
        self.range = CompactRange()
        self.nodes: dict[NodeId, bytes] = {}
        self.signed: list[_Signed] = []
        self.held = 0

    def decide(self, count: int) -> None:
        for _ in range(count):
            payload = self.payloads[len(self.rows) % len(self.payloads)]
            leaf = leaf_hash(payload)
            self.nodes[(0, len(self.rows))] = leaf
            self.nodes.update(self.range.append(leaf))
            self.rows.append(_Row(payload, leaf))

    def checkpoint(self) -> None:
        body = Checkpoint(self.origin, len(self.rows), self.range.root())
        self.signed.append(_Signed(len(self.rows), sign_checkpoint(body, [self.key])))

    # -- what next_push reads --------------------------------------------------------
    def checkpoints(self) -> list[_Signed]:
        return self.signed

    def entries(self, start: int, end: int) -> Iterator[_Row]:
        return iter(self.rows[start:end])

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return consistency_proof(old_size, new_size, lambda ids: [self.nodes[i] for i in ids])

    def head(self) -> _Signed:
        return _Signed(len(self.rows), "")


def _payloads(count: int) -> list[bytes]:
    rng = random.Random(16)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return [decision_entry(rng, now).canonical() for _ in range(count)]


def _push_all(site: SimSite, collector: Collector) -> tuple[int, list[int], float]:
    """Push until the collector holds every checkpoint of ``site``: (pushes, body sizes,
    seconds in the collector)."""
    sizes: list[int] = []
    spent = 0.0
    while (push := next_push(site, site.name, site.held)) is not None:
        body = encode_push(push)
        sizes.append(len(body))
        started = time.perf_counter()
        site.held = collector.push(body).size
        spent += time.perf_counter() - started
    return len(sizes), sizes, spent


def run(quick: bool = False) -> dict[str, Any]:
    """Simulate the fleet; print and return the figures."""
    configure_logging("console", "warning")  # not a line per push
    sites_count = 100 if quick else SITES
    partition = 600 if quick else PARTITION_SECONDS
    payloads = _payloads(256)
    witness = SignerKey.generate("collector.sim/w1", ALG_COSIGNATURE_V1)
    with tempfile.TemporaryDirectory(prefix="docket-fleet-") as tmp:
        store = CollectorStore(f"sqlite:///{Path(tmp) / 'collector.db'}")
        collector = Collector(store, Cosigner([witness]))
        sites = [SimSite(f"site-{n:04d}", payloads) for n in range(sites_count)]
        for site in sites:
            store.add_site(site.name, [site.key.verifier()])
        body_sizes: list[int] = []
        collector_seconds = 0.0
        for _ in range(ROUNDS):
            for site in sites:
                site.decide(BATCH)
                site.checkpoint()
                _, sizes, spent = _push_all(site, collector)
                body_sizes += sizes
                collector_seconds += spent
        entries = sites_count * ROUNDS * BATCH
        steady = entries / collector_seconds

        cut = SimSite("partitioned", payloads)
        store.add_site(cut.name, [cut.key.verifier()])
        backlog = RATE * partition
        for _ in range(backlog // CHECKPOINT_EVERY):
            cut.decide(CHECKPOINT_EVERY)
            cut.checkpoint()
        started = time.perf_counter()
        pushes, backlog_sizes, backlog_collector = _push_all(cut, collector)
        reconcile = time.perf_counter() - started
        store.close()
    figures: dict[str, Any] = {
        "sites": sites_count,
        "entries_per_push": BATCH,
        "collector_entries_per_second": round(steady),
        "bytes_per_site_per_push": round(statistics.mean(body_sizes)),
        "bytes_per_entry": round(statistics.mean(body_sizes) / BATCH),
        "partition_seconds": partition,
        "partition_rate_per_second": RATE,
        "backlog_entries": backlog,
        "backlog_pushes": pushes,
        "backlog_bytes": sum(backlog_sizes),
        "reconcile_seconds": round(reconcile, 2),
        "reconcile_collector_entries_per_second": round(backlog / backlog_collector),
    }
    print(
        f"{sites_count} sites x {ROUNDS} pushes of {BATCH} entries: collector "
        f"{figures['collector_entries_per_second']:,} entries/s, "
        f"{figures['bytes_per_site_per_push']:,} bytes per site per push"
    )
    print(
        f"an hour's partition at {RATE}/s ({partition} s, {backlog:,} entries): reconciled "
        f"in {reconcile:.2f} s ({pushes} pushes, {sum(backlog_sizes) / 1e6:.1f} MB)"
    )
    figures["propagation"] = run_propagation(quick)
    return figures


# -- a new bundle across the fleet ---------------------------------------------------------
PULL_SECONDS = 2.0
"""The sites' pull interval in the propagation runs (the Puller's jitter: ±10 %)."""
LONG_POLL_SECONDS = 5
"""``bundle_long_poll_seconds`` in the long-polling run (short, so that idle long polls
are seen within the run)."""
IDLE_INTERVALS = 2
PROPAGATION_BOUND = 600.0
"""Seconds the last site may take, and each transfer's deadline in these runs."""


class _Counted:
    """A file object that counts the bytes read from or written to it."""

    def __init__(self, raw: Any, counts: list[int], slot: int) -> None:
        self._raw, self._counts, self._slot = raw, counts, slot

    def readline(self, *args: Any) -> bytes:
        line: bytes = self._raw.readline(*args)
        self._counts[self._slot] += len(line)
        return line

    def read(self, *args: Any) -> bytes:
        data: bytes = self._raw.read(*args)
        self._counts[self._slot] += len(data)
        return data

    def write(self, data: bytes) -> int:
        self._counts[self._slot] += len(data)
        written: int = self._raw.write(data)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class BundleOrigin:
    """The one HTTP source of the fleet: ``http.server`` on loopback serving the bundle
    at ``/bundle.tar.gz`` with a strong ETag and ``If-None-Match``, OPA's long polling
    (``Prefer: wait=N``, answered with ``Preference-Applied``), ``PUT`` to publish (what
    ``docket bundle push`` sends). Every exchange is recorded as (status, bytes received,
    bytes sent): the request line and headers, the status line, headers and body."""

    def __init__(self) -> None:
        self.archive = b""
        self.etag = ""
        self.changed = threading.Condition()
        self.closing = False
        self.errors = 0
        self.exchanges: list[tuple[int, int, int]] = []
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.counts = [0, 0]
                self.rfile = _Counted(self.rfile, self.counts, 0)  # type: ignore[assignment]
                self.wfile = _Counted(self.wfile, self.counts, 1)  # type: ignore[assignment]

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_PUT(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                with origin.changed:
                    origin.archive = data
                    origin.etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
                    origin.changed.notify_all()
                self._send(201, b"", {})

            def do_GET(self) -> None:
                held = self.headers.get("If-None-Match")
                wait = self.headers.get("Prefer", "").removeprefix("wait=")
                headers = {}
                if wait.isdigit():
                    headers["Preference-Applied"] = f"wait={wait}"
                    with origin.changed:
                        origin.changed.wait_for(
                            lambda: origin.etag != held or origin.closing, timeout=int(wait)
                        )
                archive, etag = origin.archive, origin.etag
                headers["ETag"] = etag
                if held == etag:
                    self._send(304, None, headers)
                else:
                    headers["Content-Type"] = MEDIA_TYPE
                    self._send(200, archive, headers)

            def _send(self, status: int, body: bytes | None, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    self.wfile.write(body)
                origin.exchanges.append((status, self.counts[0], self.counts[1]))
                self.counts[:] = [0, 0]

        class Server(ThreadingHTTPServer):
            request_queue_size = 4096  # a thousand sites connect at once
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                origin.errors += 1  # a site that gave up on its transfer (counted)

        self.httpd = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/bundle.tar.gz"

    def release(self) -> None:
        """Answer every held long poll at once, and every later one without waiting."""
        with self.changed:
            self.closing = True
            self.changed.notify_all()

    def close(self) -> None:
        """Stop serving."""
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class _Site:
    """One site's pull timeline: each fetch's start (monotonic, this thread's CPU time)
    and, once the new bundle is in force, when and at what CPU time it was swapped in."""

    fetches: list[tuple[float, float]] = field(default_factory=list)
    activated: float | None = None
    cpu_at_activation: float | None = None


@dataclass(frozen=True)
class _TimedSource:
    """The real source, with each fetch's start noted (the Puller accepts any Source)."""

    source: Source
    site: _Site

    @property
    def url(self) -> str:
        return self.source.url

    def fetch(self, into: Path, *, tag: str | None, limits: Limits) -> Fetched | Unchanged:
        self.site.fetches.append((time.monotonic(), time.thread_time()))
        return self.source.fetch(into, tag=tag, limits=limits)

    def push(self, archive: bytes, *, timeout: float) -> str:
        return self.source.push(archive, timeout=timeout)


def _signed_bundle(revision: int, signer: SignerKey) -> PolicyBundle:
    """The default bundle (policies/) as ``fleet`` revision ``revision``, signed."""
    files = dict(read_bundle_files(ROOT / "policies"))
    files["bundle.toml"] = f'[bundle]\nname = "fleet"\nrevision = {revision}\n'.encode()
    note = sign_bundle(bundle_version(files), signer, name="fleet", revision=revision)
    return PolicyBundle.from_files({**files, "bundle.sig": note.encode()}, public_key=None)


def _fleet_of(
    count: int, url: str, root: Path, key: Any, long_poll: float | None
) -> tuple[list[_Site], list[BundleWatcher]]:
    """``count`` sites, each as ``docket serve`` makes one worker: its Puller (the source,
    verification with ``key``, its own anti-rollback state), its Engine, its
    BundleWatcher. The first pulls the bundle in force; the others start from a copy of
    what that pull wrote (set-up, not timed)."""
    # The transfer deadline at its bound (the default is 10 s): here a thousand sites'
    # pulls share one CPU, and a transfer can wait longer than that for its turn.
    limits = Limits(16 * 1024 * 1024, PROPAGATION_BOUND, long_poll)
    first = root / "site-0000"
    puller = Puller(
        source=open_source(url),
        directory=first / DIRECTORY,
        public_key=key,
        guard=RevisionGuard(first, signed=True),
        limits=dataclasses.replace(limits, long_poll=None),
        interval=PULL_SECONDS,
    )
    assert puller.pull(report=False).outcome == "new"
    bundle = PolicyBundle.load(puller.archive, public_key=key)
    puller.guard.admit(bundle, datetime.now(UTC))
    sites, watchers = [], []
    for n in range(count):
        directory = root / f"site-{n:04d}"
        if n:
            shutil.copytree(first, directory)
        site = _Site()
        guard = RevisionGuard(directory, signed=True)
        watcher = BundleWatcher(
            Engine(bundle),
            directory / DIRECTORY / "bundle.tar.gz",
            interval=3600.0,  # one worker per site: the pulling worker swaps at once
            public_key=key,
            guard=guard,
            puller=Puller(
                source=_TimedSource(open_source(url), site),
                directory=directory / DIRECTORY,
                public_key=key,
                guard=guard,
                limits=limits,
                interval=PULL_SECONDS,
            ),
        )

        def activated(_: PolicyBundle, site: _Site = site) -> None:
            site.activated, site.cpu_at_activation = time.monotonic(), time.thread_time()

        watcher.on_swap(activated)
        sites.append(site)
        watchers.append(watcher)
    return sites, watchers


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _propagate(count: int, *, long_poll: bool) -> dict[str, Any]:
    """One run: ``count`` sites pulling one BundleOrigin (every ``PULL_SECONDS``, or long
    polls), revision 2 published at t0; the figures of :func:`run_propagation`."""
    signer = SignerKey.generate("docket-bundle")
    origin = BundleOrigin()
    watchers: list[BundleWatcher] = []
    try:
        publish(_signed_bundle(1, signer), origin.url, timeout=10)
        # tmpfs: a thousand sites share this machine's disk; each real site has its own.
        with tempfile.TemporaryDirectory(prefix="docket-bundles-", dir=_TMPFS) as tmp:
            sites, watchers = _fleet_of(
                count,
                origin.url,
                Path(tmp),
                signer.verifier(),
                LONG_POLL_SECONDS if long_poll else None,
            )
            # Started over one interval, as sites started at different times would be.
            for watcher in watchers:
                watcher.start()
                time.sleep(PULL_SECONDS / count)
            time.sleep(PULL_SECONDS)
            idle_start = len(origin.exchanges)
            idle_seconds = LONG_POLL_SECONDS + 1.0 if long_poll else IDLE_INTERVALS * PULL_SECONDS
            time.sleep(idle_seconds)
            idle = origin.exchanges[idle_start : len(origin.exchanges)]

            new = _signed_bundle(2, signer)
            publish(new, origin.url, timeout=10)
            t0 = time.monotonic()
            deadline = t0 + PROPAGATION_BOUND
            while any(s.activated is None for s in sites) and time.monotonic() < deadline:
                time.sleep(0.05)
            # The exchanges from t0 until the last site activated the bundle.
            update = origin.exchanges[idle_start + len(idle) :]
            origin.release()
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(BundleWatcher.stop, watchers))
    finally:
        origin.close()
    done = [s for s in sites if s.activated is not None]
    wall = [s.activated - t0 for s in done]  # type: ignore[operator]
    schedule, cpu = [], []
    for site in done:
        fetch, fetch_cpu = next((at, c) for at, c in reversed(site.fetches) if at <= site.activated)  # type: ignore[operator]
        schedule.append(max(fetch - t0, 0.0))
        cpu.append(site.cpu_at_activation - fetch_cpu)  # type: ignore[operator]
    own = [s + c for s, c in zip(schedule, cpu, strict=True)]
    not_modified = [r + s for status, r, s in idle if status == 304]
    bundles = [r + s for status, r, s in update if status == 200]
    return {
        "sites": count,
        "activated": len(done),
        "archive_bytes": len(pack(new.files)),
        "wall_p50_s": round(_quantile(wall, 0.5), 2),
        "wall_p99_s": round(_quantile(wall, 0.99), 2),
        "wall_max_s": round(max(wall), 2),
        "own_p50_s": round(_quantile(own, 0.5), 2),
        "own_p99_s": round(_quantile(own, 0.99), 2),
        "own_max_s": round(max(own), 2),
        "cpu_per_site_ms": round(statistics.median(cpu) * 1000, 1),
        "idle_exchanges_per_site_per_second": round(len(idle) / count / idle_seconds, 3),
        "bytes_per_304": round(statistics.mean(not_modified)) if not_modified else None,
        "bytes_per_200": round(statistics.mean(bundles)) if bundles else None,
        "failed_transfers": origin.errors,
    }


def run_propagation(quick: bool = False) -> dict[str, Any]:
    """A new bundle across the fleet, by polling and by long polling; print and return
    the figures."""
    count = 100 if quick else SITES
    figures: dict[str, Any] = {}
    for mode, long_poll in (("poll", False), ("long_poll", True)):
        got = figures[mode] = _propagate(count, long_poll=long_poll)
        how = (
            f"long polls of {LONG_POLL_SECONDS} s"
            if long_poll
            else f"a pull every {PULL_SECONDS:g} s ±10 %"
        )
        print(
            f"{got['activated']}/{count} sites, {how}: a new revision verified and in force at "
            f"50/99/100 % in {got['wall_p50_s']}/{got['wall_p99_s']}/{got['wall_max_s']} s "
            f"here (one process); each site on its own CPU: {got['own_p50_s']}/"
            f"{got['own_p99_s']}/{got['own_max_s']} s ({got['cpu_per_site_ms']} ms CPU each)"
        )
        print(
            f"  on the wire: {got['bytes_per_304']} bytes per 304, {got['bytes_per_200']} per "
            f"200 (a {got['archive_bytes']:,}-byte bundle); idle, "
            f"{got['idle_exchanges_per_site_per_second']} exchanges per site per second; "
            f"{got['failed_transfers']} transfer(s) broken off"
        )
    return figures
