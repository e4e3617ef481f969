"""The report model and its aggregation: :func:`build_report` counts log entries into a
:class:`Report` in one pass, without I/O (see the package docstring for what is counted)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, get_args

from audit._entry import Entry, EntryKind

DECISION_KINDS = frozenset({"decision", "placement", "admission"})
CREDENTIAL_KINDS: tuple[str, ...] = ("attestation", "certificate")
UNCLASSIFIED = "unclassified"
UNKNOWN = "unknown"
DEFAULT_DENY = "(default deny)"
NO_REASON = "(no reason given)"

_KINDS: tuple[str, ...] = get_args(EntryKind)
_NAMED_ENTRY = re.compile(r"entry (\d+):")
_CLASSIFICATION_ORDER = ("public", "internal", "confidential", "restricted", UNCLASSIFIED)


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """What verifying the log found, as the report shows it.

    ``checkpoint`` names what the log was checked against (``None``: no signed
    checkpoint); ``problem`` is the first problem when the log is not intact;
    ``redacted`` the indices of entries whose payload was erased; ``keys`` the
    verifying keys the checkpoint's signatures were checked with (empty: none given).
    """

    intact: bool
    tree_size: int
    checkpoint: str | None
    problem: str | None
    redacted: tuple[int, ...]
    keys: tuple[str, ...] = ()

    @property
    def bad_entry(self) -> int | None:
        """The entry the problem names (``entry N: ...``, as
        :class:`~audit.TamperDetected` words it: the first bad entry, or the tree size
        for a truncation or checkpoint problem); ``None`` when intact or unnamed."""
        if self.intact or self.problem is None:
            return None
        named = _NAMED_ENTRY.match(self.problem)
        return int(named.group(1)) if named else None


@dataclass(frozen=True, slots=True)
class DecisionCount:
    """Allowed and denied decisions, placements and admissions of one group."""

    classification: str
    jurisdiction: str
    allow: int
    deny: int


@dataclass(frozen=True, slots=True)
class Finding:
    """An allowed access to, or placement of, data outside its declared residency: one
    per violating entry.

    For a placement, ``sites`` are the allowed sites outside the residency, best-ranked
    first, and ``site`` is the first of them (its jurisdiction in ``jurisdiction``).
    ``site`` is ``None`` (and ``sites`` empty) when the finding is about the entry's own
    jurisdiction: where an access came from (``None``: unknown).
    """

    index: int
    time: datetime
    kind: str
    subject: str | None
    action: str | None
    resource: str | None
    classification: str
    residency: tuple[str, ...]
    jurisdiction: str | None
    site: str | None
    sites: tuple[str, ...]
    decision_id: str | None
    log: str | None = None
    """The log (a fleet's site) the entry is in, when a report adds several together."""


@dataclass(frozen=True, slots=True)
class Gap:
    """Entries ``first..last`` of a log whose payloads could not be read (pruned after
    archival with no archive given, say): counted as not covered, never as absent."""

    first: int
    last: int
    reason: str
    log: str | None = None
    """The log (a fleet's site) the entries are in, when a report adds several together."""


@dataclass(frozen=True, slots=True)
class CredentialCount:
    """Attestations or certificates issued and refused, refusals by reason (most first)."""

    kind: str
    issued: int
    refused: int
    refusals: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Report:
    """The report model: what :func:`build_report` counted, ready for :func:`render`.

    ``totals`` lists every entry kind in a fixed order (zeros included) and does not
    count redacted entries, which are in ``redacted``; ``entries`` is both together.
    ``first_time``/``last_time`` are the earliest and latest entry times counted,
    ``first_index``/``last_index`` the lowest and highest index of a dated entry counted
    (the period's index range, by the time inside each hashed payload).
    """

    since: datetime | None
    until: datetime | None
    generated_at: datetime
    first_time: datetime | None
    last_time: datetime | None
    first_index: int | None
    last_index: int | None
    entries: int
    totals: tuple[tuple[str, int], ...]
    redacted: int
    decisions: tuple[DecisionCount, ...]
    findings: tuple[Finding, ...]
    denials: tuple[tuple[str, int], ...]
    credentials: tuple[CredentialCount, ...]
    status: ReportStatus
    not_covered: int = 0
    """Entries of the period whose payload could not be read (in ``entries`` too)."""
    gaps: tuple[Gap, ...] = ()
    """The gaps those entries lie in."""

    @property
    def complete(self) -> bool:
        """Every entry of the period was read (redacted ones are read as erased)."""
        return not self.gaps

    @property
    def violations(self) -> int:
        """Residency findings; a compliant log has none."""
        return len(self.findings)

    @property
    def allowed(self) -> int:
        """Allowed decisions, placements and admissions."""
        return sum(cell.allow for cell in self.decisions)

    @property
    def denied(self) -> int:
        """Denied decisions, placements and admissions."""
        return sum(cell.deny for cell in self.decisions)


# -- building --------------------------------------------------------------------------


def _aware(value: datetime | None, name: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _outside(jurisdiction: str | None, residency: tuple[str, ...]) -> bool:
    """The residency rule: a jurisdiction is inside only when it is known and declared."""
    return jurisdiction is None or jurisdiction not in residency


def _finding(index: int, entry: Entry) -> Finding | None:
    """The residency finding of one entry, or None when it complies.

    Only an allowed decision, placement or admission with a declared (non-empty)
    residency can violate it, whatever its classification.
    """
    if entry.kind not in DECISION_KINDS or entry.decision != "allow" or not entry.residency:
        return None
    where = entry.jurisdiction
    outside: list[tuple[str, str | None]] = []
    if entry.kind == "placement":
        allowed = entry.detail.get("allowed")
        for item in allowed if isinstance(allowed, list) else ():
            # A malformed site record cannot show it is inside: it is reported.
            site = item if isinstance(item, dict) else {}
            jurisdiction = _text(site.get("jurisdiction"))
            if _outside(jurisdiction, entry.residency):
                outside.append((_text(site.get("site")) or "(unnamed site)", jurisdiction))
    if outside:
        where = outside[0][1]
    elif not _outside(where, entry.residency):
        return None
    return Finding(
        index=index,
        time=entry.time,
        kind=entry.kind,
        subject=entry.subject,
        action=entry.action,
        resource=entry.resource,
        classification=entry.classification or UNCLASSIFIED,
        residency=entry.residency,
        jurisdiction=where,
        site=outside[0][0] if outside else None,
        sites=tuple(name for name, _ in outside),
        decision_id=_text(entry.detail.get("decision_id")),
    )


def _refusal_reason(entry: Entry) -> str:
    reason = _text(entry.detail.get("reason"))
    if reason:
        return reason
    return ", ".join(entry.policies) if entry.policies else NO_REASON


def _classification_key(name: str) -> tuple[int, str]:
    order = _CLASSIFICATION_ORDER
    return (order.index(name), "") if name in order else (len(order), name)


def _most_first(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def _credentials(
    issued: Counter[str], refused: Counter[str], refusals: dict[str, Counter[str]]
) -> tuple[CredentialCount, ...]:
    return tuple(
        CredentialCount(
            kind=kind,
            issued=issued[kind],
            refused=refused[kind],
            refusals=_most_first(refusals[kind]),
        )
        for kind in CREDENTIAL_KINDS
    )


def build_report(
    entries: Iterable[tuple[int, Entry | None]],
    *,
    since: datetime | None,
    until: datetime | None,
    status: ReportStatus,
    generated_at: datetime,
    gaps: Sequence[Gap] = (),
) -> Report:
    """Count ``entries`` — ``(index, entry)`` in log order, ``None`` for a redacted
    payload — whose time is in ``[since, until)`` (``None``: unbounded) into a
    :class:`Report`. A ``None`` inside one of ``gaps`` is a payload that could not be
    read: counted as not covered (and the gap kept in the report), not as redacted.

    One pass; memory grows with the number of groups and findings, not of entries.
    Raises ``ValueError`` for a naive ``since``, ``until`` or ``generated_at``.
    """
    _aware(since, "since")
    _aware(until, "until")
    _aware(generated_at, "generated_at")
    kinds: Counter[str] = Counter()
    cells: dict[tuple[str, str], list[int]] = {}
    denials: Counter[str] = Counter()
    issued: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    refusals: dict[str, Counter[str]] = {kind: Counter() for kind in CREDENTIAL_KINDS}
    findings: list[Finding] = []
    first: datetime | None = None
    last: datetime | None = None
    low: int | None = None
    high: int | None = None
    redacted = 0
    # Undated entries (redacted, or in a gap) since the last dated one, placed by the next.
    pending: list[int] = []
    unread: list[int] = []
    previous: datetime | None = None
    for index, entry in entries:
        if entry is None:
            if until is None or previous is None or previous < until:
                pending.append(index)
            continue
        time = entry.time
        if pending:
            if since is None or time >= since:
                unread.extend(pending)
            pending = []
        previous = time
        if (since is not None and time < since) or (until is not None and time >= until):
            continue
        kinds[entry.kind] += 1
        first = time if first is None or time < first else first
        last = time if last is None or time > last else last
        low = index if low is None else min(low, index)
        high = index if high is None else max(high, index)
        if entry.kind in DECISION_KINDS and entry.decision is not None:
            key = (entry.classification or UNCLASSIFIED, entry.jurisdiction or UNKNOWN)
            cell = cells.setdefault(key, [0, 0])
            if entry.decision == "allow":
                cell[0] += 1
                found = _finding(index, entry)
                if found is not None:
                    findings.append(found)
            else:
                cell[1] += 1
                denials.update(set(entry.policies) or {DEFAULT_DENY})
        elif entry.kind in CREDENTIAL_KINDS:
            if entry.decision == "allow":
                issued[entry.kind] += 1
            elif entry.decision == "deny":
                refused[entry.kind] += 1
                refusals[entry.kind][_refusal_reason(entry)] += 1
    unread.extend(pending)
    missing = [i for i in unread if any(g.first <= i <= g.last for g in gaps)]
    redacted = len(unread) - len(missing)
    touched = tuple(g for g in gaps if any(g.first <= i <= g.last for i in missing))

    ordered = sorted(
        cells.items(),
        key=lambda item: (
            _classification_key(item[0][0]),
            item[0][1] == UNKNOWN,
            item[0][1],
        ),
    )
    dated = sum(kinds.values())
    return Report(
        since=since,
        until=until,
        generated_at=generated_at,
        first_time=first,
        last_time=last,
        first_index=low,
        last_index=high,
        entries=dated + len(unread),
        totals=tuple((kind, kinds[kind]) for kind in _KINDS),
        redacted=redacted,
        decisions=tuple(
            DecisionCount(classification=c, jurisdiction=j, allow=allow, deny=deny)
            for (c, j), (allow, deny) in ordered
        ),
        findings=tuple(findings),
        denials=_most_first(denials),
        credentials=_credentials(issued, refused, refusals),
        status=status,
        not_covered=len(missing),
        gaps=touched,
    )


def merge_reports(
    reports: Sequence[tuple[str, Report]],
    *,
    status: ReportStatus,
    generated_at: datetime,
    since: datetime | None,
    until: datetime | None,
) -> Report:
    """Several logs' reports (each named: a fleet's sites) added into one: counts
    summed, findings and gaps kept with the log they came from. Index ranges are per
    log, so the merged report has none."""
    kinds: Counter[str] = Counter()
    cells: Counter[tuple[str, str, str]] = Counter()
    denials: Counter[str] = Counter()
    issued: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    refusals: dict[str, Counter[str]] = {kind: Counter() for kind in CREDENTIAL_KINDS}
    findings: list[Finding] = []
    gaps: list[Gap] = []
    times: list[datetime] = []
    for name, report in reports:
        kinds.update(dict(report.totals))
        for cell in report.decisions:
            cells[(cell.classification, cell.jurisdiction, "allow")] += cell.allow
            cells[(cell.classification, cell.jurisdiction, "deny")] += cell.deny
        denials.update(dict(report.denials))
        for c in report.credentials:
            issued[c.kind] += c.issued
            refused[c.kind] += c.refused
            refusals[c.kind].update(dict(c.refusals))
        findings.extend(replace(f, log=name) for f in report.findings)
        gaps.extend(replace(g, log=name) for g in report.gaps)
        times.extend(t for t in (report.first_time, report.last_time) if t is not None)

    groups = sorted(
        {(c, j) for c, j, _ in cells},
        key=lambda key: (_classification_key(key[0]), key[1] == UNKNOWN, key[1]),
    )
    return Report(
        since=since,
        until=until,
        generated_at=generated_at,
        first_time=min(times, default=None),
        last_time=max(times, default=None),
        first_index=None,
        last_index=None,
        entries=sum(report.entries for _, report in reports),
        totals=tuple((kind, kinds[kind]) for kind in _KINDS),
        redacted=sum(report.redacted for _, report in reports),
        decisions=tuple(
            DecisionCount(c, j, allow=cells[(c, j, "allow")], deny=cells[(c, j, "deny")])
            for c, j in groups
        ),
        findings=tuple(findings),
        denials=_most_first(denials),
        credentials=_credentials(issued, refused, refusals),
        status=status,
        not_covered=sum(report.not_covered for _, report in reports),
        gaps=tuple(gaps),
    )
