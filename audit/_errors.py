"""Exceptions raised by the audit log.

    AuditError
    ├── ProofError             a proof, tree size or hash is malformed or does not verify
    ├── NoteError              a signed note or checkpoint is malformed, unsigned by a
    │   │                      known key, or its signature does not verify
    │   └── CosignatureError   a witness's cosignature does not verify, or fewer of the
    │                          configured witnesses than required cosigned the checkpoint
    ├── KeyFormatError         a signing or verifier key string/file is malformed
    ├── FormatError            an export, receipt or entry file is malformed
    ├── RecordedRequestError   a recorded request does not open: its key is not held, or
    │                          it was sealed with another key, for another entry or log,
    │                          or its ciphertext changed
    ├── StoreError             the database cannot be opened, read or written
    │   ├── Overloaded         the writer's queue is full: try again later (back-pressure)
    │   ├── LogIdentityError   the database was deleted, replaced, truncated or rolled back
    │   │                      while serving: fatal until the process restarts
    │   └── KeptCheckpointError  the checkpoint kept outside the database does not verify,
    │                          or the database does not contain it (docket audit accept)
    ├── WitnessError           a witness refused a checkpoint (``status``: the tlog-witness
    │   │                      HTTP status; ``size``: its latest size, with 409) or could
    │   │                      not be asked (``status`` None)
    │   └── ForkDetected       (422) a second root for a tree size the witness has
    │                          cosigned: the log forked; ``held`` and ``offered`` notes
    └── TamperDetected         the log does not verify; ``index`` and ``kind`` say where
                               and what (modified, deleted, inserted, reordered,
                               truncated, checkpoint; redaction: a payload erased
                               without a signed redaction order; missing: a payload
                               pruned with no verified archive holding it; archive: an
                               archived segment does not verify)

Callers never see sqlalchemy or cryptography exceptions: they are translated here.
"""

from __future__ import annotations

from typing import Literal

TamperKind = Literal[
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "checkpoint",
    "redaction",
    "missing",
    "archive",
]


class AuditError(Exception):
    """Base class of every error the audit package raises."""


class ProofError(AuditError):
    """A Merkle proof or tree size is malformed, or the proof does not verify."""


class NoteError(AuditError):
    """A signed note or checkpoint is malformed, or no trusted signature verifies."""


class CosignatureError(NoteError):
    """A cosignature does not verify, or too few of the configured witnesses cosigned."""


class WitnessError(AuditError):
    """A witness refused a checkpoint, or could not be asked. ``status`` is the HTTP
    status of c2sp.org/tlog-witness (404 unknown log, 403 bad signature, 409 another old
    size, 422 bad proof, 400 malformed, 413 too large; None: no answer); ``size`` is the
    witness's latest size for the log with a 409, else None."""

    def __init__(self, status: int | None, message: str, *, size: int | None = None) -> None:
        self.status = status
        self.size = size
        super().__init__(message)


class ForkDetected(WitnessError):
    """The log signed two checkpoints of one size with different roots: ``held`` is the
    note the witness cosigned, ``offered`` the conflicting one (both signed by the log:
    the evidence). Status 422."""

    def __init__(self, message: str, *, held: str, offered: str) -> None:
        self.held = held
        self.offered = offered
        super().__init__(422, message)


class KeyFormatError(AuditError):
    """A signer or verifier key is malformed."""


class FormatError(AuditError):
    """An export, receipt or entry file is malformed."""


class RecordedRequestError(AuditError):
    """A recorded request does not open (unknown key id, wrong key, a row moved to
    another entry or log, a changed ciphertext): it is reported, never replayed."""


class StoreError(AuditError):
    """The audit database cannot be opened, read or written."""


class Overloaded(StoreError):
    """The writer's queue is full; the entry was not accepted (nothing was dropped)."""


class TamperDetected(AuditError):
    """The log does not verify. ``index`` is the first bad entry (or the tree size for
    a truncation or checkpoint problem); ``kind`` says what is wrong."""

    def __init__(self, index: int, kind: TamperKind, message: str) -> None:
        self.index = index
        self.kind: TamperKind = kind
        super().__init__(f"entry {index}: {kind}: {message}")


class LogIdentityError(StoreError):
    """The database under the log is no longer the one this process opened (deleted,
    replaced, truncated or rolled back while serving). Fatal: nothing written after it
    would be in the log, so the writer stays stopped until the process restarts."""


class KeptCheckpointError(StoreError):
    """The kept checkpoint does not verify, or the database does not contain it (a
    shorter or different log): the log is refused until an operator accepts it."""
