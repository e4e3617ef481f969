"""The latest signed checkpoint, kept outside the database.

A database can be deleted, replaced or restored from an older copy while the service
is stopped; nothing inside it can tell. So after each checkpoint the service signs or
finds, its signed note is also written to a file of its own (``<data-dir>/audit-
checkpoint``), atomically (temp file, fsync, rename, fsync of the directory), and only
ever replaced by a checkpoint of equal or larger size whose tree extends it. On start
the file's signature is verified with the log's signing keys and the database must
contain it: at least as many entries, and the tree of the kept size with the kept
root. Otherwise the start is refused until an operator runs ``docket audit accept``
(:func:`accept_log`), which records the acceptance in the log itself, moves the old file
aside and keeps a fresh checkpoint.

High level::

    kept = KeptCheckpoint(data_dir / "audit-checkpoint")
    kept.check(store, verifiers, origin)       # raises KeptCheckpointError
    kept.update(note, store, verifiers, origin)  # after a checkpoint is signed
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit._auditor import root_b64
from audit._entry import Entry
from audit._errors import KeptCheckpointError, NoteError, ProofError, StoreError
from audit._merkle import root_at
from audit._note import Checkpoint, VerifierKey, open_checkpoint, parse_checkpoint_unverified
from audit._store import Store

if TYPE_CHECKING:
    from audit._log import AuditLog

KEPT_NAME = "audit-checkpoint"
"""The kept checkpoint's file name in the data directory."""
ACCEPT_HINT = "if this is intended run `docket audit accept --reason …`"


@dataclass(frozen=True, slots=True)
class Kept:
    """A kept checkpoint as read: its parsed body and its signed note."""

    checkpoint: Checkpoint
    note: str


class KeptCheckpoint:
    """The file at ``path`` holding the latest signed checkpoint of one log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(f".{path.name}.lock")

    # -- reading ------------------------------------------------------------------

    def read(self, keys: Sequence[VerifierKey], origin: str) -> Kept | None:
        """The kept checkpoint, its signature verified with ``keys`` and its origin
        ``origin``; None when there is no file. Raises :class:`KeptCheckpointError`
        when it cannot be read, is malformed or is signed by none of ``keys``."""
        try:
            note = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeptCheckpointError(
                f"cannot read the checkpoint kept in {self.path}: {exc}; {ACCEPT_HINT}"
            ) from exc
        try:
            checkpoint, _ = open_checkpoint(note, keys, origin=origin)
        except NoteError as exc:
            raise KeptCheckpointError(
                f"the checkpoint kept in {self.path} does not verify with this log's "
                f"signing keys ({exc}); {ACCEPT_HINT}"
            ) from exc
        return Kept(checkpoint, note)

    def problem(self, store: Store, keys: Sequence[VerifierKey], origin: str) -> str | None:
        """Why the log in ``store`` is refused against the kept checkpoint (one line), or
        None when there is no kept file or the log contains it. Raises
        :class:`StoreError` when the database cannot be read."""
        try:
            kept = self.read(keys, origin)
        except KeptCheckpointError as exc:
            return str(exc)
        if kept is None:
            return None
        head = store.head()
        return self._contains(head.size, head.root, kept.checkpoint, store)

    def check(self, store: Store, keys: Sequence[VerifierKey], origin: str) -> Kept | None:
        """Refuse a log that does not contain the kept checkpoint. Returns the kept
        checkpoint (None when there is none yet). Raises :class:`KeptCheckpointError`
        naming the sizes and the way out, :class:`StoreError`."""
        problem = self.problem(store, keys, origin)
        if problem is not None:
            raise KeptCheckpointError(problem)
        return self.read(keys, origin)

    def _contains(self, size: int, root: bytes, kept: Checkpoint, store: Store) -> str | None:
        """Why a log of ``size`` entries with ``root`` (stored in ``store``) does not
        contain ``kept``, or None."""
        if size < kept.size:
            return (
                f"the database holds {size} entries but the checkpoint kept in "
                f"{self.path} signed {kept.size} (an older copy restored?); {ACCEPT_HINT}"
            )
        if size > kept.size:
            # The tree of the kept size, from the stored perfect subtrees (at most
            # log2(size) + 1 rows): a different first `kept.size` entries give another root.
            try:
                root = root_at(kept.size, store.nodes)
            except ProofError:
                root = b""
        if root != kept.root:
            return (
                f"the database's first {kept.size} entries are not the ones the checkpoint "
                f"kept in {self.path} signed (the log was rewritten or replaced); "
                f"{ACCEPT_HINT}"
            )
        return None

    # -- writing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Workers of one server (and `docket audit accept`) replace the file: one at a
        # time, so a smaller checkpoint never overwrites a larger one read in between.
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def update(self, note: str, store: Store, keys: Sequence[VerifierKey], origin: str) -> bool:
        """Keep ``note`` (a checkpoint of the log in ``store``, signed by one of
        ``keys``) when there is no kept file, or it is larger than the kept one and its
        tree extends it. Returns True when the file was written. Raises
        :class:`KeptCheckpointError` for a note that does not verify or a checkpoint
        that does not extend the kept one, :class:`StoreError` when the file cannot be
        written."""
        try:
            # A checkpoint row in the database is not trusted as such: only one this
            # log's keys signed is kept.
            new, _ = open_checkpoint(note, keys, origin=origin)
            with self._locked():
                try:
                    current = parse_checkpoint_unverified(self.path.read_bytes())
                except FileNotFoundError:
                    current = None
                if current is not None:
                    if new.size < current.size:
                        return False
                    problem = self._contains(new.size, new.root, current, store)
                    if problem is not None:
                        raise KeptCheckpointError(
                            f"checkpoint of size {new.size} does not extend the one kept "
                            f"in {self.path} (size {current.size}); not kept"
                        )
                    if new.size == current.size:
                        return False
                self.write(note)
                return True
        except NoteError as exc:
            raise KeptCheckpointError(f"the checkpoint kept in {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot keep the checkpoint in {self.path}: {exc}") from exc

    def write(self, note: str) -> None:
        """Replace the file with ``note`` atomically and durably. Raises OSError."""
        draft = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(draft, "w", encoding="utf-8") as out:
            out.write(note)
            out.flush()
            os.fsync(out.fileno())
        os.replace(draft, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def set_aside(self, now: datetime) -> Path:
        """Move the kept file to ``<name>.rejected-<UTC timestamp>``; the new path.
        Raises OSError."""
        stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}.rejected-{stamp}")
        os.replace(self.path, aside)
        return aside


def accept_log(log: AuditLog, *, reason: str, by: str, now: datetime) -> dict[str, Any]:
    """An operator's explicit acceptance of a log the kept checkpoint refuses: record
    an ``audit`` entry (action ``accept-log``: the kept checkpoint's size and root, the
    log's, the reason and who) in the log itself, move the kept file aside, sign a fresh
    checkpoint and keep it. ``log`` has its signing keys and a kept path and is not
    started. Returns the recorded detail. Raises :class:`KeptCheckpointError` when there
    is nothing to accept (no kept file, or the log contains it), :class:`StoreError`."""
    kept_file = log.kept
    if kept_file is None or log.keys is None:
        raise KeptCheckpointError("this log has no kept checkpoint and signing keys")
    keys = log.verifiers()
    problem = kept_file.problem(log.store, keys, log.origin)
    if problem is None:
        what = "no checkpoint is kept" if not kept_file.path.exists() else "the log contains it"
        raise KeptCheckpointError(
            f"nothing to accept: {what} ({kept_file.path}); the log starts as it is"
        )
    try:
        kept: Checkpoint | None = parse_checkpoint_unverified(kept_file.path.read_bytes())
    except (OSError, NoteError):
        kept = None  # unreadable or malformed: recorded as such
    head = log.store.head()
    detail: dict[str, Any] = {
        "kept": None if kept is None else {"size": kept.size, "root": root_b64(kept.root)},
        "log": {"size": head.size, "root": root_b64(head.root)},
        "problem": problem,
        "reason": reason,
        "by": by,
    }
    log.start()
    try:
        log.record(
            [
                Entry(
                    kind="audit",
                    time=now,
                    caller=by,
                    action="accept-log",
                    resource=f"log:{log.origin}",
                    detail=detail,
                )
            ]
        )
        try:
            kept_file.set_aside(now)
        except OSError as exc:
            raise StoreError(f"cannot move {kept_file.path} aside: {exc}") from exc
        log.checkpoint()
    finally:
        log.close()
    return detail
