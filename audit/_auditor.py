"""What an auditor does with a log: verify it (from the database or an export file),
prove an entry's inclusion, check a receipt, prove the log only grew, export a range.

These are the drivers around the pure checks in :mod:`audit._verify`,
:mod:`audit._merkle` and :mod:`audit._note`; ``docket audit …`` is a thin layer on top.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from audit._canonical import canonical_json, loads_canonical
from audit._entry import TIME_FORMAT
from audit._errors import FormatError, KeyFormatError, NoteError, ProofError, TamperDetected
from audit._merkle import (
    HASH_SIZE,
    CompactRange,
    NodeId,
    decompose,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from audit._note import (
    Checkpoint,
    VerifierKey,
    open_checkpoint,
    parse_checkpoint_unverified,
)
from audit._redaction import VerifiedOrder, open_order
from audit._store import GENESIS, SelectionRow, Store, StoredCheckpoint, StoredEntry
from audit._verify import PRUNE_ACTION, VerifiedLog, verify_entries

EXPORT_FORMAT = "docket-audit-export/1"
_CUT = "(cut off)"  # the type of the line an export ends in when it was cut mid-way
RECEIPT_FORMAT = "docket-audit-receipt/1"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verified log, what it was checked against, and what is worth saying."""

    log: VerifiedLog
    origin: str
    anchor: Checkpoint | None
    """The largest checkpoint whose root was recomputed from the entries."""
    anchor_source: str | None
    keys: tuple[str, ...]
    notes: tuple[str, ...] = ()
    kept: tuple[tuple[str, int], ...] = ()
    """The auditor's own checkpoints (source, size), each found in the log."""
    redactions: tuple[tuple[int, VerifiedOrder], ...] = ()
    """Each erased entry with the signed order that authorized it."""


def _hex(data: bytes) -> str:
    return data.hex()


def _unhex(value: Any, what: str) -> bytes:
    try:
        data = bytes.fromhex(value)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{what}: not hex") from exc
    if len(data) != HASH_SIZE:
        raise FormatError(f"{what}: a hash is {HASH_SIZE} bytes, this is {len(data)}")
    return data


def trusted_checkpoints(
    notes: Sequence[tuple[str, str]], keys: Sequence[VerifierKey], origin: str
) -> dict[int, Checkpoint]:
    """Open each ``(source, note)`` with ``keys``; a bad one is tampering of kind
    ``checkpoint``. Two valid checkpoints of one size with different roots are a fork."""
    trusted: dict[int, Checkpoint] = {}
    for source, note in notes:
        try:
            checkpoint, _ = open_checkpoint(note, keys, origin=origin)
        except NoteError as exc:
            try:
                size = parse_checkpoint_unverified(note).size
            except NoteError:
                size = 0
            hint = (
                " (if the log's key was rotated, pass the previous key too)"
                if "no signature" in str(exc).lower() or "unknown" in str(exc).lower()
                else ""
            )
            raise TamperDetected(size, "checkpoint", f"{source}: {exc}{hint}") from exc
        seen = trusted.get(checkpoint.size)
        if seen is not None and seen.root != checkpoint.root:
            raise TamperDetected(
                checkpoint.size,
                "checkpoint",
                f"{source}: two signed checkpoints of size {checkpoint.size} disagree (a fork)",
            )
        trusted[checkpoint.size] = checkpoint
    return trusted


def verify_store(
    store: Store,
    keys: Sequence[VerifierKey],
    *,
    redaction_keys: Sequence[VerifierKey] = (),
    extra: Sequence[tuple[str, str]] = (),
    progress: Callable[[int], None] | None = None,
    archived: Sequence[tuple[int, int]] = (),
) -> Verdict:
    """Verify the whole log in ``store`` against its stored checkpoints and ``extra``
    ``(source, note)`` checkpoints (an auditor's saved copies), all signed by ``keys``,
    every entry's ``kind`` and ``time`` columns against its hashed payload, and every
    erased payload against the order its ``redaction`` entry carries, signed by one of
    ``redaction_keys`` (none given: an erased payload does not verify), or, for a
    payload pruned after archival, against ``archived``: the ``(first, last)`` ranges
    verified archives hold (:func:`audit._archive.verify_with_archives`).
    Raises :class:`TamperDetected`, :class:`~audit.StoreError`."""
    origin = store.origin
    # Checkpoints before the head: a checkpoint is only signed for a committed head and
    # the head only grows, so every checkpoint read now is within the head read next,
    # even while writers append. One beyond it means the log was cut back.
    stored = store.checkpoints()
    head = store.head()
    notes = [(f"stored checkpoint {c.size}", c.note) for c in stored]
    trusted = trusted_checkpoints([*notes, *extra], keys, origin)
    for row in stored:
        signed = parse_checkpoint_unverified(row.note)
        if signed.size != row.size or signed.root != row.root:
            raise TamperDetected(
                row.size,
                "checkpoint",
                f"stored checkpoint {row.size}: its columns (size {row.size}) do not match "
                f"its signed note (size {signed.size})"
                if signed.size != row.size
                else f"stored checkpoint {row.size}: root column altered",
            )
    verified = verify_entries(
        store.entries(0, head.size),
        checkpoints={size: c.root for size, c in trusted.items()},
        progress=progress,
    )
    if verified.size < head.size:
        raise TamperDetected(
            verified.size,
            "truncated",
            f"the log holds {verified.size} entries but recorded appending {head.size}",
        )
    if verified.root != head.root or verified.chain != head.chain:
        raise TamperDetected(head.size, "modified", "the head row's root or chain was altered")
    size, rows, end = store.extent()
    if rows > size or end > size:
        raise TamperDetected(
            size, "inserted", f"{max(rows, end) - size} entries past the last append ({size})"
        )
    # The kind and time columns are not hashed; nothing may select by them while they
    # disagree with the payloads (a second read: the hot loop above stays lean).
    select_period(store, None, None)
    check_archived(verified, archived)
    orders = check_orders(verified, origin, redaction_keys)
    return dataclasses.replace(_verdict(verified, origin, trusted, extra, keys), redactions=orders)


def check_archived(verified: VerifiedLog, archived: Sequence[tuple[int, int]]) -> None:
    """Every pruned payload of ``verified`` lies in one of the ``archived`` ranges.
    Raises :class:`TamperDetected` of kind ``missing`` for the first that does not."""
    for index in verified.pruned:
        if not any(first <= index <= last for first, last in archived):
            raise TamperDetected(
                index,
                "missing",
                "its payload was pruned after archival, but no verified archive holds it "
                "(pass --archives with the archive directory)",
            )


def check_orders(
    verified: VerifiedLog,
    origin: str,
    keys: Sequence[VerifierKey],
    inline: Mapping[int, str] | None = None,
) -> tuple[tuple[int, VerifiedOrder], ...]:
    """Each erased entry of ``verified`` with the redaction order that authorized it:
    the one its ``redaction`` entry carries, else (an export whose redaction entry lies
    past its end) the one in ``inline``, signed by one of ``keys`` and naming exactly
    that entry of ``origin``. Raises :class:`TamperDetected` of kind ``redaction`` for
    the first erased entry without such an order."""
    inline = inline or {}
    found = []
    for index in verified.redacted:
        note = verified.orders.get(index) or inline.get(index, "")
        if not note:
            raise TamperDetected(
                index,
                "redaction",
                "its payload was erased, but no signed redaction order authorizes it "
                "(its redaction record carries none)",
            )
        try:
            order = open_order(note, keys, origin=origin, index=index, leaf=verified.erased[index])
        except NoteError as exc:
            raise TamperDetected(
                index,
                "redaction",
                f"its payload was erased, but its redaction order does not verify: {exc}",
            ) from exc
        found.append((index, order))
    return tuple(found)


def _verdict(
    verified: VerifiedLog,
    origin: str,
    trusted: dict[int, Checkpoint],
    extra: Sequence[tuple[str, str]],
    keys: Sequence[VerifierKey],
    notes: Sequence[str] = (),
    *,
    own: str = "the log's stored checkpoint",
) -> Verdict:
    anchor = trusted[max(verified.checkpoints)] if verified.checkpoints else None
    kept = tuple((name, parse_checkpoint_unverified(note).size) for name, note in extra)
    source = None
    if anchor is not None:
        source = next((name for name, size in kept if size == anchor.size), own)
    return Verdict(
        log=verified,
        origin=origin,
        anchor=anchor,
        anchor_source=source,
        keys=tuple(str(key) for key in keys),
        notes=tuple(notes),
        kept=kept,
    )


# -- export ---------------------------------------------------------------------


class Selectable(Protocol):
    """A log whose entries a period is chosen from (:func:`select_period`)."""

    def selection_columns(self, start: int = 0, end: int | None = None) -> Iterator[SelectionRow]:
        """``(idx, kind, time, payload)`` of the entries ``[start, end)``, by index."""
        ...


class ExportSource(Selectable, Protocol):
    """What :func:`write_export` reads of a log: a :class:`~audit._store.Store`, or a
    site's log as the collector holds it (:class:`~audit._collector_store.HeldLog`)."""

    @property
    def origin(self) -> str:
        """The log's origin line."""
        ...

    def entry(self, index: int) -> StoredEntry | None:
        """One entry, None past the end."""
        ...

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[StoredEntry]:
        """The entries ``[start, end)``, by index."""
        ...

    def nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Perfect subtree hashes by ``(level, index)``."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]:
        """The signed checkpoints held, by size."""
        ...


@dataclass(frozen=True, slots=True)
class Erasures:
    """What a log's own entries say about its erased payloads: the signed order of each
    redacted entry (from the ``redaction`` entry that records it) and the ranges its
    ``prune`` markers name (payloads pruned after archival)."""

    orders: Mapping[int, str]
    redacted: frozenset[int]
    prunes: tuple[tuple[int, int], ...]

    def pruned(self, index: int) -> bool:
        """Whether entry ``index``, when its payload is gone, was pruned after archival
        (a prune marker names it and no redaction entry does)."""
        return index not in self.redacted and any(a <= index <= b for a, b in self.prunes)


def erasures(log: Selectable, start: int = 0) -> Erasures:
    """The :class:`Erasures` of the entries at or after ``start`` of ``log``, from its
    ``redaction`` and ``prune`` entries (found by their kind column; verification
    checks each order against the payload it erased, so a relabelled row only loses an
    order, and the erased entry then fails to verify)."""
    orders: dict[int, str] = {}
    redacted: set[int] = set()
    prunes: list[tuple[int, int]] = []
    for row in log.selection_columns(start):
        if row.kind not in ("redaction", "audit") or row.payload is None:
            continue
        try:
            document = loads_canonical(row.payload)
            detail = document["detail"]
            if row.kind == "audit":
                if document.get("action") == PRUNE_ACTION:
                    prunes.append((int(detail["first"]), int(detail["last"])))
                continue
            target, order = int(detail["index"]), detail.get("order", "")
        except (ValueError, KeyError, TypeError):
            continue
        redacted.add(target)
        if target >= start and isinstance(order, str):
            orders.setdefault(target, order)
    return Erasures(orders, frozenset(redacted), tuple(prunes))


@dataclass(frozen=True, slots=True)
class Restore:
    """Payloads pruned from a log after archival, read back from its archives: which
    entries were pruned (``erasures``) and the archived entries, opened afresh for each
    pass in index order (:func:`audit._archive.archived_entries`; none: no archive)."""

    erasures: Erasures
    archived: Callable[[], Iterator[StoredEntry]] = lambda: iter(())

    def cursor(self) -> Callable[[int], bytes | None]:
        """A lookup, asked in increasing index order, of the archived payload of a
        pruned entry (None when the entry was not pruned or no archive holds it)."""
        rows = self.archived()
        waiting = next(rows, None)

        def payload(index: int) -> bytes | None:
            nonlocal waiting
            if not self.erasures.pruned(index):
                return None
            while waiting is not None and waiting.idx < index:
                waiting = next(rows, None)
            return waiting.payload if waiting is not None and waiting.idx == index else None

        return payload


def write_export(
    store: ExportSource,
    out: IO[str],
    *,
    start: int,
    end: int,
    anchor_note: str,
    anchor_size: int,
    verifier_keys: Sequence[str],
    now: datetime,
    redaction_keys: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    restore: Restore | None = None,
) -> int:
    """Write entries ``[start, end)`` as JSON Lines with everything needed to verify them
    offline against the signed checkpoint ``anchor_note`` (size ``anchor_size`` >= end).
    Returns the number of entries written. A payload pruned after archival is written
    from ``restore``'s archives (it must hash to the entry's leaf); one no archive
    holds is a :class:`FormatError`.

    Lines, in order: a ``header`` (origin, range, the chain value and the compact range
    before ``start``, the verifier keys and the redaction keys the log names); every
    stored ``checkpoint`` within the range; the ``anchor`` (its note and the perfect
    subtree hashes of ``[end, anchor_size)``, which extend the exported range to the
    anchor's tree); one ``entry`` per entry (``entry`` is the canonical JSON object,
    ``null`` once redacted, and then ``redaction_order`` is the signed order that
    authorized the erasure); an ``end`` line with the count, so a cut-off file is
    detected.
    """
    if not 0 <= start <= end <= anchor_size:
        raise FormatError(f"cannot export [{start}, {end}) against a checkpoint of {anchor_size}")
    before = store.entry(start - 1) if start > 0 else None
    header = {
        "type": "header",
        "format": EXPORT_FORMAT,
        "origin": store.origin,
        "start": start,
        "end": end,
        "chain_before": _hex(before.chain if before is not None else GENESIS),
        "frontier": [_hex(h) for h in store.nodes(decompose(0, start))],
        "verifier_keys": list(verifier_keys),
        "redaction_keys": list(redaction_keys),
        "created": now.astimezone(UTC).strftime(TIME_FORMAT),
    }
    out.write(json.dumps(header) + "\n")
    for checkpoint in store.checkpoints():
        if start < checkpoint.size <= end and checkpoint.size != anchor_size:
            out.write(json.dumps({"type": "checkpoint", "note": checkpoint.note}) + "\n")
    right = store.nodes(decompose(end, anchor_size))
    anchor = {"type": "anchor", "note": anchor_note, "right": [_hex(h) for h in right]}
    out.write(json.dumps(anchor) + "\n")
    marks = erasures(store, start) if restore is None else restore.erasures
    archived = (restore or Restore(marks)).cursor()
    written = 0
    for row in store.entries(start, end):
        payload = row.payload if row.payload is not None else _restored(row, marks, archived)
        line = {
            "type": "entry",
            "index": row.idx,
            "kind": row.kind,
            "leaf_hash": _hex(row.leaf),
            "chain": _hex(row.chain),
            "entry": None if payload is None else loads_canonical(payload),
        }
        if payload is None:
            # The order travels with the erased entry: its redaction entry may lie
            # past the export's end, and without the order the null proves nothing.
            line["redaction_order"] = marks.orders.get(row.idx, "")
        out.write(json.dumps(line, ensure_ascii=False) + "\n")
        written += 1
        if progress is not None and written % 10_000 == 0:
            progress(written)
    out.write(json.dumps({"type": "end", "entries": written}) + "\n")
    return written


def _restored(
    row: StoredEntry, marks: Erasures, archived: Callable[[int], bytes | None]
) -> bytes | None:
    """The payload of the erased ``row`` from an archive when it was pruned (checked
    against its leaf), None when it was redacted."""
    if not marks.pruned(row.idx):
        return None
    payload = archived(row.idx)
    if payload is None:
        raise FormatError(
            f"entry {row.idx} was pruned after archival and no archive given holds it "
            "(pass --archives)"
        )
    if leaf_hash(payload) != row.leaf:
        raise TamperDetected(
            row.idx, "archive", "the archived payload does not hash to the live log's leaf"
        )
    return payload


def _export_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    value = loads_canonical(line)
                except ValueError as exc:
                    if not line.endswith("\n"):  # the last line, cut off mid-way
                        yield number, {"type": _CUT}
                        return
                    raise FormatError(f"{path}:{number}: not JSON: {exc}") from exc
                if not isinstance(value, dict) or "type" not in value:
                    raise FormatError(f"{path}:{number}: a line must be an object with a type")
                yield number, value
    except OSError as exc:
        raise FormatError(f"cannot read {path}: {exc.strerror}") from exc


def export_entries(path: Path) -> Iterator[StoredEntry]:
    """The entry lines of the export (or archived segment) at ``path``, as rows, without
    verifying anything (the caller verified the file first). Raises
    :class:`FormatError`."""
    for number, line in _export_lines(path):
        if line["type"] == "entry":
            yield _export_entry(path, number, line)


@dataclass(slots=True)
class _ExportReader:
    """Streams an export's entries while remembering what follows them."""

    path: Path
    start: int
    lines: Iterator[tuple[int, dict[str, Any]]]
    first: tuple[int, dict[str, Any]] | None
    count: int = 0
    trailer: dict[str, Any] | None = None
    orders: dict[int, str] = dataclasses.field(default_factory=dict)
    """The redaction order beside each erased entry."""

    def entries(self) -> Iterator[StoredEntry]:
        pending = [self.first] if self.first is not None else []
        for number, line in itertools.chain(pending, self.lines):
            kind = line["type"]
            if kind == "entry":
                self.count += 1
                entry = _export_entry(self.path, number, line)
                order = line.get("redaction_order")
                if entry.payload is None and isinstance(order, str):
                    self.orders[entry.idx] = order
                yield entry
            elif kind == "end" and self.trailer is None:
                self.trailer = line
            elif kind == _CUT:
                raise TamperDetected(
                    self.start + self.count,
                    "truncated",
                    f"{self.path} is cut off in line {number}, after {self.count} entries",
                )
            else:
                raise FormatError(f"{self.path}:{number}: unexpected {kind!r} line")


def verify_export(
    path: Path,
    keys: Sequence[VerifierKey] | None,
    *,
    redaction_keys: Sequence[VerifierKey] | None = None,
    extra: Sequence[tuple[str, str]] = (),
    progress: Callable[[int], None] | None = None,
) -> Verdict:
    """Verify an export file offline, streaming its entries; an erased entry needs a
    redaction order signed by one of ``redaction_keys``. ``keys`` or ``redaction_keys``
    None: use the keys the export names (the verdict says so). Raises
    :class:`TamperDetected`, :class:`FormatError`."""
    lines = _export_lines(path)
    try:
        _, header = next(lines)
    except StopIteration:
        raise FormatError(f"{path} is empty") from None
    if header.get("type") != "header" or header.get("format") != EXPORT_FORMAT:
        raise FormatError(f"{path} is not a Docket audit export ({EXPORT_FORMAT})")
    try:
        origin, start, end = str(header["origin"]), int(header["start"]), int(header["end"])
        chain_before = _unhex(header["chain_before"], "header.chain_before")
        frontier = CompactRange(
            0, start, [_unhex(h, "header.frontier") for h in header["frontier"]]
        )
        named = [VerifierKey.parse(text) for text in header.get("verifier_keys", [])]
        named_redaction = [VerifierKey.parse(t) for t in header.get("redaction_keys", [])]
    except (KeyError, TypeError, ValueError, ProofError, KeyFormatError) as exc:
        raise FormatError(f"{path}: malformed header: {exc}") from exc
    notes: list[str] = []
    if keys is None:
        keys = named
        notes.append("checked against the keys the export names; pass --key to use your own")
    if redaction_keys is None:
        redaction_keys = named_redaction
        if named_redaction:
            notes.append(
                "redactions checked against the redaction keys the export names; pass "
                "--redaction-key to use your own"
            )
    checkpoint_notes: list[tuple[str, str]] = []
    anchor: dict[str, Any] = {}
    first: tuple[int, dict[str, Any]] | None = None
    for number, line in lines:
        if line["type"] == "checkpoint":
            checkpoint_notes.append((f"{path}:{number}", str(line.get("note", ""))))
        elif line["type"] == "anchor" and not anchor:
            anchor = line
        else:
            first = (number, line)
            break
    if not anchor:
        raise FormatError(f"{path}: no anchor checkpoint before the entries")
    anchor_note = str(anchor.get("note", ""))
    trusted = trusted_checkpoints(
        [*checkpoint_notes, (f"{path}: anchor", anchor_note), *extra], keys, origin
    )
    anchor_cp = parse_checkpoint_unverified(anchor_note)
    if anchor_cp.size < end:
        raise FormatError(f"{path}: the anchor (size {anchor_cp.size}) ends before the entries")
    in_range = {size: c.root for size, c in trusted.items() if start < size <= end}
    if first is not None and first[1]["type"] == _CUT:
        raise TamperDetected(start, "truncated", f"{path} is cut off before its entries")
    reader = _ExportReader(path, start, lines, first)
    verified = verify_entries(
        reader.entries(),
        start=start,
        chain=chain_before,
        frontier=frontier,
        checkpoints=in_range,
        check_nodes=False,
        require_redaction_records=False,
        progress=progress,
    )
    if reader.trailer is None or reader.trailer.get("entries") != reader.count:
        raise TamperDetected(verified.size, "truncated", f"{path} is cut off (no end line)")
    if verified.size != end:
        raise TamperDetected(
            verified.size, "truncated", f"{path} holds entries up to {verified.size}, not {end}"
        )
    assert verified.frontier is not None
    whole = verified.frontier.copy()
    try:
        for node, value in zip(
            decompose(end, anchor_cp.size),
            [_unhex(h, "anchor.right") for h in anchor.get("right", [])],
            strict=True,
        ):
            whole.append_node(node, value)
    except (ValueError, ProofError) as exc:
        raise FormatError(f"{path}: the anchor's subtree hashes do not fit its size") from exc
    if whole.root() != anchor_cp.root:
        raise TamperDetected(
            start,
            "modified",
            f"the exported entries are not the ones the anchor checkpoint "
            f"(size {anchor_cp.size}) signed",
        )
    orders = check_orders(verified, origin, redaction_keys, reader.orders)
    result = dataclasses.replace(
        verified,
        root=anchor_cp.root,
        checkpoints=tuple(sorted({*verified.checkpoints, anchor_cp.size})),
    )
    verdict = _verdict(
        result, origin, trusted, extra, keys, notes, own="the export's anchor checkpoint"
    )
    return dataclasses.replace(verdict, redactions=orders)


def _export_entry(path: Path, number: int, line: dict[str, Any]) -> StoredEntry:
    try:
        document = line["entry"]
        payload = None if document is None else canonical_json(document)
        return StoredEntry(
            idx=int(line["index"]),
            kind=str(line.get("kind", "")),
            payload=payload,
            leaf=_unhex(line["leaf_hash"], f"{path}:{number}: leaf_hash"),
            chain=_unhex(line["chain"], f"{path}:{number}: chain"),
            nodes=b"",
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{path}:{number}: malformed entry line: {exc}") from exc


# -- receipts and consistency ---------------------------------------------------


def make_receipt(store: Store, index: int, checkpoint_size: int, note: str) -> dict[str, Any]:
    """The JSON receipt for entry ``index``: the entry, its leaf hash, its inclusion
    proof in the tree of ``checkpoint_size`` and that tree's signed checkpoint."""
    row = store.entry(index)
    if row is None:
        raise ProofError(f"there is no entry {index}")
    proof = store.inclusion_proof(index, checkpoint_size)
    return {
        "format": RECEIPT_FORMAT,
        "index": index,
        "tree_size": checkpoint_size,
        "leaf_hash": _hex(row.leaf),
        "inclusion_proof": [_hex(h) for h in proof],
        "checkpoint": note,
        "entry": None if row.payload is None else loads_canonical(row.payload),
    }


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    """A receipt that checked out: this entry is at ``index`` in the signed tree."""

    index: int
    checkpoint: Checkpoint
    entry: dict[str, Any] | None
    key: str


def verify_receipt(receipt: Any, keys: Sequence[VerifierKey]) -> VerifiedReceipt:
    """Check a receipt with nothing but the log's verifier keys: the checkpoint's
    signature, that it is of the receipt's tree size, that the entry hashes to the leaf
    and that the leaf is included. Raises :class:`FormatError`, :class:`NoteError`,
    :class:`ProofError`."""
    if not isinstance(receipt, dict):
        raise FormatError("a receipt is a JSON object")
    try:
        index, size = receipt["index"], receipt["tree_size"]
        if not isinstance(index, int) or not isinstance(size, int):
            raise FormatError("index and tree_size must be integers")
        leaf = _unhex(receipt["leaf_hash"], "leaf_hash")
        proof = [_unhex(h, "inclusion_proof") for h in receipt["inclusion_proof"]]
        note, entry = receipt["checkpoint"], receipt.get("entry")
    except (KeyError, TypeError) as exc:
        raise FormatError(f"not a receipt: missing or malformed {exc}") from exc
    checkpoint, signed = open_checkpoint(note, keys)
    if checkpoint.size != size:
        raise ProofError(
            f"the receipt claims tree size {size}, its checkpoint is of {checkpoint.size}"
        )
    if entry is not None and leaf_hash(canonical_json(entry)) != leaf:
        raise ProofError("the entry does not hash to the receipt's leaf hash")
    verify_inclusion(index, size, leaf, proof, checkpoint.root)
    signer = signed.signatures[0]
    return VerifiedReceipt(index, checkpoint, entry, f"{signer.name}+{signer.key_id.hex()}")


def prove_consistency(store: Store, old: Checkpoint, new: Checkpoint) -> list[bytes]:
    """Fetch and check the consistency proof between two (already trusted) checkpoints.
    Raises :class:`ProofError` when the newer tree does not extend the older."""
    if old.size > new.size:
        old, new = new, old
    if old.size == 0 or old.size == new.size:
        if old.size == new.size and old.root != new.root:
            raise ProofError(f"two different roots for tree size {old.size}: the log forked")
        return []
    proof = store.consistency_proof(old.size, new.size)
    verify_consistency(old.size, new.size, old.root, new.root, proof)
    return proof


def root_b64(root: bytes) -> str:
    """A root hash as checkpoints show it."""
    return base64.b64encode(root).decode()


@dataclass(frozen=True, slots=True)
class Period:
    """Where a period ``[since, until)`` lies in the log, by the hashed entries' own time.

    ``start``/``end`` bound the indices (``end`` exclusive) from the first to the last
    entry whose payload time is in the period; ``entries`` counts those dated entries
    (0: the period is empty, and ``start == end``); ``size`` is how many entries the log
    held when it was read. ``unrestored``: the runs ``(first, last)`` of entries pruned
    after archival that no archive given holds and that lie between the period's dated
    neighbours, so the period may include them (their time is unknown).
    """

    since: datetime | None
    until: datetime | None
    start: int
    end: int
    entries: int
    size: int
    unrestored: tuple[tuple[int, int], ...] = ()


def select_period(
    store: Selectable,
    since: datetime | None,
    until: datetime | None,
    restore: Restore | None = None,
) -> Period:
    """Map ``[since, until)`` (``None``: unbounded) to an index range using the time
    inside each entry's hashed payload, never the unhashed ``time`` column, and check
    every stored column a selection could use (``kind``, ``time``) against the payload.

    Reads every row once. A redacted entry (no payload) has no time and is not dated;
    its columns cannot be checked and are not used. A payload pruned after archival is
    read from ``restore``'s archives and dated by it; one no archive holds is undated
    and, when it may lie in the period, named in :attr:`Period.unrestored`. Raises
    :class:`TamperDetected` (``modified``, naming the entry and the column) when a
    column disagrees with the payload or a payload is not an entry,
    :class:`StoreError` when the database cannot be read, ``ValueError`` for a naive or
    reversed period.
    """
    for value, name in ((since, "since"), (until, "until")):
        if value is not None and value.utcoffset() is None:
            raise ValueError(f"{name} must be a timezone-aware datetime")
    if since is not None and until is not None and since >= until:
        raise ValueError("--since must be before --until")
    archived = restore.cursor() if restore is not None else None
    start: int | None = None
    end = dated = size = 0
    # The dated neighbours of the period: entries are time-ordered (per writer), so an
    # undated pruned run between them may belong to it.
    low, high = 0, None
    missing: list[list[int]] = []
    for row in store.selection_columns():
        size = row.idx + 1
        payload = row.payload
        if payload is None and archived is not None:
            payload = archived(row.idx)
            if payload is None and restore is not None and restore.erasures.pruned(row.idx):
                if missing and missing[-1][1] == row.idx - 1:
                    missing[-1][1] = row.idx
                else:
                    missing.append([row.idx, row.idx])
        if payload is None:
            continue
        time = _checked_time(row, payload)
        if since is not None and time < since:
            if start is None:
                low, high = row.idx + 1, None
            continue
        if until is not None and time >= until:
            high = row.idx if high is None else high
            continue
        dated += 1
        start = row.idx if start is None else start
        end, high = row.idx + 1, None
    bound = size if high is None else high
    unrestored = tuple((a, b) for a, b in missing if a < bound and b >= low)
    return Period(since, until, start if start is not None else end, end, dated, size, unrestored)


def _checked_time(row: SelectionRow, payload: bytes) -> datetime:
    """The time inside ``payload`` (row ``row``'s, or its archived one), after checking
    the row's kind and time columns against it."""
    try:
        document = json.loads(payload)
        kind, text = document["kind"], document["time"]
        time = datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except (ValueError, KeyError, TypeError) as exc:
        raise TamperDetected(
            row.idx, "modified", f"its payload is not a Docket audit entry: {exc}"
        ) from exc
    if row.kind != kind:
        raise TamperDetected(
            row.idx,
            "modified",
            f"its kind column says {row.kind!r}, its hashed payload says {kind!r}",
        )
    if row.time != text:
        raise TamperDetected(
            row.idx,
            "modified",
            f"its time column says {row.time!r}, its hashed payload says {text!r}",
        )
    return time
