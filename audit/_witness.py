"""A C2SP tlog-witness (c2sp.org/tlog-witness): ``add-checkpoint`` checked in the
specification's order, and a cosignature/v1 for each checkpoint that extends what the
witness cosigned before.

:func:`parse_add_checkpoint` reads a request body; :func:`judge` is the pure decision
on one known log's state; :class:`Witness` drives both over a
:class:`~audit._witness_store.WitnessStore` (one atomic check-and-set per request).
Every refusal is a :class:`~audit._errors.WitnessError` whose ``status`` is the
specification's:

=====  ===============================================================================
400    the body is malformed, or its old size is larger than the checkpoint's size
403    no signature by a key the witness trusts for the origin, or one that fails
404    the origin is not a log the witness knows
409    the old size is not the size the witness last cosigned (``size`` says which)
413    the body is larger than :data:`MAX_BODY` (the HTTP layer's, before parsing)
422    the consistency proof does not verify, a proof from size 0, a size-0 checkpoint
       whose root is not the empty tree's, or a fork: the size the witness cosigned,
       another root (:class:`~audit._errors.ForkDetected`, recorded with both notes)
=====  ===============================================================================
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from audit._cosignature import cosign, with_cosignatures
from audit._errors import ForkDetected, NoteError, ProofError, WitnessError
from audit._merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from audit._note import Checkpoint, SignedNote, SignerKey, open_checkpoint, parse_note
from audit._witness_store import Advance, LogState, WitnessStore

__all__ = [
    "MAX_BODY",
    "MAX_PROOF_LINES",
    "AddCheckpoint",
    "Cosigner",
    "Witness",
    "judge",
    "origin_hash",
    "parse_add_checkpoint",
]

MAX_PROOF_LINES = 63
"""Most consistency proof lines a request may carry (a proof in a tree of < 2⁶⁴)."""
MAX_BODY = 64 * 1024
"""Largest request body: 63 proof lines are 2.8 KiB, a checkpoint with 100 signatures
about 20 KiB; anything larger is refused unread (413)."""

_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")
log = structlog.get_logger("docket.witness")


def origin_hash(origin: str) -> str:
    """The monitoring path's name for a log: SHA-256 of its origin, lowercase hex."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AddCheckpoint:
    """An add-checkpoint request: the old size, the consistency proof, the signed
    checkpoint note (unverified) and the checkpoint parsed from it (unverified)."""

    old_size: int
    proof: tuple[bytes, ...]
    note: str
    checkpoint: Checkpoint


def _bad(message: str) -> WitnessError:
    return WitnessError(400, message)


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Read an add-checkpoint body: ``old <size>``, at most :data:`MAX_PROOF_LINES`
    base64 hashes, a blank line, a signed checkpoint. Raises
    :class:`~audit._errors.WitnessError` (400) when it is malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the body is not UTF-8") from None
    head, blank, note = text.partition("\n\n")
    if not blank:
        raise _bad("the body has no blank line before the checkpoint")
    old_line, *proof_lines = head.split("\n")
    old = _OLD.fullmatch(old_line)
    if old is None:
        raise _bad("the first line must be 'old <size>' (decimal, no leading zeros)")
    if len(proof_lines) > MAX_PROOF_LINES:
        raise _bad(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = tuple(_hash_line(line) for line in proof_lines)
    try:
        checkpoint = Checkpoint.parse_body(parse_note(note).text)
    except NoteError as exc:
        raise _bad(f"the checkpoint is malformed: {exc}") from None
    return AddCheckpoint(int(old[1]), proof, note, checkpoint)


def _hash_line(line: str) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
        raise _bad("a consistency proof line is not the base64 of a 32-byte hash")
    return raw


def judge(request: AddCheckpoint, state: LogState) -> tuple[Checkpoint, SignedNote]:
    """Decide an add-checkpoint for the known log ``state``, in the specification's
    order: the log's signature (403), an old size past the checkpoint (400), the old
    size against the one cosigned (409), a size-0 root (422), the
    proof (422), a fork at the cosigned size (422, :class:`ForkDetected`). Returns the
    verified checkpoint to cosign and its note with the log's verified signatures. Pure."""
    try:
        checkpoint, verified = open_checkpoint(request.note, state.keys, origin=state.origin)
    except NoteError as exc:
        raise WitnessError(403, f"the checkpoint's signature: {exc}") from None
    if request.old_size > checkpoint.size:
        raise _bad(f"old size {request.old_size} is larger than the checkpoint's {checkpoint.size}")
    if request.old_size != state.size:
        raise WitnessError(
            409,
            f"old size {request.old_size} is not {state.size}, the size last cosigned",
            size=state.size,
        )
    if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
        raise WitnessError(422, "a checkpoint of size 0 must have the empty tree's root")
    if request.old_size == 0:
        if request.proof:
            raise WitnessError(422, "a consistency proof from size 0 must be empty")
        return checkpoint, verified
    assert state.root is not None
    assert state.note is not None
    if checkpoint.size == state.size and checkpoint.root != state.root:
        raise ForkDetected(
            f"log {state.origin!r} signed two roots for size {state.size}: a fork",
            held=state.note,
            offered=request.note,
        )
    try:
        verify_consistency(state.size, checkpoint.size, state.root, checkpoint.root, request.proof)
    except ProofError as exc:
        raise WitnessError(422, f"the consistency proof does not verify: {exc}") from None
    return checkpoint, verified


class Cosigner:
    """Cosigning keys (``alg`` 0x04); ``clock`` gives the time each cosignature states
    (UTC now by default)."""

    def __init__(
        self,
        keys: Sequence[SignerKey],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not keys:
            raise WitnessError(None, "a witness needs at least one key")
        self.keys = tuple(keys)
        self._clock = clock

    def cosign(self, checkpoint: Checkpoint, verified: SignedNote) -> tuple[str, str]:
        """The note ``verified`` with a cosignature of ``checkpoint`` by each key, now;
        and those cosignature lines alone."""
        now = self._clock()
        cosignatures = [cosign(checkpoint, key, now) for key in self.keys]
        lines = "".join(c.line() for c in cosignatures)
        return with_cosignatures(str(verified), cosignatures), lines


class Witness(Cosigner):
    """A witness: its cosigning keys (``alg`` 0x04) and its store. ``clock`` gives the
    time each cosignature states (UTC now by default)."""

    def __init__(
        self,
        store: WitnessStore,
        keys: Sequence[SignerKey],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(keys, clock)
        self.store = store

    def add_checkpoint(self, body: bytes) -> str:
        """Answer an add-checkpoint: the cosignature lines (one per witness key) of the
        submitted checkpoint, once the new state is on disk. Raises
        :class:`~audit._errors.WitnessError` with the specification's status."""
        request = parse_add_checkpoint(body)
        origin = request.checkpoint.origin
        lines: list[str] = []

        def decide(state: LogState) -> Advance:
            checkpoint, verified = judge(request, state)
            note, cosigned = self.cosign(checkpoint, verified)
            lines[:] = [cosigned]
            return Advance(checkpoint.size, checkpoint.root, note)

        try:
            self.store.advance(origin, decide)
        except ForkDetected as fork:
            log.error(
                "witness.fork", origin=origin, size=request.checkpoint.size, problem=str(fork)
            )
            raise
        except WitnessError as exc:
            log.info("witness.refused", origin=origin, status=exc.status, problem=str(exc))
            raise
        log.info("witness.cosigned", origin=origin, size=request.checkpoint.size)
        return "".join(lines)

    def checkpoint(self, hashed_origin: str) -> str | None:
        """The latest cosigned checkpoint (log and witness signatures) of the log whose
        :func:`origin_hash` is ``hashed_origin``, or None."""
        for state in self.store.logs():
            if origin_hash(state.origin) == hashed_origin:
                return state.note
        return None
