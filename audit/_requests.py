"""Recorded requests: the full input of a decision, kept beside the log, encrypted.

An entry keeps only a digest of its request (``request_digest``), so that the hashed log
holds no more than an auditor needs. To replay traffic against another bundle the
request itself is needed: with ``record_requests`` on, each decision's (and
placement's) input — principal, action, resource, context with the verified posture,
the caller's entities, the provenance — is stored in the ``audit_request`` table, one
row per entry index, written in the entry's own transaction (no second commit).

Each row is AES-256-GCM under a data key kept in the data directory
(:class:`RequestKeys`: a 0600 file, created on first use; rotation adds a key and keeps
the old ones, so every row names its key id). The associated data is the log's origin
and the entry index: a row copied to another index, or into another log, does not
open (:class:`~audit._errors.RecordedRequestError`), nor does one opened with a wrong
key or whose ciphertext changed. Nothing here is part of any hash: the tree, the
checkpoints and ``audit verify`` are the same whether rows exist or not.

Privacy: a redaction deletes the entry's row in the redaction's transaction
(``Store.append(erase=…)``), and rows older than ``request_retention_days`` are dropped
on their own, shorter, schedule (:meth:`~audit._store.Store.drop_requests`).
Archives never carry them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NewType

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from audit._entry import Entry
from audit._errors import FormatError, KeyFormatError, RecordedRequestError

if TYPE_CHECKING:
    from audit._store import Store

log = structlog.get_logger("docket.audit")

KeyId = NewType("KeyId", str)
"""A request key's id: the first 8 bytes of SHA-256 of the key, hex."""

MAX_RECORDED_BYTES = 1 << 20
"""The largest request recorded (JSON bytes). The serving limits
(:mod:`engine._core.limits`) count a string's characters, and JSON writes a control
character in six bytes and others in up to four, so a request they admit can be over
it: such a request is recorded as left out (:data:`OMITTED`), its decision as usual."""
OMITTED = "omitted"
"""The key of a recorded request left out for its size: why, in words
(:func:`read_recorded` yields such a row with that reason as its error)."""
KEY_FILE = "request-keys"
"""The key file's name in the data directory."""
_NONCE = 12
_INDEX = struct.Struct("!Q")
_LINE = re.compile(r"^([0-9a-f]{16}) ([A-Za-z0-9+/]{43}=)$")
_AAD_PREFIX = b"docket recorded request v1\x00"


@dataclass(frozen=True, slots=True)
class Recorded:
    """An entry and the request it was decided on (plain JSON values), recorded together
    in one transaction. ``request`` is serialized on the writer thread, not the caller's."""

    entry: Entry
    request: Mapping[str, Any]


def _json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def request_bytes(request: Mapping[str, Any]) -> bytes:
    """The stored form of a request: compact JSON. Over :data:`MAX_RECORDED_BYTES`, its
    ``kind`` and ``api`` and why the rest was left out (:data:`OMITTED`): the entry is
    recorded and replay reports the request as not replayed. Raises
    :class:`FormatError` for values JSON cannot hold."""
    try:
        data = _json(request)
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise FormatError(f"cannot record the request: {exc}") from exc
    if len(data) <= MAX_RECORDED_BYTES:
        return data
    why = f"{len(data)} bytes of JSON, over the limit of {MAX_RECORDED_BYTES}"
    log.warning("audit.request_not_recorded", kind=request.get("kind"), reason=why)
    kept = {key: request[key] for key in ("kind", "api") if key in request}
    return _json({**kept, OMITTED: why})


def _key_id(key: bytes) -> KeyId:
    return KeyId(hashlib.sha256(key).hexdigest()[:16])


def _aad(origin: str, index: int) -> bytes:
    return _AAD_PREFIX + origin.encode() + b"\x00" + _INDEX.pack(index)


class RequestKeys:
    """The data keys of recorded requests, in one file (``KEYID BASE64KEY`` a line, the
    last one current), readable by its owner only. Thread-safe.

    Raises :class:`~audit._errors.KeyFormatError` for a file that is malformed or
    readable by others, :class:`RecordedRequestError` for a key id it does not hold."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._keys: dict[KeyId, AESGCM] = {}
        self._current: KeyId | None = None

    @classmethod
    def in_dir(cls, data_dir: Path) -> RequestKeys:
        """The key file of a data directory."""
        return cls(data_dir / KEY_FILE)

    def _load(self) -> None:
        try:
            text = self.path.read_text()
            mode = os.stat(self.path).st_mode & 0o077
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFormatError(f"cannot read the request keys {self.path}: {exc}") from exc
        if mode:
            raise KeyFormatError(
                f"{self.path} is readable by others (mode {oct(mode)}): chmod 600 it"
            )
        for number, line in enumerate(text.splitlines(), 1):
            found = _LINE.match(line)
            if found is None:
                raise KeyFormatError(f"{self.path}:{number}: not a request key line")
            key = base64.b64decode(found[2])
            if _key_id(key) != found[1]:
                raise KeyFormatError(f"{self.path}:{number}: the key id does not match the key")
            self._keys[KeyId(found[1])] = AESGCM(key)
            self._current = KeyId(found[1])

    def _loaded(self) -> None:
        if self._current is None:
            self._load()

    def current(self) -> tuple[KeyId, AESGCM]:
        """The key new rows are sealed with, made (and the file with it) on first use."""
        with self._lock:
            self._loaded()
            if self._current is None:
                self._add()
            assert self._current is not None
            return self._current, self._keys[self._current]

    def rotate(self) -> KeyId:
        """Add a new current key; rows sealed with the old ones still open."""
        with self._lock:
            self._loaded()
            return self._add()

    def _add(self) -> KeyId:
        key = AESGCM.generate_key(bit_length=256)
        key_id = _key_id(key)
        line = f"{key_id} {base64.b64encode(key).decode()}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(descriptor, line.encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as exc:
            raise KeyFormatError(f"cannot write the request keys {self.path}: {exc}") from exc
        self._keys[key_id] = AESGCM(key)
        self._current = key_id
        return key_id

    def key(self, key_id: str) -> AESGCM:
        """The key of ``key_id``. Raises :class:`RecordedRequestError` when not held."""
        with self._lock:
            self._loaded()
            found = self._keys.get(KeyId(key_id))
        if found is None:
            raise RecordedRequestError(f"no request key {key_id} in {self.path}")
        return found


def seal(keys: RequestKeys, origin: str, index: int, plaintext: bytes) -> tuple[KeyId, bytes]:
    """``(key id, nonce || ciphertext || tag)`` of a request recorded at ``index``."""
    key_id, aead = keys.current()
    nonce = os.urandom(_NONCE)
    return key_id, nonce + aead.encrypt(nonce, plaintext, _aad(origin, index))


def unseal(keys: RequestKeys, origin: str, index: int, key_id: str, sealed: bytes) -> bytes:
    """The request recorded at ``index``. Raises :class:`RecordedRequestError` when the
    key is not held, or the row does not open at this index of this log (a wrong key, a
    row moved from another index, a changed ciphertext)."""
    aead = keys.key(key_id)
    try:
        return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(origin, index))
    except (InvalidTag, ValueError) as exc:
        raise RecordedRequestError(
            f"the request recorded for entry {index} does not open with key {key_id}: "
            "a wrong key, a row moved from another entry, or a changed ciphertext"
        ) from exc


def open_request(keys: RequestKeys, origin: str, index: int, key_id: str, sealed: bytes) -> Any:
    """:func:`unseal`, parsed. Raises :class:`RecordedRequestError`."""
    plaintext = unseal(keys, origin, index, key_id, sealed)
    try:
        return json.loads(plaintext)
    except ValueError as exc:  # pragma: no cover - only what seal() was given opens
        raise RecordedRequestError(f"the request recorded for entry {index} is not JSON") from exc


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A recorded request as read back: the entry's index and time, and the request, or
    (``request`` None) why its row does not open."""

    index: int
    time: str
    request: Any | None
    error: str | None = None


def read_recorded(
    store: Store, keys: RequestKeys, start: int = 0, end: int | None = None
) -> Iterator[RecordedRequest]:
    """The recorded requests of entries ``start <= index < end``, opened, in index order.
    A row that does not open, or that says its request was left out for its size, is
    yielded with its error (never skipped, never guessed).
    Raises :class:`~audit._errors.StoreError` when the database cannot be read."""
    origin = store.origin
    for row in store.recorded(start, end):
        try:
            request = open_request(keys, origin, row.idx, row.key_id, row.sealed)
        except RecordedRequestError as exc:
            yield RecordedRequest(row.idx, row.time, None, str(exc))
        else:
            if isinstance(request, dict) and OMITTED in request:
                why = f"the request was not recorded: {request[OMITTED]}"
                yield RecordedRequest(row.idx, row.time, None, why)
            else:
                yield RecordedRequest(row.idx, row.time, request)
