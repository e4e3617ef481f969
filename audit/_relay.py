"""One writer per log: worker processes commit through the process that owns the log.

With several worker processes each would otherwise commit its own entries to the one
database: they contend for its write lock (SQLite's busy handler sleeps while another
process commits) and never share an fsync. Instead the supervising process owns the log's
writer (:class:`LogServer`), and each worker's group-commit writer commits through a
:class:`Relay`. A worker's batch (canonical :class:`~audit._store.Pending` entries, made on
the worker's own writer thread) goes over a Unix socket. The owner's writer commits every
batch waiting, from every worker, in one transaction and one fsync, and answers each
worker with its receipts once they are durable. A worker has at most one batch in flight:
its next batch gathers in its own queue meanwhile.

The socket is in a directory only the owner's user may enter, and a connection must
prove it knows the supervisor's random key (multiprocessing's HMAC challenge) before
anything it sends is read. A relay that cannot reach the owner fails the commit with
:class:`~audit._errors.StoreError`: the worker fails closed until a probe (an empty
commit) reaches the owner again. The owner's errors cross as their class:
:class:`~audit._errors.Overloaded` is still back-pressure and
:class:`~audit._errors.LogIdentityError` still a lost log.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import struct
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from audit._errors import AuditError, FormatError, LogIdentityError, Overloaded, StoreError
from audit._store import Appended, Pending, Receipt

if TYPE_CHECKING:
    from audit._log import AuditLog

log = structlog.get_logger("docket.audit")

MAX_MESSAGE = 256 << 20
"""The largest batch a relay sends (bytes): far above a full batch of bounded entries."""

_COUNT = struct.Struct("!I")
_INDEX = struct.Struct("!q")
_ITEM = struct.Struct("!HHIi")  # kind, time, payload, request sizes (-1: none)
_TREE = struct.Struct("!qI")
_OK, _ERROR = b"\x00", b"\x01"
# The errors that cross as themselves; anything else arrives as a StoreError.
_ERRORS: dict[str, type[AuditError]] = {
    kind.__name__: kind for kind in (StoreError, Overloaded, LogIdentityError, FormatError)
}


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """Where a worker reaches the log's owner: a Unix socket and the key it must know."""

    path: str
    key: bytes


def encode_batch(pending: Sequence[Pending], erase: Sequence[int]) -> bytes:
    """A batch on the wire: the indices to erase, then each entry's kind, time, payload
    and the request it was decided on (when recorded)."""
    parts = [_COUNT.pack(len(erase)), *(_INDEX.pack(index) for index in erase)]
    parts.append(_COUNT.pack(len(pending)))
    for item in pending:
        kind, time, request = item.kind.encode(), item.time.encode(), item.request
        size = -1 if request is None else len(request)
        parts += (_ITEM.pack(len(kind), len(time), len(item.payload), size), kind, time)
        parts += (item.payload, request or b"")
    return b"".join(parts)


def decode_batch(data: bytes) -> tuple[list[Pending], list[int]]:
    """The inverse of :func:`encode_batch`. Raises :class:`FormatError` on a bad batch."""
    view = memoryview(data)
    try:
        (erasing,) = _COUNT.unpack_from(view, 0)
        offset = _COUNT.size
        erase = []
        for _ in range(erasing):
            erase.append(_INDEX.unpack_from(view, offset)[0])
            offset += _INDEX.size
        (count,) = _COUNT.unpack_from(view, offset)
        offset += _COUNT.size
        pending = []
        for _ in range(count):
            kind_size, time_size, payload_size, request_size = _ITEM.unpack_from(view, offset)
            offset += _ITEM.size
            end = offset + kind_size + time_size + payload_size + max(request_size, 0)
            if end > len(data):
                raise FormatError("a relayed batch ends inside an entry")
            kind = bytes(view[offset : offset + kind_size]).decode()
            offset += kind_size
            time = bytes(view[offset : offset + time_size]).decode()
            offset += time_size
            middle = offset + payload_size
            request = None if request_size < 0 else bytes(view[middle:end])
            pending.append(Pending(kind, time, bytes(view[offset:middle]), request))
            offset = end
    except (struct.error, UnicodeDecodeError) as exc:
        raise FormatError(f"a relayed batch is malformed: {exc}") from exc
    if offset != len(data):
        raise FormatError("a relayed batch has bytes after its last entry")
    return pending, erase


def encode_appended(receipts: Sequence[Receipt], size: int, root: bytes) -> bytes:
    """A commit's answer to one batch: the tree it left and the batch's receipts."""
    parts = [_OK, _TREE.pack(size, len(receipts)), _COUNT.pack(len(root)), root]
    for receipt in receipts:
        parts += (_INDEX.pack(receipt.index), _COUNT.pack(len(receipt.leaf_hash)))
        parts.append(receipt.leaf_hash)
    return b"".join(parts)


def encode_error(error: AuditError) -> bytes:
    """A refused batch: the error's class (one the relay knows) and its message."""
    kind = type(error).__name__ if type(error).__name__ in _ERRORS else "StoreError"
    return _ERROR + f"{kind}\n{error}".encode()


def decode_answer(data: bytes) -> Appended:
    """The receipts of an answer; raises the error an error answer carries."""
    if data[:1] == _ERROR:
        kind, _, message = data[1:].decode(errors="replace").partition("\n")
        raise _ERRORS.get(kind, StoreError)(message)
    view = memoryview(data)
    try:
        size, count = _TREE.unpack_from(view, 1)
        offset = 1 + _TREE.size
        root, offset = _sized(view, offset)
        receipts = []
        for _ in range(count):
            (index,) = _INDEX.unpack_from(view, offset)
            leaf, offset = _sized(view, offset + _INDEX.size)
            receipts.append(Receipt(index, leaf))
    except struct.error as exc:
        raise StoreError(f"the audit log's owner answered a malformed reply: {exc}") from exc
    return Appended(receipts, size, root)


def _sized(view: memoryview, offset: int) -> tuple[bytes, int]:
    (size,) = _COUNT.unpack_from(view, offset)
    start = offset + _COUNT.size
    if start + size > len(view):
        raise struct.error("a field ends past the reply")
    return bytes(view[start : start + size]), start + size


class Relay:
    """A worker's way to commit: :meth:`append` has ``Store.append``'s signature, so a
    :class:`~audit._writer.Writer` takes it as its ``commit``. One batch at a time
    (the writer holds its commit lock while it waits); reconnects after a failure."""

    def __init__(self, address: RelayAddress) -> None:
        self.address = address
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    def append(self, pending: Sequence[Pending], *, erase: Sequence[int] = ()) -> Appended:
        """Commit through the owner. Raises what the owner's commit raised, or
        :class:`StoreError` when the owner cannot be reached (the batch may or may not
        have landed, as with a COMMIT whose answer was lost: it is not sent again)."""
        message = encode_batch(pending, erase)
        with self._lock:
            try:
                connection = self._connect()
                connection.send_bytes(message)
                answer = connection.recv_bytes(MAX_MESSAGE)
            except (OSError, EOFError, AuthenticationError) as exc:
                self._drop()
                raise StoreError(f"cannot reach the audit log's writer: {exc!r}") from exc
        return decode_answer(answer)

    def _connect(self) -> Connection:
        if self._connection is None:
            self._connection = Client(self.address.path, "AF_UNIX", authkey=self.address.key)
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        """Close the connection (the owner's writer goes on)."""
        with self._lock:
            self._drop()


class LogServer:
    """The log's owner: commits the batches its workers' relays send, with ``log``'s
    writer (group commit across every worker). Start it, give each worker
    :attr:`address`, close it after the workers stopped."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._directory = tempfile.mkdtemp(prefix="docket-log-")  # mode 0700
        path = os.path.join(self._directory, "writer.sock")
        self.address = RelayAddress(path, secrets.token_bytes(32))
        self._listener = Listener(path, "AF_UNIX", authkey=self.address.key)
        self._connections: set[Connection] = set()
        self._closed = threading.Event()
        self._guard = threading.Lock()
        self._accepting = threading.Thread(
            target=self._accept, name="docket-log-accept", daemon=True
        )

    def start(self) -> LogServer:
        """Accept workers (idempotent); returns self."""
        if not self._accepting.is_alive() and not self._closed.is_set():
            self._accepting.start()
        return self

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection = self._listener.accept()
            except Exception as exc:  # a client that failed the key challenge, or close()
                if self._closed.is_set():
                    return
                log.warning("audit.relay_refused", error=repr(exc))
                continue
            with self._guard:
                self._connections.add(connection)
            threading.Thread(
                target=self._serve, args=(connection,), name="docket-log-relay", daemon=True
            ).start()

    def _serve(self, connection: Connection) -> None:
        try:
            while True:
                try:
                    message = connection.recv_bytes(MAX_MESSAGE)
                except (OSError, EOFError):
                    return
                connection.send_bytes(self._commit(message))
        except OSError:
            return  # the worker went away mid-answer; its caller saw a StoreError
        finally:
            with self._guard:
                self._connections.discard(connection)
            connection.close()

    def _commit(self, message: bytes) -> bytes:
        writer = self.audit.writer
        try:
            pending, erase = decode_batch(message)
            if not pending and not erase:
                # A worker's probe: is the log writable (after trying, if it was not)?
                if not writer.probe():
                    raise StoreError(writer.failure or "the audit log is not writable")
                head = self.audit.store.head()
                return encode_appended((), head.size, head.root)
            ticket = writer.submit(pending, erase=erase)
            receipts = ticket.result(timeout=None)
        except AuditError as exc:
            return encode_error(exc)
        size, root = ticket.tree
        return encode_appended(receipts, size, root)

    def close(self) -> None:
        """Stop accepting, close every worker's connection, remove the socket. The log
        itself is the caller's to close. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._accepting.is_alive():
            # Wake the accept (closing a listening socket does not): it then sees closed.
            with socket.socket(socket.AF_UNIX) as wake:
                wake.connect(self.address.path)
            self._accepting.join(5)
        self._listener.close()
        with self._guard:
            connections = list(self._connections)
        for connection in connections:
            # Shut the socket down (closing it under a thread blocked reading it is not
            # safe): that thread then reads end-of-file, and closes it itself.
            with (
                contextlib.suppress(OSError),
                socket.socket(fileno=os.dup(connection.fileno())) as duplicate,
            ):
                duplicate.shutdown(socket.SHUT_RDWR)
        Path(self._directory, "writer.sock").unlink(missing_ok=True)
        os.rmdir(self._directory)
