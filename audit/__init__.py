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

Names are imported on first use (PEP 562): ``audit.note`` and ``audit.merkle`` (and the
bundle signatures that use them) do not load the store and SQLAlchemy.
"""

from __future__ import annotations

import importlib
import typing

if typing.TYPE_CHECKING:
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

_WHERE = {
    "AuditError": "audit._errors",
    "AuditLog": "audit._log",
    "Checkpoint": "audit._note",
    "Entry": "audit._entry",
    "FormatError": "audit._errors",
    "KeptCheckpointError": "audit._errors",
    "KeyFormatError": "audit._errors",
    "LogIdentityError": "audit._errors",
    "NoteError": "audit._errors",
    "Overloaded": "audit._errors",
    "ProofError": "audit._errors",
    "Receipt": "audit._store",
    "SignerKey": "audit._note",
    "Store": "audit._store",
    "StoreError": "audit._errors",
    "TamperDetected": "audit._errors",
    "Verdict": "audit._auditor",
    "VerifiedLog": "audit._verify",
    "VerifiedReceipt": "audit._auditor",
    "VerifierKey": "audit._note",
    "digest": "audit._entry",
    "make_receipt": "audit._auditor",
    "prove_consistency": "audit._auditor",
    "verify_entries": "audit._verify",
    "verify_export": "audit._auditor",
    "verify_receipt": "audit._auditor",
    "verify_store": "audit._auditor",
    "write_export": "audit._auditor",
}
"""Each exported name and the module that defines it."""


def __getattr__(name: str) -> typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


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
