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
:mod:`audit.merkle`, the signed-note primitives in :mod:`audit.note`; how the SQLite
file the log shares with the challenge store is opened, in :mod:`audit.sqlite`.

Names are imported on first use (lazy_loader): ``audit.note`` and ``audit.merkle`` (and the
bundle signatures that use them) do not load the store and SQLAlchemy.
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
"""Each name in ``__init__.pyi`` (typed there) is imported from its module on first use
(and kept): importing a submodule does not load everything the package can do."""
