"""Redaction orders: the signed authority to erase one entry's payload.

Erasing a payload is the one change the log allows after the fact, so it must be an
act of someone entitled to it, not of whoever can write the database. An order is a
C2SP signed note by a *redaction key* — an Ed25519 key the operator (a data
protection officer, say) holds apart from the checkpoint signing keys — naming the
log, the entry and its leaf hash, when, who asked and why::

    docket-redaction/1
    origin docket.local/4f1c2a9e77d0
    index 42
    leaf 9c1e…(64 hex)
    time 2026-12-04T10:00:00.000000Z
    requested-by dpo@example.org
    reason GDPR Art. 17 request #1234

    — dpo-redaction base64(key id || signature)

The ``redaction`` entry that records the erasure carries the order; an export carries
it beside each erased entry. Verification accepts an erased payload only with an order
that verifies under a redaction key the verifier trusts and names that very entry
(origin, index and leaf hash), so an order cannot be replayed onto another entry or
another log. Pure: nothing here reads files or the clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from audit._entry import TIME_FORMAT, time_text
from audit._errors import NoteError
from audit._note import SignerKey, VerifierKey, open_note, sign_note

FORMAT = "docket-redaction/1"
MAX_TEXT = 1024
"""Longest ``reason`` or ``requested-by`` (characters): an order is a record, not a document."""

_FIELDS = ("origin", "index", "leaf", "time", "requested-by", "reason")
_LEAF = re.compile(r"[0-9a-f]{64}")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise NoteError(f"a redaction order's {what} must not be empty")
    if _CONTROL.search(value):
        raise NoteError(f"a redaction order's {what} must be one line without control characters")
    if len(value) > MAX_TEXT:
        raise NoteError(f"a redaction order's {what} is longer than {MAX_TEXT} characters")
    return value


@dataclass(frozen=True, slots=True)
class RedactionOrder:
    """What a redaction key signed: erase entry ``index`` (leaf hash ``leaf``) of the
    log ``origin``. The constructor checks every field; raises :class:`NoteError`."""

    origin: str
    index: int
    leaf: bytes
    time: datetime
    requested_by: str
    reason: str

    def __post_init__(self) -> None:
        _one_line(self.origin, "origin")
        if " " in self.origin:
            raise NoteError("a redaction order's origin has no spaces")
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise NoteError("a redaction order's index must be a non-negative int")
        if not isinstance(self.leaf, bytes) or len(self.leaf) != 32:
            raise NoteError("a redaction order's leaf hash must be 32 bytes")
        if self.time.tzinfo is None:
            raise NoteError("a redaction order's time must be timezone-aware")
        _one_line(self.requested_by, "requested-by")
        _one_line(self.reason, "reason")

    def body(self) -> str:
        """The note text that is signed."""
        values = (
            self.origin,
            str(self.index),
            self.leaf.hex(),
            time_text(self.time),
            self.requested_by,
            self.reason,
        )
        return FORMAT + "\n" + "".join(f"{k} {v}\n" for k, v in zip(_FIELDS, values, strict=True))

    @classmethod
    def parse_body(cls, text: str) -> RedactionOrder:
        """Parse an order's note text, verifying nothing. Strict: the format line, then
        exactly the six fields in order. Raises :class:`NoteError`."""
        lines = text.split("\n")
        if lines[-1] != "" or lines[0] != FORMAT or len(lines) != len(_FIELDS) + 2:
            raise NoteError(f"not a {FORMAT} order")
        values: dict[str, str] = {}
        for name, line in zip(_FIELDS, lines[1:-1], strict=True):
            key, space, value = line.partition(" ")
            if key != name or not space:
                raise NoteError(f"a {FORMAT} order's field {name!r} is missing or out of place")
            values[name] = value
        if not _DECIMAL.fullmatch(values["index"]):
            raise NoteError("a redaction order's index is not a decimal")
        if not _LEAF.fullmatch(values["leaf"]):
            raise NoteError("a redaction order's leaf is not 64 lowercase hex digits")
        try:
            time = datetime.strptime(values["time"], TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise NoteError("a redaction order's time is not RFC 3339 UTC") from None
        return cls(
            origin=values["origin"],
            index=int(values["index"]),
            leaf=bytes.fromhex(values["leaf"]),
            time=time,
            requested_by=values["requested-by"],
            reason=values["reason"],
        )


@dataclass(frozen=True, slots=True)
class VerifiedOrder:
    """An order whose signature verified, and the names of the keys that signed it."""

    order: RedactionOrder
    signed_by: tuple[str, ...]


def sign_order(order: RedactionOrder, signer: SignerKey) -> str:
    """The signed note of ``order``. Raises :class:`NoteError`."""
    return sign_note(order.body(), [signer])


def open_order(
    note: str, keys: Sequence[VerifierKey], *, origin: str, index: int, leaf: bytes
) -> VerifiedOrder:
    """Verify ``note`` under the trusted redaction ``keys`` and check that it orders
    exactly the erasure of entry ``index`` with leaf hash ``leaf`` in log ``origin``.
    Raises :class:`NoteError` saying which of those fails."""
    if not keys:
        raise NoteError("no trusted redaction key to check its signature against")
    opened = open_note(note, keys)
    order = RedactionOrder.parse_body(opened.text)
    if order.origin != origin:
        raise NoteError(f"the order is for log {order.origin!r}, not {origin!r}")
    if order.index != index:
        raise NoteError(f"the order erases entry {order.index}, not {index}")
    if order.leaf != leaf:
        raise NoteError("the order names a different leaf hash")
    return VerifiedOrder(order, tuple(sig.name for sig in opened.signatures))
