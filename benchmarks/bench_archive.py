"""Archival of the audit log: archive MB/s, prune time, and verify entries/s of the live
log together with its archive, on a log of 100,000 decision entries (``--quick``:
10,000) built as ``bench_audit`` builds it (a signed checkpoint every 1,000 entries).

Each run works on a copy of the cached log (pruning changes it). Timed, one run each:
``write_segment`` of the whole log into one segment (written, synced, read back and
verified), ``prune_archived`` of it, ``open_archives`` (the segment alone), and
``verify_with_archives`` (the segment, then the live log with its pruned payloads).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit import AuditLog, Store
from audit._archive import open_archives, prune_archived, verify_with_archives, write_segment
from audit._keys import KeyRing
from benchmarks.bench_audit import CACHE, cached_log

SIZE, QUICK_SIZE = 100_000, 10_000


def run(*, quick: bool = False) -> dict[str, Any]:
    """Time archiving, pruning and verifying a log of ``SIZE`` entries; print a table."""
    size = QUICK_SIZE if quick else SIZE
    built, _ = cached_log(size)
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="archive-", dir=CACHE))
    try:
        shutil.copytree(built, work / "data")
        return _measure(work, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(work: Path, size: int) -> dict[str, Any]:
    url = f"sqlite:///{work / 'data' / 'docket.db'}"
    archive = work / "archive"
    store = Store(url, create=False)
    try:
        keys = KeyRing(work / "data" / "audit-keys").verifiers()
        latest = store.latest_checkpoint()
        assert latest is not None
        assert latest.size == size
        started = time.perf_counter()
        segment = write_segment(
            store, archive, checkpoint=latest, now=datetime.now(UTC), keys=keys, redaction_keys=[]
        )
        archive_s = time.perf_counter() - started
    finally:
        store.close()
    megabytes = sum(p.stat().st_size for p in segment.path.iterdir()) / 1e6
    log = AuditLog.open(url, keys=work / "data" / "audit-keys").start()
    try:
        started = time.perf_counter()
        prune_archived(log, [segment], location=str(archive), by="bench", now=datetime.now(UTC))
        prune_s = time.perf_counter() - started
    finally:
        log.close()
    store = Store(url, create=False)
    try:
        started = time.perf_counter()
        open_archives([archive], keys, store.origin)
        segment_s = time.perf_counter() - started
        started = time.perf_counter()
        verdict, _ = verify_with_archives(store, keys, [archive])
        verify_s = time.perf_counter() - started
    finally:
        store.close()
    if len(verdict.log.pruned) != size:
        raise AssertionError(f"{len(verdict.log.pruned):,} pruned entries verified, not {size:,}")
    figures = {
        "entries": size,
        "archive_mb": round(megabytes, 1),
        "archive_s": round(archive_s, 2),
        "archive_mb_per_s": round(megabytes / archive_s, 1),
        "prune_s": round(prune_s, 2),
        "verify_segment_entries_per_s": round(size / segment_s),
        "verify_live_and_archive_s": round(verify_s, 2),
        "verify_live_and_archive_entries_per_s": round(size / verify_s),
    }
    print(f"{'figure':<42} value")
    for name, value in figures.items():
        print(f"{name:<42} {value:,}")
    return figures
