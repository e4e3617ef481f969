"""Docket's tamper-evident audit log: a hash chain and an RFC 6962 Merkle tree over
RFC 8785 canonical entries, C2SP signed-note checkpoints, inclusion and consistency
proofs, offline verification and residency reports.

High level (a service)::

    log = AuditLog.open("sqlite:///docket-data/docket.db", keys=Path("docket-data/audit-keys"))
    log.start()
    (receipt,) = log.record([Entry(kind="decision", time=now, ...)])

High level (an auditor)::

    verdict = verify_store(Store(url, create=False), [VerifierKey.parse(key_text)])

The RFC 6962 primitives (hashes, proofs, their verification) are in
:mod:`audit.merkle`, the signed-note primitives in :mod:`audit.note`.
"""

from audit._auditor import (
    Verdict,
    VerifiedReceipt,
    make_receipt,
    prove_consistency,
    verify_export,
    verify_receipt,
    verify_store,
    write_export,
)
from audit._entry import Entry, digest
from audit._errors import (
    AuditError,
    FormatError,
    KeptCheckpointError,
    KeyFormatError,
    LogIdentityError,
    NoteError,
    Overloaded,
    ProofError,
    StoreError,
    TamperDetected,
)
from audit._log import AuditLog
from audit._note import Checkpoint, SignerKey, VerifierKey
from audit._store import Receipt, Store
from audit._verify import VerifiedLog, verify_entries

__all__ = [
    "AuditError",
    "AuditLog",
    "Checkpoint",
    "Entry",
    "FormatError",
    "KeptCheckpointError",
    "KeyFormatError",
    "LogIdentityError",
    "NoteError",
    "Overloaded",
    "ProofError",
    "Receipt",
    "SignerKey",
    "Store",
    "StoreError",
    "TamperDetected",
    "Verdict",
    "VerifiedLog",
    "VerifiedReceipt",
    "VerifierKey",
    "digest",
    "make_receipt",
    "prove_consistency",
    "verify_entries",
    "verify_export",
    "verify_receipt",
    "verify_store",
    "write_export",
]
