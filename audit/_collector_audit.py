"""The auditor over the fleet: each site's entries as the collector holds them,
verified against that site's cosigned checkpoints. Pure: entries and checkpoints come
in as values (``docket audit verify-fleet`` reads them from the collector's database).

Per site, in index order: no index missing (**deleted**), each payload hashing to its
leaf (**modified**; an erased payload keeps its leaf and is counted as redacted), the
tree recomputed and equal, at each checkpoint's size, to the root the site signed and
the collector's witness cosigned (**checkpoint**); every entry covered by the last
checkpoint (none past it: **inserted**; fewer: **truncated**). Raises
:class:`~audit._errors.TamperDetected` naming the site in its message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from audit._cosignature import open_cosigned_checkpoint
from audit._errors import NoteError, TamperDetected
from audit._merkle import CompactRange, leaf_hash
from audit._note import VerifierKey, open_checkpoint

__all__ = ["SiteCoverage", "verify_site"]


@dataclass(frozen=True)
class SiteCoverage:
    """What was verified of one site: its origin, the entries (0 … ``size`` - 1), the
    checkpoints checked, the time span of the entries (their own ``time`` fields;
    None when all are redacted) and how many payloads are erased."""

    site: str
    origin: str | None
    size: int
    checkpoints: int
    first: str | None
    last: str | None
    redacted: int


def _time(payload: bytes) -> str | None:
    try:
        value = json.loads(payload).get("time")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def verify_site(
    site: str,
    entries: Iterable[tuple[int, bytes | None, bytes]],
    checkpoints: Sequence[tuple[int, str]],
    site_keys: Sequence[VerifierKey],
    witness_keys: Sequence[VerifierKey] = (),
) -> SiteCoverage:
    """Verify ``site``'s ``entries`` (index, payload or None, leaf) against its
    ``checkpoints`` (size, cosigned note): signed by ``site_keys`` and, when
    ``witness_keys`` are given, cosigned by all of them. Raises
    :class:`~audit._errors.TamperDetected`."""
    roots: dict[int, bytes] = {}
    origin: str | None = None
    for size, note in checkpoints:
        try:
            if witness_keys:
                checkpoint = open_cosigned_checkpoint(note, site_keys, witness_keys).checkpoint
            else:
                checkpoint = open_checkpoint(note, site_keys)[0]
        except NoteError as exc:
            raise TamperDetected(size, "checkpoint", f"site {site}: {exc}") from None
        if checkpoint.size != size or (origin is not None and checkpoint.origin != origin):
            raise TamperDetected(size, "checkpoint", f"site {site}: not the checkpoint held")
        origin = checkpoint.origin
        roots[size] = checkpoint.root
    frontier = CompactRange()
    first: str | None = None
    last: str | None = None
    redacted = 0
    expected = 0
    for index, payload, leaf in entries:
        if index != expected:
            raise TamperDetected(expected, "deleted", f"site {site}: entry {expected} is missing")
        if payload is None:
            redacted += 1
        elif leaf_hash(payload) != leaf:
            raise TamperDetected(index, "modified", f"site {site}: the payload is not its leaf's")
        else:
            when = _time(payload)
            if when is not None:
                first = when if first is None else min(first, when)
                last = when if last is None else max(last, when)
        frontier.push(leaf)
        expected += 1
        signed = roots.get(expected)
        if signed is not None and frontier.root() != signed:
            raise TamperDetected(
                expected, "checkpoint", f"site {site}: the entries do not give the signed root"
            )
    covered = max(roots, default=0)
    if expected > covered:
        raise TamperDetected(covered, "inserted", f"site {site}: entries past the last checkpoint")
    if expected < covered:
        raise TamperDetected(expected, "truncated", f"site {site}: the checkpoint covers more")
    return SiteCoverage(site, origin, expected, len(roots), first, last, redacted)
