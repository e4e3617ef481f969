"""Candidate bundles for the shadow-bundle tests: the default bundle with policies added
that flip known decisions or err on a known request."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FORBID_HEIDI = """
@id("candidate-forbids-heidi-website")
forbid (principal == Docket::User::"heidi", action, resource == Docket::Data::"public-website");
"""
PERMIT_DIRECTORY = """
@id("candidate-permits-heidi-directory")
permit (principal == Docket::User::"heidi", action, resource == Docket::Data::"employee-directory");
"""
OVERFLOW = """
@id("candidate-overflows-on-late-hours")
forbid (principal, action == Docket::Action::"read", resource is Docket::Data)
when { context has time && context.time.hour * 4611686018427387904 > 0 };
"""


def candidate(root: Path, *extra: str, tests: bool = False) -> Path:
    """The default bundle with ``extra`` policies added, in ``root/candidate`` (its tests
    dropped unless asked: a candidate that changes decisions fails the cases that pin them)."""
    target = root / "candidate"
    shutil.copytree(ROOT / "policies", target)
    if not tests:
        shutil.rmtree(target / "tests")
    with (target / "access.cedar").open("a") as handle:
        handle.write("".join(extra))
    return target
