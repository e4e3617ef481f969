"""Retention: sealed segments of the log archived as self-verifying directories, the
local payloads pruned after, and verification of the live log and its archives together.

A segment is the entries ``[first, last]`` up to a signed checkpoint of size
``last + 1``, written to ``<archive>/segment-<first>-<last>/``::

    entries.jsonl      the entries as an export (``docket-audit-export/1``): canonical
                       entries, leaf and chain hashes, the chain value and compact range
                       before ``first``, redaction orders, the checkpoint as its anchor
    checkpoint         the signed checkpoint of size ``last + 1`` (C2SP signed note)
    consistency.json   the previous segment's checkpoint (size ``first``) and the
                       consistency proof from it to this one (none for the first segment)
    manifest.json      format, origin, first, last, and the SHA-256 of each file above

Nothing in a segment is trusted as such: its entries must rebuild the tree its
checkpoint signed (with the log's keys), the proof must extend the previous segment's
checkpoint, the chain must continue where the previous segment's ended, and every file
must hash as the manifest says. A segment is written under a temporary name, synced,
renamed, then read back and verified before anything is pruned.

Pruning erases the payloads a verified segment holds (leaf hashes, chain and tree stay)
in one transaction with an ``audit`` entry, action ``prune``, naming the range, the
segment and its manifest's hash. Verification accepts a pruned payload only when a
verified archive holds its index (:func:`verify_with_archives`); without one it is
reported as ``missing``. Prune markers themselves are never pruned (they are what makes
a pruned payload acceptable).

High level::

    segment = write_segment(store, Path("archive"), checkpoint=stored, now=now)
    prune_archived(log, [segment], location="archive", by="ops", now=now)
    verdict, segments = verify_with_archives(store, keys, [Path("archive")])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit._auditor import Verdict, export_entries, verify_export, verify_store, write_export
from audit._entry import Entry
from audit._errors import FormatError, NoteError, ProofError, StoreError, TamperDetected
from audit._merkle import verify_consistency
from audit._note import Checkpoint, VerifierKey, open_checkpoint
from audit._store import Store, StoredCheckpoint, StoredEntry
from audit._verify import PRUNE_ACTION

if TYPE_CHECKING:
    from audit._log import AuditLog

ARCHIVE_FORMAT = "docket-audit-archive/1"
ANYWHERE = [(0, sys.maxsize)]
"""The ``archived`` ranges that accept every pruned payload, held by an archive or not."""
ENTRIES, CHECKPOINT, CONSISTENCY, MANIFEST = (
    "entries.jsonl",
    "checkpoint",
    "consistency.json",
    "manifest.json",
)
_FILES = (ENTRIES, CHECKPOINT, CONSISTENCY)
_NAME = re.compile(r"segment-(0|[1-9][0-9]*)-(0|[1-9][0-9]*)")


@dataclass(frozen=True, slots=True)
class Segment:
    """A segment that verified: entries ``first..last`` under ``checkpoint``."""

    path: Path
    first: int
    last: int
    checkpoint: Checkpoint
    note: str
    previous: Checkpoint | None
    """The checkpoint of size ``first`` the consistency proof starts from."""
    chain: bytes
    """The chain value after ``last``."""
    chain_before: bytes
    manifest_sha256: str


def segment_name(first: int, last: int) -> str:
    """The directory name of the segment of entries ``first..last``."""
    return f"segment-{first}-{last}"


def segment_dirs(directory: Path) -> list[Path]:
    """The segment directories in ``directory``, by first index (none when it is absent)."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def next_index(directory: Path) -> int:
    """The first index no segment in ``directory`` holds (0 for none)."""
    dirs = segment_dirs(directory)
    return int(dirs[-1].name.split("-")[2]) + 1 if dirs else 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- writing ----------------------------------------------------------------------------


def write_segment(
    store: Store,
    directory: Path,
    *,
    checkpoint: StoredCheckpoint,
    now: datetime,
    keys: Sequence[VerifierKey] | None = None,
    redaction_keys: Sequence[VerifierKey] | None = None,
    first: int | None = None,
) -> Segment:
    """Archive the entries from the end of the last segment in ``directory`` (or from
    ``first``: a staging directory for an object store) up to
    ``checkpoint`` (a stored checkpoint of ``store``) as a new segment; read it back and
    verify it (with ``keys``, else the keys the log names) before returning it. Raises
    :class:`FormatError` when there is nothing to archive or the previous segment's
    checkpoint is not stored, :class:`TamperDetected` when what was written does not
    verify, ``OSError`` when it cannot be written."""
    first, end = next_index(directory) if first is None else first, checkpoint.size
    if end <= first:
        raise FormatError(
            f"nothing to archive: {directory} already holds entries up to {first - 1}, "
            f"the checkpoint chosen is of size {end}"
        )
    previous = store.checkpoint_at(first) if first else None
    if first and previous is None:
        raise FormatError(f"the log has no checkpoint of size {first} to chain the segment to")
    verifier_keys = (store.meta("verifier_keys") or "").split()
    named_redaction = (store.meta("redaction_keys") or "").split()
    final = directory / segment_name(first, end - 1)
    draft = directory / f".{final.name}.tmp"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(draft, ignore_errors=True)
    draft.mkdir()
    with (draft / ENTRIES).open("w", encoding="utf-8") as out:
        write_export(
            store,
            out,
            start=first,
            end=end,
            anchor_note=checkpoint.note,
            anchor_size=end,
            verifier_keys=verifier_keys,
            redaction_keys=named_redaction,
            now=now,
        )
    (draft / CHECKPOINT).write_text(checkpoint.note, encoding="utf-8")
    proof = store.consistency_proof(first, end) if first else []
    consistency = {
        "previous": None if previous is None else previous.note,
        "old_size": first,
        "new_size": end,
        "proof": [node.hex() for node in proof],
    }
    (draft / CONSISTENCY).write_text(json.dumps(consistency, indent=2) + "\n", encoding="utf-8")
    manifest = {
        "format": ARCHIVE_FORMAT,
        "origin": store.origin,
        "first": first,
        "last": end - 1,
        "files": {name: _sha256(draft / name) for name in _FILES},
    }
    (draft / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    for name in (*_FILES, MANIFEST):
        _sync(draft / name)
    os.replace(draft, final)
    _sync(directory)
    keys = list(keys) if keys else [VerifierKey.parse(text) for text in verifier_keys]
    if redaction_keys is None:
        redaction_keys = [VerifierKey.parse(text) for text in named_redaction]
    return open_segment(final, keys, store.origin, redaction_keys)


# -- reading and verifying --------------------------------------------------------------


def _fail(path: Path, first: int, message: str) -> TamperDetected:
    return TamperDetected(first, "archive", f"archive {path.name}: {message}")


def _manifest(path: Path) -> tuple[dict[str, Any], str]:
    named = _NAME.fullmatch(path.name)
    first = int(named[1]) if named else 0
    try:
        raw = (path / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise _fail(path, first, f"{MANIFEST} is missing") from None
    except OSError as exc:
        raise _fail(path, first, f"cannot read {MANIFEST}: {exc.strerror}") from exc
    try:
        manifest = json.loads(raw)
        if manifest["format"] != ARCHIVE_FORMAT:
            raise ValueError(f"format {manifest['format']!r}")
        files = manifest["files"]
        numbers = (int(manifest["first"]), int(manifest["last"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(path, first, f"{MANIFEST} is malformed: {exc}") from exc
    if named is None or numbers != (int(named[1]), int(named[2])):
        raise _fail(
            path,
            first,
            f"its manifest holds entries {numbers[0]}..{numbers[1]}, its name says otherwise "
            "(a segment moved or swapped)",
        )
    for name in _FILES:
        if not (path / name).is_file():
            raise _fail(path, first, f"{name} is missing")
        if files.get(name) != _sha256(path / name):
            raise _fail(path, first, f"{name} does not hash to its manifest's SHA-256")
    return manifest, hashlib.sha256(raw).hexdigest()


def open_segment(
    path: Path,
    keys: Sequence[VerifierKey],
    origin: str,
    redaction_keys: Sequence[VerifierKey] = (),
) -> Segment:
    """Verify the segment at ``path`` on its own: every file hashes as its manifest says,
    its entries rebuild the tree its checkpoint (signed by one of ``keys``, of log
    ``origin``) signed, erased entries carry orders signed by ``redaction_keys``, and
    the consistency proof extends the previous checkpoint to it. Raises
    :class:`TamperDetected` (kind ``archive``, or what the entries show) naming it."""
    manifest, manifest_sha256 = _manifest(path)
    first, last = int(manifest["first"]), int(manifest["last"])
    try:
        verdict = verify_export(path / ENTRIES, list(keys), redaction_keys=list(redaction_keys))
        note = (path / CHECKPOINT).read_text(encoding="utf-8")
        checkpoint, _ = open_checkpoint(note, keys, origin=origin)
        consistency = json.loads((path / CONSISTENCY).read_text(encoding="utf-8"))
        previous = _previous(consistency, keys, origin, first, checkpoint)
        with (path / ENTRIES).open(encoding="utf-8") as handle:
            header = json.loads(handle.readline())
        chain_before = bytes.fromhex(header["chain_before"])
    except TamperDetected as exc:
        said = str(exc).removeprefix(f"entry {exc.index}: {exc.kind}: ")
        raise TamperDetected(exc.index, exc.kind, f"archive {path.name}: {said}") from exc
    except (FormatError, NoteError, ProofError, ValueError, KeyError, TypeError) as exc:
        raise _fail(path, first, str(exc)) from exc
    if verdict.origin != origin:
        raise _fail(path, first, f"it is of log {verdict.origin}, not {origin}")
    if (verdict.log.start, verdict.log.size) != (first, last + 1) or checkpoint.size != last + 1:
        raise _fail(
            path,
            first,
            f"it holds entries {verdict.log.start}..{verdict.log.size - 1} under a checkpoint "
            f"of size {checkpoint.size}, its manifest says {first}..{last}",
        )
    if verdict.anchor is None or verdict.anchor.root != checkpoint.root:
        raise _fail(path, first, "its entries are not the ones its checkpoint file signed")
    return Segment(
        path=path,
        first=first,
        last=last,
        checkpoint=checkpoint,
        note=note,
        previous=previous,
        chain=verdict.log.chain,
        chain_before=chain_before,
        manifest_sha256=manifest_sha256,
    )


def _previous(
    consistency: dict[str, Any],
    keys: Sequence[VerifierKey],
    origin: str,
    first: int,
    checkpoint: Checkpoint,
) -> Checkpoint | None:
    """The previous segment's checkpoint, and the proof that ``checkpoint`` extends it."""
    if first == 0:
        return None
    previous, _ = open_checkpoint(str(consistency["previous"]), keys, origin=origin)
    if previous.size != first:
        raise ProofError(f"its consistency proof starts at size {previous.size}, not {first}")
    proof = [bytes.fromhex(node) for node in consistency["proof"]]
    verify_consistency(previous.size, checkpoint.size, previous.root, checkpoint.root, proof)
    return previous


def open_archives(
    directories: Iterable[Path],
    keys: Sequence[VerifierKey],
    origin: str,
    redaction_keys: Sequence[VerifierKey] = (),
) -> list[Segment]:
    """Every segment in ``directories``, each verified, and together one run from entry
    0: each starts where the one before ended, its consistency proof starts from that
    one's checkpoint, and its chain continues that one's. Raises
    :class:`TamperDetected` naming the first segment that does not fit."""
    paths = sorted(
        (path for directory in directories for path in segment_dirs(directory)),
        key=lambda p: int(p.name.split("-")[1]),
    )
    segments: list[Segment] = []
    for path in paths:
        segment = open_segment(path, keys, origin, redaction_keys)
        before = segments[-1] if segments else None
        expected = before.last + 1 if before is not None else 0
        if segment.first != expected:
            after = f"the archive before it ends at {expected - 1}" if expected else "not 0"
            raise _fail(
                path,
                segment.first,
                f"it starts at entry {segment.first}, {after} (a segment is missing or swapped)",
            )
        if before is not None and (
            segment.previous != before.checkpoint or segment.chain_before != before.chain
        ):
            raise _fail(
                path,
                segment.first,
                f"it does not continue {before.path.name} (its proof or chain starts "
                "from another tree)",
            )
        segments.append(segment)
    return segments


def archived_entries(segments: Sequence[Segment]) -> Iterator[StoredEntry]:
    """The entries of ``segments`` (verified: :func:`open_archives`), in index order: what
    stands in for the payloads pruned from the live log."""
    for segment in segments:
        yield from export_entries(segment.path / ENTRIES)


def verify_with_archives(
    store: Store,
    keys: Sequence[VerifierKey],
    directories: Sequence[Path],
    *,
    redaction_keys: Sequence[VerifierKey] = (),
    extra: Sequence[tuple[str, str]] = (),
    progress: Callable[[int], None] | None = None,
    unarchived_ok: bool = False,
) -> tuple[Verdict, list[Segment]]:
    """Verify the archives in ``directories`` (:func:`open_archives`), then the live log
    in ``store`` with every segment's checkpoint among those its roots must match, and
    its pruned payloads accepted where a segment holds them (with ``unarchived_ok``,
    elsewhere too: a report counts those as not covered; the verdict's ``pruned`` lists
    them all). Raises :class:`TamperDetected`, :class:`~audit.StoreError`."""
    segments = open_archives(directories, keys, store.origin, redaction_keys)
    notes = [(f"archive {s.path.name}", s.note) for s in segments]
    verdict = verify_store(
        store,
        keys,
        redaction_keys=redaction_keys,
        extra=[*extra, *notes],
        progress=progress,
        archived=[(s.first, s.last) for s in segments] + ANYWHERE * unarchived_ok,
    )
    return dataclasses.replace(verdict, kept=verdict.kept[: len(extra)]), segments


# -- an S3-compatible store --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Archive:
    """``s3://bucket/prefix``: segments are ``<prefix>/segment-<first>-<last>/<file>``
    objects, the manifest uploaded last (a segment without one is incomplete and not
    listed). The endpoint and credentials are boto3's (``AWS_ENDPOINT_URL``, …)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Archive:
        """Parse ``s3://bucket[/prefix]``. Raises :class:`FormatError`."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not url.startswith("s3://") or not bucket:
            raise FormatError(f"{url}: not an s3://bucket/prefix URL")
        return cls(bucket, prefix.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, *parts: str) -> str:
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def _call(self, method: str, *args: Any, **named: Any) -> Any:
        """One call of the boto3 S3 client; its errors as :class:`~audit.StoreError`."""
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(boto3.client("s3"), method)(*args, **named)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"{self}: {method} failed: {exc}") from exc

    def segments(self) -> list[str]:
        """The names of the complete segments, by first index."""
        found, token = [], None
        while True:
            more: dict[str, str] = {} if token is None else {"ContinuationToken": token}
            page = self._call("list_objects_v2", Bucket=self.bucket, Prefix=self._key(""), **more)
            for item in page.get("Contents", []):
                name, _, file = str(item["Key"]).removeprefix(self._key("")).partition("/")
                if file == MANIFEST and _NAME.fullmatch(name):
                    found.append(name)
            token = page.get("NextContinuationToken")
            if token is None:
                return sorted(found, key=lambda n: int(n.split("-")[1]))

    def next_index(self) -> int:
        """The first index no complete segment holds."""
        found = self.segments()
        return int(found[-1].split("-")[2]) + 1 if found else 0

    def upload(self, segment: Path) -> None:
        """Upload the files of the local ``segment``, its manifest last."""
        for name in (*_FILES, MANIFEST):
            self._call(
                "upload_file", str(segment / name), self.bucket, self._key(segment.name, name)
            )

    def download(self, into: Path, names: Sequence[str] | None = None) -> Path:
        """Download the complete segments (or those ``names``) into ``into``; ``into``."""
        for name in self.segments() if names is None else names:
            (into / name).mkdir(parents=True, exist_ok=True)
            for file in (*_FILES, MANIFEST):
                self._call(
                    "download_file", self.bucket, self._key(name, file), str(into / name / file)
                )
        return into


def write_segment_s3(
    store: Store, archive: S3Archive, staging: Path, *, checkpoint: StoredCheckpoint, now: datetime
) -> Segment:
    """:func:`write_segment` for an S3-compatible store: written in ``staging`` (an empty
    local directory), uploaded, then downloaded again and verified from what the store
    holds. Raises as :func:`write_segment` does, and :class:`~audit.StoreError` when the
    store cannot be reached."""
    local = write_segment(
        store, staging / "written", checkpoint=checkpoint, now=now, first=archive.next_index()
    )
    archive.upload(local.path)
    back = archive.download(staging / "read-back", [local.path.name])
    keys = [VerifierKey.parse(text) for text in (store.meta("verifier_keys") or "").split()]
    named = [VerifierKey.parse(text) for text in (store.meta("redaction_keys") or "").split()]
    return open_segment(back / local.path.name, keys, store.origin, named)


# -- pruning ----------------------------------------------------------------------------


def prunable(store: Store, segment: Segment) -> list[int]:
    """The indices of ``segment`` whose payload is still stored, prune markers left out."""
    found = []
    for row in store.selection_columns(segment.first, segment.last + 1):
        if row.payload is None:
            continue
        if row.kind == "audit":
            document = json.loads(row.payload)
            if document.get("action") == PRUNE_ACTION:
                continue
        found.append(row.idx)
    return found


def prune_archived(
    log: AuditLog, segments: Sequence[Segment], *, location: str, by: str, now: datetime
) -> list[tuple[Segment, int]]:
    """Erase the stored payloads each of ``segments`` (verified against this log) holds,
    each segment in one transaction with its ``prune`` entry; ``log`` is started.
    Returns each segment with the number of payloads erased (segments already pruned
    are left out). Raises :class:`~audit.StoreError`."""
    done = []
    for segment in segments:
        indices = prunable(log.store, segment)
        if not indices:
            continue
        marker = Entry(
            kind="audit",
            time=now,
            caller=by,
            action=PRUNE_ACTION,
            resource=f"log:{log.origin}",
            detail={
                "first": segment.first,
                "last": segment.last,
                "pruned": len(indices),
                "archive": f"{location.rstrip('/')}/{segment.path.name}",
                "checkpoint_size": segment.checkpoint.size,
                "manifest_sha256": segment.manifest_sha256,
            },
        )
        log.writer.append([marker], erase=indices, timeout=None)
        done.append((segment, len(indices)))
    return done
