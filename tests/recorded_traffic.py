"""Traffic for the ``record_requests`` / ``docket policy diff`` tests, and the candidate
that flips a known part of it: the default bundle without the permit ``REMOVED``, under
which exactly the decisions that permit alone allowed become denials."""

from __future__ import annotations

import shutil
from pathlib import Path

REMOVED = "read-internal-within-clearance"
ASKED = [
    (user, data)
    for user in ("heidi", "bob", "alice", "ivan")
    for data in ("public-website", "quarterly-forecast", "employee-directory", "research-notes")
]
"""(user, data) pairs read: some allowed by ``REMOVED`` alone, some by other permits."""


def without_removed(bundle: Path, target: Path) -> Path:
    """A copy of ``bundle`` at ``target`` with the permit ``REMOVED`` deleted."""
    shutil.copytree(bundle, target)
    access = target / "access.cedar"
    text = access.read_text()
    start = text.index(f'@id("{REMOVED}")')
    access.write_text(text[:start] + text[text.index("};", start) + 2 :])
    return target
