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
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
from engine._runtime.logging_setup import configure_logging

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
    figures = {
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
    return figures
