"""Where the log lives: SQLModel tables over SQLite (WAL) or PostgreSQL.

One sequencer assigns indices: the single ``audit_head`` row. Every append locks it
(``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR UPDATE`` on PostgreSQL), reads the tree
size, the last chain hash and the compact range (the perfect subtrees covering the
log), writes the new entries and moves the head, all in one transaction. Processes
sharing one database therefore build one tree, in one order.

Each entry row stores, next to its payload and leaf hash, its chain hash
(``chain_n = SHA-256(chain_{n-1} || leaf_n)``, ``chain_{-1}`` = 32 zero bytes) and the
hashes of the perfect subtrees that end at it (levels 1, 2, … ; leaf ``i`` completes
level ``k`` when ``2^k`` divides ``i + 1``). Any perfect subtree hash is then one row
lookup, and an inclusion or consistency proof is O(log n) lookups.

The store knows it is itself: it remembers the SQLite file it opened (device and
inode, and its size, which shrinks only when a complete WAL checkpoint cuts it to the
database's own size: nothing here vacuums) and, on every backend, the
largest head it committed or read. An append that finds the file deleted, replaced or
truncated, or a head smaller than (or, at equal size, different from) the one it knew,
raises :class:`LogIdentityError` instead of writing into a database that is no longer
the log: the writer then stops for good (see :mod:`audit._writer`).

The tables are storage; the domain values are :class:`~audit._entry.Entry` and the
records below.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import sleep
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Field, SQLModel

from audit._errors import FormatError, LogIdentityError, ProofError, StoreError
from audit._merkle import HASH_SIZE, CompactRange, NodeId, consistency_proof, inclusion_proof
from audit._requests import RequestKeys, seal
from audit.sqlite import sqlite_engine

GENESIS = bytes(HASH_SIZE)
"""The chain value before the first entry."""

SCHEMA_VERSION = "1"
_READ_CHUNK = 20_000
# The hot paths speak to the driver directly, in qmark style; _driver_sql() turns that
# into psycopg's format style. Every statement is a constant: no value is ever spliced
# into SQL text, only placeholders.
_LOCK_HEAD_SQLITE = "SELECT size, chain, frontier FROM audit_head WHERE id = 1"
_LOCK_HEAD_PG = "SELECT size, chain, frontier FROM audit_head WHERE id = 1 FOR UPDATE"
_INSERT_ENTRIES = "INSERT INTO audit_entry (idx, kind, time, payload, leaf, chain, nodes) VALUES "
_ENTRY_VALUES = "(?, ?, ?, ?, ?, ?, ?)"
_ERASE = "UPDATE audit_entry SET payload = NULL WHERE idx = ? AND payload IS NOT NULL"
_ADD_CHECKPOINT_PG = (
    "INSERT INTO audit_checkpoint (size, root, note, created) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (size) DO NOTHING"
)
_ADD_CHECKPOINT_SQLITE = (
    "INSERT OR IGNORE INTO audit_checkpoint (size, root, note, created) VALUES (?, ?, ?, ?)"
)
_MOVE_HEAD = "UPDATE audit_head SET size = ?, chain = ?, frontier = ?, root = ? WHERE id = 1"
_READ_ENTRIES = (
    "SELECT idx, kind, payload, leaf, chain, nodes FROM audit_entry "
    "WHERE idx >= ? AND idx < ? ORDER BY idx LIMIT ?"
)
_INSERT_REQUESTS = "INSERT INTO audit_request (idx, time, key_id, sealed) VALUES "
_REQUEST_VALUES = "(?, ?, ?, ?)"
_DROP_REQUEST = "DELETE FROM audit_request WHERE idx = ?"
WAL_RESTART_FRAMES = 4096
"""Frames (pages, 4 KiB) left in the WAL after a lock-free checkpoint past which the
rest is checkpointed in the appends' queue: the WAL stays within about this plus one
maintenance interval's appends."""
_SHRINK_CHECKS = 10
_SHRINK_WAIT = 0.05  # seconds: a shrunk file is looked at again for up to half a second
_HEADER_BYTES = 100  # SQLite's database header
_INSERT_CHUNK = 500  # 3,500 parameters: well under SQLite's 32,766 and PostgreSQL's 65,535
_CREATE_LOCK = 0x646F636B6574  # "docket": the advisory lock that serializes table creation


class AuditEntryRow(SQLModel, table=True):
    """One log entry. ``payload`` is NULL once redacted; every hash stays."""

    __tablename__ = "audit_entry"

    idx: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    time: str = Field(sa_column=sa.Column(sa.String(32), nullable=False, index=True))
    payload: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary))
    leaf: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    chain: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    nodes: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class AuditRequestRow(SQLModel, table=True):
    """The request entry ``idx`` was decided on, sealed (:mod:`audit._requests`); not
    covered by any hash. ``time`` is the entry's, for retention."""

    __tablename__ = "audit_request"

    idx: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    time: str = Field(sa_column=sa.Column(sa.String(32), nullable=False, index=True))
    key_id: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    sealed: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class AuditHeadRow(SQLModel, table=True):
    """The sequencer: the one row every writer locks to take the next indices."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    chain: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    frontier: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    root: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class AuditCheckpointRow(SQLModel, table=True):
    """A signed checkpoint (C2SP signed note) of the tree at ``size``."""

    __tablename__ = "audit_checkpoint"

    size: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    note: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))


class AuditMetaRow(SQLModel, table=True):
    """The log's identity and settings: origin, schema version, verifier keys."""

    __tablename__ = "audit_meta"

    key: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    value: str = Field(sa_column=sa.Column(sa.Text, nullable=False))


_ENTRY = AuditEntryRow.__table__  # type: ignore[attr-defined]
_HEAD = AuditHeadRow.__table__  # type: ignore[attr-defined]
_CHECKPOINT = AuditCheckpointRow.__table__  # type: ignore[attr-defined]
_META = AuditMetaRow.__table__  # type: ignore[attr-defined]
_REQUEST = AuditRequestRow.__table__  # type: ignore[attr-defined]
_TABLES = [_ENTRY, _HEAD, _CHECKPOINT, _META, _REQUEST]


@dataclass(frozen=True, slots=True)
class Pending:
    """An entry ready to append: its kind and time (indexed columns) and canonical bytes."""

    kind: str
    time: str
    payload: bytes
    request: bytes | None = None
    """The request it was decided on (:mod:`audit._requests`), recorded beside it when
    the store has request keys; never hashed."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """Where an appended entry is: its index and leaf hash. Durable once returned."""

    index: int
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class Appended:
    """What one append transaction did: the receipts, and the tree it left behind."""

    receipts: list[Receipt]
    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class Head:
    """The tree as of the last append: size, root and last chain value."""

    size: int
    root: bytes
    chain: bytes
    frontier: CompactRange


class StoredEntry(NamedTuple):
    """An entry row as read back (hashes as stored, not yet verified). A named tuple:
    verification reads hundreds of thousands a second straight from the driver."""

    idx: int
    kind: str
    payload: bytes | None
    leaf: bytes
    chain: bytes
    nodes: bytes


class SelectionRow(NamedTuple):
    """The columns an entry is selected by (not covered by its hash) and its payload."""

    idx: int
    kind: str
    time: str
    payload: bytes | None


class RecordedRow(NamedTuple):
    """A recorded request's row as stored: still sealed (:func:`audit._requests.unseal`
    opens it, for this index only)."""

    idx: int
    time: str
    key_id: str
    sealed: bytes


@dataclass(frozen=True, slots=True)
class SignedTree:
    """A checkpoint note signed for the tree of ``size`` entries with ``root``, to store."""

    size: int
    root: bytes
    note: str


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A stored checkpoint note (its signatures not yet verified)."""

    size: int
    root: bytes
    note: str
    created: str


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    """The next hash-chain value: ``SHA-256(previous || leaf)``."""
    return hashlib.sha256(previous + leaf).digest()


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _create_private(path: Path) -> None:
    """Create the SQLite file (if it is not there) readable by its owner only: it holds
    every principal, resource and decision. SQLite gives its -wal and -shm files the
    database file's permissions."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create the audit database {path}: {exc.strerror}") from exc


def _sqlite_path(url: sa.URL) -> Path | None:
    database = url.database
    return Path(database) if database and database != ":memory:" else None


class Store:
    """The audit tables in one database. Thread-safe; share one per process.

    Raises :class:`StoreError` (never sqlalchemy's exceptions) when the database cannot
    be opened, read or written.
    """

    def __init__(
        self, url: str, *, create: bool = True, request_keys: RequestKeys | None = None
    ) -> None:
        self.request_keys = request_keys
        """With keys, the requests entries carry are sealed and recorded beside them."""
        self._origin: str | None = None
        try:
            parsed = sa.make_url(url)
        except SQLAlchemyError as exc:
            raise StoreError(f"not a database URL: {url!r}") from exc
        self.url = parsed.render_as_string(hide_password=True)
        self.sqlite = parsed.get_backend_name() == "sqlite"
        path: Path | None = None
        try:
            if self.sqlite:
                path = _sqlite_path(parsed)
                if path is not None and not create and not path.exists():
                    raise StoreError(f"no audit database at {path}")
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    _create_private(path)
                # WAL checkpoints are Store.checkpoint_wal's, off the hot path.
                self._writer = sqlite_engine(parsed, autocheckpoint=False)
                self._reader = sqlite_engine(parsed, immediate=False, autocheckpoint=False)
            else:
                self._writer = sa.create_engine(parsed, pool_pre_ping=True)
                self._reader = self._writer
            if create:
                self._create()
            self._check_schema()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the audit database {self.url}: {_reason(exc)}") from exc
        self._checkpoint_lock = threading.Lock()
        # What this process knows the log to be: the SQLite file's identity and size,
        # and the largest head it committed or read (size, chain).
        self._path = path if self.sqlite else None
        self._where = str(path) if self._path is not None else self.url
        self._file: tuple[int, int] | None = None
        self._file_size = 0
        self._seen: tuple[int, bytes] | None = None
        self._seen_lock = threading.Lock()
        if self._path is not None:
            try:
                status = os.stat(self._path)
            except OSError as exc:
                raise StoreError(f"cannot open the audit database {self._path}: {exc}") from exc
            self._file, self._file_size = (status.st_dev, status.st_ino), status.st_size
        self._append_lock: contextlib.AbstractContextManager[Any] = (
            _FileLock(Path(f"{path}.writer-lock"))
            if self.sqlite and path is not None
            else contextlib.nullcontext()
        )
        self._signing_path = (
            Path(f"{path}.checkpoint-lock") if self.sqlite and path is not None else None
        )
        dbapi = self._writer.dialect.dbapi
        assert dbapi is not None  # a dialect created from a URL always has its driver
        self._driver_errors: tuple[type[Exception], ...] = (dbapi.Error,)

    def _create(self) -> None:
        with self._writer.begin() as conn:
            if not self.sqlite:
                # Processes opening a new database at once would race to create the same
                # tables and head row (PostgreSQL has no BEGIN IMMEDIATE): one at a time.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CREATE_LOCK)))
            SQLModel.metadata.create_all(conn, tables=_TABLES)
            head = conn.execute(sa.select(_HEAD.c.size).where(_HEAD.c.id == 1)).first()
            if head is None:
                empty = CompactRange()
                conn.execute(
                    sa.insert(_HEAD).values(
                        id=1, size=0, chain=GENESIS, frontier=empty.to_bytes(), root=empty.root()
                    )
                )
                conn.execute(
                    sa.insert(_META),
                    [
                        {"key": "schema_version", "value": SCHEMA_VERSION},
                        {"key": "origin", "value": f"docket.local/{secrets.token_hex(6)}"},
                        {"key": "created", "value": _now_text()},
                    ],
                )

    def _check_schema(self) -> None:
        """Refuse a database this code does not know how to read: not a Docket audit
        log, or one whose ``schema_version`` is another than :data:`SCHEMA_VERSION`
        (written by a newer Docket, or an older one with no migration)."""
        with self._reader.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            if _META.name not in tables:
                raise StoreError(f"{self.url} is not a Docket audit database (no audit_meta table)")
            found = conn.execute(
                sa.select(_META.c.value).where(_META.c.key == "schema_version")
            ).scalar()
        if found == SCHEMA_VERSION:
            return
        if found is None:
            raise StoreError(f"{self.url} is not a Docket audit database (no schema_version)")
        newer = found.isdigit() and int(found) > int(SCHEMA_VERSION)
        raise StoreError(
            f"the audit database {self.url} has schema version {found}; this Docket reads "
            f"version {SCHEMA_VERSION}"
            + ("; it was written by a newer Docket: upgrade" if newer else "; no migration exists")
        )

    def close(self) -> None:
        """Release the database connections."""
        if isinstance(self._append_lock, _FileLock):
            self._append_lock.close()
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    # -- identity -----------------------------------------------------------------

    def check_identity(self) -> None:
        """Check that the SQLite file this store opened is still at its path, the same
        file (device and inode), and not truncated (one ``os.stat``; nothing on
        PostgreSQL). A file smaller than before is examined again in the appends' queue
        (:meth:`_check_file`). Raises :class:`LogIdentityError` naming what happened, or
        :class:`StoreError` when the path cannot be examined."""
        if self._path is None or self._file is None:
            return
        status = self._stat(self._path)
        if status.st_size < self._file_size:
            with self._append_lock:
                self._check_file(self._stat(self._path))
        else:
            self._check_file(status)

    def _stat(self, path: Path) -> os.stat_result:
        try:
            return os.stat(path)
        except FileNotFoundError:
            raise LogIdentityError(self._lost("deleted")) from None
        except OSError as exc:
            raise StoreError(f"cannot examine the audit database {path}: {exc}") from exc

    def _check_file(self, status: os.stat_result) -> None:
        """The file's identity and size; the caller holds the appends' lock when the
        file shrank. SQLite shrinks it too: a complete WAL checkpoint (another process's
        included) cuts the file to the database's size as its header then records it. So
        a file smaller than before is believed only when it is a size SQLite gives it
        (:meth:`_sqlite_sized`); anything else (0 bytes, a cut mid-page or
        mid-database) is a truncation."""
        if (status.st_dev, status.st_ino) != self._file:
            raise LogIdentityError(self._lost("replaced (inode changed)"))
        for _ in range(_SHRINK_CHECKS):
            if status.st_size >= self._file_size or self._sqlite_sized(status.st_size):
                break
            # A checkpoint of another process (not in the appends' queue) may be between
            # writing the header and cutting the file: a cut from outside stays.
            sleep(_SHRINK_WAIT)
            status = self._stat(self._path) if self._path is not None else status
        else:
            raise LogIdentityError(
                self._lost(f"truncated (from {self._file_size} to {status.st_size} bytes)")
            )
        self._file_size = status.st_size

    def _sqlite_sized(self, size: int) -> bool:
        """Whether ``size`` is a size SQLite itself gives the file: the database's own
        (``page_count`` times ``page_size`` of its latest commit), or the one its header
        on disk records (the in-header database size, valid when the change counter
        equals the version-valid-for number), which a complete checkpoint writes before
        it cuts the file to it."""
        if size > 0 and size == self._database_bytes():
            return True
        if self._path is None or size < _HEADER_BYTES:
            return False
        try:
            with self._path.open("rb") as handle:
                header = handle.read(_HEADER_BYTES)
        except OSError:
            return False
        if len(header) < _HEADER_BYTES or not header.startswith(b"SQLite format 3\x00"):
            return False
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        counter, pages = header[24:28], int.from_bytes(header[28:32], "big")
        return counter == header[92:96] and pages > 0 and size == pages * page_size

    def _database_bytes(self) -> int | None:
        """The database's own size (``page_count`` times ``page_size`` of its latest
        commit), or None when it cannot be read (then nothing matches it)."""
        try:
            with self._read() as conn:
                pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
                page_size = conn.exec_driver_sql("PRAGMA page_size").scalar()
        except StoreError:
            return None
        return int(pages) * int(page_size) if pages and page_size else None

    def _check_head(self, size: int, chain: bytes) -> None:
        """The head read inside an append must extend what this process knew."""
        with self._seen_lock:
            seen = self._seen
        if seen is None:
            return
        if size < seen[0]:
            raise LogIdentityError(self._lost(f"rolled back from {seen[0]} to {size} entries"))
        if size == seen[0] and chain != seen[1]:
            raise LogIdentityError(self._lost(f"replaced (a different log of {size} entries)"))

    def _saw(self, size: int, chain: bytes) -> None:
        with self._seen_lock:
            # Reads may finish out of order: only a larger head moves the mark.
            if self._seen is None or size > self._seen[0]:
                self._seen = (size, chain)

    def _lost(self, what: str) -> str:
        return f"audit database {self._where} was {what} while serving"

    # -- metadata -----------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A value from ``audit_meta`` (``origin``, ``verifier_keys``, …)."""
        with self._read() as conn:
            value = conn.execute(sa.select(_META.c.value).where(_META.c.key == key)).scalar()
        return None if value is None else str(value)

    def set_meta(self, key: str, value: str) -> None:
        """Store a value in ``audit_meta``."""
        with self._write() as conn:
            if not self.sqlite:
                # Two processes may both find the key missing; an upsert cannot collide.
                upsert = postgresql.insert(_META).values(key=key, value=value)
                conn.execute(
                    upsert.on_conflict_do_update(
                        index_elements=[_META.c.key], set_={"value": upsert.excluded.value}
                    )
                )
                return
            updated = conn.execute(
                sa.update(_META).where(_META.c.key == key).values(value=value)
            ).rowcount
            if not updated:
                conn.execute(sa.insert(_META).values(key=key, value=value))

    @property
    def origin(self) -> str:
        """The log's origin line (its name in checkpoints), fixed when it was created."""
        try:
            origin = self.meta("origin")
        except StoreError as exc:
            raise StoreError(f"{self.url} is not a Docket audit log ({exc})") from exc
        if origin is None:
            raise StoreError(f"{self.url} holds no audit log (no origin recorded)")
        return origin

    # -- appending ----------------------------------------------------------------

    def append(
        self,
        pending: Sequence[Pending],
        *,
        erase: Sequence[int] = (),
        checkpoints: Sequence[SignedTree] = (),
        more: Callable[[], Sequence[Pending]] | None = None,
    ) -> Appended:
        """Append entries in one transaction; they are durable when this returns.

        ``erase`` lists indices whose payload is erased in the same transaction (a
        redaction: the caller appends the ``redaction`` entry that records it).
        ``checkpoints`` are signed checkpoints stored in it too (as :meth:`add_checkpoint`
        does, without a transaction and an fsync of their own).
        ``more`` is called once this process holds the log (its head locked against
        every other appender); what it returns is appended after ``pending`` in the
        same transaction: the writer's entries that arrived while it waited for its
        turn, which would otherwise wait for a whole commit more.
        Raises :class:`StoreError`; :class:`LogIdentityError` when the database is no
        longer the log this store opened (checked against the head it reads, and after
        the commit: a commit into a deleted or replaced file is not durable).

        This is the hot path, so it speaks to the driver directly (one ``executemany``)
        rather than through SQLAlchemy's statement layer.
        """
        with self._append_lock:
            appended = self._append(pending, erase, checkpoints, more)
        # One stat per commit: a commit into a deleted or replaced file "succeeds"
        # through the connection that still has it open, and is not in the log. Made
        # once the lock is let go (a file that shrank is examined again in the lock):
        # a system call inside it is one more wait for the GIL while every other
        # process's commit waits for the lock.
        self.check_identity()
        return appended

    def _append(
        self,
        pending: Sequence[Pending],
        erase: Sequence[int],
        checkpoints: Sequence[SignedTree],
        more: Callable[[], Sequence[Pending]] | None = None,
    ) -> Appended:
        sql = self._driver_sql
        raw = self._raw_writer("cannot append to the audit log")
        try:
            cursor = raw.cursor()
            if self.sqlite:
                cursor.execute("BEGIN IMMEDIATE")
                cursor.execute(_LOCK_HEAD_SQLITE)
            else:
                cursor.execute(_LOCK_HEAD_PG)
            head = cursor.fetchone()
            if head is None:
                raise StoreError(f"{self.url} holds no audit log (no head row)")
            size, chain = int(head[0]), bytes(head[1])
            self._check_head(size, chain)
            if more is not None:
                pending = [*pending, *more()]
            frontier = CompactRange.from_bytes(0, size, bytes(head[2]))
            sha256 = hashlib.sha256
            leaves = [sha256(b"\x00" + item.payload).digest() for item in pending]
            completed = frontier.extend(leaves)
            rows = []
            for offset, (item, leaf, nodes) in enumerate(
                zip(pending, leaves, completed, strict=True)
            ):
                chain = sha256(chain + leaf).digest()
                rows.append((size + offset, item.kind, item.time, item.payload, leaf, chain, nodes))
            # One multi-row INSERT per chunk, not executemany: the driver releases and
            # retakes the GIL around every statement step, and under many caller threads
            # each retake is a wait.
            for first in range(0, len(rows), _INSERT_CHUNK):
                chunk = rows[first : first + _INSERT_CHUNK]
                cursor.execute(
                    sql(_INSERT_ENTRIES + ", ".join([_ENTRY_VALUES] * len(chunk))),
                    [value for row in chunk for value in row],
                )
            if self.request_keys is not None:
                self._record_requests(cursor, pending, rows)
            for index in erase:
                cursor.execute(sql(_ERASE), (index,))
                if cursor.rowcount != 1:  # two redactions of one entry raced: one wins
                    raise FormatError(f"entry {index} is missing or already redacted")
                # The request goes with the payload, in the same transaction.
                cursor.execute(sql(_DROP_REQUEST), (index,))
            if checkpoints:
                created = _now_text()
                add = _ADD_CHECKPOINT_SQLITE if self.sqlite else sql(_ADD_CHECKPOINT_PG)
                for signed in checkpoints:
                    cursor.execute(add, (signed.size, signed.root, signed.note, created))
            root = frontier.root()
            cursor.execute(sql(_MOVE_HEAD), (frontier.end, chain, frontier.to_bytes(), root))
            if self.sqlite:
                cursor.execute("COMMIT")
            else:
                raw.commit()
            cursor.close()
        except Exception as exc:
            with contextlib.suppress(Exception):
                if self.sqlite:
                    raw.cursor().execute("ROLLBACK")
                else:
                    raw.rollback()
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, self._driver_errors):
                raise StoreError(f"cannot append to the audit log: {exc}") from exc
            raise
        finally:
            raw.close()
        self._saw(frontier.end, chain)
        return Appended([Receipt(r[0], r[4]) for r in rows], frontier.end, root)

    def _record_requests(
        self, cursor: Any, pending: Sequence[Pending], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        """Seal each entry's request for its index (now known) and insert the rows in the
        entries' transaction."""
        assert self.request_keys is not None
        origin = self.origin_cached()
        recorded = []
        for item, row in zip(pending, rows, strict=True):
            if item.request is not None:
                key_id, sealed = seal(self.request_keys, origin, row[0], item.request)
                recorded.append((row[0], item.time, key_id, sealed))
        for first in range(0, len(recorded), _INSERT_CHUNK):
            chunk = recorded[first : first + _INSERT_CHUNK]
            cursor.execute(
                self._driver_sql(_INSERT_REQUESTS + ", ".join([_REQUEST_VALUES] * len(chunk))),
                [value for row in chunk for value in row],
            )

    def origin_cached(self) -> str:
        """:attr:`origin`, read once (it never changes)."""
        if self._origin is None:
            self._origin = self.origin
        return self._origin

    def recorded(self, start: int = 0, end: int | None = None) -> Iterator[RecordedRow]:
        """The recorded requests of entries ``start <= index < end``, in index order, still
        sealed. None on a database made before requests were recorded. Raises
        :class:`StoreError`."""
        if not self._has_requests_table():
            return
        columns = (_REQUEST.c.idx, _REQUEST.c.time, _REQUEST.c.key_id, _REQUEST.c.sealed)
        for idx, time, key_id, sealed in self._by_index(
            columns, start, end, "the recorded requests"
        ):
            yield RecordedRow(int(idx), str(time), str(key_id), bytes(sealed))

    def _has_requests_table(self) -> bool:
        with self._read() as conn:
            return _REQUEST.name in sa.inspect(conn).get_table_names()

    def drop_requests(self, before: datetime) -> int:
        """Delete the recorded requests of entries older than ``before`` (retention);
        how many. The log is untouched. Raises :class:`StoreError`."""
        cutoff = before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self._write() as conn:
            return int(conn.execute(sa.delete(_REQUEST).where(_REQUEST.c.time < cutoff)).rowcount)

    def checkpoint_wal(self, *, restart_past: int = WAL_RESTART_FRAMES) -> None:
        """Fold the SQLite WAL into the database, first without blocking anyone (PASSIVE).
        That pass copies only what was committed when it began: with appends always
        running it never catches up, the WAL is never started again from its beginning
        and grows for as long as the load lasts. So when more than ``restart_past``
        frames are still in it, the rest is copied in the appends' queue, where no append
        runs (RESTART; readers are not waited for), and the next append starts the WAL
        again. A no-op on PostgreSQL. Raises :class:`StoreError`."""
        if not self.sqlite:
            return
        try:
            if self._wal_checkpoint("PASSIVE") <= restart_past:
                return
            with self._append_lock:
                self._wal_checkpoint("RESTART")
        except SQLAlchemyError as exc:
            raise StoreError(f"WAL checkpoint failed: {_reason(exc)}") from exc
        except self._driver_errors as exc:
            raise StoreError(f"WAL checkpoint failed: {exc}") from exc

    def _wal_checkpoint(self, mode: str) -> int:
        """One checkpoint (outside any transaction, never waiting on the busy handler);
        the frames in the WAL."""
        raw = self._reader.raw_connection()
        try:
            cursor = raw.cursor()
            (waits,) = cursor.execute("PRAGMA busy_timeout").fetchone()
            cursor.execute("PRAGMA busy_timeout = 0")
            try:
                row = cursor.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {int(waits)}")
            cursor.close()
        finally:
            raw.close()
        return int(row[1])

    def _driver_sql(self, statement: str) -> str:
        return statement if self.sqlite else statement.replace("?", "%s")

    # -- reading ------------------------------------------------------------------

    def head(self) -> Head:
        """The tree as of the last committed append."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(_HEAD.c.size, _HEAD.c.root, _HEAD.c.chain, _HEAD.c.frontier).where(
                    _HEAD.c.id == 1
                )
            ).one_or_none()
        if row is None:
            raise StoreError(f"{self.url} holds no audit log (no head row)")
        size = int(row.size)
        self._saw(size, bytes(row.chain))
        return Head(
            size, bytes(row.root), bytes(row.chain), CompactRange.from_bytes(0, size, row.frontier)
        )

    def count(self) -> int:
        """How many entry rows the table holds (the head says how many it should)."""
        return self.extent()[1]

    def extent(self) -> tuple[int, int, int]:
        """``(head size, entry rows, highest index + 1)`` read in one statement, so one
        snapshot: rows past the head are forged even while writers append."""
        head = sa.select(_HEAD.c.size).where(_HEAD.c.id == 1).scalar_subquery()
        rows = sa.select(sa.func.count()).select_from(_ENTRY).scalar_subquery()
        top = sa.select(sa.func.coalesce(sa.func.max(_ENTRY.c.idx) + 1, 0)).scalar_subquery()
        with self._read() as conn:
            size, count, end = conn.execute(sa.select(head, rows, top)).one()
        return int(size), int(count), int(end)

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[StoredEntry]:
        """Entry rows with ``start <= index < end``, in index order, read in chunks
        straight from the driver (verification reads the whole log this way; a reader
        thread was measured slower: it only contends for the GIL)."""
        position, stop = start, end if end is not None else 2**63 - 1
        while position < stop:
            rows = self._chunk(position, stop)
            yield from rows
            if len(rows) < _READ_CHUNK:
                return
            position = rows[-1].idx + 1

    def _chunk(self, position: int, stop: int) -> list[StoredEntry]:
        query = self._driver_sql(_READ_ENTRIES)
        try:
            raw = self._reader.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute(query, (position, stop, _READ_CHUNK))
                rows = cursor.fetchall()
                cursor.close()
                if not self.sqlite:
                    raw.rollback()
            finally:
                raw.close()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the audit log: {_reason(exc)}") from exc
        except self._driver_errors as exc:
            raise StoreError(f"cannot read the audit log: {exc}") from exc
        make = StoredEntry._make
        if self.sqlite:
            return list(map(make, rows))
        # psycopg hands bytea back as bytes already; other drivers may not.
        return [
            make((r[0], r[1], None if r[2] is None else bytes(r[2]), *(bytes(v) for v in r[3:])))
            for r in rows
        ]

    def entry(self, index: int) -> StoredEntry | None:
        """One entry row, or None when there is no row at ``index``."""
        return next(self.entries(index, index + 1), None)

    def selection_columns(self, start: int = 0, end: int | None = None) -> Iterator[SelectionRow]:
        """``(idx, kind, time, payload)`` of the entries with ``start <= index < end``,
        in index order: the stored columns a period or kind is selected by, with the
        hashed payload they must agree with (``None``: redacted). Raises
        :class:`StoreError` when the database cannot be read."""
        columns = (_ENTRY.c.idx, _ENTRY.c.kind, _ENTRY.c.time, _ENTRY.c.payload)
        for idx, kind, time, payload in self._by_index(columns, start, end, "the audit log"):
            yield SelectionRow(
                int(idx), str(kind), str(time), None if payload is None else bytes(payload)
            )

    def _by_index(
        self, columns: Sequence[Any], start: int, end: int | None, what: str
    ) -> Iterator[Any]:
        """Rows of ``columns`` (the first: an index) with ``start <= index < end``, in
        index order, read in chunks. Raises :class:`StoreError` naming ``what``."""
        position, stop = start, end if end is not None else 2**63 - 1
        while position < stop:
            query = (
                sa.select(*columns)
                .where(columns[0] >= position, columns[0] < stop)
                .order_by(columns[0])
                .limit(_READ_CHUNK)
            )
            try:
                with self._read() as conn:
                    rows = conn.execute(query).all()
            except SQLAlchemyError as exc:
                raise StoreError(f"cannot read {what}: {_reason(exc)}") from exc
            yield from rows
            if len(rows) < _READ_CHUNK:
                return
            position = int(rows[-1][0]) + 1

    def index_range(self, since: datetime | None, until: datetime | None) -> tuple[int, int]:
        """``[start, end)``: the entries whose time is within ``[since, until)``, taken
        as the first and last such index (entries are time-ordered per writer).
        Only a hint: the ``time`` column is not covered by any hash (see
        :func:`audit._auditor.select_period`, which reads the payloads)."""
        fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
        clauses = []
        if since is not None:
            clauses.append(_ENTRY.c.time >= since.astimezone(UTC).strftime(fmt))
        if until is not None:
            clauses.append(_ENTRY.c.time < until.astimezone(UTC).strftime(fmt))
        with self._read() as conn:
            low, high = conn.execute(
                sa.select(sa.func.min(_ENTRY.c.idx), sa.func.max(_ENTRY.c.idx)).where(*clauses)
            ).one()
        if low is None:
            return 0, 0
        return int(low), int(high) + 1

    def nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Hashes of perfect subtrees, by ``(level, index)``: one query for all of them.
        Raises :class:`ProofError` when a node is beyond the stored log."""
        rows_needed = {(index + 1) * (1 << level) - 1 for level, index in ids}
        found: dict[int, tuple[bytes, bytes]] = {}
        with self._read() as conn:
            wanted = sorted(rows_needed)
            for chunk_start in range(0, len(wanted), 500):
                chunk = wanted[chunk_start : chunk_start + 500]
                for idx, leaf, nodes in conn.execute(
                    sa.select(_ENTRY.c.idx, _ENTRY.c.leaf, _ENTRY.c.nodes).where(
                        _ENTRY.c.idx.in_(chunk)
                    )
                ):
                    found[int(idx)] = (bytes(leaf), bytes(nodes))
        result = []
        for level, index in ids:
            row = (index + 1) * (1 << level) - 1
            if row not in found:
                raise ProofError(f"node ({level}, {index}) is beyond the stored log")
            leaf, nodes = found[row]
            if level == 0:
                result.append(leaf)
                continue
            value = nodes[(level - 1) * HASH_SIZE : level * HASH_SIZE]
            if len(value) != HASH_SIZE:
                raise ProofError(f"entry {row} stores no level-{level} subtree hash")
            result.append(value)
        return result

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` leaves."""
        return inclusion_proof(index, size, self.nodes)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 consistency proof between trees of ``old_size`` and ``new_size``."""
        return consistency_proof(old_size, new_size, self.nodes)

    # -- checkpoints --------------------------------------------------------------

    @contextlib.contextmanager
    def signing_turn(self) -> Iterator[bool]:
        """Whether this process has the turn to decide on a checkpoint and sign it: False
        while another process of the log (a worker sharing the SQLite file) has it. A
        non-blocking ``flock`` on ``<database>.checkpoint-lock``: of two processes that
        find a checkpoint due at once, one signs it and the other finds it signed. Always
        True on PostgreSQL, where two signers of one size leave one row. Raises
        :class:`StoreError` when the lock file cannot be opened."""
        if self._signing_path is None:
            yield True
            return
        try:
            fd = os.open(self._signing_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot lock {self._signing_path}: {exc.strerror}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True  # closing the descriptor releases the lock
        finally:
            os.close(fd)

    def add_checkpoint(self, size: int, root: bytes, note: str) -> None:
        """Store a signed checkpoint; a second one for the same size is ignored."""
        if self.sqlite:
            # One autocommitted statement: the writer lock file is held for one step of
            # the driver (one wait for the GIL, one fsync), not a transaction's round trips.
            with self._checkpoint_lock, self._append_lock:
                self._autocommit(_ADD_CHECKPOINT_SQLITE, (size, root, note, _now_text()))
            return
        # Processes sharing the log sign the same size when it is idle; on PostgreSQL a
        # check-then-insert would let both insert and one fail.
        with self._checkpoint_lock, self._write() as conn:
            conn.exec_driver_sql(
                self._driver_sql(_ADD_CHECKPOINT_PG), (size, root, note, _now_text())
            )

    def _raw_writer(self, what: str) -> Any:
        """A driver connection of the writer engine (close it); :class:`StoreError`
        saying ``what`` when none can be had."""
        try:
            return self._writer.raw_connection()
        except SQLAlchemyError as exc:
            raise StoreError(f"{what}: {_reason(exc)}") from exc

    def _autocommit(self, statement: str, parameters: Sequence[Any]) -> None:
        raw = self._raw_writer(f"cannot use the audit database {self.url}")
        try:
            cursor = raw.cursor()
            cursor.execute(statement, parameters)
            cursor.close()
        except self._driver_errors as exc:
            raise StoreError(f"audit database {self.url}: {exc}") from exc
        finally:
            raw.close()

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint, smallest tree first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(_CHECKPOINT).order_by(_CHECKPOINT.c.size)).all()
        return [StoredCheckpoint(int(r.size), bytes(r.root), r.note, r.created) for r in rows]

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The checkpoint of the largest tree, or None."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(_CHECKPOINT).order_by(_CHECKPOINT.c.size.desc()).limit(1)
            ).first()
        return (
            None
            if row is None
            else StoredCheckpoint(int(row.size), bytes(row.root), row.note, row.created)
        )

    def checkpoint_at(self, size: int) -> StoredCheckpoint | None:
        """The checkpoint of the tree of exactly ``size`` leaves, if one was made."""
        with self._read() as conn:
            row = conn.execute(sa.select(_CHECKPOINT).where(_CHECKPOINT.c.size == size)).first()
        return (
            None
            if row is None
            else StoredCheckpoint(int(row.size), bytes(row.root), row.note, row.created)
        )

    # -- plumbing -----------------------------------------------------------------

    def _read(self) -> Any:
        return _Translate(self._reader.connect, self.url)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        # In the appends' queue (the writer lock file), not on SQLite's busy handler: it
        # naps up to 100 ms while another process appends, and every commit of both
        # processes then waits behind this transaction's nap.
        with self._append_lock, _Translate(self._writer.begin, self.url) as conn:
            yield conn


class _FileLock:
    """An exclusive ``flock`` that processes appending to one SQLite file queue on.

    SQLite's own busy handler sleeps and polls (up to 100 ms a nap), so two writer
    processes hand its lock over slowly; a waiter blocked in ``flock`` is woken the
    moment the holder is done. The SQLite lock still guards correctness."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None
        self._thread_lock = threading.Lock()

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            self._thread_lock.release()
            raise StoreError(f"cannot lock {self._path}: {exc.strerror}") from exc

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        with self._thread_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class _Translate:
    """A connection context that turns sqlalchemy errors into :class:`StoreError`,
    connecting included (a server that refuses, a file that is not a database)."""

    def __init__(self, open_context: Callable[[], Any], url: str) -> None:
        self._open = open_context
        self._context: Any = None
        self._url = url

    def __enter__(self) -> sa.Connection:
        try:
            self._context = self._open()
            return self._context.__enter__()  # type: ignore[no-any-return]
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot use the audit database {self._url}: {_reason(exc)}") from exc

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._context.__exit__(*exc_info)
        except SQLAlchemyError as exc:
            raise StoreError(f"audit database {self._url}: {_reason(exc)}") from exc
        if exc_info[1] is not None and isinstance(exc_info[1], SQLAlchemyError):
            raise StoreError(f"audit database {self._url}: {_reason(exc_info[1])}") from exc_info[1]


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    return str(original or exc).splitlines()[0]
