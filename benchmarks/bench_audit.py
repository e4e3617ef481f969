"""The audit log: durable appends through the group-commit writer, verification of a
whole log, inclusion proofs.

* **Appends**: ``AuditLog.open(url, keys=...)`` and ``start()``, as ``docket serve`` does;
  caller threads each build a decision-sized :class:`audit.Entry` (as the servicer does)
  and call ``log.record([entry])``, which returns once the entry is durable, for a fixed
  time. Then 8 threads recording 100-entry batches (BatchAuthorize), then two processes
  of 64 threads on the same database (``docket serve --workers 2``). On SQLite (a file
  under ``benchmarks/.out/tmp``), then on a throwaway PostgreSQL server. Afterwards every
  receipt must name a distinct index, the receipts must cover the log exactly, each
  receipt's leaf hash must be the stored one, and ``verify_store`` must pass.
* **Verification**: a SQLite log of 1,000,000 decision entries (``--quick``: 100,000)
  with a signed checkpoint every 1,000, built with ``Store.append`` (not timed); then
  ``verify_store(Store(url, create=False), keys)`` is timed end to end.
* **Proofs**: ``Store.inclusion_proof(i, size)`` for 1,000 random entries of that log;
  the ``docket audit prove`` path (latest checkpoint, ``make_receipt``, JSON); the
  checks ``verify_inclusion`` and ``verify_receipt``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from audit import (
    AuditLog,
    Entry,
    Store,
    VerifierKey,
    digest,
    make_receipt,
    verify_receipt,
    verify_store,
)
from audit._keys import KeyRing
from audit._log import CHECKPOINT_EVERY, pending
from audit._merkle import verify_inclusion
from audit._note import Checkpoint, sign_checkpoint
from benchmarks._common import import_path, percentile, table, time_calls
from engine._runtime.logging_setup import configure_logging
from engine._service.decisions import decision_id

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".out"
WORK = CACHE / "tmp"
AUDIT = ROOT.parent / "audit"
LOG_FORMAT_SOURCES = ("_canonical.py", "_entry.py", "_merkle.py", "_note.py", "_store.py")
POSTGRES_HELPER = ROOT.parent / "tests" / "e2e" / "postgres.py"

CALLERS = (1, 16, 64, 256)
DURATION_S = 5.0
QUICK_DURATION_S = 1.5
BATCH_CALLERS = 8
BATCH_ENTRIES = 100
PROCESSES = 2
PROCESS_CALLERS = 64
VERIFY_SIZE = 1_000_000
QUICK_VERIFY_SIZE = 100_000
VERIFY_RUNS = 3
PROOFS = 1_000
QUICK_PROOFS = 300
FIELD_POOL = 64
BUILD_FIELD_POOL = 4096
TARGET_APPENDS_PER_S = 20_000
TARGET_VERIFY_PER_S = 200_000
TARGET_PROOF_MS = 2.0

_USERS = [f"user-{n:03d}" for n in range(200)]
_WORKLOADS = [
    "spiffe://docket.example/ns/clinical/sa/records-api",
    "spiffe://docket.example/ns/billing/sa/invoices",
    "spiffe://docket.example/ns/research/sa/cohort-builder",
    "spiffe://docket.example/ns/ops/sa/backup",
]
# (resource id, classification, residency)
_DATA = [
    ("patient-records-eu", "restricted", ("EU",)),
    ("patient-records-us", "restricted", ("US",)),
    ("quarterly-forecast", "confidential", ()),
    ("payroll-2026", "confidential", ("EU", "CH")),
    ("staff-handbook", "internal", ()),
    ("press-kit", "public", ()),
]
_ACTIONS = ["read", "read", "read", "write", "delete"]
_JURISDICTIONS = ["DE", "FR", "NL", "US", "CH"]
_POLICIES = [
    ("access-clinical-restricted", "guard-residency"),
    ("access-department-member", "guard-mfa"),
    ("access-owner", "guard-device-posture"),
    ("forbid-cross-tenant", "guard-classification"),
]
_BUNDLE_VERSION = "sha256:" + "5e" * 32


def decision_fields(rng: random.Random, now: datetime) -> dict[str, Any]:
    """The fields of one entry the way the servicer records an Authorize decision
    (request digest, UUIDv7 decision id, policy-style uids, the data's labels), but
    its time and salt."""
    user, action = rng.choice(_USERS), rng.choice(_ACTIONS)
    data, classification, residency = rng.choice(_DATA)
    jurisdiction = rng.choice(_JURISDICTIONS)
    request = {
        "principal": {"type": "User", "id": user},
        "action": {"type": "Action", "id": action},
        "resource": {"type": "Data", "id": data},
        "context": {
            "jurisdiction": jurisdiction,
            "mfa": True,
            "device": {"attested": True, "encrypted": True, "jurisdiction": jurisdiction},
        },
    }
    return {
        "kind": "decision",
        "caller": rng.choice(_WORKLOADS),
        "subject": f'Docket::User::"{user}"',
        "action": f'Docket::Action::"{action}"',
        "resource": f'Docket::Data::"{data}"',
        "classification": classification,
        "residency": residency,
        "jurisdiction": jurisdiction,
        "decision": "allow" if rng.random() < 0.6 else "deny",
        "policies": rng.choice(_POLICIES),
        "bundle_version": _BUNDLE_VERSION,
        "request_digest": digest(request),
        "detail": {"decision_id": decision_id(now), "api": "Authorize"},
    }


def decision_entry(rng: random.Random, now: datetime) -> Entry:
    """A fresh decision entry at ``now`` (fields from :func:`decision_fields`)."""
    return Entry(time=now, **decision_fields(rng, now))


# -- appends ------------------------------------------------------------------------


@dataclass(slots=True)
class Load:
    """What a group of caller threads did: calls, their latencies, their receipts."""

    threads: int
    per_call: int
    started_ns: int = 0
    finished_ns: int = 0
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    indices: array[int] = field(default_factory=lambda: array("q"))
    leaves: bytes = b""
    commits: int = 0

    @property
    def entries(self) -> int:
        return len(self.indices)

    @property
    def seconds(self) -> float:
        return (self.finished_ns - self.started_ns) / 1e9

    def add(self, other: Load) -> None:
        """Pool another group's figures into this one (several processes)."""
        self.started_ns = min(self.started_ns or other.started_ns, other.started_ns)
        self.finished_ns = max(self.finished_ns, other.finished_ns)
        self.latencies_ns.extend(other.latencies_ns)
        self.indices.extend(other.indices)
        self.leaves += other.leaves
        self.commits += other.commits


class _Caller:
    """One caller thread: build entries, ``record`` them, note latency and receipts.

    Each call builds new :class:`Entry` values (validation, a fresh salt), as the
    servicer does; their field values come from a pool made beforehand, because the
    request digest and the decision id are the servicer's work, not the log's.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        now = datetime.now(UTC)
        self.pool = [decision_fields(self.rng, now) for _ in range(FIELD_POOL)]
        self.latencies = array("q")
        self.indices = array("q")
        self.leaves = bytearray()
        self.started = self.finished = 0
        self.error: BaseException | None = None

    def run(self, log: AuditLog, per_call: int, duration_ns: int, go: threading.Barrier) -> None:
        clock, choice, pool = time.monotonic_ns, self.rng.choice, self.pool
        try:
            go.wait()
            self.started = clock()
            deadline = self.started + duration_ns
            while True:
                now = datetime.now(UTC)
                entries = [Entry(time=now, **choice(pool)) for _ in range(per_call)]
                before = clock()
                receipts = log.record(entries)
                after = clock()
                self.latencies.append(after - before)
                for receipt in receipts:
                    self.indices.append(receipt.index)
                    self.leaves += receipt.leaf_hash
                if after >= deadline:
                    break
        except BaseException as exc:
            self.error = exc
        self.finished = clock()


def _count_commits(log: AuditLog) -> list[int]:
    """Count the writer's commits through its on-commit hook (one increment per commit,
    on the writer thread, before the log's own hook)."""
    counter = [0]
    hook = log.writer._on_commit

    def counted(size: int, root: bytes) -> None:
        counter[0] += 1
        if hook is not None:
            hook(size, root)

    log.writer._on_commit = counted
    return counter


def drive(
    log: AuditLog,
    threads: int,
    per_call: int,
    duration: float,
    commits: list[int],
    before_go: Callable[[], None] | None = None,
) -> Load:
    """Run ``threads`` callers against ``log`` for ``duration`` seconds (each finishes the
    call in flight at the end); all start together once ``before_go`` returned."""
    go = threading.Barrier(threads + 1)
    callers = [_Caller(seed) for seed in range(threads)]
    workers = [
        threading.Thread(target=caller.run, args=(log, per_call, int(duration * 1e9), go))
        for caller in callers
    ]
    for worker in workers:
        worker.start()
    if before_go is not None:
        before_go()
    committed = commits[0]
    go.wait()
    for worker in workers:
        worker.join()
    failed = [caller.error for caller in callers if caller.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} caller(s) failed; the first: {failed[0]!r}")
    load = Load(threads, per_call)
    load.started_ns = min(caller.started for caller in callers)
    load.finished_ns = max(caller.finished for caller in callers)
    for caller in callers:
        load.latencies_ns.extend(caller.latencies)
        load.indices.extend(caller.indices)
        load.leaves += bytes(caller.leaves)
    load.commits = commits[0] - committed
    return load


def _process_main(
    url: str, keys: str, threads: int, duration: float, go: Any, results: Any
) -> None:
    """One ``docket serve`` worker's share: its own AuditLog on the shared database."""
    configure_logging("json", "info")
    log = AuditLog.open(url, keys=Path(keys)).start()
    try:
        commits = _count_commits(log)
        load = drive(log, threads, 1, duration, commits, before_go=lambda: go.wait(120))
        results.put(load)
    finally:
        log.close()


def drive_processes(url: str, keys: Path, duration: float) -> Load:
    """:data:`PROCESSES` spawned processes, :data:`PROCESS_CALLERS` callers each, on
    one database; their loads pooled (monotonic clocks are system-wide)."""
    context = multiprocessing.get_context("spawn")
    go = context.Barrier(PROCESSES + 1)
    results = context.Queue()
    processes = [
        context.Process(
            target=_process_main,
            args=(url, str(keys), PROCESS_CALLERS, duration, go, results),
            name=f"docket-bench-audit-{n}",
        )
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        go.wait(120)
        pooled = Load(PROCESSES * PROCESS_CALLERS, 1)
        for _ in processes:
            pooled.add(results.get(timeout=duration + 120))
    finally:
        for process in processes:
            process.join(60)
            if process.is_alive():
                process.kill()
                process.join()
    bad = [p.exitcode for p in processes if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"a caller process exited with {bad}")
    return pooled


@dataclass(frozen=True, slots=True)
class AppendRow:
    """One line of the append table."""

    name: str
    threads: int
    per_call: int
    entries: int
    seconds: float
    appends_per_s: float
    p50_ms: float
    p99_ms: float
    per_commit: float | None

    @classmethod
    def of(cls, name: str, load: Load) -> AppendRow:
        ordered = sorted(load.latencies_ns)
        return cls(
            name=name,
            threads=load.threads,
            per_call=load.per_call,
            entries=load.entries,
            seconds=round(load.seconds, 2),
            appends_per_s=round(load.entries / load.seconds),
            p50_ms=round(percentile(ordered, 0.50) / 1e6, 2),
            p99_ms=round(percentile(ordered, 0.99) / 1e6, 2),
            per_commit=round(load.entries / load.commits, 1) if load.commits else None,
        )


def run_appends(url: str, keys: Path, duration: float) -> tuple[list[AppendRow], str]:
    """Every append configuration on one database, then the checks; the rows and a
    line saying what was checked."""
    rows, loads = [], []
    log = AuditLog.open(url, keys=keys).start()
    try:
        commits = _count_commits(log)
        for threads in CALLERS:
            load = drive(log, threads, 1, duration, commits)
            loads.append(load)
            name = f"{threads} caller{'s' if threads > 1 else ''}, 1 entry a call"
            rows.append(AppendRow.of(name, load))
            print(f"  {name}: {rows[-1].appends_per_s:,.0f}/s", flush=True)
        load = drive(log, BATCH_CALLERS, BATCH_ENTRIES, duration, commits)
        loads.append(load)
        name = f"{BATCH_CALLERS} callers, {BATCH_ENTRIES} entries a call"
        rows.append(AppendRow.of(name, load))
        print(f"  {name}: {rows[-1].appends_per_s:,.0f}/s", flush=True)
    finally:
        log.close()
    load = drive_processes(url, keys, duration)
    loads.append(load)
    name = f"{PROCESSES} processes x {PROCESS_CALLERS} callers, 1 entry"
    rows.append(AppendRow.of(name, load))
    print(f"  {name}: {rows[-1].appends_per_s:,.0f}/s", flush=True)
    return rows, check_log(url, KeyRing(keys).verifiers(), loads)


def check_log(url: str, keys: Sequence[VerifierKey], loads: Sequence[Load]) -> str:
    """The receipts must cover the log exactly, each with the stored leaf hash, and the
    log must verify. Raises AssertionError (nothing was faked) or TamperDetected."""
    store = Store(url, create=False)
    try:
        head = store.head()
        leaves: dict[int, bytes] = {}
        for load in loads:
            for n, index in enumerate(load.indices):
                if index in leaves:
                    raise AssertionError(f"two receipts name entry {index}")
                leaves[index] = load.leaves[n * 32 : (n + 1) * 32]
        if len(leaves) != head.size or (leaves and max(leaves) != head.size - 1):
            raise AssertionError(f"{len(leaves):,} receipts for a log of {head.size:,} entries")
        for row in store.entries():
            if leaves[row.idx] != row.leaf:
                raise AssertionError(f"entry {row.idx} is not the one its receipt names")
        started = time.perf_counter()
        verdict = verify_store(store, keys)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    if verdict.log.size != head.size:
        raise AssertionError(f"verified {verdict.log.size:,} of {head.size:,} entries")
    return (
        f"verified: {head.size:,} receipts name {head.size:,} distinct entries, each with its "
        f"stored leaf hash; verify_store passed ({len(verdict.log.checkpoints):,} signed "
        f"checkpoints, {seconds:.1f} s)"
    )


def _append_table(rows: Sequence[AppendRow], target: bool) -> str:
    headers = ["run", "entries", "s", "appends/s", "p50 ms", "p99 ms", "entries/commit"]
    if target:
        headers.append(f"≥ {TARGET_APPENDS_PER_S:,}/s")
    cells = []
    for row in rows:
        cell: list[object] = [row.name, row.entries, row.seconds, row.appends_per_s]
        cell += [row.p50_ms, row.p99_ms, "-" if row.per_commit is None else row.per_commit]
        if target:
            cell.append("MET" if row.appends_per_s >= TARGET_APPENDS_PER_S else "NOT MET")
        cells.append(cell)
    return table(headers, cells)


def _filesystem(path: Path) -> str:
    """The mount a path lives on: device, type, mount point."""
    best = ("?", "?", "/")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, point, kind = line.split()[:3]
            inside = path == Path(point) or Path(point) in path.parents
            if inside and len(point) >= len(best[2]):
                best = (device, kind, point)
    return f"{best[0]} ({best[1]}, mounted on {best[2]})"


def _postgres() -> ModuleType:
    """tests/e2e/postgres.py, imported by path (tests/ is not a package on sys.path)."""
    return import_path("docket_bench_postgres", POSTGRES_HELPER)


def bench_sqlite(duration: float) -> dict[str, Any]:
    """The append runs on a SQLite file under benchmarks/.out/tmp."""
    WORK.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="appends-", dir=WORK))
    try:
        url = f"sqlite:///{directory / 'docket.db'}"
        print(
            f"SQLite: {directory.relative_to(ROOT.parent)}/docket.db on {_filesystem(directory)}"
            f" (WAL, synchronous=FULL)",
            flush=True,
        )
        rows, checked = run_appends(url, directory / "audit-keys", duration)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {"rows": rows, "checked": checked, "where": _filesystem(directory)}


def bench_postgres(duration: float) -> dict[str, Any]:
    """The append runs on a throwaway PostgreSQL server (fsync on)."""
    helper = _postgres()
    binaries = helper.find_binaries()
    if binaries is None:
        return {"skipped": "no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql"}
    server = helper.start_postgres(binaries)
    keys = Path(tempfile.mkdtemp(prefix="appends-pg-keys-", dir=WORK))
    try:
        version = subprocess_version(binaries.pg_ctl)
        print(
            f"PostgreSQL: {version}, data in {server.root} on {_filesystem(server.root)} "
            f"(fsync=on, defaults otherwise)",
            flush=True,
        )
        rows, checked = run_appends(server.url(), keys / "audit-keys", duration)
    finally:
        server.stop()
        shutil.rmtree(keys, ignore_errors=True)
    return {"rows": rows, "checked": checked, "version": version}


def subprocess_version(pg_ctl: Path) -> str:
    """``pg_ctl --version``'s answer, e.g. ``pg_ctl (PostgreSQL) 15.14``."""
    done = subprocess.run(
        [str(pg_ctl), "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    return done.stdout.strip().removeprefix("pg_ctl ").strip() or "unknown version"


# -- verification and proofs ---------------------------------------------------------


def _entries(size: int) -> Iterator[Entry]:
    """``size`` decision entries, one microsecond apart, each with a fresh salt."""
    rng = random.Random(20261123)
    start = datetime(2026, 11, 23, 9, tzinfo=UTC)
    pool = [decision_fields(rng, start) for _ in range(BUILD_FIELD_POOL)]
    for n in range(size):
        yield Entry(time=start + timedelta(microseconds=n), **rng.choice(pool))


def build_log(url: str, keys: Path, size: int) -> None:
    """A log of ``size`` entries appended ``CHECKPOINT_EVERY`` at a time, each append
    followed by a signed checkpoint (what the checkpointer does under load)."""
    store = Store(url)
    try:
        ring = KeyRing(keys)
        ring.ensure(store.origin)
        signers = ring.signers()
        entries = _entries(size)
        for first in range(0, size, CHECKPOINT_EVERY):
            chunk = [pending(next(entries)) for _ in range(min(CHECKPOINT_EVERY, size - first))]
            appended = store.append(chunk)
            body = Checkpoint(origin=store.origin, size=appended.size, root=appended.root)
            store.add_checkpoint(appended.size, appended.root, sign_checkpoint(body, signers))
            if (first // CHECKPOINT_EVERY) % 50 == 49:
                store.checkpoint_wal()
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def cached_log(size: int) -> tuple[Path, float | None]:
    """The directory holding a built log of ``size`` entries (``docket.db``,
    ``audit-keys/``) and the seconds building it took (None: built by an earlier run).
    Cached under benchmarks/.out, keyed by size and by the audit modules that decide
    what is stored; logs cached for other versions of those modules are deleted."""
    fingerprint = hashlib.sha256()
    for name in LOG_FORMAT_SOURCES:
        fingerprint.update((AUDIT / name).read_bytes())
    key = fingerprint.hexdigest()[:12]
    for stale in CACHE.glob("audit-verify-*"):
        if not stale.name.endswith(key):
            shutil.rmtree(stale, ignore_errors=True)
    directory = CACHE / f"audit-verify-{size}-{key}"
    if (directory / "docket.db").exists():
        return directory, None
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="audit-building-", dir=CACHE))
    started = time.perf_counter()
    try:
        build_log(f"sqlite:///{building / 'docket.db'}", building / "audit-keys", size)
        building.rename(directory)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return directory, time.perf_counter() - started


def _evict(path: Path) -> None:
    """Drop the file's pages from the page cache (this file only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def time_verify(url: str, keys: Sequence[VerifierKey], size: int) -> float:
    """Seconds for one ``verify_store`` of the whole log, opening the store included."""
    started = time.perf_counter()
    store = Store(url, create=False)
    try:
        verdict = verify_store(store, keys)
    finally:
        store.close()
    seconds = time.perf_counter() - started
    if verdict.log.size != size or len(verdict.log.checkpoints) != size // CHECKPOINT_EVERY:
        raise AssertionError(f"verified {verdict.log.size:,} entries, expected {size:,}")
    return seconds


def _ms(samples_ns: Sequence[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "p50_ms": round(percentile(ordered, 0.50) / 1e6, 3),
        "p99_ms": round(percentile(ordered, 0.99) / 1e6, 3),
        "mean_ms": round(sum(ordered) / len(ordered) / 1e6, 3),
    }


def time_proofs(url: str, keys: Sequence[VerifierKey], size: int, count: int) -> dict[str, Any]:
    """Inclusion proofs at ``size``, the prove path, and their verification."""
    rng = random.Random(6962)
    indices = [rng.randrange(size) for _ in range(count)]
    store = Store(url, create=False)
    try:
        signed = store.checkpoint_at(size)
        assert signed is not None
        leaves = {i: store.entry(i).leaf for i in indices}  # type: ignore[union-attr]
        for i in indices[:20]:  # the connection pool and the statement caches
            store.inclusion_proof(i, size)
        proofs: dict[int, list[bytes]] = {}

        def prove(i: int) -> None:
            proofs[i] = store.inclusion_proof(i, size)

        proof_ns, _ = time_calls(prove, indices)
        for i in indices:
            verify_inclusion(i, size, leaves[i], proofs[i], signed.root)
        checked_ns, _ = time_calls(
            lambda i: verify_inclusion(i, size, leaves[i], proofs[i], signed.root), indices
        )
        receipts: dict[int, str] = {}

        def receipt(i: int) -> None:
            latest = store.latest_checkpoint()  # what `docket audit prove INDEX` proves in
            assert latest is not None
            made = make_receipt(store, i, latest.size, latest.note)
            receipts[i] = json.dumps(made, indent=2, ensure_ascii=False)

        receipt_ns, _ = time_calls(receipt, indices)
        receipt_check_ns, _ = time_calls(
            lambda i: verify_receipt(json.loads(receipts[i]), keys), indices
        )
    finally:
        store.close()
    return {
        "proofs": count,
        "proof_elements": round(statistics.mean(len(p) for p in proofs.values()), 1),
        "inclusion_proof": _ms(proof_ns),
        "prove_receipt": _ms(receipt_ns),
        "verify_inclusion": _ms(checked_ns),
        "verify_receipt": _ms(receipt_check_ns),
    }


def bench_verification(size: int, proofs: int) -> dict[str, Any]:
    """Time the verification of a cached log (built first if need be) and its proofs."""
    directory, built = cached_log(size)
    path = directory / "docket.db"
    url = f"sqlite:///{path}"
    db_bytes = path.stat().st_size
    keys = KeyRing(directory / "audit-keys").verifiers()
    how = "cached by an earlier run" if built is None else f"built in {built:.0f} s"
    print(
        f"log of {size:,} decision entries, {size // CHECKPOINT_EVERY:,} signed checkpoints, "
        f"{db_bytes / 2**20:,.0f} MiB: {path.relative_to(ROOT.parent)} ({how}; not timed)",
        flush=True,
    )
    _evict(path)
    cold = time_verify(url, keys, size)
    warm = [time_verify(url, keys, size) for _ in range(VERIFY_RUNS)]
    print(f"  verify_store: cold {cold:.2f} s, then {', '.join(f'{s:.2f}' for s in warm)} s")
    proof = time_proofs(url, keys, size, proofs)
    return {
        "entries": size,
        "checkpoints": size // CHECKPOINT_EVERY,
        "db_mib": round(db_bytes / 2**20),
        "build_seconds": None if built is None else round(built, 1),
        "verify_seconds": [round(s, 2) for s in warm],
        "verify_seconds_cold": round(cold, 2),
        "best_per_s": round(size / min(warm)),
        "median_per_s": round(size / statistics.median(warm)),
        "cold_per_s": round(size / cold),
        **proof,
    }


# -- the benchmark -----------------------------------------------------------------


def _rows_json(rows: Sequence[AppendRow]) -> list[dict[str, Any]]:
    return [
        {
            "run": r.name,
            "threads": r.threads,
            "entries_per_call": r.per_call,
            "entries": r.entries,
            "seconds": r.seconds,
            "appends_per_s": r.appends_per_s,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "entries_per_commit": r.per_commit,
        }
        for r in rows
    ]


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark, print its tables, return its figures."""
    duration = QUICK_DURATION_S if quick else DURATION_S
    size = QUICK_VERIFY_SIZE if quick else VERIFY_SIZE
    proofs = QUICK_PROOFS if quick else PROOFS
    figures: dict[str, Any] = {"duration_s": duration}
    configure_logging("json", "info")  # as `docket serve` logs by default (to stderr)

    sqlite = bench_sqlite(duration)
    print(_append_table(sqlite["rows"], target=True))
    print(sqlite["checked"])
    single = [r for r in sqlite["rows"] if r.per_call == 1 and r.threads > 1]
    best = max(single, key=lambda r: r.appends_per_s)
    short = [r.name for r in single if r.appends_per_s < TARGET_APPENDS_PER_S]
    appends_met = not short
    print(
        f"target: ≥ {TARGET_APPENDS_PER_S:,} durable appends/s on SQLite, concurrent callers "
        f"recording one entry a call — {'MET' if appends_met else 'NOT MET'} (best "
        f"{best.appends_per_s:,.0f}/s, {best.name}"
        + (f"; under target: {'; '.join(short)})" if short else ")")
    )
    figures["sqlite"] = {
        "where": sqlite["where"],
        "runs": _rows_json(sqlite["rows"]),
        "checked": sqlite["checked"],
        "target_appends_per_s": TARGET_APPENDS_PER_S,
        "target_met": appends_met,
    }

    print()
    postgres = bench_postgres(duration)
    if "skipped" in postgres:
        print(f"PostgreSQL SKIPPED: {postgres['skipped']}")
        figures["postgres"] = {"skipped": postgres["skipped"]}
    else:
        print(_append_table(postgres["rows"], target=False))
        print(postgres["checked"])
        figures["postgres"] = {
            "version": postgres["version"],
            "runs": _rows_json(postgres["rows"]),
            "checked": postgres["checked"],
        }
    print(
        f"appends/s = receipts returned / wall time from the first call to the end of the "
        f"last; latency: one record() call; entries/commit: entries / writer commits; "
        f"{duration:g} s a run"
    )

    print()
    verification = bench_verification(size, proofs)
    best_rate, median_rate = verification["best_per_s"], verification["median_per_s"]
    rows = [
        [f"verify_store, next {VERIFY_RUNS} runs, file cached", "best", best_rate],
        ["", "median", median_rate],
        ["verify_store, first run, file evicted from page cache", "", verification["cold_per_s"]],
    ]
    print(table(("entries/s", "", f"{size:,} entries"), rows))
    verify_met = median_rate >= TARGET_VERIFY_PER_S
    print(
        f"target: verification ≥ {TARGET_VERIFY_PER_S:,} entries/s — "
        f"{'MET' if verify_met else 'NOT MET'} (median {median_rate:,}/s, best {best_rate:,}/s)"
    )
    labels = {
        "inclusion_proof": f"Store.inclusion_proof(i, {size:,})",
        "prove_receipt": "prove: latest_checkpoint + make_receipt + JSON",
        "verify_inclusion": "verify_inclusion",
        "verify_receipt": "verify_receipt (signature, leaf, proof)",
    }
    print(
        table(
            ("ms per call", "p50", "p99", "mean"),
            [
                [label, *(f"{verification[key][k]:.3f}" for k in ("p50_ms", "p99_ms", "mean_ms"))]
                for key, label in labels.items()
            ],
        )
    )
    proof_p50 = verification["inclusion_proof"]["p50_ms"]
    proof_p99 = verification["inclusion_proof"]["p99_ms"]
    proof_met = proof_p99 <= TARGET_PROOF_MS
    verdict = ("MET" if proof_met else "NOT MET") if size >= VERIFY_SIZE else "NOT JUDGED"
    print(
        f"{verification['proofs']:,} random entries, {verification['proof_elements']} proof "
        f"hashes on average; SQLite, the same log"
    )
    print(
        f"target: inclusion proof at {VERIFY_SIZE:,} entries ≤ {TARGET_PROOF_MS:g} ms (p99) — "
        f"{verdict} (p99 {proof_p99:.3f} ms, p50 {proof_p50:.3f} ms"
        + (f"; measured at {size:,} entries, not the target's size)" if size < VERIFY_SIZE else ")")
    )
    figures["verification"] = {
        **verification,
        "target_per_s": TARGET_VERIFY_PER_S,
        "target_met": verify_met,
        "target_proof_ms": TARGET_PROOF_MS,
        "proof_target_met": proof_met if size >= VERIFY_SIZE else None,
    }
    return figures
