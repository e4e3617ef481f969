"""The fleet's export (``docket audit export --fleet``): each site's entries as the
collector holds them, verified first (:func:`~audit._collector_audit.verify_site`),
written as an ordinary export (``docket-audit-export/1``) anchored on the site's last
cosigned checkpoint, and a manifest over them all.

The collector stores each entry's payload and leaf, not the chain value or the subtree
hashes an export carries; it holds every entry of a site from 0, so both are
recomputed (:class:`~audit._collector_store.HeldLog`). Each export is read back and
verified against the checkpoint written beside it before it is listed, so an auditor
checks it with ``docket audit verify --export SITE.jsonl --checkpoint
SITE.checkpoint --key SITE-KEY`` like any other.

The directory::

    <site>.jsonl         the site's export (its period; the whole log without one)
    <site>.checkpoint    the site's last checkpoint as cosigned (the export's anchor)
    manifest.json        format, period, the witness keys checked, whether the fleet is
                         complete, and per site: its state (complete, LAGGING, FORKED,
                         NEVER PUSHED, NOT VERIFIED: :mod:`audit._report.fleet`) and
                         why, entries held and reported, the range exported, the
                         checkpoint's size and signatures, each file's SHA-256

A site that does not verify is not exported (the manifest says why); one that lags is
exported as far as the collector holds it and marked.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audit._auditor import Restore, erasures, select_period, verify_export, write_export
from audit._collector_audit import verify_site
from audit._collector_store import CollectorStore, HeldLog, SiteStatus
from audit._entry import TIME_FORMAT
from audit._errors import FormatError, ProofError, TamperDetected
from audit._note import VerifierKey, parse_note
from audit._report.fleet import COMPLETE, LAG_SECONDS, NOT_VERIFIED, Seen, site_state

FLEET_EXPORT_FORMAT = "docket-audit-fleet-export/1"
MANIFEST = "manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class SiteExport:
    """One site in the manifest: its state and why, what the collector holds (``held``
    entries; ``head``: what the site last reported, ``behind`` of it), and what was
    exported (``export`` None: nothing, ``problem`` or an empty period says why)."""

    site: str
    state: str
    problem: str | None
    origin: str | None
    held: int
    head: int | None
    behind: int
    cosigned: str | None
    export: str | None = None
    sha256: str | None = None
    start: int | None = None
    end: int | None = None
    entries: int = 0
    checkpoint: str | None = None
    checkpoint_size: int | None = None
    cosigned_checkpoint: str | None = None
    signatures: tuple[str, ...] = ()


def export_fleet(
    store: CollectorStore,
    names: Sequence[str],
    directory: Path,
    *,
    witnesses: Sequence[VerifierKey],
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    lag_seconds: float = LAG_SECONDS,
    redaction_keys: Sequence[VerifierKey] = (),
) -> list[SiteExport]:
    """Export each site of ``names`` into ``directory`` (made when missing) and write
    the manifest; each site's entry of it, by name. An entry erased at a site needs
    its order signed by one of ``redaction_keys`` (the collector does not know the
    sites' redaction keys; the exports name these). Raises
    :class:`~audit.StoreError` when the collector cannot be read, ``OSError`` when
    ``directory`` cannot be written."""
    directory.mkdir(parents=True, exist_ok=True)
    statuses = {status.name: status for status in store.statuses()}
    period, lag = (since, until), lag_seconds
    done = [
        _export_site(store, statuses[n], directory, witnesses, redaction_keys, period, now, lag)
        for n in names
    ]
    manifest = {
        "format": FLEET_EXPORT_FORMAT,
        "created": now.astimezone(UTC).strftime(TIME_FORMAT),
        "since": None if since is None else since.astimezone(UTC).strftime(TIME_FORMAT),
        "until": None if until is None else until.astimezone(UTC).strftime(TIME_FORMAT),
        "witness_keys": [str(key) for key in witnesses],
        "complete": all(site.state == COMPLETE for site in done),
        "sites": [asdict(site) for site in done],
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return done


def _export_site(
    store: CollectorStore,
    status: SiteStatus,
    directory: Path,
    witnesses: Sequence[VerifierKey],
    redaction_keys: Sequence[VerifierKey],
    period: tuple[datetime | None, datetime | None],
    now: datetime,
    lag_seconds: float,
) -> SiteExport:
    name = status.name
    state = store.site(name)
    assert state is not None
    leaves: list[bytes] = []
    checkpoints = store.checkpoints(name)

    def collected() -> Iterator[tuple[int, bytes | None, bytes]]:
        for item in store.entries(name):
            leaves.append(item[2])
            yield item

    def judged(verified: bool, problem: str | None, held: int) -> SiteExport:
        seen = Seen(status.cosigned, status.head, status.last_incident, problem)
        site_state_, why = site_state(verified, held, seen, now, lag_seconds)
        return SiteExport(
            name, site_state_, why, status.origin, held, status.head,
            max((status.head or 0) - held, 0),
            None if status.cosigned is None else status.cosigned.strftime(TIME_FORMAT),
        )  # fmt: skip

    try:
        coverage = verify_site(name, collected(), checkpoints, state.log.keys, witnesses)
    except TamperDetected as exc:
        return judged(False, str(exc), status.size)
    site = judged(True, None, coverage.size)
    if not checkpoints or coverage.origin is None:
        return site
    held = HeldLog(store, name, coverage.origin, leaves, checkpoints)
    size, note = checkpoints[-1]
    try:
        return _write_site(
            site, held, directory, (state.log.keys, redaction_keys), (note, size), period, now
        )
    except (FormatError, ProofError, TamperDetected) as exc:
        return replace(site, state=NOT_VERIFIED, problem=str(exc))


def _write_site(
    site: SiteExport,
    held: HeldLog,
    directory: Path,
    keys: tuple[Sequence[VerifierKey], Sequence[VerifierKey]],
    anchor: tuple[str, int],
    period_chosen: tuple[datetime | None, datetime | None],
    now: datetime,
) -> SiteExport:
    """Write ``held``'s export of the period and its ``anchor`` (note, size), read it
    back and verify it with the site's ``keys`` (its verifier keys, the redaction
    keys). Raises :class:`FormatError`, :class:`TamperDetected`."""
    (site_keys, redaction_keys), (note, size), (since, until) = keys, anchor, period_chosen
    restore = Restore(erasures(held))
    period = select_period(held, since, until, restore)
    if period.unrestored:
        runs = ", ".join(f"{a}..{b}" for a, b in period.unrestored)
        raise FormatError(f"entries {runs} were pruned at the site before it pushed them")
    signatures = tuple(signature.name for signature in parse_note(note).signatures)
    anchored: dict[str, Any] = {
        "checkpoint_size": size, "cosigned_checkpoint": note, "signatures": signatures,
    }  # fmt: skip
    if period.entries == 0 and (since or until):
        return replace(site, **anchored)
    stem = _UNSAFE.sub("_", site.site)
    export, checkpoint = directory / f"{stem}.jsonl", directory / f"{stem}.checkpoint"
    checkpoint.write_text(note, encoding="utf-8")
    with export.open("w", encoding="utf-8") as out:
        written = write_export(
            held, out, start=period.start, end=period.end, anchor_note=note, anchor_size=size,
            verifier_keys=[str(key) for key in site_keys], now=now, restore=restore,
            redaction_keys=[str(key) for key in redaction_keys],
        )  # fmt: skip
    verify_export(
        export, site_keys, redaction_keys=list(redaction_keys), extra=[(str(checkpoint), note)]
    )
    return replace(
        site,
        **anchored,
        export=export.name,
        sha256=hashlib.sha256(export.read_bytes()).hexdigest(),
        start=period.start,
        end=period.end,
        entries=written,
        checkpoint=checkpoint.name,
    )
