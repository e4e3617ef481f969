"""Archival (:mod:`audit._archive`): segments written, read back, pruned, and verified
with the live log; each way of tampering with an archive caught with its reason."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from audit import AuditLog, FormatError, Store, TamperDetected, verify_store
from audit._archive import (
    archived_entries,
    open_archives,
    prune_archived,
    segment_dirs,
    verify_with_archives,
    write_segment,
)
from audit._auditor import Restore, erasures, write_export
from tests.audit.conftest import QUIET, REDACTION_KEY, REDACTION_KEYS, T0, SealedLog, build_log


def archive(sealed: SealedLog, directory: Path, *sizes: int) -> None:
    for size in sizes:
        stored = sealed.store.checkpoint_at(size)
        assert stored is not None
        write_segment(sealed.store, directory, checkpoint=stored, now=T0)


def prune(sealed: SealedLog, directory: Path) -> list[tuple[int, int, int]]:
    segments = open_archives([directory], sealed.keys, sealed.store.origin, REDACTION_KEYS)
    log = AuditLog.open(sealed.url, keys=sealed.path.parent / "keys", **dict(QUIET)).start()
    try:
        done = prune_archived(log, segments, location=str(directory), by="ops", now=T0)
    finally:
        log.close()
    return [(segment.first, segment.last, count) for segment, count in done]


@pytest.fixture
def archived(tmp_path: Path) -> Iterator[tuple[SealedLog, Path]]:
    """The standard log with entry 3 redacted, segments 0..9 and 10..24 archived, pruned."""
    sealed = build_log(tmp_path / "log", redact=[3])
    directory = tmp_path / "archive"
    archive(sealed, directory, 10, 25)
    assert prune(sealed, directory) == [(0, 9, 9), (10, 24, 15)]
    yield sealed, directory
    sealed.store.close()


def test_an_archive_round_trip_verifies_with_the_live_log(archived: tuple[SealedLog, Path]) -> None:
    sealed, directory = archived
    assert [p.name for p in segment_dirs(directory)] == ["segment-0-9", "segment-10-24"]
    assert sorted(p.name for p in (directory / "segment-0-9").iterdir()) == [
        "checkpoint",
        "consistency.json",
        "entries.jsonl",
        "manifest.json",
    ]
    rows = list(sealed.store.entries(0, 25))
    assert [r.idx for r in rows if r.payload is not None] == []
    kept = sealed.store.entry(25)
    assert kept is not None
    assert kept.payload is not None  # not archived: kept
    verdict, segments = verify_with_archives(
        sealed.store, sealed.keys, [directory], redaction_keys=REDACTION_KEYS
    )
    assert [(s.first, s.last) for s in segments] == [(0, 9), (10, 24)]
    assert verdict.log.pruned == tuple(i for i in range(25) if i != 3)
    assert verdict.log.redacted == (3,)  # its redaction entry (40) is still live
    assert {10, 25, 40} <= set(verdict.log.checkpoints)
    # What pruning did is in the log, with where the archive is.
    markers = [
        json.loads(r.payload)["detail"]
        for r in sealed.store.entries(41)
        if r.payload is not None and json.loads(r.payload)["action"] == "prune"
    ]
    assert [(m["first"], m["last"], m["pruned"]) for m in markers] == [(0, 9, 9), (10, 24, 15)]
    assert markers[0]["archive"] == f"{directory}/segment-0-9"


def test_a_pruned_entry_without_its_archive_is_missing(archived: tuple[SealedLog, Path]) -> None:
    sealed, directory = archived
    with pytest.raises(TamperDetected, match="entry 0: missing: its payload was pruned") as caught:
        verify_store(sealed.store, sealed.keys, redaction_keys=REDACTION_KEYS)
    assert caught.value.kind == "missing"
    shutil.rmtree(directory / "segment-10-24")
    with pytest.raises(TamperDetected, match="entry 10: missing"):
        verify_with_archives(sealed.store, sealed.keys, [directory], redaction_keys=REDACTION_KEYS)


def test_pruning_again_prunes_nothing(archived: tuple[SealedLog, Path]) -> None:
    sealed, directory = archived
    assert prune(sealed, directory) == []


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b'"entry": {') + 40
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _rewrite_manifest(segment: Path, *, flip: bool) -> None:
    """Flip a byte of the entries and make the manifest agree (a careful forger)."""
    if flip:
        _flip(segment / "entries.jsonl")
    manifest = json.loads((segment / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((segment / name).read_bytes()).hexdigest()
    (segment / "manifest.json").write_text(json.dumps(manifest))


def _swap(directory: Path) -> None:
    first, second = directory / "segment-0-9", directory / "segment-10-24"
    first.rename(directory / "held")
    second.rename(first)
    (directory / "held").rename(second)


def _other_log(directory: Path) -> None:
    other = build_log(directory.parent / "other")
    try:
        shutil.rmtree(directory / "segment-0-9")
        archive(other, directory.parent / "other-archive", 10)
        shutil.copytree(
            directory.parent / "other-archive" / "segment-0-9", directory / "segment-0-9"
        )
    finally:
        other.store.close()


TAMPERING: list[tuple[str, Callable[[Path], None], str]] = [
    (
        "flipped-byte",
        lambda d: _flip(d / "segment-10-24" / "entries.jsonl"),
        "archive segment-10-24: entries.jsonl does not hash to its manifest's SHA-256",
    ),
    (
        "flipped-byte-manifest-rewritten",
        lambda d: _rewrite_manifest(d / "segment-10-24", flip=True),
        "entry 10: modified: archive segment-10-24: its payload does not hash to its stored leaf",
    ),
    (
        "missing-file",
        lambda d: (d / "segment-0-9" / "checkpoint").unlink(),
        "archive segment-0-9: checkpoint is missing",
    ),
    (
        "missing-manifest",
        lambda d: (d / "segment-0-9" / "manifest.json").unlink(),
        "archive segment-0-9: manifest.json is missing",
    ),
    (
        "swapped-segments",
        _swap,
        "archive segment-0-9: its manifest holds entries 10..24, its name says otherwise",
    ),
    (
        "missing-segment",
        lambda d: shutil.rmtree(d / "segment-0-9"),
        "archive segment-10-24: it starts at entry 10, not 0 \\(a segment is missing",
    ),
    (
        "another-logs-segment",
        _other_log,
        "archive segment-0-9: .*(no signature by a trusted key|is for log|origin)",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "message"), [(t, m) for _, t, m in TAMPERING], ids=[n for n, _, _ in TAMPERING]
)
def test_a_tampered_archive_is_caught(
    archived: tuple[SealedLog, Path], tamper: Callable[[Path], None], message: str
) -> None:
    sealed, directory = archived
    tamper(directory)
    with pytest.raises(TamperDetected, match=message) as caught:
        verify_with_archives(sealed.store, sealed.keys, [directory], redaction_keys=REDACTION_KEYS)
    assert "\n" not in str(caught.value)


def test_a_segment_must_end_after_the_last_one(tmp_path: Path) -> None:
    from audit import FormatError

    sealed = build_log(tmp_path / "log")
    try:
        archive(sealed, tmp_path / "archive", 25)
        stored = sealed.store.checkpoint_at(10)
        assert stored is not None
        with pytest.raises(FormatError, match="nothing to archive"):
            write_segment(sealed.store, tmp_path / "archive", checkpoint=stored, now=T0)
        # A segment starts at the previous one's checkpoint, whose size it proves from.
        store = Store(sealed.url, create=False)
        assert [p.name for p in segment_dirs(tmp_path / "archive")] == ["segment-0-24"]
        store.close()
    finally:
        sealed.store.close()


def _export(sealed: SealedLog, restore: Restore | None = None) -> bytes:
    anchor = sealed.store.checkpoint_at(40)
    assert anchor is not None
    out = io.StringIO()
    write_export(
        sealed.store, out, start=0, end=40, anchor_note=anchor.note, anchor_size=40,
        verifier_keys=[str(k) for k in sealed.keys], now=T0, restore=restore,
    )  # fmt: skip
    return out.getvalue().encode()


def _restore(sealed: SealedLog, directory: Path) -> Restore:
    segments = open_archives([directory], sealed.keys, sealed.store.origin, REDACTION_KEYS)
    return Restore(erasures(sealed.store), functools.partial(archived_entries, segments))


def test_an_export_of_a_pruned_range_with_its_archive_is_the_export_before(
    tmp_path: Path,
) -> None:
    """Byte for byte (same anchor, same time): the pruned payloads come back from the
    archive; an entry redacted after it was archived stays erased, with its order."""
    sealed = build_log(tmp_path / "log", redact=[3])
    try:
        directory = tmp_path / "archive"
        archive(sealed, directory, 10, 25)
        log = AuditLog.open(sealed.url, keys=sealed.path.parent / "keys", **dict(QUIET)).start()
        try:
            log.redact(7, reason="erasure", requested_by="dpo", now=T0, signer=REDACTION_KEY)
        finally:
            log.close()
        before = _export(sealed)
        assert prune(sealed, directory) == [(0, 9, 8), (10, 24, 15)]
        assert _export(sealed, _restore(sealed, directory)) == before
        lines = [json.loads(line) for line in before.splitlines()]
        erased = {line["index"] for line in lines if line.get("entry", 0) is None}
        assert erased == {3, 7}
        with pytest.raises(FormatError, match="entry 0 was pruned after archival and no archive"):
            _export(sealed, Restore(erasures(sealed.store)))
    finally:
        sealed.store.close()
