"""C2SP tlog-cosignature, the Ed25519 ``cosignature/v1`` kind: a witness's statement
that, at a time, the checkpoint was the largest consistent tree it had seen of the log.

A cosignature is a note signature line by the witness key (algorithm byte
:data:`~audit._note.ALG_COSIGNATURE_V1` in its key id and vkey) whose bytes after the key
id are a big-endian u64 POSIX timestamp and an Ed25519 signature over::

    cosignature/v1\\n
    time <timestamp>\\n
    <the checkpoint's note body, extension lines and final newline included>

Witness keys are :class:`~audit._note.SignerKey` / :class:`~audit._note.VerifierKey`
with ``alg=ALG_COSIGNATURE_V1``; a note key is never taken for one, or the reverse.
A site treats a checkpoint as final with :func:`open_cosigned_checkpoint`: the log's
own signature and the cosignatures of ``quorum`` of the configured witnesses.
Pure: the time is passed in. Raises :class:`~audit._errors.CosignatureError` (a
:class:`~audit._errors.NoteError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from audit._errors import CosignatureError
from audit._note import (
    ALG_COSIGNATURE_V1,
    Checkpoint,
    Signature,
    SignedNote,
    SignerKey,
    VerifierKey,
    open_checkpoint,
    parse_note,
)

__all__ = [
    "Cosignature",
    "CosignedCheckpoint",
    "cosign",
    "cosignatures_of",
    "open_cosigned_checkpoint",
    "signed_message",
    "with_cosignatures",
]

_HEADER = b"cosignature/v1\n"
_TIMESTAMP_SIZE = 8
_SIGNATURE_SIZE = 64
_MAX_TIMESTAMP = 2**63 - 1


def signed_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: the header line, ``time <timestamp>`` and the
    checkpoint's body. Raises :class:`CosignatureError` for a timestamp out of range."""
    if isinstance(timestamp, bool) or not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise CosignatureError(f"a cosignature's timestamp must be in [0, 2^63), not {timestamp}")
    return _HEADER + b"time %d\n" % timestamp + checkpoint.body().encode("utf-8")


@dataclass(frozen=True)
class Cosignature:
    """One cosignature: the witness key's name and 4-byte id, the POSIX time it was
    made at, and the 64-byte Ed25519 signature (by itself: not yet verified)."""

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    @property
    def time(self) -> datetime:
        """The timestamp as an aware UTC datetime."""
        return datetime.fromtimestamp(self.timestamp, UTC)

    def as_signature(self) -> Signature:
        """The note signature this cosignature is carried in."""
        stamp = self.timestamp.to_bytes(_TIMESTAMP_SIZE, "big")
        return Signature(self.name, self.key_id, stamp + self.signature)

    def line(self) -> str:
        """The signature line, newline included."""
        return self.as_signature().line()

    @classmethod
    def from_signature(cls, signature: Signature) -> Cosignature:
        """Read a note signature as a cosignature/v1 (checking only its length and
        timestamp range). Raises :class:`CosignatureError`."""
        raw = signature.signature
        if len(raw) != _TIMESTAMP_SIZE + _SIGNATURE_SIZE:
            raise CosignatureError(
                f"the cosignature by {signature.name} is {len(raw)} bytes, not "
                f"{_TIMESTAMP_SIZE + _SIGNATURE_SIZE} (timestamp and Ed25519 signature)"
            )
        timestamp = int.from_bytes(raw[:_TIMESTAMP_SIZE], "big")
        if timestamp > _MAX_TIMESTAMP:
            raise CosignatureError(f"the cosignature by {signature.name} has a timestamp ≥ 2^63")
        return cls(signature.name, signature.key_id, timestamp, raw[_TIMESTAMP_SIZE:])


def _witness_key(key: SignerKey | VerifierKey) -> None:
    if key.alg != ALG_COSIGNATURE_V1:
        raise CosignatureError(f"{key.name}+{key.key_id.hex()} is a note key, not a witness key")


def cosign(checkpoint: Checkpoint, witness: SignerKey, now: datetime) -> Cosignature:
    """The cosignature/v1 of ``checkpoint`` by ``witness`` at ``now`` (whole seconds).
    Raises :class:`CosignatureError` when ``witness`` is not a witness key."""
    _witness_key(witness)
    timestamp = int(now.timestamp())
    signature = witness.sign(signed_message(checkpoint, timestamp))
    return Cosignature(witness.name, witness.key_id, timestamp, signature)


def _verify(checkpoint: Checkpoint, signature: Signature, witness: VerifierKey) -> Cosignature:
    cosignature = Cosignature.from_signature(signature)
    message = signed_message(checkpoint, cosignature.timestamp)
    if not witness.verify(message, cosignature.signature):
        raise CosignatureError(
            f"the cosignature by {witness.name}+{witness.key_id.hex()} does not verify"
        )
    return cosignature


def cosignatures_of(
    checkpoint: Checkpoint, note: SignedNote, witnesses: Sequence[VerifierKey]
) -> list[Cosignature]:
    """The verified cosignatures of ``checkpoint`` among ``note``'s signatures, one per
    witness (the latest); lines by other keys are ignored. A line whose name and key id
    are a configured witness's must verify. Raises :class:`CosignatureError`."""
    trusted: dict[tuple[str, bytes], VerifierKey] = {}
    for key in witnesses:
        _witness_key(key)
        trusted[(key.name, key.key_id)] = key
    found: dict[tuple[str, bytes], Cosignature] = {}
    for signature in note.signatures:
        witness = trusted.get((signature.name, signature.key_id))
        if witness is None:
            continue
        cosignature = _verify(checkpoint, signature, witness)
        ident = (witness.name, witness.key_id)
        if ident not in found or found[ident].timestamp < cosignature.timestamp:
            found[ident] = cosignature
    return list(found.values())


@dataclass(frozen=True)
class CosignedCheckpoint:
    """A checkpoint verified against the log's keys and cosigned by enough witnesses:
    the checkpoint, the note with the log's verified signatures, the cosignatures."""

    checkpoint: Checkpoint
    note: SignedNote
    cosignatures: tuple[Cosignature, ...]


def open_cosigned_checkpoint(
    data: str | bytes,
    log_keys: Sequence[VerifierKey],
    witnesses: Sequence[VerifierKey],
    *,
    quorum: int | None = None,
    origin: str | None = None,
) -> CosignedCheckpoint:
    """Verify a checkpoint as final: signed by the log (as
    :func:`~audit._note.open_checkpoint`) and cosigned by at least ``quorum`` of the
    distinct ``witnesses`` (all of them when ``quorum`` is None).

    Fails closed: no witnesses, or a quorum outside ``1..len(witnesses)``, is an error.
    Raises :class:`CosignatureError` (too few cosignatures, one that does not verify, a
    bad quorum) or :class:`~audit._errors.NoteError` (the log's signature).
    """
    distinct = {(key.name, key.key_id) for key in witnesses}
    needed = len(distinct) if quorum is None else quorum
    if not 1 <= needed <= len(distinct):
        raise CosignatureError(
            f"a quorum of {needed} of {len(distinct)} configured witnesses cannot be met"
        )
    checkpoint, verified = open_checkpoint(data, log_keys, origin=origin)
    cosignatures = cosignatures_of(checkpoint, parse_note(data), witnesses)
    if len(cosignatures) < needed:
        have = ", ".join(c.name for c in cosignatures) or "none"
        raise CosignatureError(
            f"checkpoint {checkpoint.origin} size {checkpoint.size} is cosigned by "
            f"{len(cosignatures)} of the {needed} witnesses required ({have})"
        )
    return CosignedCheckpoint(checkpoint, verified, tuple(cosignatures))


def with_cosignatures(note: str, cosignatures: Sequence[Cosignature]) -> str:
    """``note`` (a signed note) with each of ``cosignatures``' lines appended, unless the
    note already carries that exact line. Raises :class:`~audit._errors.NoteError` when
    ``note`` is malformed."""
    parsed = parse_note(note)
    present = {signature.line() for signature in parsed.signatures}
    added = [c.line() for c in cosignatures if c.line() not in present]
    return note + "".join(dict.fromkeys(added))
