"""What the collector holds, in PostgreSQL (or SQLite, for one machine and the
simulation benchmark).

``collector_site``: per site, its name and checkpoint verifier keys, its log's origin
(pinned by the first push), the size, root and compact range held, the latest cosigned
checkpoint, and what the site last reported (its head, bundle revision and last pull).
``collector_entry``: every entry, keyed by site and index (payload as stored at the
site, NULL once redacted there; leaf hash). A site that redacts an entry it has already
pushed pushes the ``redaction`` entry next: the collector erases its own copy of that
payload in the same transaction (:func:`_erasures`), so that an erasure at the site is
one at the collector too. It takes the site's log's word for it (the entry is under the
site's signed root) without checking the order's signature, which only the site's
redaction key can: an erased payload keeps its leaf, and an export of it verifies only
with an order under a redaction key the auditor trusts. ``collector_checkpoint``: every cosigned
checkpoint, by site and size. ``collector_incident``: each fork or push whose entries do
not reach the signed root, with both notes as evidence.

:meth:`CollectorStore.advance` is the check-and-set: the site's row is locked (``SELECT
… FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), the push judged, and the
entries, the checkpoint and the new state written in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from audit._collector import Accepted, Push
from audit._errors import ForkDetected, KeyFormatError, ProofError, StoreError
from audit._merkle import CompactRange, NodeId
from audit._note import VerifierKey, parse_checkpoint_unverified
from audit._store import GENESIS, SelectionRow, StoredCheckpoint, StoredEntry, chain_hash
from audit._witness_store import LogState, TableStore
from audit.sqlite import sqlite_engine

__all__ = ["CollectorStore", "HeldLog", "Incident", "SiteState", "SiteStatus"]

_META = sa.MetaData()
TEXT, SIZE, BYTES = sa.Text, sa.BigInteger, sa.LargeBinary


def _table(name: str, key: tuple[str, ...], /, **columns: tuple[Any, bool]) -> sa.Table:
    """A table of ``columns`` (name: (type, nullable)) whose primary key is ``key``
    (an ``id`` key counts up by itself)."""
    return sa.Table(
        name,
        _META,
        *(
            sa.Column(
                column,
                kind,
                primary_key=column in key,
                nullable=nullable,
                autoincrement=column == "id",
            )
            for column, (kind, nullable) in columns.items()
        ),
    )


# The site's keys are verifier keys, one per line; its frontier, the compact range
# (CompactRange.to_bytes) after its entries; cosigned, when the collector cosigned last.
_SITES = _table(
    "collector_site",
    ("name",),
    name=(TEXT, False),
    keys=(TEXT, False),
    origin=(TEXT, True),
    size=(SIZE, False),
    root=(BYTES, True),
    frontier=(BYTES, False),
    note=(TEXT, True),
    cosigned=(TEXT, True),
    head=(SIZE, True),
    bundle_revision=(TEXT, True),
    bundle_pulled=(TEXT, True),
)
_ENTRIES = _table(
    "collector_entry", ("site", "idx"), site=(TEXT, False), idx=(SIZE, False),
    payload=(BYTES, True), leaf=(BYTES, False),
)  # fmt: skip
_CHECKPOINTS = _table(
    "collector_checkpoint", ("site", "size"), site=(TEXT, False), size=(SIZE, False),
    root=(BYTES, False), note=(TEXT, False), received=(TEXT, False),
)  # fmt: skip
_INCIDENTS = _table(
    "collector_incident", ("id",), id=(sa.Integer, False), site=(TEXT, False),
    size=(SIZE, False), reason=(TEXT, False), held=(TEXT, False), offered=(TEXT, False),
    seen=(TEXT, False),
)  # fmt: skip
_READ_CHUNK = 10_000


@dataclass(frozen=True)
class SiteState:
    """What the collector holds of a site: its name, the witness's view of its log
    (origin, keys, size, root, cosigned note) and the compact range after its entries."""

    name: str
    log: LogState
    frontier: CompactRange


@dataclass(frozen=True)
class SiteStatus:
    """A site as ``docket fleet status`` shows it."""

    name: str
    origin: str | None
    size: int
    cosigned: datetime | None
    head: int | None
    bundle_revision: str | None
    bundle_pulled: str | None
    incidents: int
    last_incident: str | None


@dataclass(frozen=True)
class Incident:
    """A push refused as evidence of a forked log: at ``size`` the collector held
    ``held``, the site signed ``offered``; ``reason`` says what did not agree."""

    site: str
    size: int
    reason: str
    held: str
    offered: str
    seen: datetime


class CollectorStore(TableStore):
    """The collector's tables in the database at ``url`` (made when missing). Raises
    :class:`~audit._errors.StoreError` when it cannot be opened."""

    def __init__(self, url: str) -> None:
        try:
            parsed = sa.make_url(url)
            sqlite = parsed.get_backend_name() == "sqlite"
            engine = (
                sqlite_engine(parsed) if sqlite else sa.create_engine(parsed, pool_pre_ping=True)
            )
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the collector database: {exc}") from exc
        self.url = parsed.render_as_string(hide_password=True)
        super().__init__(engine, _META, f"{self.url} (the collector database)")

    def add_site(self, name: str, keys: Sequence[VerifierKey]) -> None:
        """Know the site ``name`` by its checkpoint verifier ``keys`` (replacing a known
        site's keys, keeping what is held)."""
        if not keys:
            raise KeyFormatError(f"site {name!r} needs at least one verifier key")
        text = "\n".join(str(key) for key in keys)
        with self._transaction() as connection:
            changed = connection.execute(
                _SITES.update().where(_SITES.c.name == name).values(keys=text)
            ).rowcount
            if not changed:
                empty = CompactRange().to_bytes()
                connection.execute(
                    _SITES.insert().values(name=name, keys=text, size=0, frontier=empty)
                )

    def site(self, name: str) -> SiteState | None:
        """What is held of site ``name``, or None when it is not known."""
        with self._transaction() as connection:
            return self._read(connection, name, "")

    @staticmethod
    def _read(connection: sa.Connection, name: str, origin: str) -> SiteState | None:
        query = sa.select(_SITES).where(_SITES.c.name == name)
        row = connection.execute(query.with_for_update()).first()
        if row is None:
            return None
        keys = tuple(VerifierKey.parse(line) for line in row.keys.splitlines())
        log = LogState(row.origin or origin, keys, row.size, row.root, row.note)
        return SiteState(name, log, CompactRange.from_bytes(0, row.size, row.frontier))

    def advance(self, push: Push, judge: Callable[[SiteState], Accepted]) -> Accepted:
        """Check-and-set for ``push``'s site: lock its row, let ``judge`` decide, keep
        the entries, the cosigned checkpoint and the new state. A
        :class:`~audit._errors.ForkDetected` is recorded as an incident (committed)
        before it is raised again; any other error changes nothing. Raises
        :class:`~audit._errors.WitnessError` (404) for an unknown site."""
        now = _now()

        def record(connection: sa.Connection, state: SiteState, fork: ForkDetected) -> None:
            connection.execute(
                _INCIDENTS.insert().values(
                    site=push.site, size=push.checkpoint.size, reason=str(fork),
                    held=fork.held, offered=fork.offered, seen=now,
                )
            )  # fmt: skip

        def keep(connection: sa.Connection, state: SiteState, accepted: Accepted) -> None:
            self._keep(connection, push, state, accepted, now)

        return self.check_and_set(
            lambda connection: self._read(connection, push.site, push.checkpoint.origin),
            f"unknown site {push.site!r}",
            judge,
            keep,
            record,
        )

    @staticmethod
    def _keep(
        connection: sa.Connection, push: Push, state: SiteState, accepted: Accepted, now: str
    ) -> None:
        if push.entries:
            connection.execute(
                _ENTRIES.insert(),
                [
                    {"site": push.site, "idx": push.old_size + n, "payload": payload, "leaf": leaf}
                    for n, (payload, leaf) in enumerate(push.entries)
                ],
            )
        for index, leaf in _erasures(push):
            connection.execute(
                _ENTRIES.update()
                .where(_ENTRIES.c.site == push.site)
                .where(_ENTRIES.c.idx == index)
                .where(_ENTRIES.c.leaf == leaf)
                .values(payload=None)
            )
        if accepted.size > state.log.size or state.log.note is None:
            connection.execute(
                _CHECKPOINTS.insert().values(
                    site=push.site,
                    size=accepted.size,
                    root=accepted.root,
                    note=accepted.note,
                    received=now,
                )
            )
        connection.execute(
            _SITES.update()
            .where(_SITES.c.name == push.site)
            .values(
                origin=push.checkpoint.origin,
                size=accepted.size,
                root=accepted.root,
                frontier=accepted.frontier.to_bytes(),
                note=accepted.note,
                cosigned=now,
                head=push.head,
                bundle_revision=push.bundle_revision,
                bundle_pulled=push.bundle_pulled,
            )
        )

    def statuses(self) -> list[SiteStatus]:
        """Every known site, by name, with its incidents."""
        with self._transaction() as connection:
            rows = connection.execute(sa.select(_SITES).order_by(_SITES.c.name)).all()
            incidents = self._incidents(connection, None)
        return [
            SiteStatus(
                row.name,
                row.origin,
                row.size,
                None if row.cosigned is None else datetime.fromisoformat(row.cosigned),
                row.head,
                row.bundle_revision,
                row.bundle_pulled,
                sum(1 for i in incidents if i.site == row.name),
                next((i.reason for i in reversed(incidents) if i.site == row.name), None),
            )
            for row in rows
        ]

    def incidents(self, site: str | None = None) -> list[Incident]:
        """The incidents recorded (of ``site``, or of every site), oldest first."""
        with self._transaction() as connection:
            return self._incidents(connection, site)

    @staticmethod
    def _incidents(connection: sa.Connection, site: str | None) -> list[Incident]:
        query = sa.select(_INCIDENTS).order_by(_INCIDENTS.c.id)
        if site is not None:
            query = query.where(_INCIDENTS.c.site == site)
        return [
            Incident(r.site, r.size, r.reason, r.held, r.offered, datetime.fromisoformat(r.seen))
            for r in connection.execute(query).all()
        ]

    def checkpoints(self, site: str) -> list[tuple[int, str]]:
        """Each cosigned checkpoint held for ``site``: (size, note), by size."""
        query = (
            sa.select(_CHECKPOINTS.c.size, _CHECKPOINTS.c.note)
            .where(_CHECKPOINTS.c.site == site)
            .order_by(_CHECKPOINTS.c.size)
        )
        with self._transaction() as connection:
            return [(row.size, row.note) for row in connection.execute(query).all()]

    def entries(
        self, site: str, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, bytes | None, bytes]]:
        """``site``'s entries as held (those ``start <= index < end``): (index, payload
        or None, leaf hash), by index."""
        position, stop = start, end if end is not None else 2**63 - 1
        while position < stop:
            query = (
                sa.select(_ENTRIES.c.idx, _ENTRIES.c.payload, _ENTRIES.c.leaf)
                .where(_ENTRIES.c.site == site, _ENTRIES.c.idx >= position)
                .where(_ENTRIES.c.idx < stop)
                .order_by(_ENTRIES.c.idx)
                .limit(_READ_CHUNK)
            )
            with self._transaction() as connection:
                rows = connection.execute(query).all()
            for row in rows:
                yield row.idx, None if row.payload is None else bytes(row.payload), bytes(row.leaf)
            if len(rows) < _READ_CHUNK:
                return
            position = rows[-1].idx + 1


class HeldLog:
    """Site ``site``'s log as ``store`` holds it, read as an auditor reads a log's own
    store (:func:`~audit._auditor.write_export`, :func:`~audit._auditor.select_period`).
    The collector keeps payloads and leaves only; the rest is recomputed from the
    ``leaves`` (every entry's, from 0, as verified by
    :func:`~audit._collector_audit.verify_site`): the chain is a running hash from
    entry 0, the subtree hashes are the tree's. An entry's kind and time are its
    payload's (an erased entry's kind is unknown: "")."""

    def __init__(
        self,
        store: CollectorStore,
        site: str,
        origin: str,
        leaves: Sequence[bytes],
        checkpoints: Sequence[tuple[int, str]],
    ) -> None:
        self.store, self.site, self.origin = store, site, origin
        self._leaves = list(leaves)
        self._chains: list[bytes] = []
        chain = GENESIS
        for leaf in self._leaves:
            chain = chain_hash(chain, leaf)
            self._chains.append(chain)
        self._checkpoints = [
            StoredCheckpoint(size, parse_checkpoint_unverified(note).root, note, "")
            for size, note in checkpoints
        ]

    def checkpoints(self) -> list[StoredCheckpoint]:
        """The cosigned checkpoints held, by size."""
        return list(self._checkpoints)

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[StoredEntry]:
        """The entries ``[start, end)`` with their recomputed chain values."""
        for index, payload, leaf in self.store.entries(self.site, start, end):
            kind = "" if payload is None else str(_field(payload, "kind"))
            yield StoredEntry(index, kind, payload, leaf, self._chains[index], b"")

    def entry(self, index: int) -> StoredEntry | None:
        """One entry, None past what is held."""
        return next(self.entries(index, index + 1), None)

    def selection_columns(self, start: int = 0, end: int | None = None) -> Iterator[SelectionRow]:
        """Each entry's kind and time, read from its payload (the collector stores no
        other columns)."""
        for row in self.entries(start, end):
            time = "" if row.payload is None else str(_field(row.payload, "time"))
            yield SelectionRow(row.idx, row.kind, time, row.payload)

    def nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Perfect subtree hashes by ``(level, index)``, from the leaves."""
        found = []
        for level, index in ids:
            subtree = CompactRange(index << level, index << level)
            for leaf in self._leaves[index << level : (index + 1) << level]:
                subtree.append(leaf)
            if subtree.end != (index + 1) << level:
                raise ProofError(f"node ({level}, {index}) is beyond the entries held")
            found.append(subtree.hashes[0])
        return found


def _field(payload: bytes, name: str) -> object:
    try:
        return json.loads(payload).get(name, "")
    except (ValueError, AttributeError):
        return ""


def _now() -> str:
    return datetime.now(UTC).isoformat()


_REDACTION = b'"kind":"redaction"'


def _erasures(push: Push) -> list[tuple[int, bytes]]:
    """(index, leaf hash) of each earlier entry a ``redaction`` entry of ``push`` erased
    at the site. A payload is canonical JSON, so a redaction entry holds these exact
    bytes; only those are read. One that does not name an earlier entry and its leaf is
    ignored (the auditor's verification of the site's log judges it)."""
    found = []
    for offset, (payload, _) in enumerate(push.entries):
        if payload is None or _REDACTION not in payload:
            continue
        try:
            document = json.loads(payload)
        except ValueError:
            continue
        detail = document.get("detail") if isinstance(document, dict) else None
        if document.get("kind") != "redaction" or not isinstance(detail, dict):
            continue
        index, leaf = detail.get("index"), detail.get("leaf_hash")
        if type(index) is not int or not 0 <= index < push.old_size + offset:
            continue
        if not isinstance(leaf, str) or len(leaf) != 64:
            continue
        try:
            found.append((index, bytes.fromhex(leaf)))
        except ValueError:
            continue
    return found
