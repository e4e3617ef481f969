"""Fixtures for the audit tests: real SQLite logs in ``tmp_path``, written through
:class:`~audit.AuditLog` exactly as a server writes them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit import (
    ALG_COSIGNATURE_V1,
    AuditLog,
    Collector,
    CollectorStore,
    Cosigner,
    Entry,
    Receipt,
    SignerKey,
    Store,
    VerifierKey,
    next_push,
)
from audit._collector import encode_push
from audit._entry import EntryKind
from audit._note import key_id

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KINDS: tuple[EntryKind, ...] = (
    "decision",
    "placement",
    "admission",
    "attestation",
    "certificate",
    "bundle",
    "audit",
)
BATCHES = (3, 3, 4, 5, 5, 5, 4, 4, 3, 4)
"""Entries per ``record`` call of the standard log: 40 in ten commits, whose running
totals pass 10, 25 and 40, the sizes :data:`CHECKPOINTS` are signed at."""
CHECKPOINTS = (10, 25, 40)
_SEED = bytes(range(32))
REDACTION_KEY = SignerKey(
    "docket-redaction",
    key_id(
        "docket-redaction",
        Ed25519PrivateKey.from_private_bytes(_SEED).public_key().public_bytes_raw(),
    ),
    Ed25519PrivateKey.from_private_bytes(_SEED),
)
"""The redaction key that signs the test logs' redaction orders (fixed: this module is
imported both as pytest's conftest and by name, and both must hold the same key)."""
REDACTION_KEYS = [REDACTION_KEY.verifier()]
QUIET: dict[str, Any] = {"checkpoint_every": 10**9, "checkpoint_interval": 3600.0}
"""AuditLog options that keep the background checkpointer from signing at sizes a test
did not choose (on a slow machine a second can pass while a log is built)."""


def sample_entry(index: int) -> Entry:
    """A plausible entry, different for every ``index`` (kinds and fields vary)."""
    kind = KINDS[index % len(KINDS)]
    return Entry(
        kind=kind,
        time=T0 + timedelta(seconds=index),
        caller=f"svc-{index % 3}",
        subject=f'Docket::User::"user-{index}"',
        action='Docket::Action::"read"' if index % 2 else 'Docket::Action::"write"',
        resource=f'Docket::Dataset::"ds-{index % 5}"',
        classification=("public", "internal", "confidential", "restricted")[index % 4],
        residency=("EU",) if index % 3 else ("EU", "CH"),
        jurisdiction="EU",
        region="eu-west" if index % 2 else "eu-central",
        decision="allow" if index % 4 else "deny",
        policies=(f"policy-{index % 6}",),
        bundle_version="2025.03.1",
        detail={"n": index, "note": f"entrée №{index} ✓", "tags": ["a", "b"][: index % 3]},
    )


@dataclass(frozen=True)
class SealedLog:
    """A log that was written, checkpointed and closed: what an auditor gets."""

    url: str
    store: Store
    """A fresh read handle on the log (closed at teardown)."""
    keys: list[VerifierKey]
    """The verifier keys of the log's checkpoints."""
    path: Path
    """The SQLite database file."""
    entries: list[Entry]
    receipts: list[Receipt]


def build_log(
    directory: Path,
    *,
    batches: Sequence[int] = BATCHES,
    checkpoints: Collection[int] = CHECKPOINTS,
    redact: Sequence[int] = (),
) -> SealedLog:
    """Record ``sum(batches)`` entries, one ``record`` call per batch, signing a
    checkpoint whenever the log reaches a size in ``checkpoints``; then redact the
    entries in ``redact`` (each appends a redaction entry) and close the log (which
    signs a checkpoint of the final size if none covers it yet)."""
    url = f"sqlite:///{directory}/docket.db"
    log = AuditLog.open(url, keys=directory / "keys", **QUIET)
    entries: list[Entry] = []
    receipts: list[Receipt] = []
    try:
        log.start()
        for count in batches:
            batch = [sample_entry(len(entries) + offset) for offset in range(count)]
            receipts += log.record(batch)
            entries += batch
            if len(entries) in checkpoints:
                log.checkpoint()
        for index in redact:
            receipts.append(
                log.redact(
                    index,
                    reason="erasure request",
                    requested_by="dpo",
                    now=T0,
                    signer=REDACTION_KEY,
                )
            )
            if receipts[-1].index + 1 in checkpoints:
                log.checkpoint()
        keys = log.verifiers()
    finally:
        log.close()
    return SealedLog(
        url=url,
        store=Store(url, create=False),
        keys=keys,
        path=directory / "docket.db",
        entries=entries,
        receipts=receipts,
    )


@pytest.fixture
def sealed_log(tmp_path: Path) -> Iterator[SealedLog]:
    """The standard log: 40 entries in 10 commits, checkpoints at 10, 25 and 40."""
    sealed = build_log(tmp_path)
    yield sealed
    sealed.store.close()


@pytest.fixture(scope="session")
def log_builder() -> Callable[..., SealedLog]:
    """:func:`build_log`, for tests that need a log of another shape or scope (the
    caller closes ``.store``)."""
    return build_log


@pytest.fixture
def entry_factory() -> Callable[[int], Entry]:
    """:func:`sample_entry`: a varied, valid entry for an index."""
    return sample_entry


@pytest.fixture
def open_log(tmp_path: Path) -> Iterator[Callable[..., AuditLog]]:
    """Open and start an :class:`AuditLog` in ``tmp_path`` (options as for
    :meth:`AuditLog.open`, the background checkpointer quiet unless asked); every log
    opened is closed at teardown."""
    opened: list[AuditLog] = []

    def _open(**options: Any) -> AuditLog:
        log = AuditLog.open(
            f"sqlite:///{tmp_path}/docket.db", keys=tmp_path / "keys", **{**QUIET, **options}
        )
        opened.append(log)
        return log.start()

    yield _open
    for log in opened:
        log.close()


# -- a fleet: three site logs pushed to a real collector (SQLite) ----------------

_WITNESS_SEED = bytes(range(32, 64))
WITNESS = SignerKey(
    "collector.test/w1",
    key_id(
        "collector.test/w1",
        Ed25519PrivateKey.from_private_bytes(_WITNESS_SEED).public_key().public_bytes_raw(),
        ALG_COSIGNATURE_V1,
    ),
    Ed25519PrivateKey.from_private_bytes(_WITNESS_SEED),
    ALG_COSIGNATURE_V1,
)
"""The collector's witness key (fixed, as :data:`REDACTION_KEY` is, for the same reason)."""
SITES = ("eu-1", "eu-2", "us-1")


@dataclasses.dataclass
class Fleet:
    """Three site logs, each pushed with proofs to a collector that cosigns them."""

    url: str
    logs: dict[str, AuditLog]
    collector: Collector

    def grow(self, name: str, count: int) -> None:
        log = self.logs[name]
        size = log.store.head().size
        log.record([sample_entry(size + n) for n in range(count)])
        log.checkpoint()

    def push(self, name: str, *, head: int | None = None) -> None:
        held = self.collector.store.site(name)
        assert held is not None
        push = next_push(self.logs[name].store, name, held.log.size)
        assert push is not None
        self.collector.push(encode_push(dataclasses.replace(push, head=head or push.head)))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    store = CollectorStore(url)
    logs = {}
    for name in SITES:
        log = AuditLog.open(f"sqlite:///{tmp_path / name}.db", keys=tmp_path / name, **QUIET)
        logs[name] = log.start()
        store.add_site(name, log.verifiers())
    fleet = Fleet(url, logs, Collector(store, Cosigner([WITNESS])))
    try:
        for name in SITES:
            fleet.grow(name, 12)
            fleet.push(name, head=12)
        yield fleet
    finally:
        for log in logs.values():
            log.close()
        store.close()
