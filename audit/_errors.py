"""Exceptions raised by the audit log.

    AuditError
    ├── ProofError             a proof, tree size or hash is malformed or does not verify
    ├── NoteError              a signed note or checkpoint is malformed, unsigned by a
    │                          known key, or its signature does not verify
    ├── KeyFormatError         a signing or verifier key string/file is malformed
    ├── FormatError            an export, receipt or entry file is malformed
    ├── StoreError             the database cannot be opened, read or written
    │   ├── Overloaded         the writer's queue is full: try again later (back-pressure)
    │   ├── LogIdentityError   the database was deleted, replaced, truncated or rolled back
    │   │                      while serving: fatal until the process restarts
    │   └── KeptCheckpointError  the checkpoint kept outside the database does not verify,
    │                          or the database does not contain it (docket audit accept)
    └── TamperDetected         the log does not verify; ``index`` and ``kind`` say where
                               and what (modified, deleted, inserted, reordered,
                               truncated, checkpoint; redaction: a payload erased
                               without a signed redaction order)

Callers never see sqlalchemy or cryptography exceptions: they are translated here.
"""

from __future__ import annotations

from typing import Literal

TamperKind = Literal[
    "modified", "deleted", "inserted", "reordered", "truncated", "checkpoint", "redaction"
]


class AuditError(Exception):
    """Base class of every error the audit package raises."""


class ProofError(AuditError):
    """A Merkle proof or tree size is malformed, or the proof does not verify."""


class NoteError(AuditError):
    """A signed note or checkpoint is malformed, or no trusted signature verifies."""


class KeyFormatError(AuditError):
    """A signer or verifier key is malformed."""


class FormatError(AuditError):
    """An export, receipt or entry file is malformed."""


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
