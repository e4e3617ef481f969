"""The audit log as a service uses it: record entries durably, sign checkpoints,
answer proofs, redact.

High level::

    log = AuditLog.open("sqlite:///docket-data/docket.db", keys=Path("docket-data/audit"))
    log.start()
    (receipt,) = log.record([Entry(kind="decision", time=now, ...)])
    note = log.checkpoint()
    log.close()

With ``kept=<data-dir>/audit-checkpoint`` every checkpoint signed or found is also kept
in that file (see :mod:`audit._kept`), and :meth:`AuditLog.check_kept` refuses a log that
does not contain it (a restart on an older or different database).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from audit._canonical import loads_canonical
from audit._entry import TIME_FORMAT, Entry, timed_canonical
from audit._errors import AuditError, FormatError, NoteError, ProofError, StoreError
from audit._kept import KeptCheckpoint
from audit._keys import KeyRing
from audit._note import Checkpoint, SignerKey, VerifierKey, sign_checkpoint
from audit._redaction import RedactionOrder, sign_order
from audit._requests import Recorded, RequestKeys, request_bytes
from audit._store import Head, Pending, Receipt, SignedTree, Store, StoredCheckpoint
from audit._writer import Ticket, Writer

if TYPE_CHECKING:
    from audit._relay import Relay

log = structlog.get_logger("docket.audit")

CHECKPOINT_EVERY = 1_000
"""Sign a checkpoint once this many entries were added since the last one…"""
CHECKPOINT_INTERVAL = 1.0
"""…or this many seconds passed with anything new."""
REQUEST_RETENTION_EVERY = 60.0
"""Seconds between two passes dropping recorded requests past their retention."""


def pending(entry: Entry | Recorded | Pending) -> Pending:
    """An entry ready for the store: canonical bytes plus its indexed columns, and the
    request it was decided on when recorded (one a worker's relay already made is taken
    as it is). Raises :class:`FormatError` for a request over the size cap."""
    if isinstance(entry, Pending):
        return entry
    if isinstance(entry, Recorded):
        return Pending(
            entry.entry.kind, *timed_canonical(entry.entry), request_bytes(entry.request)
        )
    return Pending(entry.kind, *timed_canonical(entry))


def _age(created: str) -> float:
    """Seconds since a checkpoint row's ``created`` time (0 for one in the future, after
    the clock was set back)."""
    made = datetime.strptime(created, TIME_FORMAT).replace(tzinfo=UTC)
    return max(0.0, (utcnow() - made).total_seconds())


def utcnow() -> datetime:
    """The current time, aware and in UTC."""
    return datetime.now(UTC)


class AuditLog:
    """A store, its signing keys, a group-commit writer and a checkpointer.

    With ``relay`` (a worker process of a log another process owns) the writer commits
    through the owner's writer (:mod:`audit._relay`), and the owner signs the periodic
    checkpoints and keeps the database's WAL: this log only reads, records and proves.
    """

    def __init__(
        self,
        store: Store,
        keys: KeyRing | None,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        max_queue: int | None = None,
        kept: Path | None = None,
        relay: Relay | None = None,
        request_retention_days: int | None = None,
    ) -> None:
        self.store = store
        self.relay = relay
        # The latest checkpoint kept outside the database (None: not kept).
        self.kept = KeptCheckpoint(kept) if kept is not None else None
        self._kept_size = -1
        self.keys = keys
        self.origin = store.origin
        if keys is not None:
            keys.ensure(self.origin)
            self.publish_verifiers()
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval = checkpoint_interval
        options: dict[str, Any] = {} if max_queue is None else {"max_queue": max_queue}
        if relay is not None:
            options["commit"] = relay.append
        self.writer = Writer(store, prepare=pending, on_commit=self._committed, **options)
        self._latest = (0, b"")
        # Sizes already checkpointed (by any process): nothing to sign until it grows.
        latest = store.latest_checkpoint()
        self._signed_size = latest.size if latest is not None else 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None
        # Recorded requests older than this are dropped by the maintenance thread.
        self.request_retention = (
            None if request_retention_days is None else timedelta(days=request_retention_days)
        )
        self._requests_dropped_at = 0.0

    @classmethod
    def open(
        cls,
        url: str,
        *,
        keys: Path | None,
        create: bool = True,
        request_keys: RequestKeys | None = None,
        **options: Any,
    ) -> AuditLog:
        """Open (and on first use create) the log at ``url``; ``keys`` is the signing-key
        directory (None: read-only use, no checkpoints are signed); ``kept=path`` keeps
        the latest checkpoint in that file too; with ``request_keys`` the requests of
        :class:`~audit.Recorded` entries are sealed and kept beside them
        (:mod:`audit._requests`). Raises :class:`StoreError`,
        :class:`~audit.KeyFormatError`."""
        store = Store(url, create=create, request_keys=request_keys)
        return cls(store, None if keys is None else KeyRing(keys), **options)

    # -- lifecycle ----------------------------------------------------------------

    def check_kept(self) -> None:
        """Refuse a log that does not contain the checkpoint kept outside it (fewer
        entries, or another tree at its size), or whose kept file does not verify with
        the signing keys; nothing to check without a kept path or before the first
        checkpoint was kept. Raises :class:`~audit._kept.KeptCheckpointError` (one line
        naming the sizes and ``docket audit accept``), :class:`StoreError`."""
        if self.kept is None:
            return
        kept = self.kept.check(self.store, self.verifiers(), self.origin)
        if kept is not None:
            self._kept_size = kept.checkpoint.size

    def start(self) -> AuditLog:
        """Start the writer and (unless relayed) the checkpoint/WAL maintenance thread."""
        self.writer.start()
        if self._maintenance is None and self.relay is None:
            self._maintenance = threading.Thread(
                target=self._maintain, name="docket-audit-checkpointer", daemon=True
            )
            self._maintenance.start()
        return self

    def close(self) -> None:
        """Commit what is queued, sign a last checkpoint (the owner does, when relayed),
        release the database."""
        self.writer.close()
        self._stop.set()
        self._wake.set()
        if self._maintenance is not None:
            self._maintenance.join(10)
        if self.relay is not None:
            self.relay.close()
        try:
            if self.keys is not None and self.relay is None:
                self.checkpoint()
        except AuditError as exc:
            log.warning("audit.final_checkpoint_failed", error=str(exc))
        self.store.close()

    @property
    def writable(self) -> bool:
        """True while entries can be recorded (the health check's "audit log writable")."""
        return self.writer.writable

    @property
    def records_requests(self) -> bool:
        """True when requests are recorded beside their entries (``record_requests``):
        a caller then passes :class:`~audit.Recorded` entries."""
        return self.store.request_keys is not None

    # -- recording ----------------------------------------------------------------

    def submit(self, entries: Sequence[Entry | Recorded]) -> Ticket:
        """Queue entries; the ticket's result is their receipts once durable.
        Raises :class:`~audit.Overloaded` (back-pressure), :class:`StoreError`."""
        return self.writer.submit(entries)

    def record(
        self, entries: Sequence[Entry | Recorded], *, timeout: float | None = 30
    ) -> list[Receipt]:
        """Record entries and wait until they are durable; their receipts, in order."""
        return self.writer.append(entries, timeout=timeout)

    def redact(
        self,
        index: int,
        *,
        reason: str,
        requested_by: str,
        now: datetime,
        signer: SignerKey,
    ) -> Receipt:
        """Erase entry ``index``'s payload (and with it its salt) on the authority of a
        redaction order signed by ``signer`` — a redaction key, never a checkpoint
        key — and record a ``redaction`` entry carrying the order, who asked and why.
        The leaf hash stays, so the tree and the chain still verify; verification
        accepts the erasure only with the order. Raises :class:`FormatError` for an
        index that is not there, already redacted or itself a redaction, a checkpoint
        key as ``signer``, or a reason or requester that is not one short line."""
        if any(signer.verifier() == key for key in self.verifiers()):
            raise FormatError(
                "the redaction key must not be a checkpoint signing key: whoever can "
                "sign checkpoints could then also authorize erasures"
            )
        stored = self.store.entry(index)
        if stored is None:
            raise FormatError(f"there is no entry {index}")
        if stored.payload is None:
            raise FormatError(f"entry {index} is already redacted")
        # The payload says what the entry is (the kind column is only an index).
        if loads_canonical(stored.payload).get("kind") == "redaction":
            raise FormatError(f"entry {index} records a redaction; those are not redacted")
        try:
            order = RedactionOrder(self.origin, index, stored.leaf, now, requested_by, reason)
            note = sign_order(order, signer)
        except NoteError as exc:
            raise FormatError(str(exc)) from exc
        self.publish_redaction_key(signer.verifier())
        record = Entry(
            kind="redaction",
            time=now,
            caller=requested_by,
            action="redact",
            resource=f"entry:{index}",
            detail={
                "index": index,
                "reason": reason,
                "requested_by": requested_by,
                "leaf_hash": stored.leaf.hex(),
                "order": note,
            },
        )
        (receipt,) = self.writer.append([record], erase=[index])
        return receipt

    def publish_redaction_key(self, key: VerifierKey) -> None:
        """Name ``key`` in the log as a redaction key (a convenience for verifiers, as
        the checkpoint keys are: an auditor passes ``--redaction-key`` from a source
        they trust)."""
        known = (self.store.meta("redaction_keys") or "").split()
        if str(key) not in known:
            self.store.set_meta("redaction_keys", "\n".join([*known, str(key)]))

    # -- checkpoints --------------------------------------------------------------

    def checkpoint(self) -> StoredCheckpoint:
        """Sign and store a checkpoint of the tree as it is now, unless the latest stored
        one already covers it; return the latest (and keep it outside the database when
        a kept path is set). Raises :class:`StoreError` without signing keys and no
        checkpoint to show; :class:`~audit.LogIdentityError` once the database was found
        to be no longer the log (a replacement is never signed)."""
        return self._checkpoint(*self._tree())

    def _tree(self) -> tuple[Head, StoredCheckpoint | None]:
        """The tree as it is now and its latest stored checkpoint, read once the
        database is known to still be the log. Raises :class:`~audit.LogIdentityError`,
        :class:`StoreError`."""
        self.writer.check_identity()
        return self.store.head(), self.store.latest_checkpoint()

    def _checkpoint(self, head: Head, latest: StoredCheckpoint | None) -> StoredCheckpoint:
        if latest is not None and latest.size >= head.size:
            self._keep(latest)
            return latest
        if self.keys is None:
            if latest is None:
                raise StoreError("the log has no checkpoint and no signing key is available")
            return latest
        body = Checkpoint(origin=self.origin, size=head.size, root=head.root)
        note = sign_checkpoint(body, self.keys.signers())
        # In the writer's next commit while it runs; else (closing, relayed) on its own.
        if not self.writer.commit_checkpoint(SignedTree(head.size, head.root, note)):
            self.store.add_checkpoint(head.size, head.root, note)
        self._signed_size = max(self._signed_size, head.size)
        log.debug("audit.checkpoint", size=head.size)
        stored = self.store.checkpoint_at(head.size)
        if stored is None:  # pragma: no cover - add_checkpoint just stored it
            raise StoreError(f"checkpoint of size {head.size} vanished")
        self._keep(stored)
        return stored

    def _keep(self, stored: StoredCheckpoint) -> None:
        """Keep ``stored`` outside the database when it is larger than what this process
        kept last. A failure is logged, not raised: the checkpoint itself is stored, and
        the next one tries again."""
        if self.kept is None or self.keys is None or stored.size <= self._kept_size:
            return
        try:
            self.kept.update(stored.note, self.store, self.verifiers(), self.origin)
        except AuditError as exc:
            log.error("audit.kept_checkpoint_failed", size=stored.size, error=str(exc))
            return
        self._kept_size = stored.size

    def verifiers(self) -> list[VerifierKey]:
        """The keys that currently sign this log's checkpoints."""
        return self.keys.verifiers() if self.keys is not None else []

    def inclusion(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof of ``index`` in the tree of ``size``. Raises :class:`ProofError`."""
        head = self.store.head()
        if size > head.size:
            raise ProofError(f"tree size {size} is beyond the log's {head.size} entries")
        return self.store.inclusion_proof(index, size)

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size``. Raises :class:`ProofError`."""
        head = self.store.head()
        if new_size > head.size:
            raise ProofError(f"tree size {new_size} is beyond the log's {head.size} entries")
        return self.store.consistency_proof(old_size, new_size)

    # -- internals ----------------------------------------------------------------

    def publish_verifiers(self) -> None:
        """Record the signing keys' verifier keys in the log (every key ever used, so
        that old checkpoints stay checkable). A convenience, not a trust root: an
        auditor passes ``--key`` from a source they trust."""
        assert self.keys is not None
        text = "\n".join(str(key) for key in self.keys.verifiers())
        known = self.store.meta("verifier_keys") or ""
        lines = known.splitlines()
        added = [line for line in text.splitlines() if line not in lines]
        if added:
            self.store.set_meta("verifier_keys", "\n".join([*lines, *added]))

    def _committed(self, size: int, root: bytes) -> None:
        self._latest = (size, root)
        if size - self._signed_size >= self.checkpoint_every:
            self._wake.set()

    def _maintain(self) -> None:
        wait = self.checkpoint_interval
        while not self._stop.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            wait = self._tick()

    def _tick(self) -> float:
        """One round of maintenance; the seconds until the next one is due."""
        wait = self.checkpoint_interval
        try:
            self.store.checkpoint_wal()
            if self.keys is not None and self._latest[0] > self._signed_size:
                wait = self._sign_when_due()
            if time.monotonic() - self._requests_dropped_at >= REQUEST_RETENTION_EVERY:
                self._requests_dropped_at = time.monotonic()
                self.drop_expired_requests(utcnow())
        except AuditError as exc:
            log.warning("audit.maintenance_failed", error=str(exc))
        return wait

    def _sign_when_due(self) -> float:
        """Sign a checkpoint when ``checkpoint_every`` entries were added since the
        latest one, or ``checkpoint_interval`` seconds passed since it with anything
        new; the seconds until the interval's turn. The latest is the database's, which
        every process appending to the log reads: each counting from its own would sign
        a checkpoint of every worker's share. Only the process with the log's signing
        turn decides (:meth:`Store.signing_turn`); another counts its next
        ``checkpoint_every`` from what it committed so far, which the one signing now
        covers (else it would wake, and fold the WAL, at every commit until then)."""
        with self.store.signing_turn() as mine:
            if mine:
                return self._sign_if_due()
        self._signed_size = max(self._signed_size, self._latest[0])
        return self.checkpoint_interval

    def _sign_if_due(self) -> float:
        head, latest = self._tree()
        if latest is not None:
            self._signed_size = max(self._signed_size, latest.size)
        new = max(self._latest[0], head.size) - self._signed_size
        if new <= 0:
            return self.checkpoint_interval
        age = self.checkpoint_interval if latest is None else _age(latest.created)
        if new < self.checkpoint_every and age < self.checkpoint_interval:
            return self.checkpoint_interval - age
        self._checkpoint(head, latest)
        return self.checkpoint_interval

    def drop_expired_requests(self, now: datetime) -> int:
        """Delete the recorded requests older than the request retention at ``now``
        (nothing without one); how many. The log's entries stay. Raises
        :class:`StoreError`."""
        if self.request_retention is None:
            return 0
        dropped = self.store.drop_requests(now - self.request_retention)
        if dropped:
            log.info("audit.requests_dropped", rows=dropped)
        return dropped
