"""A central collector of edge sites' logs: a site PUSHES its new entries (canonical bytes
as stored), its signed checkpoint and the consistency proof from the collector's last
checkpoint for it; the collector recomputes the tree over the entries, stores them and
cosigns the checkpoint as a C2SP witness (cosignature/v1).

The push body is JSON (:func:`parse_push`, at most :data:`MAX_BODY` bytes and
:data:`MAX_ENTRIES` entries; a larger backlog goes as several pushes, each ending at
one of the site's checkpoints)::

    {"site": "eu-1", "old_size": 120, "proof": ["<base64 hash>", …],
     "checkpoint": "<signed note>", "entries": [["<base64 payload or null>",
     "<base64 leaf hash>"], …], "head": 130, "bundle_revision": null,
     "bundle_pulled": null}

``entries`` are the site's entries ``old_size`` … ``size - 1``. What is checked, in
order (:func:`judge_push`): the witness's own judging of the checkpoint
(:func:`audit._witness.judge`: the site's signature 403, the old size 409, a fork
422, the proof 422), then the entries: as many as the checkpoint adds, each payload
hashing to its leaf, and the tree they extend from what is held reaching the
checkpoint's root (recomputed: a proof alone is not enough when the entries are
here). A fork, or entries that do not reach the signed root, is refused with 422 and
kept as an incident with both notes (:mod:`audit._collector_store`).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from audit._errors import ForkDetected, NoteError, WitnessError
from audit._merkle import HASH_SIZE, CompactRange, leaf_hash
from audit._note import Checkpoint, parse_note
from audit._witness import MAX_PROOF_LINES, AddCheckpoint, Cosigner, judge

if TYPE_CHECKING:
    from audit._collector_store import CollectorStore, SiteState

__all__ = [
    "MAX_BODY",
    "MAX_ENTRIES",
    "Accepted",
    "Collector",
    "Push",
    "encode_push",
    "judge_push",
    "parse_push",
]

MAX_ENTRIES = 10_000
"""Most entries one push may carry; a larger backlog goes in several pushes."""
MAX_BODY = 64 * 1024 * 1024
"""Largest push body: 10,000 entries of up to about 4.5 KiB each, base64."""

log = structlog.get_logger("docket.collector")


@dataclass(frozen=True)
class Push:
    """A site's push (unverified): its name, the collector size it extends, the proof,
    the signed checkpoint note and its parsed body, the entries as (payload or None,
    leaf hash), and what the site reports of itself."""

    site: str
    old_size: int
    proof: tuple[bytes, ...]
    note: str
    checkpoint: Checkpoint
    entries: tuple[tuple[bytes | None, bytes], ...]
    head: int | None = None
    bundle_revision: str | None = None
    bundle_pulled: str | None = None


@dataclass(frozen=True)
class Accepted:
    """What a push left: the site's new size and root, the compact range after it, the
    cosigned note (the site's signatures and the collector's cosignatures) and the
    cosignature lines alone (the answer)."""

    size: int
    root: bytes
    frontier: CompactRange
    note: str
    lines: str


def _bad(message: str) -> WitnessError:
    return WitnessError(400, message)


def _b64(text: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise _bad(f"{what} is not a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not base64") from None
    if size is not None and len(raw) != size:
        raise _bad(f"{what} is not {size} bytes")
    return raw


def _optional_text(value: object, what: str) -> str | None:
    if value is None or (isinstance(value, str) and len(value) <= 256):
        return value
    raise _bad(f"{what} is not a short string")


def _size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise _bad(f"{what} is not a size")
    return value


def parse_push(body: bytes) -> Push:
    """Read a push body. Raises :class:`~audit._errors.WitnessError` (400) when it is
    malformed (not JSON, a missing or mistyped field: a truncated body is one), 413
    with more than :data:`MAX_ENTRIES` entries."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body is not JSON (truncated?)") from None
    if not isinstance(document, dict):
        raise _bad("the body is not a JSON object")
    site = document.get("site")
    if not isinstance(site, str) or not site or len(site) > 128:
        raise _bad("site is not a site name")
    proof = document.get("proof")
    if not isinstance(proof, list) or len(proof) > MAX_PROOF_LINES:
        raise _bad(f"proof is not a list of at most {MAX_PROOF_LINES} hashes")
    entries = document.get("entries")
    if not isinstance(entries, list):
        raise _bad("entries is not a list")
    if len(entries) > MAX_ENTRIES:
        raise WitnessError(413, f"{len(entries)} entries: at most {MAX_ENTRIES} a push")
    note = document.get("checkpoint")
    if not isinstance(note, str):
        raise _bad("checkpoint is not a signed note")
    try:
        checkpoint = Checkpoint.parse_body(parse_note(note).text)
    except NoteError as exc:
        raise _bad(f"the checkpoint is malformed: {exc}") from None
    return Push(
        site=site,
        old_size=_size(document.get("old_size"), "old_size"),
        proof=tuple(_b64(node, "a proof hash", HASH_SIZE) for node in proof),
        note=note,
        checkpoint=checkpoint,
        entries=tuple(_entry(item, n) for n, item in enumerate(entries)),
        head=None if document.get("head") is None else _size(document["head"], "head"),
        bundle_revision=_optional_text(document.get("bundle_revision"), "bundle_revision"),
        bundle_pulled=_optional_text(document.get("bundle_pulled"), "bundle_pulled"),
    )


def _entry(item: Any, n: int) -> tuple[bytes | None, bytes]:
    if not isinstance(item, list) or len(item) != 2:
        raise _bad(f"entry {n} is not [payload, leaf hash]")
    payload = None if item[0] is None else _b64(item[0], f"entry {n}'s payload")
    return payload, _b64(item[1], f"entry {n}'s leaf hash", HASH_SIZE)


def encode_push(push: Push) -> bytes:
    """The body of ``push`` (as :func:`parse_push` reads it)."""

    def text(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return json.dumps(
        {
            "site": push.site,
            "old_size": push.old_size,
            "proof": [text(node) for node in push.proof],
            "checkpoint": push.note,
            "entries": [
                [None if payload is None else text(payload), text(leaf)]
                for payload, leaf in push.entries
            ],
            "head": push.head,
            "bundle_revision": push.bundle_revision,
            "bundle_pulled": push.bundle_pulled,
        },
        separators=(",", ":"),
    ).encode("utf-8")


def judge_push(push: Push, state: SiteState, cosigner: Cosigner) -> Accepted:
    """Decide ``push`` against what is held for the site (``state``): the witness's
    judging of the checkpoint, then the entries, recomputed to the checkpoint's root;
    returns what to keep, cosigned by ``cosigner``. Raises
    :class:`~audit._errors.WitnessError` (422 for entries that do not extend what is
    held to the checkpoint; :class:`~audit._errors.ForkDetected` for a second root at
    the size held). Pure but for the cosigner's clock."""
    request = AddCheckpoint(push.old_size, push.proof, push.note, push.checkpoint)
    checkpoint, verified = judge(request, state.log)
    added = checkpoint.size - push.old_size
    if len(push.entries) != added:
        raise WitnessError(
            422,
            f"the push carries {len(push.entries)} entries; the checkpoint adds {added} "
            f"(size {push.old_size} to {checkpoint.size})",
        )
    frontier = state.frontier.copy()
    for offset, (payload, leaf) in enumerate(push.entries):
        if payload is not None and leaf_hash(payload) != leaf:
            raise WitnessError(
                422, f"entry {push.old_size + offset}: its payload does not hash to its leaf"
            )
        frontier.push(leaf)
    if frontier.root() != checkpoint.root:
        raise ForkDetected(
            f"site {push.site!r}: the entries {push.old_size}..{checkpoint.size - 1} do not "
            f"extend what the collector holds to the checkpoint's root",
            held=state.log.note or "",
            offered=push.note,
        )
    note, lines = cosigner.cosign(checkpoint, verified)
    return Accepted(checkpoint.size, checkpoint.root, frontier, note, lines)


class Collector:
    """The collector: its store and its witness keys (a
    :class:`~audit._witness.Cosigner`)."""

    def __init__(self, store: CollectorStore, cosigner: Cosigner) -> None:
        self.store = store
        self.cosigner = cosigner

    def push(self, body: bytes) -> Accepted:
        """Take a push body: verify it, store its entries and the cosigned checkpoint
        (one transaction), return what was kept. Raises
        :class:`~audit._errors.WitnessError` with the status to answer (404: an unknown
        site), after recording a fork or entries that do not extend as an incident."""
        push = parse_push(body)
        try:
            accepted = self.store.advance(
                push, lambda state: judge_push(push, state, self.cosigner)
            )
        except ForkDetected as fork:
            log.error(
                "collector.fork", site=push.site, size=push.checkpoint.size, problem=str(fork)
            )
            raise
        except WitnessError as exc:
            log.info("collector.refused", site=push.site, status=exc.status, problem=str(exc))
            raise
        log.info("collector.stored", site=push.site, size=accepted.size, entries=len(push.entries))
        return accepted
